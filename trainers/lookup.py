"""What a trainer class declares, looked up by trainer name. The name may be one the registry does not know (a
trainer of another codebase, run with ``--train-py``, or an output tree written by other code)."""
from dassl.engine import TRAINER_REGISTRY


def trainer_class(name):
    """The registered class of trainer ``name``, or None."""
    return TRAINER_REGISTRY.get(name) if name in TRAINER_REGISTRY else None


def learns(name):
    """Whether trainer ``name`` learns anything (its class's ``LEARNS``); an unregistered trainer learns, as every
    trainer does by default. The "training" runs of one that does not (ZeroshotCLIP) are evaluations."""
    return getattr(trainer_class(name), "LEARNS", True)
