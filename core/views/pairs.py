"""Pairs and their matrices: Example-page links, top token pairs, pair selectors, run comparisons and
failure tables (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from core.store.queries.comparisons import MATCHED_BY
from core.views.runs import is_na, order_runs, short_model, token_runs


def example_url(run_id: str, pair_id: int | None = None) -> str:
    """Relative URL of the Example page for one pair of a run (its first pair when ``pair_id`` is None)."""
    params: dict[str, Any] = {"run": str(run_id)}
    if pair_id is not None:
        params["pair"] = int(pair_id)
    return "Example?" + urlencode(params)


def with_links(df: pd.DataFrame, run_id: str | None = None, run_col: str = "run_id", pair_col: str = "pair_id",
               column: str = "open") -> pd.DataFrame:
    """The table with a first column of Example-page links (for ``st.column_config.LinkColumn``)."""
    if df.empty or pair_col not in df.columns:
        return df
    runs = [run_id] * len(df) if run_id is not None else df[run_col].tolist()
    links = [example_url(r, int(p)) for r, p in zip(runs, df[pair_col], strict=True)]
    return pd.concat([pd.DataFrame({column: links}, index=df.index), df], axis=1)


def top_token_pairs(long: pd.DataFrame, k: int = 10, include_special: bool = True) -> pd.DataFrame:
    """The ``k`` token pairs with the largest |relevance| of one matrix (long form)."""
    cols = [c for c in ("i", "j", "token_a", "token_b", "relevance", "pos_a", "pos_b") if c in long.columns]
    if long.empty:
        return pd.DataFrame(columns=[*cols, "share"])
    d = long
    if not include_special and "special_a" in d.columns:
        d = d[~d["special_a"].astype(bool) & ~d["special_b"].astype(bool)]
    total = float(np.abs(long["relevance"].astype(float)).sum()) or 1.0
    out = d.assign(_k=d["relevance"].abs()).sort_values(["_k", "i", "j"], ascending=[False, True, True]).head(k)
    out = out[cols].assign(share=out["relevance"].astype(float) / total)
    return out.reset_index(drop=True)


def explanation_frame(exp: Any) -> pd.DataFrame:
    """A :class:`core.Explanation` as a long matrix (i, j, token_a, token_b, relevance, special_a/b, prompt_a/b)."""
    m = np.asarray(exp.matrix, dtype=float)
    i, j = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
    sa = list(getattr(exp, "special_a", []) or [False] * m.shape[0])
    sb = list(getattr(exp, "special_b", []) or [False] * m.shape[1])
    pa = list(getattr(exp, "prompt_a", []) or [False] * m.shape[0])
    pb = list(getattr(exp, "prompt_b", []) or [False] * m.shape[1])
    return pd.DataFrame({
        "i": i.ravel(), "j": j.ravel(),
        "token_a": np.asarray(exp.tokens_a, dtype=object)[i.ravel()],
        "token_b": np.asarray(exp.tokens_b, dtype=object)[j.ravel()],
        "relevance": m.ravel(),
        "special_a": np.asarray(sa, dtype=bool)[i.ravel()],
        "special_b": np.asarray(sb, dtype=bool)[j.ravel()],
        "prompt_a": np.asarray(pa, dtype=bool)[i.ravel()],
        "prompt_b": np.asarray(pb, dtype=bool)[j.ravel()],
    })


def drop_prompt(long: pd.DataFrame) -> pd.DataFrame:
    """A long matrix without rows/columns of prompt tokens."""
    if long.empty or "prompt_a" not in long.columns:
        return long
    keep = ~long["prompt_a"].fillna(False).astype(bool) & ~long["prompt_b"].fillna(False).astype(bool)
    return long[keep].reset_index(drop=True)


def drop_special(long: pd.DataFrame) -> pd.DataFrame:
    """A long matrix without rows/columns of special tokens."""
    if long.empty or "special_a" not in long.columns:
        return long
    keep = ~long["special_a"].fillna(False).astype(bool) & ~long["special_b"].fillna(False).astype(bool)
    return long[keep].reset_index(drop=True)


def pair_options(pred: pd.DataFrame, sort: str = "pair") -> list[int]:
    """pair_ids of a run's predictions, by id or by the largest over/under-estimate first."""
    if pred.empty:
        return []
    if sort == "over":
        pred = pred.sort_values(["error", "pair_id"], ascending=[False, True], na_position="last")
    elif sort == "under":
        pred = pred.sort_values(["error", "pair_id"], ascending=[True, True], na_position="last")
    elif sort == "abs":
        pred = pred.assign(_k=pred["error"].abs()).sort_values(["_k", "pair_id"], ascending=[False, True],
                                                              na_position="last")
    else:
        pred = pred.sort_values("pair_id")
    return [int(p) for p in pred["pair_id"]]


def pair_option_labels(pred: pd.DataFrame, width: int = 70) -> dict[int, str]:
    """pair_id -> ``#3 · gold 1.20 · err +0.41 · The train to Lisbon …``."""
    out = {}
    for r in pred.to_dict("records"):
        s1 = str(r.get("sentence1") or "")
        s1 = s1 if len(s1) <= width else s1[: width - 1] + "…"
        gold = "" if is_na(r.get("gold")) else f" · gold {float(r['gold']):.2f}"
        err = "" if is_na(r.get("error")) else f" · err {float(r['error']):+.2f}"
        out[int(r["pair_id"])] = f"#{int(r['pair_id'])}{gold}{err} · {s1}"
    return out


def run_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two runs (``model: x → y``, ``layer: 0 → 3``, ...)."""
    out = []
    for field, show in (("model_name", short_model), ("dataset_key", str), ("method", str), ("layer", str),
                        ("steps", str), ("quadrature", str)):
        va, vb = a.get(field), b.get(field)
        if is_na(va) and is_na(vb):
            continue
        if is_na(va) or is_na(vb) or va != vb:
            name = "model" if field == "model_name" else "dataset" if field == "dataset_key" else field
            out.append(f"{name}: {show(va) if not is_na(va) else '–'} → {show(vb) if not is_na(vb) else '–'}")
    return out


def comparison_level(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """``word`` when two runs' tokenizers may differ (different models), else ``token``."""
    return "word" if a.get("model_id") != b.get("model_id") else "token"


def default_comparison(runs: pd.DataFrame) -> tuple[str, str] | None:
    """Two runs worth comparing: same dataset and model with different settings, else same dataset with
    different models, else any two. None with fewer than two runs."""
    r = order_runs(token_runs(runs))
    if len(r) < 2:
        r = order_runs(runs)
    if len(r) < 2:
        return None
    for keys in (["dataset_key", "model_id"], ["dataset_key"]):
        for _, g in r.groupby(keys, sort=False):
            if len(g) >= 2:
                return g["run_id"].iloc[0], g["run_id"].iloc[1]
    return r["run_id"].iloc[0], r["run_id"].iloc[1]


def comparison_caption(comp: Any, gold_band: Any = None) -> str:
    """What Compare's numbers are computed on, from a ``Store.comparability`` result: "Metrics, POS maps, token
    pairs and per-pair scores are computed on the 300 shared pairs of A's 1,379 and B's 300 (matched by …)"."""
    text = "Metrics, POS maps, token pairs and per-pair scores are computed " + comp.pairs_caption
    if gold_band is not None:
        text += ", within the gold band"
    if comp.matched_by and comp.matched_by != "dataset":
        text += f" (matched by {MATCHED_BY[comp.matched_by]})"
    return text + "."


def unmatched_text(tok: pd.DataFrame, level: str) -> str:
    """The note over Compare's token-pair table when some texts occur in one run only ("" when all match)."""
    if tok.empty or "match" not in tok.columns:
        return ""
    unmatched = int((tok["match"] != "both").sum())
    if not unmatched:
        return ""
    unit = "word" if level == "word" else "token"
    return (f"{unmatched} of these {len(tok)} {unit} pairs occur in only one run (column `match`): their texts "
            f"cannot be matched across the two tokenizers or languages, so their “difference” is one run's "
            f"value, not a change. Matched pairs are listed first.")


def metric_deltas(cmp: pd.DataFrame) -> pd.DataFrame:
    """``Store.compare_metrics`` with a relative change column."""
    if cmp.empty:
        return cmp
    rel = cmp["diff"] / cmp["run_a"].abs().replace(0, np.nan)
    return cmp.assign(rel_change=rel)


def quartile_runs(runs: pd.DataFrame, dataset_key: str, method: str | None = None,
                  prefer_layer: Any = None) -> pd.DataFrame:
    """One token run per model on ``dataset_key`` (optionally of one method): the one at ``prefer_layer`` if
    the model has it, then complete before partial, then the latest."""
    r = token_runs(runs)
    r = r[r["dataset_key"] == dataset_key]
    if method is not None:
        r = r[r["method"] == method]
    if r.empty:
        return r
    match = r["layer"].eq(prefer_layer).fillna(False) if prefer_layer is not None and not is_na(prefer_layer) \
        else pd.Series(False, index=r.index)
    r = r.assign(_match=match.astype(bool)).sort_values(["_match", "complete", "started_at"],
                                                         ascending=[False, False, False], kind="stable")
    return order_runs(r.drop_duplicates("model_id").drop(columns="_match"))


def signed_failures(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """``Store.failures`` rows that really are over- (error > 0) or under-estimates (error < 0)."""
    if df.empty:
        return df
    keep = df["error"] > 0 if kind == "over" else df["error"] < 0
    return df[keep].reset_index(drop=True)


def failures_table(df: pd.DataFrame) -> pd.DataFrame:
    """``Store.failures`` for display/download: no list column, rounded scores kept as numbers."""
    cols = ["pair_id", "gold", "gold_norm", "model_score", "error", "top_pairs_text", "sentence1", "sentence2"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)
