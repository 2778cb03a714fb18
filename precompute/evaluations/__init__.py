"""Faithfulness evaluations, one per module of this package (found automatically: a new evaluation is one new
file). Each registers an :class:`~precompute.evaluations.base.Evaluation` subclass: its kind is a
``python -m precompute`` verb and a kind of the store's ``evaluations`` table, and its title, caption and
figures are a section of the Faithfulness page.

``python -m precompute schema`` lists the registered ones (:func:`kinds_markdown`). ``evaluate("perturbation", model, dataset, store, limit=100)`` runs one from Python; pass one
:class:`ExplanationCache` to several calls to share their explanations.
"""

import importlib
import pkgutil

from precompute.evaluations.base import (
    EVALUATIONS,
    Context,
    Evaluation,
    EvaluationResult,
    ExplanationCache,
    Output,
    Source,
    by_kind,
    evaluate,
    get_evaluation,
    kinds,
    kinds_markdown,
    register,
    verbs,
)

__all__ = ["EVALUATIONS", "Context", "Evaluation", "EvaluationResult", "ExplanationCache", "Output", "Source",
           "by_kind", "discover", "evaluate", "get_evaluation", "kinds", "kinds_markdown", "register", "verbs"]


def discover() -> None:
    """Import every module of this package (each registers its evaluation)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


discover()
