"""Validation of the records a writer stores (datasets, models, evaluations, run segments): the caller's
dicts and frames in, complete rows of the schema out. Pure functions, no database."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.store.records import (
    StoreError,
    check_id,
    dataset_hash,
    json_default,
    make_eval_id,
    make_run_id,
    utcnow,
)
from core.store.schema import SCHEMA, TABLES

#: Columns of ``evaluations`` that describe the whole evaluation (the same on each of its rows).
EVAL_META_COLS = ("eval_id", "kind", "model_id", "model_name", "dataset_key", "run_id", "n_pairs", "params",
                  "created_at", "seconds", "code_version")


def dataset_rows(meta: Mapping[str, Any], pairs: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """(datasets row, pairs rows) of a dataset; see :meth:`StoreWriter.put_dataset`."""
    ctx = "put_dataset"
    meta = dict(meta)
    own = ("dataset_hash", "revision")
    unknown = [k for k in meta if k not in SCHEMA["datasets"] or k in own]
    if unknown:
        allowed = [c for c in SCHEMA["datasets"] if c not in own]
        raise StoreError(f"{ctx}: unknown dataset field(s) {unknown}; allowed: {allowed}")
    missing = [k for k in TABLES["datasets"].required if meta.get(k) is None]
    if missing:
        raise StoreError(f"{ctx}: dataset meta is missing required field(s) {missing}")
    key = str(meta["dataset_key"])
    if not isinstance(pairs, pd.DataFrame):
        raise StoreError(f"{ctx}({key}): pairs must be a pandas DataFrame")
    missing = [c for c in TABLES["pairs"].required if c not in pairs.columns]
    if missing:
        raise StoreError(f"{ctx}({key}): table 'pairs' is missing required column(s) {missing}")
    p = pairs[[c for c in SCHEMA["pairs"] if c in pairs.columns and c != "dataset_hash"]].reset_index(drop=True).copy()
    if "dataset_key" in p.columns and not (p["dataset_key"] == key).all():
        raise StoreError(f"{ctx}({key}): pairs.dataset_key differs from meta dataset_key")
    p["dataset_key"] = key
    if "pair_id" not in p.columns:
        p["pair_id"] = np.arange(len(p))
    ids = pd.to_numeric(p["pair_id"], errors="coerce")
    if ids.isna().any() or (ids < 0).any() or (ids != ids.round()).any() or ids.duplicated().any():
        raise StoreError(f"{ctx}({key}): pair_id must be unique non-negative integers")
    p["pair_id"] = ids.astype("int64")
    if "pair_index" in p.columns and p["pair_index"].tolist() != list(range(len(p))):
        raise StoreError(f"{ctx}({key}): pair_index must be the row number 0..{len(p) - 1}")
    p["pair_index"] = np.arange(len(p))
    gold = pd.to_numeric(p["gold"], errors="coerce")
    gmin, gmax = meta.get("gold_min"), meta.get("gold_max")
    meta["gold_min"] = float(gold.min()) if gmin is None else float(gmin)
    meta["gold_max"] = float(gold.max()) if gmax is None else float(gmax)
    if "gold_norm" not in p.columns:
        span = meta["gold_max"] - meta["gold_min"]
        p["gold_norm"] = (gold - meta["gold_min"]) / span if span > 0 else np.nan
    if meta.get("n_pairs") is not None and int(meta["n_pairs"]) != len(p):
        raise StoreError(f"{ctx}({key}): meta n_pairs={meta['n_pairs']} but {len(p)} pairs given")
    meta["n_pairs"] = len(p)
    skipped = meta.get("skipped")
    if skipped is None:
        meta["skipped"] = "{}"
    elif isinstance(skipped, Mapping):
        meta["skipped"] = json.dumps(dict(skipped), sort_keys=True)
    else:
        try:
            json.loads(skipped)
        except (TypeError, ValueError):
            raise StoreError(f"{ctx}({key}): skipped must be a dict or JSON text") from None
    meta["dataset_hash"] = dataset_hash(p)
    return meta, p


def model_row(meta: Mapping[str, Any]) -> dict[str, Any]:
    ctx = "put_model"
    meta = dict(meta)
    unknown = [k for k in meta if k not in SCHEMA["models"]]
    if unknown:
        raise StoreError(f"{ctx}: unknown model field(s) {unknown}; allowed: {list(SCHEMA['models'])}")
    missing = [k for k in TABLES["models"].required if meta.get(k) is None]
    if missing:
        raise StoreError(f"{ctx}: model meta is missing required field(s) {missing}")
    check_id(meta["model_id"], "model_id")
    return {c: meta.get(c) for c in SCHEMA["models"]}


def evaluation_rows(meta: Mapping[str, Any], rows: pd.DataFrame,
                    model: Mapping[str, Any] | None) -> tuple[str, pd.DataFrame]:
    """(eval_id, evaluations rows) of one evaluation; ``model``: the stored model row (None: not stored)."""
    ctx = "put_evaluation"
    meta = dict(meta)
    row_fields = [c for c in SCHEMA["evaluations"] if c not in EVAL_META_COLS]
    unknown = [k for k in meta if k not in EVAL_META_COLS]
    if unknown:
        raise StoreError(f"{ctx}: unknown evaluation field(s) {unknown}; allowed: {list(EVAL_META_COLS)}")
    for k in ("kind", "model_id"):
        if meta.get(k) is None:
            raise StoreError(f"{ctx}: evaluation meta is missing required field {k!r}")
    kind = meta["kind"]
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", kind):
        raise StoreError(f"{ctx}: invalid kind {kind!r}: use lower-case letters, digits, '-' and '_'")
    model_id = check_id(meta["model_id"], "model_id")
    if model is None:
        raise StoreError(f"{ctx}: model {model_id!r} is not in the store; call put_model() first")
    key = meta.get("dataset_key")
    params = meta.get("params")
    if params is None:
        params = {}
    elif isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            raise StoreError(f"{ctx}: params must be a dict or JSON object text") from None
    if not isinstance(params, Mapping):
        raise StoreError(f"{ctx}: params must be a dict or JSON object text, got {type(params).__name__}")
    eval_id = make_eval_id(kind, model_id, key, params)
    if meta.get("eval_id") is not None and meta["eval_id"] != eval_id:
        raise StoreError(f"{ctx}: eval_id {meta['eval_id']!r} does not match make_eval_id(...) = {eval_id!r}")
    if not isinstance(rows, pd.DataFrame):
        raise StoreError(f"{ctx}: rows must be a pandas DataFrame, got {type(rows).__name__}")
    unknown = [c for c in rows.columns if c not in row_fields]
    if unknown:
        raise StoreError(f"{ctx}: rows have unknown column(s) {unknown}; allowed: {row_fields}")
    missing = [c for c in ("metric", "y") if c not in rows.columns]
    if missing:
        raise StoreError(f"{ctx}: rows are missing required column(s) {missing}")
    if rows.empty:
        raise StoreError(f"{ctx}: an evaluation needs at least one row")
    if rows["metric"].isna().any():
        raise StoreError(f"{ctx}: rows have NULL metric values")
    df = rows.reset_index(drop=True).copy()
    for c in ("layer", "steps", "n"):
        if c in df.columns:
            values = pd.to_numeric(df[c], errors="coerce")
            if (values.notna() & (values != values.round())).any() or (values.isna() & df[c].notna()).any():
                raise StoreError(f"{ctx}: rows column {c!r} must hold integers")
            df[c] = values.astype("Int64")
    if "extra" in df.columns:
        df["extra"] = [None if v is None or (isinstance(v, float) and math.isnan(v))
                       else v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=json_default)
                       for v in df["extra"]]
    df["row_index"] = np.arange(len(df))
    df["eval_id"] = eval_id
    df["kind"] = kind
    df["model_id"] = model_id
    df["model_name"] = meta.get("model_name") or model.get("name")
    df["dataset_key"] = key
    df["run_id"] = meta.get("run_id")
    df["n_pairs"] = meta.get("n_pairs")
    df["params"] = json.dumps(params, sort_keys=True, default=json_default)
    df["created_at"] = meta.get("created_at") or utcnow()
    df["seconds"] = meta.get("seconds")
    df["code_version"] = meta.get("code_version")
    return eval_id, df


def run_segment(run: Mapping[str, Any], ds: Mapping[str, Any] | None, model: Mapping[str, Any] | None,
                kind: str, shard: str) -> dict[str, Any]:
    """A new ``running`` segment record of a run; ``ds``/``model``: the stored rows (None: not stored)."""
    ctx = "start_run"
    missing = [k for k in ("model_id", "dataset_key", "method", "layer", "chunk_size") if k not in run]
    if missing:
        raise StoreError(f"{ctx}: run is missing required field(s) {missing}")
    model_id = check_id(run["model_id"], "model_id")
    key = str(run["dataset_key"])
    if ds is None:
        raise StoreError(f"{ctx}: dataset {key!r} is not in the store; call put_dataset() first")
    if model is None:
        raise StoreError(f"{ctx}: model {model_id!r} is not in the store; call put_model() first")
    chunk_size = int(run["chunk_size"])
    if chunk_size < 1:
        raise StoreError(f"{ctx}: chunk_size must be >= 1")
    n_pairs = int(run.get("n_pairs") if run.get("n_pairs") is not None else ds["n_pairs"])
    if not 0 <= n_pairs <= ds["n_pairs"]:
        raise StoreError(f"{ctx}: n_pairs={n_pairs} outside 0..{ds['n_pairs']} (dataset size)")
    n_chunks = math.ceil(n_pairs / chunk_size)
    if run.get("n_chunks") is not None and int(run["n_chunks"]) != n_chunks:
        raise StoreError(f"{ctx}: n_chunks={run['n_chunks']} but ceil(n_pairs/chunk_size)={n_chunks}")
    layer = None if run["layer"] is None else int(run["layer"])
    steps = None if run.get("steps") is None else int(run["steps"])
    quad = None if run.get("quadrature") is None else str(run["quadrature"])
    tol = None if run.get("tol") is None else float(run["tol"])
    max_steps = None if run.get("max_steps") is None else int(run["max_steps"])
    run_id = make_run_id(model_id, key, run["method"], layer, steps, quad, tol, max_steps)
    if run.get("run_id") is not None and run["run_id"] != run_id:
        raise StoreError(f"{ctx}: run_id {run['run_id']!r} does not match make_run_id(...) = {run_id!r}")
    return {
        "run_id": run_id, "shard": shard, "kind": kind, "model_id": model_id, "dataset_key": key,
        "dataset_hash": ds["dataset_hash"], "method": run["method"], "layer": layer, "steps": steps,
        "quadrature": quad, "tol": tol, "max_steps": max_steps, "pooling": run.get("pooling") or model.get("pooling"),
        "similarity": run.get("similarity") or model.get("similarity"), "code_version": run.get("code_version"),
        "status": "running", "n_pairs": n_pairs, "n_chunks": n_chunks, "chunk_size": chunk_size,
        "started_at": utcnow(), "finished_at": None, "seconds": None, "pairs_done": None, "pairs_per_s": None,
        "device": run.get("device"), "spearman": None, "pearson": None, "mse": None, "error_message": None,
    }
