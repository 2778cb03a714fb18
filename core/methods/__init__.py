"""Attribution methods, one class each, found by name in ``METHODS``."""

from core.methods import embedding, gradient, integrated_jacobians  # noqa: F401  (registers the methods)
from core.methods.base import METHODS, AttributionMethod, FactorBatch, get_method, register

__all__ = ["METHODS", "AttributionMethod", "FactorBatch", "get_method", "register"]
