"""Evaluation, re-exported from :mod:`effdl.measure.evaluation` where it lives (so that packages below ``train``
share it)."""

from effdl.measure.evaluation import evaluate

__all__ = ["evaluate"]
