"""Store errors, ids and the small pure helpers the writer and reader share (shards, chunk ranges, factors,
DataFrame -> Arrow with the declared schema)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.store.schema import SCHEMA, TABLES, arrow_schema

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class StoreError(Exception):
    """Any store problem: missing/invalid store, bad input, conflicting data, unreadable files."""


class ChunkExistsError(StoreError):
    """write_chunk() for a chunk that is already committed (use overwrite=True to replace it)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise StoreError(f"invalid {what} {value!r}: use 1-128 characters [A-Za-z0-9_.-], not starting with '.'/'-'")
    return value


def quote(col: str) -> str:
    """Quote a column identifier (only names declared in SCHEMA, or fixed internal ones)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", col):
        raise StoreError(f"invalid identifier {col!r}")
    return f'"{col}"'


def make_run_id(model_id: str, dataset_key: str, method: str, layer: int | None,
                steps: int | None = None, quadrature: str | None = None, tol: float | None = None,
                max_steps: int | None = None) -> str:
    """Deterministic 16-hex-digit run id from the parameters that define a run's results (``tol`` and
    ``max_steps``, set for ``ij`` integrated to a tolerance, join the hash only when set: older ids stand)."""
    values = [str(model_id), str(dataset_key), str(method), None if layer is None else int(layer),
              None if steps is None else int(steps), None if quadrature is None else str(quadrature)]
    if tol is not None or max_steps is not None:
        values += [None if tol is None else float(tol), None if max_steps is None else int(max_steps)]
    payload = json.dumps(values, separators=(",", ":"))
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def make_eval_id(kind: str, model_id: str, dataset_key: str | None, params: Mapping[str, Any] | str | None) -> str:
    """Deterministic 16-hex-digit evaluation id from what defines an evaluation's results."""
    if isinstance(params, str):
        params = json.loads(params) if params else {}
    payload = json.dumps([str(kind), str(model_id), None if dataset_key is None else str(dataset_key),
                          params or {}], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def dataset_hash(pairs: pd.DataFrame) -> str:
    """Content hash of a dataset's pairs: pair_id, sentence1, sentence2 and gold in order (not the path)."""
    h = hashlib.sha1()
    for col in ("pair_id", "sentence1", "sentence2", "gold"):
        values = pairs[col].tolist()
        h.update(json.dumps([None if (isinstance(v, float) and math.isnan(v)) else
                             (v.item() if isinstance(v, np.generic) else v) for v in values],
                            ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:16]


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"K/N"`` / ``(K, N)`` / None (= 1/1) -> (K, N) with 1 <= K <= N."""
    if shard is None:
        return 1, 1
    if isinstance(shard, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not m:
            raise StoreError(f"invalid shard {shard!r}: expected 'K/N', e.g. '1/2'")
        k, n = int(m.group(1)), int(m.group(2))
    else:
        k, n = (int(x) for x in shard)
    if not 1 <= k <= n:
        raise StoreError(f"invalid shard {k}/{n}: need 1 <= K <= N")
    return k, n


def shard_chunks(n_chunks: int, shard: str | tuple[int, int] | None = None) -> list[int]:
    """Chunk indices owned by shard K/N: those with ``k % N == K - 1``."""
    k, n = parse_shard(shard)
    return [c for c in range(int(n_chunks)) if c % n == k - 1]


def chunk_pair_range(chunk_index: int, chunk_size: int, n_pairs: int) -> range:
    """pair_index values (dataset positions) of chunk ``chunk_index``: ``[k*C, min((k+1)*C, n_pairs))``."""
    lo = int(chunk_index) * int(chunk_size)
    return range(lo, min(lo + int(chunk_size), int(n_pairs)))


def encode_factor(vector: Any) -> bytes:
    """1-D float vector -> float16 little-endian bytes (the ``factors.factor`` BLOB)."""
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    return arr.astype("<f2").tobytes()


def decode_factor(blob: bytes, dim: int | None = None) -> np.ndarray:
    """``factors.factor`` BLOB -> float32 vector (checks ``dim`` when given)."""
    arr = np.frombuffer(bytes(blob), dtype="<f2").astype(np.float32)
    if dim is not None and arr.size != int(dim):
        raise StoreError(f"factor has {arr.size} values but dim = {dim}")
    return arr


def to_arrow(table: str, df: pd.DataFrame, context: str) -> pa.Table:
    """``df`` as an Arrow table of ``table``'s SCHEMA columns (missing ones NULL), type-checked."""
    schema = arrow_schema(table)
    arrays = []
    for field in schema:
        if field.name not in df.columns:
            arrays.append(pa.nulls(len(df), field.type))
            continue
        try:
            arrays.append(pa.array(df[field.name], type=field.type, from_pandas=True))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise StoreError(f"{context}: column {table}.{field.name} cannot be stored as "
                             f"{SCHEMA[table][field.name][0]}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, datetime)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def check_columns(table: str, df: pd.DataFrame, required: Iterable[str], context: str,
                  extra_ok: Iterable[str] = ()) -> None:
    if not isinstance(df, pd.DataFrame):
        raise StoreError(f"{context}: table '{table}' must be a pandas DataFrame, got {type(df).__name__}")
    allowed = set(SCHEMA[table]) | set(extra_ok)
    unknown = [c for c in df.columns if c not in allowed]
    if unknown:
        raise StoreError(f"{context}: table '{table}' has unknown column(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreError(f"{context}: table '{table}' is missing required column(s) {missing}")


def check_keys(table: str, df: pd.DataFrame, context: str, nullable: Iterable[str] = ()) -> None:
    key = list(TABLES[table].key)
    for c in key:
        if c not in nullable and df[c].isna().any():
            raise StoreError(f"{context}: table '{table}' has NULL values in key column '{c}'")
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        example = df.loc[dup, key].head(3).to_dict("records")
        raise StoreError(f"{context}: table '{table}' has duplicate rows for key {key}, e.g. {example}")


def _missing(v: Any) -> bool:
    return v is None or (not isinstance(v, (str, bytes, list, tuple, dict)) and bool(pd.isna(v)))


def same_value(a: Any, b: Any) -> bool:
    """Equality where NULL/NaN/NaT equal each other."""
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return a == b
