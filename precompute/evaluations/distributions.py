"""Distributions (IJ Figs. 3 and 5): how token-pair attributions spread, per layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core import faithfulness as fm
from core.views.evidence import Bars, Histogram, Lines, Side, Table
from precompute import options as opt
from precompute.evaluations.base import Context, Evaluation, Output, fmt, mean_row, positive, register, row

TOPK_GRID = np.round(np.linspace(0.0, 1.0, 101), 10)


@register
class Distributions(Evaluation):
    kind = "distributions"
    title = "Distributions"
    order = 40
    help = "attribution histograms, negative share, top-k%% share (IJ Figs. 3, 5)"
    description = ("Histogram of token-pair attributions per layer with the share that is negative, and the "
                   "cumulative share of the score explained by the top-k%% attributions by |value|.")
    caption = ("Token-pair attributions per layer: their distribution (shared bins; the edge bins hold the "
               "outer 0.5 %), the share that is negative, and the cumulative share of the explained score reached "
               "by the top-k % of pairs sorted by |value| (mean ± sd over pairs).")
    figures = (
        Histogram("density", "attribution", "simlens_attribution_histograms"),
        Side((Bars(("negative_share",), "layer", "share of negative pairs", "simlens_negative_share",
                   color="method", prefix="layer "),
              Bars(("top5_share",), "layer", "share of score in the top 5 %", "simlens_top5_share", color="method",
                   prefix="layer "))),
        Lines("topk_share", "fraction of token pairs (by |value|)", "share of the explained score",
              "simlens_topk_share"),
        Table(("negative_share", "top5_share", "fraction_for_sd_below"), "simlens_distributions_summary"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        parser.add_argument("--methods", type=opt.names, default=None, help="comma-separated methods (default ij)")
        parser.add_argument("--layers", type=opt.ints, default=None,
                            help="comma-separated layers (default 0, L/2, L-1, L)")
        opt.add_settings(parser, layer=False, tolerance=False)
        parser.add_argument("--bins", type=opt.positive_int, default=60, help="histogram bins (default 60)")

    def compute(self, ctx: Context, methods: Sequence[str] | str | None = None, layers: Sequence[int] | None = None,
                steps: int | str | None = None, quadrature: str | None = None, bins: int = 60) -> Output:
        """Per method (default ``ij``) and layer (default 0, L/2, L-1, L): a histogram of all token-pair
        attributions (shared bins across layers, 0.5-99.5 % range, outliers in the edge bins), the share of
        negative attributions (per pair, mean ± sd), the mean ± sd share of the explained score reached by the
        top-k % of attributions by |value| (k = 0..100), the top-5 % share, and the fraction of pairs needed
        before the sd of that share stays below 5 % / 2 %."""
        methods = ctx.methods(methods, ("ij",))
        layers = ctx.layers(layers, ctx.common_layers(with_output=True))
        bins = positive(bins, "bins")
        pairs = ctx.pairs
        out, summary = [], []
        for m in methods:
            values_by_layer = {}
            for layer in layers:
                s = ctx.settings(m, layer, steps, quadrature)
                exps = ctx.explain(pairs, m, layer, s.steps, s.quadrature)
                common = dict(method=m, layer=layer, steps=s.stored_steps, quadrature=s.quadrature)
                values = np.concatenate([e.matrix.ravel() for e in exps])
                values_by_layer[layer] = (values, common)
                neg = [fm.negative_share(e.matrix) for e in exps]
                out.append(mean_row("negative_share", neg, series=m, x=float(layer),
                                    extra={"pooled": fm.negative_share(values)}, **common))
                shares = np.stack([fm.topk_share(e.matrix, TOPK_GRID, total=e.score) for e in exps])
                for k, f in enumerate(TOPK_GRID):
                    out.append(mean_row("topk_share", shares[:, k], series=f"{m} · layer {layer}", x=float(f), **common))
                top5 = np.array([fm.topk_share(e.matrix, [0.05], total=e.score)[0] for e in exps])
                out.append(mean_row("top5_share", top5, series=m, x=float(layer), **common))
                out += _sd_thresholds(shares, f"{m} · layer {layer}", len(exps), common)
                summary.append(f"{m} layer {layer:>2}: negative {fmt(np.mean(neg), 3)} ± {fmt(np.std(neg), 3)}, "
                               f"top-5% share {fmt(np.nanmean(top5), 3)} ± {fmt(np.nanstd(top5), 3)}")
            out += _histograms(m, values_by_layer, bins)
        params = {"methods": methods, "layers": layers, "steps": steps, "quadrature": quadrature, "bins": bins,
                  "limit": ctx.limit}
        return Output(out, params, summary)


def _sd_thresholds(shares: np.ndarray, series: str, n: int, common: dict) -> list[dict]:
    """The fraction of the top-k grid from which the sd of the share stays below 5 % and 2 %."""
    sds = np.nanstd(shares, axis=0)
    out = []
    for threshold in (0.05, 0.02):
        above = np.flatnonzero(~(sds < threshold))
        first = 0.0 if above.size == 0 else (float(TOPK_GRID[above[-1] + 1]) if above[-1] + 1 < len(TOPK_GRID)
                                              else float("nan"))
        out.append(row("fraction_for_sd_below", first, series=series, label=f"{threshold:.0%}", n=n, **common))
    return out


def _histograms(method: str, values_by_layer: dict, bins: int) -> list[dict]:
    """One density row per bin and layer, on bins shared by the method's layers (0.5-99.5 % of all values)."""
    pooled = np.concatenate([v for v, _ in values_by_layer.values()])
    lo, hi = np.quantile(pooled, [0.005, 0.995]) if pooled.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    width = float(edges[1] - edges[0])
    out = []
    for layer, (values, common) in values_by_layer.items():
        counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
        density = counts / (counts.sum() * width) if counts.sum() else counts.astype(float)
        for c, d, left in zip(counts, density, edges[:-1], strict=True):
            out.append(row("density", d, series=f"{method} · layer {layer}", x=float(left + width / 2),
                           n=int(values.size), extra={"count": int(c), "width": width}, **common))
    return out
