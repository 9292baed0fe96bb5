"""Metrics: the accuracy of trainers' loss summaries and the base-to-novel harmonic mean (no torch import)."""

from .accuracy import compute_accuracy
from .harmonic_mean import harmonic_mean

__all__ = ["compute_accuracy", "harmonic_mean"]
