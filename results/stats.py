"""Summary statistics used by every table.

Standard deviations are *population* standard deviations (``numpy.std`` with ``ddof=0``), as the
ecosystem's ``parse_test_res.py`` prints them; the 95% confidence half-width is ``1.96 * std / sqrt(n)``.
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Mean, population std and count of a set of runs (one value per seed)."""

    mean: float
    std: float
    n: int


def summarize(values):
    """Summary of a non-empty sequence of numbers; ``None`` for an empty one (a gap, never a zero)."""
    values = [float(v) for v in values]
    if not values:
        return None
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return Summary(mean=mean, std=math.sqrt(variance), n=len(values))


def ci95(values):
    """Half-width of the normal 95% confidence interval of the mean: ``1.96 * std / sqrt(n)``."""
    summary = summarize(values)
    if summary is None:
        raise ValueError("ci95 needs at least one value")
    return 1.96 * summary.std / math.sqrt(summary.n)


def mean_or_none(values):
    """Plain mean of the values that are not ``None``; ``None`` when there are none."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
