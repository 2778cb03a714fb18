"""How the Faithfulness page shows an evaluation (pure): figure specs that each evaluation declares, and the
tables and labels made from its stored rows (the JSON of ``extra`` and ``params`` is parsed here, not in pages).

An evaluation's rows (``Store.evaluations``) are long: metric, y, y_sd, n, x, series, label, method, layer,
steps, quadrature and a JSON ``extra``. A figure spec names the metric it draws and how; the page draws every
spec of an evaluation in order (:func:`core.dashboard.evidence.show_evidence`), so a new evaluation brings its
own figures without a page edit, and one that declares none still shows its rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.views.runs import short_model

# ---- figure specs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lines:
    """Mean ± sd curves of ``metric`` against x, one line per series (``toggle``: (label, metric, y title) of an
    alternative metric the reader can switch to; on log scales only positive values are drawn)."""

    metric: str
    x_title: str
    y_title: str
    name: str
    log_x: bool = False
    log_y: bool = False
    band: bool = True
    toggle: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Bars:
    """Mean ± sd bars of ``metrics`` per ``category`` column (``prefix`` + value), optionally coloured and
    offset by ``color`` (a column, or ``"metric"`` with ``metric_labels`` naming the metrics)."""

    metrics: tuple[str, ...]
    category: str
    y_title: str
    name: str
    color: str | None = None
    prefix: str = ""
    metric_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scatter:
    """One point per row of ``metric`` (x against y) with the identity line, one panel per series."""

    metric: str
    x_title: str
    y_title: str
    name: str


@dataclass(frozen=True)
class Histogram:
    """Densities of ``metric`` (x = bin centre) as step lines, one per series."""

    metric: str
    x_title: str
    name: str


@dataclass(frozen=True)
class PairMatrix:
    """A symmetric method x method matrix of ``metric`` (the other method in ``extra[other]``) on the signed
    scale, for one series at a time."""

    metric: str
    name: str
    title: str = "value"
    other: str = "other"


@dataclass(frozen=True)
class Table:
    """The rows of ``metrics``: by default series/label/method/layer/steps/metric/value/sd(/median)/n; with
    ``columns``, those (``extra`` keys included), renamed by ``rename``; ``heading``: Markdown above it."""

    metrics: tuple[str, ...]
    name: str
    columns: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    heading: str | None = None


@dataclass(frozen=True)
class ModelTable1:
    """Möller et al. (2023) Table 1 over every stored ``table1`` evaluation (``Store.model_table1``)."""

    name: str = "simlens_table1"


@dataclass(frozen=True)
class Side:
    """Figures side by side."""

    figures: tuple[Any, ...]


# ---- rows ---------------------------------------------------------------------------------------------------


def _json(value: Any) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value:
        try:
            found = json.loads(value)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}
    return {}


def extra_values(df: pd.DataFrame, key: str) -> pd.Series:
    """``extra[key]`` of every row (None where absent)."""
    if "extra" not in df.columns:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    return df["extra"].map(lambda e: _json(e).get(key))


def with_band(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``lo``/``hi`` = y ∓ sd (sd 0 where missing)."""
    out = df.copy()
    sd = out["y_sd"].fillna(0.0) if "y_sd" in out.columns else 0.0
    out["lo"], out["hi"] = out["y"] - sd, out["y"] + sd
    return out


def metric_rows(df: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    return df[df["metric"].isin(list(metrics))]


def bar_rows(df: pd.DataFrame, spec: Bars) -> pd.DataFrame:
    """The rows a :class:`Bars` spec draws, with its category (and metric label) columns filled in."""
    out = metric_rows(df, spec.metrics).copy()
    out["category"] = spec.prefix + out[spec.category].astype(str)
    if spec.metric_labels:
        out["metric_label"] = out["metric"].map(lambda m: spec.metric_labels.get(m, m))
    return out


def evidence_table(df: pd.DataFrame, spec: Table) -> pd.DataFrame:
    """The table a :class:`Table` spec shows (``extra`` keys as columns; the median where stored)."""
    sub = metric_rows(df, spec.metrics).reset_index(drop=True)
    if spec.columns is not None:
        out = pd.DataFrame({c: sub[c] if c in sub.columns else extra_values(sub, c) for c in spec.columns})
        return out.rename(columns=dict(spec.rename))
    cols = [c for c in ("series", "label", "method", "layer", "steps", "metric", "y", "y_sd", "n") if c in sub.columns]
    out = sub[cols].rename(columns={"y": "value", "y_sd": "sd"})
    median = extra_values(sub, "median")
    if median.notna().any() and "sd" in out.columns:
        out.insert(out.columns.get_loc("sd") + 1, "median", median)
    return out.rename(columns=dict(spec.rename))


def pair_matrix_rows(df: pd.DataFrame, spec: PairMatrix, series: str) -> pd.DataFrame:
    """Both triangles of a :class:`PairMatrix` for one series: method, other, y, y_sd, n."""
    sub = df[(df["metric"] == spec.metric) & (df["series"] == series)].copy()
    sub["other"] = extra_values(sub, spec.other)
    flipped = sub.rename(columns={"method": "other", "other": "method"})
    return pd.concat([sub, flipped], ignore_index=True)[["method", "other", "y", "y_sd", "n"]]


def series_of(df: pd.DataFrame, metric: str) -> list[str]:
    """The series of ``metric``'s rows, sorted."""
    return sorted({str(s) for s in df.loc[df["metric"] == metric, "series"].dropna()})


def positive_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["y"] > 0]


# ---- the listing and one evaluation's settings ----------------------------------------------------------------


def fmt_number(value: Any) -> str:
    """4 significant digits, ``–`` for missing or NaN."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{v:.4g}"


def evaluation_labels(listing: pd.DataFrame) -> dict[str, str]:
    """eval_id -> ``model · dataset · N pairs · created`` for the evaluations of ``Store.evaluation_list``."""
    out = {}
    for r in listing.to_dict("records"):
        n = r.get("n_pairs")
        pairs = 0 if n is None or pd.isna(n) else int(n)
        out[r["eval_id"]] = (f"{short_model(r['model_name'])} · {r['dataset_key']} · {pairs} pairs · "
                             f"{pd.Timestamp(r['created_at']):%Y-%m-%d %H:%M}")
    return out


def evaluation_settings(rows: pd.DataFrame) -> dict[str, Any]:
    """What an evaluation was computed on: id, model, dataset, pairs, seconds, code version, parameters."""
    meta = rows.iloc[0]
    return {"eval_id": meta["eval_id"], "model": meta["model_name"], "dataset": meta["dataset_key"],
            "pairs": None if pd.isna(meta["n_pairs"]) else int(meta["n_pairs"]),
            "seconds": fmt_number(meta["seconds"]), "code_version": meta["code_version"],
            "params": _json(meta["params"])}


def ordered_kinds(listing: pd.DataFrame, known: Sequence[str]) -> list[str]:
    """The stored kinds, registry order first, then any other kind (e.g. one a newer version wrote)."""
    stored = set(listing["kind"])
    return [k for k in known if k in stored] + sorted(stored - set(known))
