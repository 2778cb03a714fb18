"""Runs, datasets and filters as the pages show them (pure: pandas in, pandas/str out).

Run labels and status, the Overview's tables, metric formatting, dataset labels and the corpus / split /
language filters, and the slider bands the store's queries take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store import kind_of_method

ALL = "All"
OPEN_END = 1e9  # an error band end at the slider's limit means "no limit"


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


#: every status a run shows, in the order pages list them (the Runs filter, counts, the sidebar)
RUN_STATUSES = ("done", "partial", "running", "interrupted", "failed")


def display_status(row: Mapping[str, Any]) -> str:
    """One of RUN_STATUSES: done / partial (finished, but chunks of other shards are missing) / running /
    interrupted (its writer is gone without finishing; resume it with the same command) / failed."""
    status = str(row.get("status") or "")
    if status == "done" and not is_na(row.get("complete")) and not bool(row.get("complete")):
        return "partial"
    return status or "?"


def setting_text(row: Mapping[str, Any]) -> str:
    """``bilrp L0`` / ``ij L0 · 64 steps`` / ``ij L0 · auto to 0.001`` / ``predict``."""
    method = str(row.get("method"))
    if not kind_of_method(method).uses_method:  # e.g. predict
        return method
    text = method
    if not is_na(row.get("layer")):
        text += f" L{int(row['layer'])}"
    if not is_na(row.get("steps")):
        text += f" · {int(row['steps'])} steps"
        q = row.get("quadrature")
        if not is_na(q) and q not in ("gauss-legendre",):
            text += f" ({q})"
    elif not is_na(row.get("tol")):
        text += f" · auto to {float(row['tol']):g}"
    return text


def integration_notes(settings: Mapping[str, Any], pair: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(note, warning) on how a pair's matrix was integrated: ``settings`` holds the run's (or explanation's)
    ``tol``/``max_steps``, ``pair`` its ``steps_a``, ``steps_b``, ``capped`` and ``residual``. The note says the
    steps each side took and the completeness error reached (None for step-free methods); the warning is set
    when a side hit the step cap short of the tolerance."""
    if is_na(pair.get("steps_a")) or is_na(pair.get("steps_b")):
        return None, None
    tol, cap = settings.get("tol"), settings.get("max_steps")
    error = "" if is_na(pair.get("residual")) else f"; completeness error |residual| {abs(float(pair['residual'])):.1e}"
    how = "" if is_na(tol) else f" (auto: tolerance {float(tol):g}, cap {int(cap)})"
    note = f"Integration steps {int(pair['steps_a'])} and {int(pair['steps_b'])}{how}{error}."
    if is_na(pair.get("capped")) or not bool(pair["capped"]):
        return note, None
    return note, (f"Hit the step cap: a sentence's integral stopped at the cap of {int(cap)} steps short of its "
                  f"tolerance {float(tol):g}{error}. The matrix may not add up to the explained score that "
                  "closely: raise the cap (--max-steps) or the tolerance.")


def is_partial(row: Mapping[str, Any]) -> bool:
    """Whether a run covers only part of its dataset (``Store.runs``' ``partial`` column)."""
    value = row.get("partial")
    return not is_na(value) and bool(value)


def coverage_suffix(row: Mapping[str, Any]) -> str:
    """`` · 100 of 1,379 pairs`` for a partial run, "" for a run over its whole dataset."""
    return f" · {row['coverage']}" if is_partial(row) and not is_na(row.get("coverage")) else ""


def run_label(row: Mapping[str, Any]) -> str:
    """One-line description of a run for selectors; a partial run names its coverage right after its setting
    (so that a truncated chip still tells two subsets of one model and method apart)."""
    status = display_status(row)
    extra = "" if status == "done" else f" · {status}"
    return (f"{short_model(row.get('model_name') or row.get('model_id'))} · {setting_text(row)}"
            f"{coverage_suffix(row)} · {row.get('dataset_key')}{extra} · {str(row.get('run_id'))[:8]}")


def partial_note(runs: pd.DataFrame, run_ids: Iterable[str]) -> str:
    """For captions and chart subtitles, every run among ``run_ids`` that covers part of its dataset, with what
    its numbers cover: "Partial run: 100 of 1,379 pairs of stsb:test, MiniLM hxp L0"; a run still being
    written says so: "Running run, so far: 128 of 1,379 pairs of …", "Interrupted run, so far: …" ("" when all
    cover their whole dataset)."""
    wanted = list(run_ids)
    rows = [r for r in runs[runs["run_id"].isin(wanted)].to_dict("records") if is_partial(r)] if len(runs) else []
    if not rows:
        return ""
    kinds = {"running": "Running run, so far", "interrupted": "Interrupted run, so far"}
    parts = [(kinds.get(display_status(r), "Partial run"),
              f"{r['coverage']} of {r.get('dataset_key')}, {short_model(r.get('model_name'))} {setting_text(r)}")
             for r in rows]  # the coverage first: a chart's subtitle may be cut at its width
    if len({kind for kind, _ in parts}) == 1:
        kind = parts[0][0]
        head = kind if len(parts) == 1 else kind.replace("run", "runs", 1)
        return f"{head}: " + "; ".join(text for _, text in parts)
    return "; ".join(f"{kind}: {text}" for kind, text in parts)


def empty_reason(runs: pd.DataFrame, run_ids: Sequence[str], what: str = "token pairs") -> str:
    """Why a page shows nothing for ``run_ids``: runs that have not written a pair yet ("This run has not
    written any pairs yet (k of n chunks)") versus filters that exclude everything ("No ... in this band")."""
    rows = runs[runs["run_id"].isin(list(run_ids))]
    unwritten = rows[rows["chunks_present"] == 0]
    if len(rows) and len(unwritten) == len(rows):
        parts = [f"{int(r['chunks_present'])} of {int(r['n_chunks'])} chunks" for r in unwritten.to_dict("records")]
        run = "This run has" if len(rows) == 1 else "These runs have"
        status = "; reload the store when it has" if set(unwritten["status"]) <= {"running"} else ""
        return f"{run} not written any pairs yet ({'; '.join(parts)}){status}."
    return f"No {what} in this band: the gold/error band, word or text filter excludes every pair."


def find_text(find: Mapping[str, str]) -> str:
    """``word “cat”, text “on the”`` for captions of the find-pairs filters."""
    return ", ".join(f"{k} “{v}”" for k, v in find.items())


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """run_id -> label, in the frame's order."""
    return {r["run_id"]: run_label(r) for r in runs.to_dict("records")}


def has_relevances(method: Any) -> bool:
    """Whether runs with this ``method`` column store token-pair relevances (the run-kind registry: not
    ``predict``)."""
    return kind_of_method(str(method)).relevances


def token_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that stored token pairs (every method except ``predict``)."""
    return runs[runs["method"].map(has_relevances).astype(bool)] if len(runs) else runs


def order_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs in a stable order for selectors: dataset, model, method, layer, steps."""
    if runs.empty:
        return runs
    key = runs.assign(_m=runs["model_name"].map(short_model), _p=~runs["method"].map(has_relevances).astype(bool))
    key = key.sort_values(["dataset_key", "_m", "_p", "method", "layer", "steps", "run_id"], kind="stable",
                          na_position="first")
    return runs.loc[key.index].reset_index(drop=True)


def runs_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table of the Overview page."""
    cols = ["status", "model", "dataset", "setting", "method", "layer", "steps", "progress", "chunks", "pairs",
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
        "pairs": runs["coverage"],
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
    """Number of runs per display status (every one of RUN_STATUSES, in its order)."""
    counts = dict.fromkeys(RUN_STATUSES, 0)
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


def default_run(runs: pd.DataFrame) -> list[str]:
    """The run a page opens on among ``runs`` (in their order): the first that has written pairs, else the first
    ([] when there is none), so a page never opens on an empty run while others have data."""
    if runs.empty:
        return []
    written = runs[runs["pairs_written"].fillna(0) > 0] if "pairs_written" in runs.columns else runs
    return [str((written if len(written) else runs)["run_id"].iloc[0])]


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


def partial_metrics_text(metrics: pd.DataFrame) -> str:
    """The note under the models × datasets table naming the cells that come from a partial run ("" if none)."""
    rows = metrics[metrics["partial"].fillna(False).astype(bool)].to_dict("records") if len(metrics) else []
    if not rows:
        return ""
    return ("Computed on part of the dataset only (no run covers all of it): " + "; ".join(
        f"{short_model(r['model_name'])} on {r['dataset_key']}: {r['coverage']} ({r['method']} run)" for r in rows)
        + ".")
