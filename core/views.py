"""What the dashboard pages show, computed from store query results.

The first part is pure (pandas in, pandas/str out; no Streamlit, no SQL, no torch) and unit-tested:
store location and state, run labels and tables, filter options, heat-map cell lists, matrix
shaping, comparisons, and the first-launch demo-store bootstrap (:func:`build_demo_store`, which
imports the model code only when called). The second part, at the bottom, is the
thin Streamlit glue every page shares (router, cached store queries, the "no store" help and first-launch
bootstrap, download buttons).
Charts live in :mod:`core.charts`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from core.charts import NULL_POS, chart_png, chart_svg, table_csv, table_parquet
from core.store import Store, StoreError, latest_snapshot, parse_location

ROOT = Path(__file__).resolve().parents[1]
STORE_ENV = "SIMLENS_STORE"
AUTO_DEMO_ENV = "SIMLENS_AUTO_DEMO"
DEFAULT_STORE = "store"
DEMO_DATASET = ROOT / "data" / "demo_pairs.tsv"
DEMO_MODEL = "all-MiniLM-L6-v2"
ALL = "All"
OPEN_END = 1e9  # an error band end at the slider's limit means "no limit"


# --------------------------------------------------------------------------------------------------
# store location and state
# --------------------------------------------------------------------------------------------------


def store_location(env: Mapping[str, str] | None = None) -> tuple[Path | str, bool]:
    """(store path, whether it was set explicitly): ``$SIMLENS_STORE`` (a folder, or a DuckLake connection
    string such as ``ducklake:postgres:dbname=simlens host=db data_path=s3://bucket/simlens/``), else
    ``./store``."""
    env = os.environ if env is None else env
    value = (env.get(STORE_ENV) or "").strip()
    if value:
        return (value if parse_location(value).root is None else Path(value).expanduser()), True
    return Path(DEFAULT_STORE), False


@dataclass(frozen=True)
class StoreState:
    """``state``: ``ok`` (has runs), ``empty`` (a store without runs), ``missing`` (no such directory, or an
    empty one) or ``invalid`` (not a store / unreadable); ``message`` says why; ``n_runs`` how many runs."""

    state: str
    message: str
    n_runs: int = 0


def store_state(path: str | os.PathLike, opener: Callable[[str], Store] | None = None) -> StoreState:
    """Classify the store at ``path`` without raising (``opener``: e.g. a cached ``Store`` factory)."""
    root = parse_location(path).root or str(path)
    if isinstance(root, Path) and not root.exists():
        return StoreState("missing", f"{str(root)!r} does not exist")
    if isinstance(root, Path) and root.is_dir() and not any(True for _ in root.iterdir()):
        return StoreState("missing", f"{str(root)!r} is an empty directory")
    try:
        store = (opener or Store)(str(root))
        runs = store.runs()
    except StoreError as exc:
        return StoreState("invalid", str(exc))
    except Exception as exc:  # noqa: BLE001  (a corrupt file: say what happened, never a trace)
        return StoreState("invalid", f"{type(exc).__name__}: {exc}")
    if runs.empty:
        return StoreState("empty", f"{str(root)!r} is a SimLens store without runs")
    return StoreState("ok", "", len(runs))


def should_autobuild(state: StoreState | str, explicit: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether to build the demo store without asking: on a first launch (default ``./store`` missing or
    without runs), unless ``SIMLENS_AUTO_DEMO=0``; ``SIMLENS_AUTO_DEMO=1`` also allows it for an explicit
    ``SIMLENS_STORE``. An unreadable store is never overwritten."""
    env = os.environ if env is None else env
    name = state.state if isinstance(state, StoreState) else str(state)
    flag = (env.get(AUTO_DEMO_ENV) or "").strip().lower()
    if flag in ("0", "false", "no", "off") or name not in ("missing", "empty"):
        return False
    return flag in ("1", "true", "yes", "on") or not explicit


def help_markdown(path: str | os.PathLike, state: StoreState) -> str:
    """What to run when the store cannot be shown (Markdown)."""
    p = str(path)
    store_arg = "" if p == DEFAULT_STORE else f" --store {p}"
    if state.state == "invalid":
        head = f"**The store at `{p}` cannot be read.** {state.message}."
        fix = (f"Point `{STORE_ENV}` at a SimLens store (a directory made by `python -m precompute`), or "
               f"create a new one:")
    else:
        head = f"**No audit results yet** in `{p}` ({state.message})."
        fix = "Fill the store with a precompute run, then reload this page:"
    return (
        f"{head}\n\n{fix}\n\n"
        "```bash\n"
        f".venv/bin/python -m precompute attribute --dataset stsb:test{store_arg}\n"
        f".venv/bin/python -m precompute predict --dataset stsb:test{store_arg}\n"
        f".venv/bin/python -m precompute attribute --dataset data/demo_pairs.tsv --lang en --gold-range 0,5"
        f" --limit 10{store_arg}\n"
        "```\n\n"
        f"`python -m precompute list{store_arg}` shows what a store holds. The dashboard reads the store named by "
        f"`{STORE_ENV}` (default `./{DEFAULT_STORE}`)."
    )


def store_fingerprint(path: str | os.PathLike) -> tuple:
    """A token that changes whenever a writer commits: the store's newest snapshot id (``()`` when the store
    cannot be read)."""
    snap = latest_snapshot(str(path))
    return () if snap is None else (snap,)


# --------------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------------


def short_model(name: Any) -> str:
    """A model name for labels: a folder path shows its last component."""
    if is_na(name):
        return "?"
    return str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or str(name)


def is_na(v: Any) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def display_status(row: Mapping[str, Any]) -> str:
    """running / failed / partial (finished, but chunks of other shards are missing) / done."""
    status = str(row.get("status") or "")
    if status == "done" and not is_na(row.get("complete")) and not bool(row.get("complete")):
        return "partial"
    return status or "?"


def setting_text(row: Mapping[str, Any]) -> str:
    """``bilrp L0`` / ``ij L0 · 64 steps`` / ``predict``."""
    method = str(row.get("method"))
    if method == "predict":
        return "predict"
    text = method
    if not is_na(row.get("layer")):
        text += f" L{int(row['layer'])}"
    if not is_na(row.get("steps")):
        text += f" · {int(row['steps'])} steps"
        q = row.get("quadrature")
        if not is_na(q) and q not in ("gauss-legendre",):
            text += f" ({q})"
    return text


def run_label(row: Mapping[str, Any]) -> str:
    """One-line description of a run for selectors."""
    status = display_status(row)
    extra = "" if status == "done" else f" · {status}"
    return (f"{short_model(row.get('model_name') or row.get('model_id'))} · {setting_text(row)} · "
            f"{row.get('dataset_key')}{extra} · {str(row.get('run_id'))[:8]}")


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """run_id -> label, in the frame's order."""
    return {r["run_id"]: run_label(r) for r in runs.to_dict("records")}


def token_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that stored token pairs (every method except ``predict``)."""
    return runs[runs["method"] != "predict"] if len(runs) else runs


def order_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs in a stable order for selectors: dataset, model, method, layer, steps."""
    if runs.empty:
        return runs
    key = runs.assign(_m=runs["model_name"].map(short_model), _p=runs["method"].eq("predict"))
    key = key.sort_values(["dataset_key", "_m", "_p", "method", "layer", "steps", "run_id"], kind="stable",
                          na_position="first")
    return runs.loc[key.index].reset_index(drop=True)


def runs_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table of the Overview page."""
    cols = ["status", "model", "dataset", "setting", "method", "layer", "steps", "progress", "chunks", "n_pairs",
            "spearman", "pearson", "mse", "pairs_per_s", "seconds", "started_at", "device", "run_id", "error_message"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame({
        "status": [display_status(r) for r in runs.to_dict("records")],
        "model": runs["model_name"].map(short_model),
        "dataset": runs["dataset_key"],
        "setting": [setting_text(r) for r in runs.to_dict("records")],
        "method": runs["method"],
        "layer": runs["layer"],
        "steps": runs["steps"],
        "progress": (runs["chunks_present"].astype(float) / runs["n_chunks"].replace(0, np.nan).astype(float)).fillna(0.0),
        "chunks": runs["chunks_present"].astype(int).astype(str) + " / " + runs["n_chunks"].astype("Int64").astype(str),
        "n_pairs": runs["n_pairs"],
        "spearman": runs["spearman"].astype(float),
        "pearson": runs["pearson"].astype(float),
        "mse": runs["mse"].astype(float),
        "pairs_per_s": runs["pairs_per_s"].astype(float),
        "seconds": runs["seconds"].astype(float),
        "started_at": runs["started_at"],
        "device": runs["device"],
        "run_id": runs["run_id"],
        "error_message": runs["error_message"],
    })
    return out[cols].reset_index(drop=True)


def status_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Number of runs per display status (done, partial, running, failed)."""
    counts = {"done": 0, "partial": 0, "running": 0, "failed": 0}
    for r in runs.to_dict("records"):
        s = display_status(r)
        counts[s] = counts.get(s, 0) + 1
    return counts


def metrics_pivot(metrics: pd.DataFrame, metric: str = "spearman") -> pd.DataFrame:
    """Models (rows) x datasets (columns) of one metric from ``Store.metrics_table()``."""
    if metrics.empty:
        return pd.DataFrame()
    m = metrics.assign(model=metrics["model_name"].map(short_model))
    out = m.pivot_table(index="model", columns="dataset_key", values=metric, aggfunc="first")
    out.columns.name = None
    return out.sort_index()


def fmt_metric(value: Any, metric: str = "spearman") -> str:
    """How the pages print a metric: correlations x100 with 2 decimals, MSE with 4."""
    if is_na(value):
        return "–"
    return f"{float(value):.4f}" if metric == "mse" else f"{float(value):.2f}"


def fmt_signed(value: Any, digits: int = 4) -> str:
    """A signed value with ``digits`` significant digits (``+0.0123``, ``−``-free ``0`` for zero)."""
    if is_na(value):
        return "–"
    v = float(value)
    return "0" if v == 0 else f"{v:+.{digits}g}"


# --------------------------------------------------------------------------------------------------
# datasets and filters
# --------------------------------------------------------------------------------------------------


def languages(lang_a: Any, lang_b: Any) -> str:
    """``en`` for a monolingual dataset, ``en-de`` for a cross-lingual one, ``?`` when unknown."""
    a = "?" if is_na(lang_a) else str(lang_a)
    b = "?" if is_na(lang_b) else str(lang_b)
    return a if a == b else f"{a}-{b}"


def dataset_table(datasets: pd.DataFrame) -> pd.DataFrame:
    """Datasets with a ``languages`` column and a selector ``label``."""
    cols = ["dataset_key", "name", "split", "languages", "n_pairs", "gold_min", "gold_max", "source", "label"]
    if datasets.empty:
        return pd.DataFrame(columns=cols)
    d = datasets.copy()
    d["languages"] = [languages(a, b) for a, b in zip(d["lang_a"], d["lang_b"], strict=True)]
    d["label"] = [f"{k} ({lg}, {s}, {int(n) if not is_na(n) else '?'} pairs)"
                  for k, lg, s, n in zip(d["dataset_key"], d["languages"], d["split"], d["n_pairs"], strict=True)]
    return d[cols].reset_index(drop=True)


def filter_options(datasets: pd.DataFrame) -> dict[str, list[str]]:
    """Choices of the corpus / split / language filters (each starts with ``All``)."""
    d = dataset_table(datasets)
    return {c: [ALL, *sorted({str(v) for v in d[c].dropna()})] for c in ("name", "split", "languages")}


def filter_datasets(datasets: pd.DataFrame, name: str | None = None, split: str | None = None,
                    langs: str | None = None) -> list[str]:
    """dataset_keys matching the filters (``None``/``All``: any)."""
    d = dataset_table(datasets)
    for col, want in (("name", name), ("split", split), ("languages", langs)):
        if want not in (None, ALL):
            d = d[d[col].astype(str) == str(want)]
    return d["dataset_key"].tolist()


def filter_runs(runs: pd.DataFrame, dataset_keys: Iterable[str] | None = None, with_tokens: bool = False,
                methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Runs on the given datasets (None: all), optionally only those with token pairs / given methods."""
    out = runs
    if dataset_keys is not None:
        out = out[out["dataset_key"].isin(list(dataset_keys))]
    if with_tokens:
        out = token_runs(out)
    if methods is not None:
        out = out[out["method"].isin(list(methods))]
    return order_runs(out)


def band_arg(band: Sequence[float] | None, full: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float] | None:
    """A slider band as a store filter: None when it covers the whole range; an end at the range's limit is
    open (so a gold band 0.6-1.0 keeps gold 1.0, and an error band -1..0 keeps errors below -1)."""
    if band is None:
        return None
    lo, hi = float(band[0]), float(band[1])
    if lo <= full[0] and hi >= full[1]:
        return None
    return (-OPEN_END if lo <= full[0] else lo), (OPEN_END if hi >= full[1] else hi)


def gold_band_text(band: Sequence[float], gold_min: float | None, gold_max: float | None) -> str:
    """``gold 0.60-1.00 (3.00-5.00 on the dataset's 0-5 scale)``."""
    lo, hi = float(band[0]), float(band[1])
    text = f"gold {lo:.2f}–{hi:.2f} (0–1)"
    if gold_min is not None and gold_max is not None and not is_na(gold_min) and not is_na(gold_max):
        span = float(gold_max) - float(gold_min)
        text += f" = {gold_min + lo * span:.2f}–{gold_min + hi * span:.2f} on the {gold_min:g}–{gold_max:g} scale"
    return text


# --------------------------------------------------------------------------------------------------
# POS heat-map cells
# --------------------------------------------------------------------------------------------------

CELL_SEP = " × "


def pos_label(pos: Any) -> str:
    return NULL_POS if is_na(pos) else str(pos)


def pos_value(label: str) -> str | None:
    """Inverse of :func:`pos_label` (``∅`` -> None)."""
    return None if label == NULL_POS else label


def cell_label(pos_a: Any, pos_b: Any) -> str:
    return f"{pos_label(pos_a)}{CELL_SEP}{pos_label(pos_b)}"


def parse_cell(label: str | None) -> tuple[str | None, str | None] | None:
    """``"NOUN × VERB"`` -> ("NOUN", "VERB"); None for no/invalid label."""
    if not label or CELL_SEP not in label:
        return None
    a, b = label.split(CELL_SEP, 1)
    return pos_value(a), pos_value(b)


def cell_options(heat: pd.DataFrame, value: str = "relevance_norm") -> list[str]:
    """Cell labels, strongest |value| first (the fallback selector of the clickable heatmap)."""
    if heat.empty:
        return []
    order = heat.assign(_k=heat[value].abs()).sort_values(["_k", "pos_a", "pos_b"], ascending=[False, True, True],
                                                          kind="stable", na_position="last")
    return [cell_label(a, b) for a, b in zip(order["pos_a"], order["pos_b"], strict=True)]


def selected_cell(event: Any, name: str = "cell") -> tuple[str | None, str | None] | None:
    """The (pos_a, pos_b) clicked in a chart (``st.altair_chart(..., on_select="rerun")`` state), or None."""
    if event is None:
        return None
    sel = event.get("selection") if isinstance(event, Mapping) else getattr(event, "selection", None)
    if sel is None:
        return None
    points = sel.get(name) if isinstance(sel, Mapping) else getattr(sel, name, None)
    if isinstance(points, Mapping):
        points = points.get("values", [points] if "pos_a" in points else [])
    if not points:
        return None
    p = points[0]
    if not isinstance(p, Mapping) or "pos_a" not in p or "pos_b" not in p:
        return None
    return pos_value(str(p["pos_a"])), pos_value(str(p["pos_b"]))


def cell_row(heat: pd.DataFrame, cell: tuple[str | None, str | None]) -> dict[str, Any] | None:
    """The heatmap row of a cell (None if absent)."""
    if heat.empty:
        return None
    a = heat["pos_a"].map(pos_label) == pos_label(cell[0])
    b = heat["pos_b"].map(pos_label) == pos_label(cell[1])
    hit = heat[a & b]
    return None if hit.empty else hit.iloc[0].to_dict()


def heatmap_table(heat: pd.DataFrame, sort_col: str = "relevance_norm") -> pd.DataFrame:
    """A POS heatmap (or ``compare_pos``) as a table (∅ for missing tags), largest |sort_col| first."""
    if heat.empty:
        return heat
    out = heat.assign(pos_a=heat["pos_a"].map(pos_label), pos_b=heat["pos_b"].map(pos_label))
    return out.sort_values(sort_col, key=lambda s: s.abs(), ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# matrices, examples, comparisons
# --------------------------------------------------------------------------------------------------


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


def score_changes(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> pd.DataFrame:
    """Per pair in both runs: score_a, score_b, delta (= b - a), gold, sentences; largest |delta| first."""
    cols = ["pair_id", "score_a", "score_b", "delta", "gold", "gold_norm", "sentence1", "sentence2"]
    if pred_a.empty or pred_b.empty:
        return pd.DataFrame(columns=cols)
    a = pred_a[["pair_id", "model_score", "gold", "gold_norm", "sentence1", "sentence2"]].rename(
        columns={"model_score": "score_a"})
    b = pred_b[["pair_id", "model_score"]].rename(columns={"model_score": "score_b"})
    m = a.merge(b, on="pair_id", how="inner")
    m["delta"] = m["score_b"] - m["score_a"]
    m = m.assign(_k=m["delta"].abs()).sort_values(["_k", "pair_id"], ascending=[False, True], kind="stable")
    return m[cols].reset_index(drop=True)


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


# --------------------------------------------------------------------------------------------------
# first launch: the demo store
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoStep:
    """One run of the demo store; ``weight``: its share of the progress bar (measured cost)."""

    method: str
    layer: int | None = None
    steps: int | None = None
    weight: float = 1.0


# all-MiniLM-L6-v2 on the 30 demo pairs with 2 CPU cores: predict ~1 s, BiLRP ~20 s, IJ ~80 s at 8 steps
# (the default 64 steps take ~400 s), plus ~5 s to load the model: about 1.8 minutes in all.
DEMO_PLAN: tuple[DemoStep, ...] = (
    DemoStep("predict", weight=1.0),
    DemoStep("bilrp", layer=0, weight=20.0),
    DemoStep("ij", steps=8, weight=80.0),
)
_DEMO_LOCK = threading.Lock()


def build_demo_store(path: str | os.PathLike, model: Any = DEMO_MODEL, plan: Sequence[DemoStep] = DEMO_PLAN,
                     dataset: str | os.PathLike = DEMO_DATASET, limit: int | None = None, chunk_size: int = 5,
                     progress: Callable[[float, str], None] | None = None) -> list[Any]:
    """Write a small demo audit into ``path``: ``plan``'s runs of ``model`` over the project's demo pairs.

    ``model``: a name/folder or a loaded ``SimilarityModel``. ``progress(fraction, text)`` is called as pairs
    are done. Runs already in the store are skipped, so an interrupted build resumes. Returns the
    runner's ``RunResult`` per step. Loads torch and the model (only the first-launch path does).
    """
    from core.datasets import load_dataset
    from core.models import SimilarityModel, load_model
    from precompute.runner import run

    report = progress or (lambda fraction, text: None)
    total = sum(s.weight for s in plan) or 1.0
    report(0.0, f"loading {model if isinstance(model, (str, os.PathLike)) else 'the model'}…")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = model if isinstance(model, SimilarityModel) else load_model(model)
        ds = load_dataset(str(dataset), lang="en", gold_range=(0, 5))
    results = []
    done = 0.0
    for step in plan:
        name = setting_text({"method": step.method, "layer": step.layer, "steps": step.steps})

        def tick(n: int, total_pairs: int, step: DemoStep = step, name: str = name, base: float = done) -> None:
            frac = (base + step.weight * n / max(total_pairs, 1)) / total
            report(min(frac, 1.0), f"{name}: {n}/{total_pairs} pairs")

        report(done / total, f"{name}: starting")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(run(m, ds, path, method=step.method, layer=step.layer, steps=step.steps,
                               chunk_size=chunk_size, limit=limit, progress=tick))
        done += step.weight
    report(1.0, "demo store ready")
    return results


# ==================================================================================================
# Streamlit glue shared by app.py and pages/ (not unit-tested here: tests/test_app.py drives it)
# ==================================================================================================

@st.cache_resource(show_spinner=False)
def open_store(path: str) -> Store:
    """One Store per path and server process (it is thread-safe and sees new chunks by itself)."""
    return Store(path)


def current_store_path() -> Path:
    return store_location()[0]


@st.cache_data(show_spinner=False, max_entries=1024)
def _cached_query(path: str, fingerprint: tuple, method: str, args: tuple, kwargs: tuple) -> Any:
    store = open_store(path).at(fingerprint[0]) if fingerprint else open_store(path)
    return getattr(store, method)(*args, **dict(kwargs))


def _pinned_fingerprint(path: str) -> tuple:
    """The snapshot this session reads (pinned on first use; "Reload store" moves it to the newest)."""
    pins = st.session_state.setdefault("_store_snapshots", {})
    if not pins.get(path):
        pins[path] = store_fingerprint(path)
    return pins[path]


QUERY_LOG: list[tuple[str, float]] = []  # (method, seconds) of the latest queries (the benchmark reads it)


def query(method: str, *args: Any, **kwargs: Any) -> Any:
    """``Store.<method>(*args, **kwargs)`` on the current store, cached until the store changes."""
    path = str(current_store_path())
    t0 = time.perf_counter()
    try:
        out = _cached_query(path, _pinned_fingerprint(path), method, args, tuple(sorted(kwargs.items())))
    except StoreError as exc:  # a missing or damaged data file, an expired snapshot: say so, never a trace
        st.error(f"The store cannot be read: {exc}")
        st.stop()
    QUERY_LOG.append((method, time.perf_counter() - t0))
    del QUERY_LOG[:-200]
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_state(path: str, fingerprint: tuple) -> StoreState:
    return store_state(path, opener=open_store)


def _state() -> StoreState:
    path = str(current_store_path())
    return _cached_state(path, _pinned_fingerprint(path))


def store_ok() -> bool:
    """Whether the current store can be read and has runs."""
    return _state().state == "ok"


def sidebar_store_info() -> None:
    """The store's location and size in the sidebar, with a refresh button."""
    if st.session_state.get("_reload_store"):  # clicked: this whole page run reads the newest snapshot
        st.session_state.pop("_store_snapshots", None)
        st.cache_data.clear()
    path, explicit = store_location()
    state = _state()
    with st.sidebar:
        st.caption("Store" + (f" (${STORE_ENV})" if explicit else f" (default; set ${STORE_ENV})"))
        st.code(str(path.resolve() if isinstance(path, Path) and path.exists() else path), language=None,
                wrap_lines=True)
        if state.state == "ok":
            counts = status_counts(query("runs"))
            parts = [f"{v} {k}" for k, v in counts.items() if v]
            st.caption(f"{state.n_runs} runs: " + ", ".join(parts))
        else:
            st.caption({"missing": "no store yet", "empty": "store has no runs"}.get(state.state, "store unreadable"))
        st.button("Reload store", key="_reload_store", help="Move to the store's newest snapshot (new runs and chunks)")


# (file in pages/, title, icon, section); URL paths are Streamlit's defaults, the file names without their
# number (Compare, Example, ...), the same names its legacy pages/ mode uses (see ensure_navigation).
APP_PAGES = (
    ("1_Overview.py", "Overview", ":material/dashboard:", "Corpus audit"),
    ("2_POS_interactions.py", "POS interactions", ":material/grid_on:", "Corpus audit"),
    ("3_Compare.py", "Compare runs", ":material/compare_arrows:", "Corpus audit"),
    ("4_Failures.py", "Failures", ":material/report:", "Corpus audit"),
    ("5_Example.py", "Example", ":material/zoom_in:", "Single pairs"),
    ("6_Explain.py", "Explain your own pair", ":material/edit_note:", "Single pairs"),
    ("7_Search.py", "Search", ":material/manage_search:", "Retrieval"),
)


def navigation_pages() -> dict[str, list[Any]]:
    """The app's pages by section; other files in pages/ (added by other features) go under "More"."""
    import re

    sections: dict[str, list[Any]] = {}
    for n, (name, title, icon, section) in enumerate(APP_PAGES):
        sections.setdefault(section, []).append(st.Page(f"pages/{name}", title=title, icon=icon, default=n == 0))
    listed = {name for name, *_ in APP_PAGES}
    extra = []
    for f in sorted((ROOT / "pages").glob("*.py")):
        if f.name not in listed and not f.name.startswith(("_", ".")):
            title = re.sub(r"^\d+[_ -]*", "", f.stem).replace("_", " ").strip() or f.stem
            extra.append(st.Page(f"pages/{f.name}", title=title))
    if extra:
        sections["More"] = extra
    return sections


def router() -> Any:
    """Page config, navigation and the sidebar's store info; returns the page to run (app.py runs it)."""
    st.set_page_config(page_title="SimLens", page_icon=":material/search:", layout="wide")
    page = st.navigation(navigation_pages())
    sidebar_store_info()
    return page


def ensure_navigation() -> None:
    """Route a page through app.py when Streamlit ran it without app.py.

    Because the project has a ``pages/`` folder, Streamlit serves the first request of a fresh server in its
    legacy multipage mode, which runs a requested page such as ``/Example?run=...`` directly, without
    app.py's navigation and sidebar. A fresh session is rerun, now through app.py's router (same URL and
    query parameters); a session with widget state (AppTest resets the mode before every run) keeps its run,
    so no click is lost, and gets the page layout and the sidebar's store info."""
    from streamlit.runtime.pages_manager import PagesManager

    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    if not list(st.session_state.keys()):
        st.rerun()
    st.set_page_config(page_title="SimLens", page_icon=":material/search:", layout="wide")
    sidebar_store_info()


def require_store() -> Path:
    """Return the store path if it has runs; otherwise build the demo (first launch) or explain what to
    run, and stop the page."""
    ensure_navigation()
    path, explicit = store_location()
    state = _state()
    if state.state == "ok":
        return path
    if should_autobuild(state, explicit) and _bootstrap(path, first_launch=True):
        st.rerun()
    st.warning("This page needs audit results.", icon=":material/info:")
    st.markdown(help_markdown(path, state))
    if state.state in ("missing", "empty"):
        st.markdown(f"Or build a small demo store here: {DEMO_MODEL} on the project's {_demo_pairs()} demo pairs "
                    f"(about 2 minutes on a laptop CPU).")
        if st.button("Build the demo store", key="_build_demo", type="primary") and _bootstrap(path):
            st.rerun()
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _demo_pairs() -> int:
    try:
        return max(sum(1 for _ in DEMO_DATASET.open(encoding="utf-8")) - 1, 0)
    except OSError:
        return 0


def _bootstrap(path: Path, first_launch: bool = False) -> bool:
    if first_launch:
        st.info(f"First launch: `{path}` holds no audit yet, so SimLens is building a small demo store "
                f"({DEMO_MODEL} on {_demo_pairs()} demo pairs: scores, BiLRP and integrated Jacobians).")
    bar = st.progress(0.0, text="starting…")
    t0 = time.perf_counter()

    def progress(fraction: float, text: str) -> None:
        bar.progress(float(min(max(fraction, 0.0), 1.0)), text=f"{text} ({time.perf_counter() - t0:.0f} s)")

    try:
        with _DEMO_LOCK:  # one build per server process; a second session waits, then finds the runs
            if _state().state != "ok":
                build_demo_store(path, progress=progress)
    except Exception as exc:  # noqa: BLE001  (show what failed, never a trace)
        st.error(f"Could not build the demo store in `{path}`: {type(exc).__name__}: {exc}")
        return False
    st.session_state.pop("_store_snapshots", None)
    st.cache_data.clear()
    return True


def download_table(df: pd.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet download buttons for a table (bytes made on click)."""
    with st.container(horizontal=True, gap="small"):
        st.download_button("CSV", icon=":material/download:", data=functools.partial(table_csv, df), file_name=f"{name}.csv", mime="text/csv",
                           key=f"{key}__csv", on_click="ignore", type="tertiary")
        st.download_button("Parquet", icon=":material/download:", data=functools.partial(table_parquet, df), file_name=f"{name}.parquet",
                           mime="application/vnd.apache.parquet", key=f"{key}__parquet", on_click="ignore",
                           type="tertiary")


def download_chart(chart: Any, name: str, key: str) -> None:
    """PNG and SVG download buttons for a chart (rendered with vl-convert on click)."""
    with st.container(horizontal=True, gap="small"):
        st.download_button("PNG", icon=":material/download:", data=functools.partial(chart_png, chart), file_name=f"{name}.png",
                           mime="image/png", key=f"{key}__png", on_click="ignore", type="tertiary")
        st.download_button("SVG", icon=":material/download:", data=functools.partial(chart_svg, chart), file_name=f"{name}.svg",
                           mime="image/svg+xml", key=f"{key}__svg", on_click="ignore", type="tertiary")


def show_chart(chart: Any, name: str, key: str, on_select: Any = "ignore") -> Any:
    """An Altair chart at its own size plus its download buttons; returns the selection state."""
    event = st.altair_chart(chart, width="content", key=key, on_select=on_select)
    download_chart(chart, name, key)
    return event


def show_table(df: pd.DataFrame, name: str, key: str, height: int | str = "auto", link_col: str | None = None,
               **kwargs: Any) -> None:
    """A dataframe plus CSV/Parquet downloads (of the table without its link column)."""
    config = dict(kwargs.pop("column_config", {}) or {})
    if link_col and link_col in df.columns:
        config[link_col] = st.column_config.LinkColumn("open", display_text="example ↗", width="small")
    st.dataframe(df, hide_index=True, height=height, column_config=config, key=key, **kwargs)
    download_table(df.drop(columns=[link_col]) if link_col and link_col in df.columns else df, name, key)


def example_link(run_id: str, pair_id: int, label: str = "Open in Example", key: str | None = None) -> None:
    """A link to the Example page for one pair (st.page_link; a plain link outside the app's navigation)."""
    try:
        st.page_link("pages/5_Example.py", label=label, icon=":material/open_in_new:",
                     query_params={"run": str(run_id), "pair": str(int(pair_id))})
    except Exception:  # noqa: BLE001  (page not registered, e.g. a page script run on its own)
        st.markdown(f"[{label}]({example_url(run_id, pair_id)})")


def run_select(label: str, run_ids: Sequence[str], labels: Mapping[str, str], key: str,
               index: int = 0, **kwargs: Any) -> str | None:
    """A selectbox of runs showing their labels; keeps a still-valid previous choice."""
    if not run_ids:
        st.info("No matching runs.")
        return None
    keep_valid(key, run_ids)
    if key not in st.session_state:  # the first choice; later the widget keeps its own state
        st.session_state[key] = run_ids[min(index, len(run_ids) - 1)]
    return st.selectbox(label, list(run_ids), format_func=lambda r: labels.get(r, r), key=key, **kwargs)


def keep_valid(key: str, options: Sequence[Any]) -> None:
    """Drop a widget's stored value when it is no longer among ``options`` (after a filter change)."""
    if key in st.session_state:
        value = st.session_state[key]
        if isinstance(value, list):
            kept = [v for v in value if v in options]
            if kept != value:
                st.session_state[key] = kept
        elif value not in options:
            with contextlib.suppress(KeyError):
                del st.session_state[key]
