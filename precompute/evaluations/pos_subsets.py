"""POS subsets (IJ §3.4, Fig. 6): how much of the score noun/verb relations and the top POS relations carry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import faithfulness as fm
from core.store import Store, kind_of_method
from core.views.evidence import Bars, Lines
from precompute import options as opt
from precompute.evaluations.base import (
    Context,
    Evaluation,
    Output,
    Source,
    fmt,
    mean_row,
    positive,
    register,
    row,
)

NOUN_VERB = ("NOUN", "VERB")


@dataclass
class PosPair:
    """One pair's matrix with the POS tag and special flag of every token, and the score it explains."""

    matrix: np.ndarray
    pos_a: list
    pos_b: list
    special_a: list
    special_b: list
    total: float


def pos_pairs_from_model(ctx: Context, method: str, layer, steps, quadrature) -> list[PosPair]:
    """Explain the context's pairs with ``method`` and tag their tokens (``core.pos``)."""
    from core.pos import tag_texts_batch

    exps = ctx.explain(ctx.pairs, method, layer, steps, quadrature)
    tags = {side: tag_texts_batch([getattr(e, f"text_{side}") for e in exps], [getattr(e, f"tokens_{side}") for e in exps],
                                  [getattr(e, f"offsets_{side}") for e in exps],
                                  [getattr(e, f"special_{side}") for e in exps], getattr(ctx.dataset, f"lang_{side}"),
                                  prompt=[getattr(e, f"prompt_{side}") for e in exps])
            for side in ("a", "b")}
    return [PosPair(e.matrix, [t.pos for t in ta], [t.pos for t in tb], list(e.special_a), list(e.special_b), e.score)
            for e, ta, tb in zip(exps, tags["a"], tags["b"], strict=True)]


def pos_pairs_from_run(reader: Store, run_id: str, limit: int | None) -> tuple[dict, list[PosPair]]:
    """A stored run's first ``limit`` pairs with their stored relevances and POS tags (no model needed)."""
    info = reader.run_info(run_id)
    if info is None:
        raise ValueError(f"run {run_id!r} is not in {str(reader.root)!r} (see python -m precompute list)")
    if not kind_of_method(info["method"]).relevances:
        raise ValueError(f"run {run_id} is a scores-only ({info['method']}) run: it has no token pairs")
    preds = reader.predictions(run_id).sort_values("pair_id")
    if preds.empty:
        raise ValueError(f"run {run_id} has no stored pairs yet")
    if limit is not None:
        preds = preds.iloc[:limit]
    wanted = set(preds["pair_id"].astype(int))
    tp = reader.table("token_pairs", run_id=run_id)
    tp = tp[tp["pair_id"].isin(wanted)]
    out = []
    for pid, group in tp.groupby("pair_id", sort=True):
        n_a, n_b = int(group["i"].max()) + 1, int(group["j"].max()) + 1
        matrix = np.zeros((n_a, n_b))
        matrix[group["i"].to_numpy(int), group["j"].to_numpy(int)] = group["relevance"].to_numpy(float)
        first_a = group.drop_duplicates("i").set_index("i").sort_index()
        first_b = group.drop_duplicates("j").set_index("j").sort_index()
        pred = preds[preds["pair_id"] == pid].iloc[0]
        total = pred["explained_score"] if pd.notna(pred["explained_score"]) else matrix.sum()
        out.append(PosPair(matrix, [None if pd.isna(v) else v for v in first_a["pos_a"]],
                           [None if pd.isna(v) else v for v in first_b["pos_b"]],
                           first_a["special_a"].astype(bool).tolist(), first_b["special_b"].astype(bool).tolist(),
                           float(total)))
    return info, out


@register
class PosSubsets(Evaluation):
    kind = "pos-subsets"
    title = "POS subsets"
    order = 50
    help = "share of the score explained by noun/verb and top-10 POS relations (IJ §3.4)"
    description = ("Share of the explained score carried by noun/verb relations and by the ten POS relations most "
                   "frequent among the top 10%% attributions; from a stored run (--run) or computed.")
    caption = ("Share of the explained score carried by token pairs of given POS relations (signed: shares can "
               "exceed 100 % or be negative), and how often the top relations occur among the highest "
               "attributions (IJ Fig. 6; special tokens are left out of that ranking).")
    figures = (
        Bars(("share",), "label", "share of the explained score", "simlens_pos_subset_share", color="method"),
        Lines("share_top_n_relations", "n most frequent relations", "share of the explained score",
              "simlens_pos_top_n"),
        Bars(("relation_share",), "label", "share of the top attributions", "simlens_pos_relations", color="series"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        opt.add_methods(parser, "ij", "layer to attribute to (default: the method's)")
        parser.add_argument("--run", dest="run_id", default=None,
                            help="read relevances and POS from this stored run (no model needed)")
        parser.add_argument("--top-n", type=opt.positive_int, default=10, help="how many top relations (default 10)")

    @classmethod
    def reads_stored_run(cls, options: dict) -> bool:
        return options.get("run_id") is not None

    def compute(self, ctx: Context, methods: Sequence[str] | str | None = None, layer: int | None = None,
                steps: int | None = None, quadrature: str | None = None, run_id: str | None = None,
                fractions: Sequence[float] = (0.1, 0.25, 0.5), top_n: int = 10) -> Output:
        """Share of the explained score carried by noun/verb relations (NOUN-NOUN, NOUN-VERB, VERB-VERB) and by
        the ``top_n`` POS relations most frequent among the top 10 % of attributions (by |value|, special tokens
        left out of the ranking, their relevance kept in the total), the share reached by the n most frequent
        relations (n = 1, 2, ...), and each top relation's share of the top 10/25/50 % attributions.

        Relevances and POS come from the stored run ``run_id`` (no model needed), or are computed with the
        context's model (default method ``ij``) and tagged through ``core.pos``."""
        top_n = positive(top_n, "top_n")
        fractions = [float(f) for f in fractions]
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError("fractions must lie in (0, 1]")
        source = None
        if run_id is not None:
            with Store(ctx.store) as reader:
                info, items = pos_pairs_from_run(reader, run_id, ctx.limit)
                model_name = reader.models().set_index("model_id").loc[info["model_id"], "name"]
            source = Source(info["model_id"], model_name, info["dataset_key"], run_id)
            methods = [info["method"]]
            data = {info["method"]: (items, dict(layer=info["layer"], steps=info["steps"],
                                                 quadrature=info["quadrature"]))}
            n_pairs = len(items)
        else:
            if ctx.model_spec is None or ctx.dataset_spec is None:
                raise ValueError("give a model and a dataset, or --run to read a stored run")
            methods = ctx.methods(methods, ("ij",))
            data = {}
            for m in methods:
                s = ctx.settings(m, layer, steps, quadrature)
                data[m] = (pos_pairs_from_model(ctx, m, s.layer, s.steps, s.quadrature),
                           dict(layer=s.layer, steps=s.stored_steps, quadrature=s.quadrature))
            n_pairs = len(ctx.pairs)
        out, summary = [], []
        for m in methods:
            items, settings = data[m]
            rows, line = _method_rows(items, dict(method=m, **settings), fractions, top_n)
            out += rows
            summary.append(f"{m}: {line}")
        params = {"methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "run_id": run_id,
                  "fractions": fractions, "top_n": top_n, "limit": ctx.limit}
        return Output(out, params, summary, n_pairs=n_pairs, source=source)


def _method_rows(items: list[PosPair], common: dict, fractions: list[float], top_n: int) -> tuple[list[dict], str]:
    m = common["method"]
    counts = {f: Counter() for f in fractions}
    for it in items:
        for f in fractions:
            counts[f] += fm.relation_counts(it.matrix, it.pos_a, it.pos_b, f, it.special_a, it.special_b)
    ranked = [r for r, _ in counts[min(fractions)].most_common()]
    top = ranked[:top_n]
    noun_verb = fm.relations_within(NOUN_VERB)
    nv = [fm.pos_subset_share(it.matrix, it.pos_a, it.pos_b, noun_verb, it.total) for it in items]
    tt = [fm.pos_subset_share(it.matrix, it.pos_a, it.pos_b, top, it.total) for it in items]
    out = [mean_row("share", nv, series=f"{m} · noun/verb relations", label="NOUN/VERB relations",
                    extra={"relations": sorted(noun_verb)}, **common),
           mean_row("share", tt, series=f"{m} · top {top_n} relations", label=f"top {top_n} relations",
                    extra={"relations": top}, **common)]
    for n in range(1, len(ranked) + 1):
        shares = [fm.pos_subset_share(it.matrix, it.pos_a, it.pos_b, ranked[:n], it.total) for it in items]
        out.append(mean_row("share_top_n_relations", shares, series=m, x=float(n), label=ranked[n - 1], **common))
    for f in fractions:
        total = sum(counts[f].values())
        for rel in top:
            out.append(row("relation_share", counts[f][rel] / total if total else float("nan"),
                           series=f"{m} · top {f:.0%}", label=rel, x=f, n=total, **common))
    line = (f"noun/verb relations explain {fmt(np.nanmean(nv), 3)} ± {fmt(np.nanstd(nv), 3)}, "
            f"top {top_n} relations {fmt(np.nanmean(tt), 3)} ± {fmt(np.nanstd(tt), 3)} ({', '.join(top)})")
    return out, line
