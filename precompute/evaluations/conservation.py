"""Conservation (BiLRP App. C, Fig. 6): the relevance sum against the score it explains, with and without biases."""

from __future__ import annotations

import numpy as np

from core import faithfulness as fm
from core.views.evidence import Scatter, Table
from precompute import options as opt
from precompute.evaluations.base import Context, Evaluation, Output, fmt, mean_row, median, register, row


def without_biases(model):
    """A copy of ``model`` whose encoder has every bias (linear layers, LayerNorm shifts) set to zero: BiLRP
    conserves its relevance exactly (BiLRP App. C, Fig. 6, right). The original is not changed."""
    import copy
    import dataclasses

    import torch

    encoder = copy.deepcopy(model.encoder)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    return dataclasses.replace(model, encoder=encoder, name=f"{model.name} (no biases)")


@register
class Conservation(Evaluation):
    kind = "conservation"
    title = "Conservation"
    order = 20
    help = "BiLRP relevance sum vs score, with/without biases, and HxP (BiLRP Fig. 6)"
    description = ("Relevance sum against the explained score for BiLRP, BiLRP on a copy of the model with all "
                   "biases zeroed (exact conservation) and Hessian x Product.")
    caption = ("Sum of the relevance matrix against the score it explains, per pair. BiLRP on a copy of the model "
               "with all biases set to zero conserves exactly (the identity line); the gap of BiLRP with biases is "
               "the relevance biases absorb; H×P is not conservative.")
    figures = (
        Scatter("relevance_sum", "explained score", "sum of relevance", "simlens_conservation"),
        Table(("abs_residual", "rel_residual", "pearson_r", "slope"), "simlens_conservation_summary"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        parser.add_argument("--layer", type=opt.layer_number, default=0, help="layer to attribute to (default 0)")

    def compute(self, ctx: Context, layer: int = 0) -> Output:
        """Per pair, the relevance sum against the explained score for BiLRP, BiLRP without biases and H x P;
        plus mean |residual|, relative residual, Pearson r and the least-squares slope through the origin."""
        layer = ctx.model.check_layer(layer)
        pairs = ctx.pairs
        pair_ids = ctx.rows["pair_id"].astype(int).tolist()
        variants = [("bilrp", ctx.model, "bilrp"), ("bilrp (no biases)", without_biases(ctx.model), "bilrp"),
                    ("hxp", ctx.model, "hxp")]
        out, summary = [], []
        for label, variant, method in variants:
            exps = ctx.explain(pairs, method, layer, model=variant)
            scores = np.array([e.score for e in exps])
            sums = np.array([float(e.matrix.sum()) for e in exps])
            absolute, relative = (list(v) for v in zip(*(fm.conservation_error(e.matrix, e.score) for e in exps),
                                                         strict=True))
            common = dict(method=method, layer=layer, series=label)
            for pid, s, t in zip(pair_ids, scores, sums, strict=True):
                out.append(row("relevance_sum", t, x=float(s), n=1, extra={"pair_id": pid}, **common))
            out.append(mean_row("abs_residual", absolute, extra=median(absolute), **common))
            out.append(mean_row("rel_residual", relative, extra=median(relative), **common))
            r = float(np.corrcoef(scores, sums)[0, 1]) if len(pairs) > 1 and np.ptp(scores) > 0 and np.ptp(sums) > 0 \
                else float("nan")
            slope = float(scores @ sums / (scores @ scores)) if scores @ scores > 0 else float("nan")
            out.append(row("pearson_r", r, n=len(pairs), **common))
            out.append(row("slope", slope, n=len(pairs), **common))
            summary.append(f"{label:>18}: |score - sum| {fmt(np.mean(absolute))}, relative {fmt(np.mean(relative))}, "
                           f"r {fmt(r)}, slope {fmt(slope)}")
        return Output(out, {"layer": layer, "limit": ctx.limit}, summary)
