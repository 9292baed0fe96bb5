"""Metrics used by trainers' loss summaries."""

from .accuracy import compute_accuracy

__all__ = ["compute_accuracy"]
