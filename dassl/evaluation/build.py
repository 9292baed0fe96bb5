"""Evaluator registry and factory."""

from dassl.utils import Registry, check_availability

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    """Instantiate ``EVALUATOR_REGISTRY[cfg.TEST.EVALUATOR](cfg, **kwargs)``.

    ``SimpleTrainer`` passes ``lab2cname`` and ``num_base_classes`` (the dataset's count of leading base labels,
    or None); an evaluator takes the keywords it needs and ``**kwargs`` for the rest, as ``Classification`` does.
    """
    name = cfg.TEST.EVALUATOR
    check_availability(name, EVALUATOR_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
