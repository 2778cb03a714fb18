"""Agreement: the Spearman rank correlation between two methods' matrices on the same pairs."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from core import faithfulness as fm
from core.views.evidence import PairMatrix, Table
from precompute import options as opt
from precompute.evaluations.base import DEFAULT_METHODS, Context, Evaluation, Output, fmt, mean_row, register


@register
class Agreement(Evaluation):
    kind = "agreement"
    title = "Method agreement"
    order = 60
    help = "Spearman rank agreement between methods' matrices"
    description = "Per pair, the Spearman correlation between the matrices of every two methods; mean and sd."
    caption = "Spearman rank correlation between two methods' matrices on the same pair, mean over pairs."
    figures = (
        PairMatrix("spearman", "simlens_agreement", title="Spearman"),
        Table(("spearman",), "simlens_agreement"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        opt.add_methods(parser, ",".join(DEFAULT_METHODS), "layer for every method (default: each method's)")

    def compute(self, ctx: Context, methods: Sequence[str] | str | None = None, layer: int | None = None,
                steps: int | None = None, quadrature: str | None = None) -> Output:
        """Spearman correlation between the matrices of every two methods on the same pair (all token pairs,
        and without special tokens), mean ± sd over pairs."""
        methods = ctx.methods(methods, DEFAULT_METHODS)
        if len(methods) < 2:
            raise ValueError("agreement needs at least two methods")
        pairs = ctx.pairs
        exps = {}
        for m in methods:
            s = ctx.settings(m, layer, steps, quadrature)
            exps[m] = ctx.explain(pairs, m, s.layer, s.steps, s.quadrature)
        out, summary = [], []
        for first, second in combinations(methods, 2):
            full, words = [], []
            for e1, e2 in zip(exps[first], exps[second], strict=True):
                full.append(fm.matrix_rank_agreement(e1.matrix, e2.matrix))
                ka, kb = ~np.asarray(e1.special_a, bool), ~np.asarray(e1.special_b, bool)
                words.append(fm.matrix_rank_agreement(e1.matrix[np.ix_(ka, kb)], e2.matrix[np.ix_(ka, kb)]))
            label = f"{first} vs {second}"
            extra = {"other": second, "layers": [exps[first][0].layer, exps[second][0].layer]}
            out.append(mean_row("spearman", full, method=first, series="all tokens", label=label, extra=extra))
            out.append(mean_row("spearman", words, method=first, series="without special tokens", label=label,
                                extra=extra))
            summary.append(f"{label:>22}: Spearman {fmt(np.nanmean(full), 3)} ± {fmt(np.nanstd(full), 3)} "
                           f"(without special tokens {fmt(np.nanmean(words), 3)})")
        params = {"methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "limit": ctx.limit}
        return Output(out, params, summary)
