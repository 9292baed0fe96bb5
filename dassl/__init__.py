"""Project-local engine, API-compatible with Dassl.pytorch 0.6.3 (see docs/ENGINE.md)."""

__version__ = "0.6.3"
