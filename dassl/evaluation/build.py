"""Evaluator registry and factory."""

from dassl.utils import Registry, check_availability

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    """Instantiate ``EVALUATOR_REGISTRY[cfg.TEST.EVALUATOR](cfg, **kwargs)``."""
    name = cfg.TEST.EVALUATOR
    check_availability(name, EVALUATOR_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
