"""Trainer registry and factory."""

from dassl.utils import Registry, check_availability

__all__ = ["TRAINER_REGISTRY", "build_trainer"]

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY[cfg.TRAINER.NAME](cfg)``.

    An unknown name raises ``ValueError`` with a "do you mean" suggestion; the usual cause is that the
    module defining the trainer was not imported.
    """
    name = cfg.TRAINER.NAME
    check_availability(name, TRAINER_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading trainer: {name}")
    return TRAINER_REGISTRY.get(name)(cfg)
