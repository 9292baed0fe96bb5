"""Training engine: trainer registry and the TrainerBase -> SimpleTrainer -> TrainerX hierarchy."""

from .build import TRAINER_REGISTRY, build_trainer
from .trainer import SimpleTrainer, TrainerBase, TrainerX, resolve_device

__all__ = ["TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX", "resolve_device"]
