"""A procedural micro vision-language world: coloured shapes on patterned backgrounds, rendered in
several styles (domains), with captions; deterministic from a seed. See docs/MICRO_WORLD.md."""
