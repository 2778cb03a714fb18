"""Search indexes in the store: what the writer (:mod:`core.store.index_writer`) and the reader
(:mod:`core.store.index_search`) share: ids, the factor blobs, the readers' views and an index's live status.

An index is four tables of the one store schema (:mod:`core.store.schema`, docs/STORE.md): its record in
``indexes``, and per chunk k (passages ``[k*C, (k+1)*C)``) the passages in ``index_passages``, their windows
(tokens, embedding, float16 factor) in ``index_windows`` and one ``index_chunks`` row, all committed in one
DuckLake transaction. Readers see each chunk's first committed write only, as they do for runs, so a store on a
PostgreSQL catalog with its data on S3 holds indexes like a local one.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store.records import StoreError
from core.store.schema import INDEX_CHUNK_TABLES

#: Indexes with at least this many windows get an HNSW index (smaller ones are scanned exactly in the lake).
HNSW_MIN_WINDOWS = 100_000
SEARCH_MODES = ("auto", "exact", "hnsw")
STATUSES = ("running", "done", "failed")
_HOST = socket.gethostname()


def make_index_id(model_id: str, corpus_hash: str, method: str, layer: int, steps: int | None,
                  quadrature: str | None, prompt: str, window_tokens: int, window_overlap: int,
                  tol: float | None = None, max_steps: int | None = None) -> str:
    """Deterministic 16-character index id from everything that defines an index's contents (``tol`` and
    ``max_steps`` of ij's ``steps="auto"`` join the key only when set: older ids stand)."""
    values = [model_id, corpus_hash, method, layer, steps, quadrature, prompt, window_tokens, window_overlap]
    key = "|".join(str(v) for v in values + ([tol, max_steps] if tol is not None else []))
    return "ix" + hashlib.sha256(key.encode()).hexdigest()[:14]


def corpus_hash(texts: Sequence[str]) -> str:
    """SHA-256 (16 hex digits) of the texts in order."""
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def encode_matrix(matrix: np.ndarray, dtype: str) -> bytes:
    """An array as little-endian ``dtype`` bytes (``<f2`` factors, ``<f4`` targets)."""
    return np.ascontiguousarray(np.asarray(matrix, dtype=np.float32).astype(dtype)).tobytes()


def decode_matrix(blob: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array of ``shape`` stored in ``blob``; a size that does not match is a StoreError."""
    arr = np.frombuffer(bytes(blob), dtype=dtype).astype(np.float32)
    if arr.size != int(np.prod(shape)):
        raise StoreError(f"stored array has {arr.size} values, expected shape {shape}")
    return arr.reshape(shape)


# ---- the readers' views (created by core.store.reader for every snapshot it reads) ------------------


def index_views(src: Callable[[str], str], have: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """view name -> SQL of the index tables as readers see them at the reader's snapshot: the latest record
    of each index (deleted ones hidden), and each chunk's first committed write (``index_chunks``) with its
    passages and windows (the runs' rule, :func:`core.store.reader.ledger_views`)."""
    from core.store.reader import _empty_view, _select, ledger_views

    if "indexes" in have:
        latest = f"SELECT arg_max(write_id, written_at) FROM {src('indexes')} GROUP BY index_id"
        sql = {"indexes": f"SELECT * FROM (SELECT {_select('indexes', have['indexes'])} FROM {src('indexes')} "
                          f"WHERE write_id IN ({latest})) WHERE status <> 'deleted'"}
    else:
        sql = {"indexes": _empty_view("indexes")}
    return {**sql, **ledger_views(src, have, "index_chunks", "index_id", INDEX_CHUNK_TABLES)}


def in_list(values: Sequence[int]) -> str:
    """An SQL list of integers (for IN filters DuckLake can prune files with)."""
    return "(" + ", ".join(str(int(v)) for v in sorted(set(values))) + ")" if len(values) else "(NULL)"


def live_status(record: Mapping[str, Any], last_chunk_at: Any, stale_after_s: float,
                pid_alive: Callable[[int], bool]) -> str:
    """The record's status, ``interrupted`` for a ``running`` index whose writer is gone: a dead pid on this
    host, or no record write and no chunk commit for ``stale_after_s`` from another host."""
    status = record["status"]
    if status != "running":
        return status
    if record.get("host") == _HOST:
        pid = record.get("pid")
        return "interrupted" if pid is not None and not pd.isna(pid) and not pid_alive(int(pid)) else status
    beats = [pd.Timestamp(t) for t in (record.get("heartbeat_at"), last_chunk_at) if t is not None and not pd.isna(t)]
    now = pd.Timestamp.utcnow().tz_localize(None)
    return "interrupted" if not beats or (now - max(beats)).total_seconds() > stale_after_s else status



def clean_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with every missing value (NaN, NaT, pandas NA) as None."""
    return {k: (None if _missing(v) else v) for k, v in record.items()}


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (str, bytes, list, tuple, dict, np.ndarray)) and bool(pd.isna(value)))
