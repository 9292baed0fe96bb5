"""Training engine: trainer registry and the TrainerBase -> SimpleTrainer -> TrainerX hierarchy.

The names below are imported on first use (``from dassl.engine import TrainerX`` works as in Dassl), so that
``dassl.engine.run_dir`` — what result parsers and sweep runners read — imports without torch.
"""

__all__ = ["TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX", "resolve_device"]
_HOMES = {"TRAINER_REGISTRY": "build", "build_trainer": "build", "TrainerBase": "trainer", "SimpleTrainer": "trainer",
          "TrainerX": "trainer", "resolve_device": "trainer"}


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
