"""Optimizers and per-epoch learning-rate schedulers built from ``cfg.OPTIM``."""

from .lr_scheduler import (
    AVAI_SCHEDS,
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
)
from .optimizer import AVAI_OPTIMS, MAX_LR, build_optimizer, check_learning_rate, check_optim_cfg

__all__ = [
    "AVAI_OPTIMS",
    "AVAI_SCHEDS",
    "build_optimizer",
    "check_learning_rate",
    "check_optim_cfg",
    "MAX_LR",
    "build_lr_scheduler",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
]
