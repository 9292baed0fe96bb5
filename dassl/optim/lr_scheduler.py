"""``build_lr_scheduler``: per-epoch LR schedules from ``cfg.OPTIM``, with optional warm-up.

The warm-up wrappers reproduce Dassl 0.6.3's per-epoch learning rates exactly, e.g. sgd 2e-3, cosine,
MAX_EPOCH 5, one constant warm-up epoch at 1e-5 gives 1e-5, 2.0e-3, 1.81e-3, 1.31e-3, 6.9e-4 (the
cosine successor keeps ``T_max = MAX_EPOCH`` but only steps ``MAX_EPOCH - WARMUP_EPOCH`` times).
Unlike Dassl they work on current torch (no ``verbose`` argument), their ``state_dict()`` holds only
plain values, and ``load_state_dict()`` restores the successor bound to the live optimizer, so a
resumed run continues the exact schedule.
"""

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["AVAI_SCHEDS", "ConstantWarmupScheduler", "LinearWarmupScheduler", "build_lr_scheduler"]

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]
AVAI_WARMUP_TYPES = ["constant", "linear"]


class _BaseWarmupScheduler(LRScheduler):
    """Run a warm-up for ``warmup_epoch`` steps, then hand every ``step()`` to ``successor``."""

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def warmup_lrs(self):
        """Learning rates during warm-up (``self.last_epoch < self.warmup_epoch``)."""
        raise NotImplementedError

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self.warmup_lrs()

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self):
        """Own state plus the successor's ``state_dict()`` (plain values only, no objects)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        """Restore own state and the successor's (which stays bound to this scheduler's optimizer).

        Also accepts old Dassl states, where ``successor`` is a pickled scheduler object.
        """
        state = dict(state_dict)
        successor_state = state.pop("successor")
        if not isinstance(successor_state, dict):
            successor_state = successor_state.state_dict()
            successor_state.pop("verbose", None)
        self.__dict__.update(state)
        self.successor.load_state_dict(successor_state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """Warm up at the constant learning rate ``cons_lr``."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lrs(self):
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """Warm up linearly: ``min_lr`` at step 0, then ``base_lr * step / warmup_epoch``."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lrs(self):
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def _build_main_scheduler(optimizer, optim_cfg):
    name = optim_cfg.LR_SCHEDULER
    if name not in AVAI_SCHEDS:
        raise ValueError(f"OPTIM.LR_SCHEDULER must be one of {AVAI_SCHEDS}, but got {name!r}")
    stepsize = optim_cfg.STEPSIZE
    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"OPTIM.STEPSIZE for single_step must be an int (or a list of ints), got {stepsize!r}")
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    if name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"OPTIM.STEPSIZE for multi_step must be a list of epochs, got {stepsize!r}")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(optim_cfg.MAX_EPOCH))


def build_lr_scheduler(optimizer, optim_cfg):
    """Build the scheduler named by ``optim_cfg.LR_SCHEDULER`` (wrapped in a warm-up if WARMUP_EPOCH > 0).

    Step it once per epoch (trainers call ``self.update_lr()`` after the last batch).
    """
    scheduler = _build_main_scheduler(optimizer, optim_cfg)
    if optim_cfg.WARMUP_EPOCH <= 0:
        return scheduler

    warmup_type = optim_cfg.WARMUP_TYPE
    if warmup_type not in AVAI_WARMUP_TYPES:
        raise ValueError(f"OPTIM.WARMUP_TYPE must be one of {AVAI_WARMUP_TYPES}, but got {warmup_type!r}")
    if not optim_cfg.WARMUP_RECOUNT:
        scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
    if warmup_type == "constant":
        return ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
    return LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
