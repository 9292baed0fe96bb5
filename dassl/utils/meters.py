"""Running averages of scalars (losses, timings)."""

from collections import defaultdict

import torch

__all__ = ["AverageMeter", "MetricMeter"]


class AverageMeter:
    """Track the latest value and the running (or exponential moving) average of a scalar.

    Args:
        ema (bool): if True, ``avg`` is an exponential moving average (0.9 old, 0.1 new).
    """

    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        """Add ``val`` observed ``n`` times (tensors are converted with ``.item()``)."""
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        if self.ema:
            self.avg = self.avg * 0.9 + self.val * 0.1
        else:
            self.avg = self.sum / self.count


class MetricMeter:
    """A named group of :class:`AverageMeter`; ``str()`` gives ``"loss 1.8594 (2.2221) acc …"``."""

    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        """Update one meter per key of ``input_dict`` (values: numbers or 0-d tensors)."""
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError(
                f"MetricMeter.update() expects a dict of name -> number, got {type(input_dict).__name__}; "
                "forward_backward() must return e.g. {'loss': loss.item()}"
            )
        for name, value in input_dict.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.meters[name].update(value)

    def __str__(self):
        return self.delimiter.join(
            f"{name} {meter.val:.4f} ({meter.avg:.4f})" for name, meter in self.meters.items()
        )
