"""Evaluators: accumulate predictions during ``test()`` and print the ``=> result`` block."""

from .build import EVALUATOR_REGISTRY, build_evaluator
from .evaluator import Classification, EvaluatorBase

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "EvaluatorBase", "Classification"]
