"""SimLens core: attribution methods, model adapters, alignment, store and metrics."""

from core.explain import Explanation, SentenceFactors, compute_factors, explain, explain_pairs
from core.methods import METHODS, get_method
from core.models import DEFAULT_MODEL, SimilarityModel, load_model

__all__ = [
    "DEFAULT_MODEL",
    "METHODS",
    "Explanation",
    "SentenceFactors",
    "SimilarityModel",
    "compute_factors",
    "explain",
    "explain_pairs",
    "get_method",
    "load_model",
]
