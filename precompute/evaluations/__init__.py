"""Faithfulness evaluations, one per module of this package (found automatically: a new evaluation is one new
file). Each registers an :class:`~precompute.evaluations.base.Evaluation` subclass: its kind is a
``python -m precompute`` verb and a kind of the store's ``evaluations`` table, and its title, caption and
figures are a section of the Faithfulness page.

==============  ========================================================================================
convergence     |sum(A) - score| of integrated Jacobians against steps, per layer and quadrature (IJ Fig. 2)
conservation    BiLRP relevance sum against the score, with and without biases, and H x P (BiLRP Fig. 6)
perturbation    perturbation curves and AUPC per method and a random ranking, Wilcoxon tests (BiLRP §4.3)
distributions   histograms and negative share per layer, top-k% cumulative share (IJ Figs. 3 and 5)
pos-subsets     share of the score explained by noun/verb and top-ten POS relations (IJ §3.4, Fig. 6)
agreement       Spearman correlation between methods' matrices on the same pairs
ground-truth    noun-counting model and ACS of each method with the true interactions (BiLRP §4.3, Fig. 1)
table1          Spearman of cosine and dot product of a model's embeddings (IJ Table 1); ``finetune`` ends with it
==============  ========================================================================================

``evaluate("perturbation", model, dataset, store, limit=100)`` runs one from Python; pass one
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
    register,
    verbs,
)

__all__ = ["EVALUATIONS", "Context", "Evaluation", "EvaluationResult", "ExplanationCache", "Output", "Source",
           "by_kind", "discover", "evaluate", "get_evaluation", "kinds", "register", "verbs"]


def discover() -> None:
    """Import every module of this package (each registers its evaluation)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


discover()
