"""Evaluators: accumulate predictions during ``test()`` and print the ``=> result`` block."""

from .build import EVALUATOR_REGISTRY, build_evaluator
from .evaluator import CalibrationBins, Classification, EvaluatorBase, auroc

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "EvaluatorBase", "Classification", "CalibrationBins", "auroc"]
