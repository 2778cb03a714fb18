"""SimLens result store: Parquet files written atomically, queried through DuckDB.

Writers (only the precompute code) use :class:`StoreWriter`; the dashboard uses :class:`Store`
(read-only, safe while writers write); :func:`merge_stores` combines stores written by several
machines/GPUs (``--shard K/N``). The schema and layout are declared in :mod:`core.store_schema`
(``SCHEMA``, ``schema_markdown()``); this module is the only place in SimLens that writes SQL.

Concurrency model
    DuckDB allows one writer *or* many readers per database file, so there is no database file.
    Every Parquet file is written under a ``.tmp-*`` name in its final directory, fsynced and
    renamed into place; a chunk is a directory (one file per chunk table) renamed into place only
    when complete. Readers use an in-memory DuckDB connection with views over
    ``read_parquet(glob, union_by_name=true, hive_partitioning=true)``; globs are re-evaluated on
    every query, so new chunks appear without reopening, and ``.tmp-*`` names never match.

Resume
    Chunk k of a run holds pairs ``[k*C, (k+1)*C)`` (C = ``chunk_size``); shard K/N owns the chunks
    with ``k % N == K-1``. A chunk directory exists only if complete, so ``completed_chunks()`` is
    exactly what a restarted writer may skip; rows are never duplicated because a chunk directory
    cannot be renamed over an existing one.

Unknown ids
    Reader query functions return an *empty* DataFrame (with the documented columns) for unknown
    run ids, dataset keys or pair ids, so a dashboard never crashes on a stale selection; use
    :meth:`Store.run_info` to test for existence. Only :meth:`Store.load_factors` raises (it
    returns an array, not a frame).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.metrics import score_metrics

from .store_schema import (
    CHUNK_TABLES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MARKER_FILE,
    META_TABLES,
    SCHEMA,
    TABLES,
    arrow_schema,
    file_columns,
    schema_markdown,
)

__all__ = [
    "SCHEMA",
    "METHODS",
    "Store",
    "StoreError",
    "ChunkExistsError",
    "StoreWriter",
    "chunk_pair_range",
    "completed_chunks",
    "decode_factor",
    "encode_factor",
    "make_eval_id",
    "make_run_id",
    "merge_stores",
    "parse_shard",
    "pos_pair_aggregate",
    "schema_markdown",
    "shard_chunks",
]

METHODS = ("bilrp", "ij", "hxp", "embedding", "predict")
STATUSES = ("running", "done", "failed")
# Run fields that must agree between all segments (shards) of one run.
RUN_IDENTITY = (
    "model_id", "dataset_key", "method", "layer", "steps", "quadrature", "pooling", "similarity",
    "n_pairs", "n_chunks", "chunk_size",
)
# Fields a caller may pass to finish_run(metrics=...).
FINISH_FIELDS = ("spearman", "pearson", "mse", "seconds", "pairs_per_s", "pairs_done", "device")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CHUNK_DIR_RE = re.compile(r"^chunk=(\d+)$")
_SEGMENT_STEM_RE = re.compile(r"^shard=(\d+)of(\d+)$")
_REV_RE = re.compile(r"^(?P<stem>[^.@][^@]*)@(?P<rev>\d+)\.parquet$")
_CHUNK_FILE_RE = re.compile(r"^(?P<table>[a-z_]+)\.(?P<tag>[0-9a-f]{8})\.parquet$")
_TEMP_RE = re.compile(r"^\.(?:tmp|trash)-(\d+)-([0-9a-f]{8})-([A-Za-z0-9_]*)-")
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
STALE_TEMP_SECONDS = 3600.0
REVISION_GRACE_SECONDS = 10.0  # superseded revisions are deleted only when older than this


class StoreError(Exception):
    """Any store problem: missing/invalid store, bad input, conflicting data."""


class ChunkExistsError(StoreError):
    """write_chunk() for a chunk that is already complete (use overwrite=True to replace it)."""


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise StoreError(f"invalid {what} {value!r}: use 1-128 characters [A-Za-z0-9_.-], not starting with '.'/'-'")
    return value


def make_run_id(model_id: str, dataset_key: str, method: str, layer: int | None,
                steps: int | None = None, quadrature: str | None = None) -> str:
    """Deterministic 16-hex-digit run id from the parameters that define a run's results."""
    payload = json.dumps(
        [str(model_id), str(dataset_key), str(method), None if layer is None else int(layer),
         None if steps is None else int(steps), None if quadrature is None else str(quadrature)],
        separators=(",", ":"),
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def make_eval_id(kind: str, model_id: str, dataset_key: str | None, params: Mapping[str, Any] | str | None) -> str:
    """Deterministic 16-hex-digit evaluation id from what defines an evaluation's results."""
    if isinstance(params, str):
        params = json.loads(params) if params else {}
    payload = json.dumps([str(kind), str(model_id), None if dataset_key is None else str(dataset_key),
                          params or {}], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


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


def _segment_stem(shard: tuple[int, int]) -> str:
    return f"shard={shard[0]}of{shard[1]}"


def _slug(key: str) -> str:
    """File-system safe, collision-free name for a dataset key."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._-")[:80] or "dataset"
    return f"{base}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


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


# --------------------------------------------------------------------------------------------------
# atomic file operations
# --------------------------------------------------------------------------------------------------


def _temp_name(name: str, prefix: str = "tmp") -> str:
    # Never ends in ".parquet", so no reader glob can match it; owner pid/host let cleanup
    # decide whether the writer that made it is gone.
    return f".{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{_HOST}-{name}.part"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_parquet(table: pa.Table, path: Path) -> None:
    with open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())


# Files that readers glob are never modified or replaced at the same path: DuckDB may read a file's
# footer and its data through separate opens, so an in-place replacement can pair an old footer with
# new data ("TProtocolException: Invalid data"). Records that change (run segments, meta data) are
# therefore published as new *revisions* ``<stem>@<rev:06d>.parquet`` (hard-linked into place, so a
# revision is never overwritten); readers list the directory and read only the highest revision of
# each stem; writers delete a superseded revision once it is not the previous one and is older than
# REVISION_GRACE_SECONDS, so a revision a reader has just listed never disappears under it.
# Chunk files carry a random tag: ``<table>.<tag>.parquet``.


def _revisions(directory: Path, stem: str | None = None) -> dict[str, list[tuple[int, Path]]]:
    """stem -> [(rev, path)] sorted by rev, for the revision files in ``directory``."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for e in _list_dir(directory):
        m = _REV_RE.match(e.name)
        if m and (stem is None or m.group("stem") == stem):
            out.setdefault(m.group("stem"), []).append((int(m.group("rev")), Path(e.path)))
    for revs in out.values():
        revs.sort()
    return out


def _latest(directory: Path, stem: str) -> Path | None:
    revs = _revisions(directory, stem).get(stem)
    return revs[-1][1] if revs else None


def _publish(directory: Path, stem: str, write: Any) -> Path:
    """Publish a new revision of ``stem`` in ``directory``; ``write(tmp_path)`` writes its content."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / _temp_name(stem)
    try:
        write(tmp)
        while True:
            revs = _revisions(directory, stem).get(stem, [])
            rev = revs[-1][0] + 1 if revs else 1
            target = directory / f"{stem}@{rev:06d}.parquet"
            try:
                os.link(tmp, target)  # fails if the revision exists: never overwrites
            except FileExistsError:
                continue
            except OSError:  # no hard links on this file system: rename (not clobber-safe)
                if target.exists():
                    continue
                os.rename(tmp, target)
            break
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(directory)
    now = time.time()
    for r, path in _revisions(directory, stem).get(stem, []):
        if r < rev - 1:
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > REVISION_GRACE_SECONDS:
                    path.unlink()
    return target


def _publish_table(table: pa.Table, directory: Path, stem: str) -> Path:
    return _publish(directory, stem, lambda tmp: _write_parquet(table, tmp))


def _chunk_files(chunk_dir: Path) -> dict[str, Path]:
    """table -> file of a chunk directory."""
    out = {}
    for e in _list_dir(chunk_dir):
        m = _CHUNK_FILE_RE.match(e.name)
        if m:
            out[m.group("table")] = Path(e.path)
    return out


def _atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _temp_name(path.name)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _copy_file_synced(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _is_stale_temp(path: Path) -> bool:
    m = _TEMP_RE.match(path.name)
    if not m:
        return False
    pid, host = int(m.group(1)), m.group(3)
    if host == _HOST and pid != os.getpid() and not _pid_alive(pid):
        return True
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_TEMP_SECONDS


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _list_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_store(root: Path) -> bool:
    return (root / MARKER_FILE).is_file()


def completed_chunks(store_path: str | os.PathLike, run_id: str) -> set[int]:
    """Indices of the complete chunks of ``run_id`` in the store at ``store_path``."""
    _check_id(run_id, "run_id")
    out = set()
    for e in _list_dir(Path(store_path) / "chunks" / f"run={run_id}"):
        m = _CHUNK_DIR_RE.match(e.name)
        if m and e.is_dir():
            out.add(int(m.group(1)))
    return out


def _chunk_dir(root: Path, run_id: str, chunk_index: int) -> Path:
    return root / "chunks" / f"run={run_id}" / f"chunk={int(chunk_index):06d}"


# --------------------------------------------------------------------------------------------------
# DataFrame <-> Arrow with the declared schema
# --------------------------------------------------------------------------------------------------


def _to_arrow(table: str, df: pd.DataFrame, context: str) -> pa.Table:
    schema = arrow_schema(table)
    arrays = []
    for field in schema:
        if field.name not in df.columns:
            arrays.append(pa.nulls(len(df), field.type))
            continue
        col = df[field.name]
        try:
            arrays.append(pa.array(col, type=field.type, from_pandas=True))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise StoreError(
                f"{context}: column {table}.{field.name} cannot be stored as "
                f"{SCHEMA[table][field.name][0]}: {exc}"
            ) from None
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, datetime)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: Columns of ``evaluations`` that describe the whole evaluation (the same on each of its rows).
_EVAL_META_COLS = ("eval_id", "kind", "model_id", "model_name", "dataset_key", "run_id", "n_pairs", "params",
                   "created_at", "seconds", "code_version")


def _check_columns(table: str, df: pd.DataFrame, required: Iterable[str], context: str,
                   extra_ok: Iterable[str] = ()) -> None:
    if not isinstance(df, pd.DataFrame):
        raise StoreError(f"{context}: table '{table}' must be a pandas DataFrame, got {type(df).__name__}")
    allowed = set(file_columns(table)) | set(extra_ok)
    unknown = [c for c in df.columns if c not in allowed]
    if unknown:
        raise StoreError(f"{context}: table '{table}' has unknown column(s) {unknown}; "
                         f"allowed: {sorted(allowed)}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreError(f"{context}: table '{table}' is missing required column(s) {missing}")


def _check_keys(table: str, df: pd.DataFrame, context: str, nullable: Iterable[str] = ()) -> None:
    key = list(TABLES[table].key)
    for c in key:
        if c not in nullable and df[c].isna().any():
            raise StoreError(f"{context}: table '{table}' has NULL values in key column '{c}'")
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        example = df.loc[dup, key].head(3).to_dict("records")
        raise StoreError(f"{context}: table '{table}' has duplicate rows for key {key}, e.g. {example}")


# --------------------------------------------------------------------------------------------------
# POS aggregate (writer side; exposed for tests and for callers that want to inspect it)
# --------------------------------------------------------------------------------------------------

_POS_AGG_SQL = """
WITH t AS (
    SELECT pair_id, i, j, CAST(relevance AS DOUBLE) AS r, pos_a, pos_b,
           coalesce(special_a, false) AS sa, coalesce(special_b, false) AS sb,
           CASE WHEN coalesce(special_a, false) OR word_a IS NULL THEN -1 - i ELSE word_a END AS ua,
           CASE WHEN coalesce(special_b, false) OR word_b IS NULL THEN -1 - j ELSE word_b END AS ub
    FROM tp_input
), w AS (
    SELECT pair_id, ua, ub, first(pos_a ORDER BY i, j) AS pos_a, first(pos_b ORDER BY j, i) AS pos_b,
           bool_or(sa) AS sa, bool_or(sb) AS sb, sum(r) AS r
    FROM t GROUP BY pair_id, ua, ub
), cells AS (
    SELECT pair_id, pos_a, pos_b, sa, sb, sum(greatest(r, 0)) AS ps, sum(least(r, 0)) AS ns,
           count(*) AS n, 0.0 AS wps, 0.0 AS wns, 0 AS wn
    FROM t GROUP BY pair_id, pos_a, pos_b, sa, sb
    UNION ALL
    SELECT pair_id, pos_a, pos_b, sa, sb, 0.0, 0.0, 0,
           sum(greatest(r, 0)), sum(least(r, 0)), count(*)
    FROM w GROUP BY pair_id, pos_a, pos_b, sa, sb
)
SELECT pair_id, pos_a, pos_b, sa AS special_a, sb AS special_b,
       sum(ps) AS pos_sum, sum(ns) AS neg_sum, CAST(sum(n) AS INTEGER) AS n_token_pairs,
       sum(wps) AS word_pos_sum, sum(wns) AS word_neg_sum, CAST(sum(wn) AS INTEGER) AS n_word_pairs,
       CAST(row_number() OVER (PARTITION BY pair_id, pos_a, pos_b ORDER BY sa, sb) = 1 AS TINYINT) AS pair_count
FROM cells
GROUP BY pair_id, pos_a, pos_b, sa, sb
ORDER BY pair_id, pos_a NULLS LAST, pos_b NULLS LAST, special_a, special_b
"""


def pos_pair_aggregate(token_pairs: pd.DataFrame) -> pd.DataFrame:
    """pos_pairs rows for a frame of token_pairs rows (one chunk or any subset).

    Groups by (pair_id, pos_a, pos_b, special_a, special_b); NULL POS stays NULL. Token level:
    ``pos_sum``/``neg_sum`` = sums of the positive/negative relevances, ``n_token_pairs``.
    Word level: relevances are first summed over the subword pieces of each (word_a, word_b) pair
    (a special token or a token without word_index is its own word; a word takes the POS of its
    first piece), then split into ``word_pos_sum``/``word_neg_sum``; ``n_word_pairs`` counts them.
    ``pair_count`` is 1 on one row per (pair_id, pos_a, pos_b) (the one with fewest special tokens).
    Needs pair_id, i, j, relevance; pos_*/word_*/special_* default to NULL/NULL/False.
    """
    needed = ["pair_id", "i", "j", "relevance"]
    missing = [c for c in needed if c not in token_pairs.columns]
    if missing:
        raise StoreError(f"pos_pair_aggregate: token_pairs is missing column(s) {missing}")
    df = token_pairs[needed].copy()
    for c, default in (("pos_a", None), ("pos_b", None), ("word_a", None), ("word_b", None),
                       ("special_a", False), ("special_b", False)):
        df[c] = token_pairs[c] if c in token_pairs.columns else default
    tbl = pa.table({
        "pair_id": pa.array(df["pair_id"], pa.int64(), from_pandas=True),
        "i": pa.array(df["i"], pa.int64(), from_pandas=True),
        "j": pa.array(df["j"], pa.int64(), from_pandas=True),
        "relevance": pa.array(df["relevance"], pa.float64(), from_pandas=True),
        "pos_a": pa.array(df["pos_a"], pa.string(), from_pandas=True),
        "pos_b": pa.array(df["pos_b"], pa.string(), from_pandas=True),
        "word_a": pa.array(df["word_a"], pa.int64(), from_pandas=True),
        "word_b": pa.array(df["word_b"], pa.int64(), from_pandas=True),
        "special_a": pa.array(df["special_a"], pa.bool_(), from_pandas=True),
        "special_b": pa.array(df["special_b"], pa.bool_(), from_pandas=True),
    })
    con = duckdb.connect()
    try:
        con.register("tp_input", tbl)
        out = con.execute(_POS_AGG_SQL).df()
    finally:
        con.close()
    return out


# --------------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------------


def _init_store_dir(root: Path, create: bool) -> None:
    if root.exists() and not root.is_dir():
        raise StoreError(f"store path {str(root)!r} exists and is not a directory")
    if root.is_dir() and _is_store(root):
        return
    if root.is_dir() and any(True for _ in root.iterdir()):
        raise StoreError(f"{str(root)!r} is a non-empty directory that is not a SimLens store "
                         f"(no {MARKER_FILE})")
    if not create:
        raise StoreError(f"SimLens store {str(root)!r} does not exist")
    root.mkdir(parents=True, exist_ok=True)
    for sub in (*(f"meta/{t}" for t in META_TABLES), "runs", "chunks", ".trash"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    marker = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "created_at": _utcnow().isoformat()}
    _atomic_write_bytes(json.dumps(marker, indent=1).encode(), root / MARKER_FILE)


def _read_one_row(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        tbl = pq.read_table(path)
    except FileNotFoundError:
        return None
    rows = tbl.to_pylist()
    return rows[0] if rows else None


def _same_value(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


class StoreWriter:
    """The only writer of a store (used by precompute). One instance = one shard ``K/N``.

    Every method is atomic with respect to readers and to a crash: a killed writer leaves only
    complete files/chunks behind plus ``.tmp-*`` leftovers, which readers never see and which
    the next writer removes (when their owner process is gone or they are > 1 h old).
    """

    def __init__(self, path: str | os.PathLike, shard: str | tuple[int, int] | None = None,
                 *, create: bool = True) -> None:
        self.root = Path(path)
        _init_store_dir(self.root, create)
        self.shard = parse_shard(shard)
        self._segments: dict[str, dict[str, Any]] = {}
        self._pairs_cache: dict[str, pd.DataFrame] = {}
        self._session: dict[str, dict[str, float]] = {}
        self._before_commit = None  # test hook: called with the temp chunk dir before the rename
        self.cleanup_temp()

    # ---- housekeeping -------------------------------------------------------------------------
    def cleanup_temp(self, run_id: str | None = None) -> list[Path]:
        """Remove ``.tmp-*``/``.trash-*`` leftovers of dead writers (or > 1 h old); returns them."""
        dirs: list[Path] = [self.root / ".trash", self.root / "runs"]
        dirs += [self.root / "meta" / t for t in META_TABLES]
        runs_dir, chunks_dir = self.root / "runs", self.root / "chunks"
        if run_id is None:
            dirs += [Path(e.path) for e in _list_dir(runs_dir) if e.is_dir() and not e.name.startswith(".")]
            dirs += [Path(e.path) for e in _list_dir(chunks_dir) if e.name.startswith("run=")]
            dirs.append(chunks_dir)
        else:
            dirs += [runs_dir / run_id, chunks_dir / f"run={run_id}"]
        removed = []
        for d in dirs:
            for e in _list_dir(d):
                p = Path(e.path)
                if e.name.startswith((".tmp-", ".trash-")) and _is_stale_temp(p):
                    _remove(p)
                    removed.append(p)
        return removed

    def _trash(self, path: Path) -> Path | None:
        """Atomically move ``path`` out of every reader glob (into <store>/.trash)."""
        trash = self.root / ".trash"
        trash.mkdir(exist_ok=True)
        target = trash / _temp_name(path.name.replace("=", "_"), prefix="trash")
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target

    # ---- meta tables --------------------------------------------------------------------------
    def _put_meta(self, table: str, df: pd.DataFrame, stem: str, replace: bool, context: str) -> str:
        new = _to_arrow(table, df, context)
        directory = self.root / "meta" / table
        path = _latest(directory, stem)
        if path is not None:
            old = pq.read_table(path)
            if old.schema.equals(new.schema) and old.equals(new):
                return "unchanged"
            if not replace:
                raise StoreError(f"{context}: {path} already holds different content; "
                                 f"pass replace=True to overwrite it")
        _publish_table(new, directory, stem)
        return "written"

    def put_dataset(self, meta: Mapping[str, Any], pairs: pd.DataFrame, *, replace: bool = False) -> str:
        """Store a dataset's metadata and its pairs. Returns "written" or "unchanged".

        ``meta`` needs dataset_key, name, split (lang_a, lang_b, source, skipped (dict or JSON),
        gold_min, gold_max optional; n_pairs is checked/derived). ``pairs`` (e.g. a
        ``PairDataset.frame``) needs sentence1, sentence2, gold, in dataset order; pair_id (unique,
        >= 0, gaps allowed) defaults to the row number; pair_index is always the row number 0..n-1
        (chunks are cut by it); gold_norm defaults to (gold - gold_min) / (gold_max - gold_min).
        Columns not in the schema are ignored. Re-putting identical content is a no-op; different
        content needs ``replace=True``.
        """
        ctx = "put_dataset"
        meta = dict(meta)
        unknown = [k for k in meta if k not in SCHEMA["datasets"]]
        if unknown:
            raise StoreError(f"{ctx}: unknown dataset field(s) {unknown}; allowed: {list(SCHEMA['datasets'])}")
        missing = [k for k in TABLES["datasets"].required if meta.get(k) is None]
        if missing:
            raise StoreError(f"{ctx}: dataset meta is missing required field(s) {missing}")
        key = str(meta["dataset_key"])
        if not isinstance(pairs, pd.DataFrame):
            raise StoreError(f"{ctx}({key}): pairs must be a pandas DataFrame")
        missing = [c for c in TABLES["pairs"].required if c not in pairs.columns]
        if missing:
            raise StoreError(f"{ctx}({key}): table 'pairs' is missing required column(s) {missing}")
        p = pairs[[c for c in SCHEMA["pairs"] if c in pairs.columns]].reset_index(drop=True).copy()
        if "dataset_key" in p.columns and not (p["dataset_key"] == key).all():
            raise StoreError(f"{ctx}({key}): pairs.dataset_key differs from meta dataset_key")
        p["dataset_key"] = key
        if "pair_id" not in p.columns:
            p["pair_id"] = np.arange(len(p))
        ids = pd.to_numeric(p["pair_id"], errors="coerce")
        if ids.isna().any() or (ids < 0).any() or (ids != ids.round()).any() or ids.duplicated().any():
            raise StoreError(f"{ctx}({key}): pair_id must be unique non-negative integers")
        if "pair_index" in p.columns and p["pair_index"].tolist() != list(range(len(p))):
            raise StoreError(f"{ctx}({key}): pair_index must be the row number 0..{len(p) - 1}")
        p["pair_index"] = np.arange(len(p))
        gold = pd.to_numeric(p["gold"], errors="coerce")
        gmin = meta.get("gold_min")
        gmax = meta.get("gold_max")
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
        slug = _slug(key)
        s1 = self._put_meta("pairs", p, slug, replace, f"{ctx}({key})")
        s2 = self._put_meta("datasets", pd.DataFrame([meta]), slug, replace, f"{ctx}({key})")
        self._pairs_cache.pop(key, None)
        return "written" if "written" in (s1, s2) else "unchanged"

    def put_model(self, meta: Mapping[str, Any], *, replace: bool = False) -> str:
        """Store a model's metadata (model_id, name required). Returns "written" or "unchanged"."""
        ctx = "put_model"
        meta = dict(meta)
        unknown = [k for k in meta if k not in SCHEMA["models"]]
        if unknown:
            raise StoreError(f"{ctx}: unknown model field(s) {unknown}; allowed: {list(SCHEMA['models'])}")
        missing = [k for k in TABLES["models"].required if meta.get(k) is None]
        if missing:
            raise StoreError(f"{ctx}: model meta is missing required field(s) {missing}")
        mid = _check_id(meta["model_id"], "model_id")
        return self._put_meta("models", pd.DataFrame([meta]), mid, replace, f"{ctx}({mid})")

    def put_evaluation(self, meta: Mapping[str, Any], rows: pd.DataFrame) -> str:
        """Store one faithfulness evaluation (all its rows) as a revisioned record; returns its eval_id.

        ``meta`` needs kind and model_id (the model must be stored: :meth:`put_model`), and may give
        model_name (default: the stored model's name), dataset_key (must be stored: :meth:`put_dataset`),
        run_id, n_pairs, params (dict or JSON object text), seconds, code_version, created_at (default: now).
        eval_id is :func:`make_eval_id` of kind, model_id, dataset_key and params (a given one must match), so
        re-running the same evaluation publishes a new revision of the same record. ``rows`` (at least one)
        needs metric and y and may hold method, layer, steps, quadrature, series, label, x, y_sd, n and extra
        (dict or JSON text); row_index is their position.
        """
        ctx = "put_evaluation"
        meta = dict(meta)
        row_fields = [c for c in SCHEMA["evaluations"] if c not in _EVAL_META_COLS]
        unknown = [k for k in meta if k not in _EVAL_META_COLS]
        if unknown:
            raise StoreError(f"{ctx}: unknown evaluation field(s) {unknown}; allowed: {list(_EVAL_META_COLS)}")
        for k in ("kind", "model_id"):
            if meta.get(k) is None:
                raise StoreError(f"{ctx}: evaluation meta is missing required field {k!r}")
        kind = meta["kind"]
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", kind):
            raise StoreError(f"{ctx}: invalid kind {kind!r}: use lower-case letters, digits, '-' and '_'")
        model_id = _check_id(meta["model_id"], "model_id")
        model = self._model_meta(model_id)
        if model is None:
            raise StoreError(f"{ctx}: model {model_id!r} is not in the store; call put_model() first")
        key = meta.get("dataset_key")
        if key is not None and self._dataset_meta(str(key)) is None:
            raise StoreError(f"{ctx}: dataset {key!r} is not in the store; call put_dataset() first")
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
                           else v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=_json_default)
                           for v in df["extra"]]
        df["row_index"] = np.arange(len(df))
        df["eval_id"] = eval_id
        df["kind"] = kind
        df["model_id"] = model_id
        df["model_name"] = meta.get("model_name") or model.get("name")
        df["dataset_key"] = key
        df["run_id"] = meta.get("run_id")
        df["n_pairs"] = meta.get("n_pairs")
        df["params"] = json.dumps(params, sort_keys=True, default=_json_default)
        df["created_at"] = meta.get("created_at") or _utcnow()
        df["seconds"] = meta.get("seconds")
        df["code_version"] = meta.get("code_version")
        self._put_meta("evaluations", df, eval_id, True, f"{ctx}({kind}, {eval_id})")
        return eval_id

    def _dataset_meta(self, key: str) -> dict[str, Any] | None:
        return _read_one_row(_latest(self.root / "meta" / "datasets", _slug(key)))

    def _model_meta(self, model_id: str) -> dict[str, Any] | None:
        return _read_one_row(_latest(self.root / "meta" / "models", model_id))

    def _pairs(self, key: str) -> pd.DataFrame:
        """pair_id, pair_index, gold, gold_norm of a dataset, in pair_index order."""
        if key not in self._pairs_cache:
            path = _latest(self.root / "meta" / "pairs", _slug(key))
            if path is None:
                raise StoreError(f"dataset {key!r} has no pairs in {str(self.root)!r}")
            tbl = pq.read_table(path, columns=["pair_id", "pair_index", "gold", "gold_norm"])
            self._pairs_cache[key] = tbl.to_pandas().sort_values("pair_index").reset_index(drop=True)
        return self._pairs_cache[key]

    def chunk_pair_ids(self, run_id: str, chunk_index: int) -> list[int]:
        """pair_ids of chunk ``chunk_index`` of a run: pair_index in [k*C, (k+1)*C), in order."""
        seg = self._segment(run_id)
        r = chunk_pair_range(chunk_index, seg["chunk_size"], seg["n_pairs"])
        return [int(x) for x in self._pairs(seg["dataset_key"])["pair_id"].iloc[r.start:r.stop]]

    # ---- runs ---------------------------------------------------------------------------------
    def _read_segment(self, run_id: str) -> dict[str, Any] | None:
        return _read_one_row(_latest(self.root / "runs" / run_id, _segment_stem(self.shard)))

    def _write_segment(self, seg: dict[str, Any]) -> None:
        tbl = _to_arrow("runs", pd.DataFrame([seg]), f"run {seg['run_id']}")
        _publish_table(tbl, self.root / "runs" / seg["run_id"], _segment_stem(self.shard))
        self._segments[seg["run_id"]] = dict(seg)

    def _segment(self, run_id: str) -> dict[str, Any]:
        _check_id(run_id, "run_id")
        seg = self._segments.get(run_id) or self._read_segment(run_id)
        if seg is None:
            raise StoreError(f"run {run_id} (shard {self.shard[0]}/{self.shard[1]}) is not started in "
                             f"{str(self.root)!r}; call start_run() first")
        self._segments[run_id] = seg
        return seg

    def start_run(self, run: Mapping[str, Any], *, force: bool = False) -> str | None:
        """Register (or resume) this writer's segment of a run; returns the previous status.

        ``run`` needs model_id, dataset_key, method, layer, chunk_size; optional steps, quadrature,
        pooling/similarity (default: the model's), code_version, device, n_pairs (default: the
        dataset's), run_id (checked against :func:`make_run_id`). Model and dataset must have been
        stored. Returns None for a new segment, ``"done"`` for a finished one (nothing changed:
        the caller should skip it unless ``force``; ``force=True`` deletes the run's results (a
        sharded writer: only its shard's) and starts afresh), or ``"running"``/``"failed"`` for a resumed one (its complete chunks stay:
        skip :meth:`completed_chunks`).
        """
        ctx = "start_run"
        run = dict(run)
        allowed = set(RUN_IDENTITY) | {"run_id", "shard", "code_version", "device", "n_chunks"}
        unknown = [k for k in run if k not in allowed]
        if unknown:
            raise StoreError(f"{ctx}: unknown run field(s) {unknown}; allowed: {sorted(allowed)}")
        missing = [k for k in ("model_id", "dataset_key", "method", "layer", "chunk_size") if k not in run]
        if missing:
            raise StoreError(f"{ctx}: run is missing required field(s) {missing}")
        if run["method"] not in METHODS:
            raise StoreError(f"{ctx}: unknown method {run['method']!r}; known: {METHODS}")
        if "shard" in run and parse_shard(run["shard"]) != self.shard:
            raise StoreError(f"{ctx}: run shard {run['shard']} differs from the writer's shard "
                             f"{self.shard[0]}/{self.shard[1]}")
        model_id = _check_id(run["model_id"], "model_id")
        key = str(run["dataset_key"])
        ds = self._dataset_meta(key)
        if ds is None:
            raise StoreError(f"{ctx}: dataset {key!r} is not in the store; call put_dataset() first")
        model = self._model_meta(model_id)
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
        run_id = make_run_id(model_id, key, run["method"], layer, steps, quad)
        if run.get("run_id") is not None and run["run_id"] != run_id:
            raise StoreError(f"{ctx}: run_id {run['run_id']!r} does not match make_run_id(...) = {run_id!r}")
        seg = {
            "run_id": run_id, "shard": f"{self.shard[0]}/{self.shard[1]}", "model_id": model_id,
            "dataset_key": key, "method": run["method"], "layer": layer, "steps": steps, "quadrature": quad,
            "pooling": run.get("pooling") or model.get("pooling"),
            "similarity": run.get("similarity") or model.get("similarity"),
            "code_version": run.get("code_version"), "status": "running", "n_pairs": n_pairs,
            "n_chunks": n_chunks, "chunk_size": chunk_size, "started_at": _utcnow(), "finished_at": None,
            "seconds": None, "pairs_done": None, "pairs_per_s": None, "device": run.get("device"),
            "host": socket.gethostname(), "pid": os.getpid(), "spearman": None, "pearson": None,
            "mse": None, "error_message": None,
        }
        # identity must agree with every other segment of the run (other shards, earlier attempts),
        # except those that force is about to delete
        scope = "run" if self.shard == (1, 1) else "shard"
        for other in self._all_segments(run_id):
            if force and (scope == "run" or other.get("shard") == seg["shard"]):
                continue
            diff = [f for f in RUN_IDENTITY if not _same_value(other.get(f), seg[f])]
            if diff:
                raise StoreError(
                    f"{ctx}: run {run_id} already exists (shard {other.get('shard')}) with different "
                    f"{', '.join(f'{f}={other.get(f)!r} (new {seg[f]!r})' for f in diff)}"
                )
        self._segments.pop(run_id, None)
        prev = self._read_segment(run_id)
        prev_status = prev["status"] if prev else None
        if prev_status == "done" and not force:
            return "done"
        if force:
            self.delete_run(run_id, scope=scope)
        elif prev is not None:
            seg["started_at"] = prev.get("started_at") or seg["started_at"]
        (self.root / "chunks" / f"run={run_id}").mkdir(parents=True, exist_ok=True)
        self.cleanup_temp(run_id)
        self._write_segment(seg)
        self._session[run_id] = {"t0": time.monotonic(), "pairs": 0}
        return prev_status

    def _all_segments(self, run_id: str) -> list[dict[str, Any]]:
        out = []
        for stem, revs in _revisions(self.root / "runs" / run_id).items():
            if _SEGMENT_STEM_RE.match(stem):
                row = _read_one_row(revs[-1][1])
                if row:
                    out.append(row)
        return out

    def completed_chunks(self, run_id: str) -> set[int]:
        """Complete chunks of the run (any shard) in this store."""
        return completed_chunks(self.root, run_id)

    def pending_chunks(self, run_id: str) -> list[int]:
        """This shard's chunks of the run that are not complete yet, in order."""
        seg = self._segment(run_id)
        done = self.completed_chunks(run_id)
        return [c for c in shard_chunks(seg["n_chunks"], self.shard) if c not in done]

    def finish_run(self, run_id: str, metrics: Mapping[str, Any] | None = None, status: str = "done") -> None:
        """Mark this writer's segment finished, storing metrics.

        ``metrics`` may hold spearman, pearson (x100), mse (0-1), and override seconds (default:
        since start_run in this process), pairs_done (default: predictions rows in this shard's
        chunks), pairs_per_s (default: pairs written in this session / seconds), device.
        """
        if status not in STATUSES:
            raise StoreError(f"finish_run: status must be one of {STATUSES}")
        metrics = dict(metrics or {})
        unknown = [k for k in metrics if k not in FINISH_FIELDS]
        if unknown:
            raise StoreError(f"finish_run: unknown metric(s) {unknown}; allowed: {FINISH_FIELDS}")
        seg = dict(self._segment(run_id))
        sess = self._session.get(run_id)
        seconds = time.monotonic() - sess["t0"] if sess else None
        if "pairs_done" not in metrics:
            metrics["pairs_done"] = self._count_predictions(run_id, seg)
        if "seconds" not in metrics:
            metrics["seconds"] = seconds
        if "pairs_per_s" not in metrics and sess and metrics["seconds"]:
            metrics["pairs_per_s"] = sess["pairs"] / metrics["seconds"]
        for k, v in metrics.items():
            if v is not None:
                seg[k] = v
        seg["status"] = status
        seg["finished_at"] = _utcnow() if status != "running" else None
        self._write_segment(seg)

    def fail_run(self, run_id: str, message: str) -> None:
        """Mark this writer's segment failed with ``message`` (complete chunks are kept)."""
        seg = dict(self._segment(run_id))
        seg["status"] = "failed"
        seg["error_message"] = str(message)
        seg["finished_at"] = _utcnow()
        self._write_segment(seg)

    def _count_predictions(self, run_id: str, seg: Mapping[str, Any]) -> int:
        mine = set(shard_chunks(seg["n_chunks"], self.shard))
        total = 0
        for c in self.completed_chunks(run_id) & mine:
            f = _chunk_files(_chunk_dir(self.root, run_id, c)).get("predictions")
            if f is not None:
                with contextlib.suppress(OSError):
                    total += pq.read_metadata(f).num_rows
        return total

    def delete_run(self, run_id: str, *, scope: str = "auto") -> None:
        """Delete a run's results (for ``--force``).

        scope="run": every chunk and segment; scope="shard": this writer's segment and the
        chunks its shard owns; "auto" = "run" for an unsharded writer, else "shard". Chunks
        disappear from readers atomically one directory at a time.
        """
        _check_id(run_id, "run_id")
        if scope == "auto":
            scope = "run" if self.shard == (1, 1) else "shard"
        if scope not in ("run", "shard"):
            raise StoreError("delete_run: scope must be 'auto', 'run' or 'shard'")
        chunks_dir = self.root / "chunks" / f"run={run_id}"
        trashed: list[Path | None] = []
        if scope == "run":
            trashed.append(self._trash(chunks_dir))
            trashed.append(self._trash(self.root / "runs" / run_id))
        else:
            k, n = self.shard
            for c in sorted(self.completed_chunks(run_id)):
                if c % n == k - 1:  # chunks this shard owns
                    trashed.append(self._trash(_chunk_dir(self.root, run_id, c)))
            for _rev, path in _revisions(self.root / "runs" / run_id, _segment_stem(self.shard)).get(
                    _segment_stem(self.shard), []):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        for t in trashed:
            if t is not None:
                _remove(t)
        self._segments.pop(run_id, None)

    # ---- chunks -------------------------------------------------------------------------------
    def write_chunk(self, run_id: str, chunk_index: int, tables: Mapping[str, pd.DataFrame | None],
                    *, overwrite: bool = False) -> Path:
        """Write chunk ``chunk_index`` of a run atomically; returns its directory.

        ``tables`` maps chunk table names (predictions, tokens, token_pairs, pos_pairs, factors)
        to DataFrames without run_id (a run_id/chunk_index column, if present, must match).
        Missing tables are written empty; derivable columns are filled in: token_pairs'
        token_*/pos_*/word_*/special_* from ``tokens``; pos_pairs via :func:`pos_pair_aggregate`;
        predictions' gold/gold_norm from the dataset, n_tokens_* from tokens, matrix_sum from
        token_pairs, residual = explained_score - matrix_sum, error = model_score - gold_norm.
        Factor vectors may be given as arrays (stored as float16). pair_ids must belong to the
        chunk (:meth:`chunk_pair_ids`); keys must be unique. Raises ChunkExistsError if the chunk is complete
        already (``overwrite=True`` replaces it; readers may then briefly miss the chunk).
        """
        seg = self._segment(run_id)
        k = int(chunk_index)
        ctx = f"write_chunk(run {run_id}, chunk {k})"
        if seg["status"] != "running":
            raise StoreError(f"{ctx}: run segment is {seg['status']!r}; call start_run() first")
        if not 0 <= k < seg["n_chunks"]:
            raise StoreError(f"{ctx}: chunk index outside 0..{seg['n_chunks'] - 1}")
        if k % self.shard[1] != self.shard[0] - 1:
            raise StoreError(f"{ctx}: chunk belongs to shard {k % self.shard[1] + 1}/{self.shard[1]}, "
                             f"not to this writer's shard {self.shard[0]}/{self.shard[1]}")
        final = _chunk_dir(self.root, run_id, k)
        if final.exists() and not overwrite:
            raise ChunkExistsError(f"{ctx}: chunk already complete at {final}")
        prepared = self._prepare_chunk(run_id, seg, k, tables, ctx)
        run_dir = final.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / _temp_name(final.name)
        tmp.mkdir()
        try:
            for name in CHUNK_TABLES:
                _write_parquet(prepared[name], tmp / f"{name}.{uuid.uuid4().hex[:8]}.parquet")
            _fsync_dir(tmp)
            if self._before_commit is not None:
                self._before_commit(tmp)
            old = self._trash(final) if overwrite else None
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ChunkExistsError(f"{ctx}: chunk was completed concurrently at {final}") from None
                raise
            if old is not None:
                _remove(old)
        except BaseException:
            _remove(tmp)
            raise
        _fsync_dir(run_dir)
        sess = self._session.setdefault(run_id, {"t0": time.monotonic(), "pairs": 0})
        sess["pairs"] += prepared["predictions"].num_rows
        return final

    def _prepare_chunk(self, run_id: str, seg: Mapping[str, Any], k: int,
                       tables: Mapping[str, pd.DataFrame | None], ctx: str) -> dict[str, pa.Table]:
        unknown = [t for t in tables if t not in CHUNK_TABLES]
        if unknown:
            raise StoreError(f"{ctx}: unknown table(s) {unknown}; chunk tables are {CHUNK_TABLES}")
        frames: dict[str, pd.DataFrame | None] = {}
        for name in CHUNK_TABLES:
            df = tables.get(name)
            if df is None:
                frames[name] = None
                continue
            _check_columns(name, df, (), ctx, extra_ok=("run_id", "chunk_index"))
            df = df.copy()
            if "run_id" in df.columns:
                if not (df["run_id"] == run_id).all():
                    raise StoreError(f"{ctx}: table '{name}' has run_id values other than {run_id!r}")
                df = df.drop(columns="run_id")
            if "chunk_index" in df.columns:
                if not (df["chunk_index"] == k).all():
                    raise StoreError(f"{ctx}: table '{name}' has chunk_index values other than {k}")
                df = df.drop(columns="chunk_index")
            frames[name] = df.reset_index(drop=True)

        tokens = frames["tokens"]
        if tokens is not None:
            _check_columns("tokens", tokens, TABLES["tokens"].required, ctx)
            _check_keys("tokens", tokens, ctx)
            bad = ~tokens["side"].isin(["a", "b"])
            if bad.any():
                raise StoreError(f"{ctx}: tokens.side must be 'a' or 'b', got {sorted(set(tokens.loc[bad, 'side']))}")
            tokens["is_special"] = tokens["is_special"].fillna(False) if "is_special" in tokens else False

        tp = frames["token_pairs"]
        if tp is not None:
            _check_columns("token_pairs", tp, TABLES["token_pairs"].required, ctx)
            tp = self._denormalise_token_pairs(tp, tokens, ctx)
            frames["token_pairs"] = tp

        if frames["pos_pairs"] is None and tp is not None and len(tp):
            frames["pos_pairs"] = pos_pair_aggregate(tp)
        elif frames["pos_pairs"] is not None:
            pp = frames["pos_pairs"]
            _check_columns("pos_pairs", pp, TABLES["pos_pairs"].required, ctx)
            if "pair_count" not in pp.columns:
                order = pp.sort_values(["pair_id", "pos_a", "pos_b", "special_a", "special_b"], kind="stable")
                first = ~order.duplicated(["pair_id", "pos_a", "pos_b"])
                pp["pair_count"] = first.reindex(pp.index).astype("int8")

        pred = frames["predictions"]
        if pred is not None:
            _check_columns("predictions", pred, TABLES["predictions"].required, ctx)
            frames["predictions"] = self._derive_predictions(pred, seg, tokens, tp)

        fac = frames["factors"]
        if fac is not None:
            _check_columns("factors", fac, TABLES["factors"].required, ctx)
            blobs = [v if isinstance(v, (bytes, bytearray, memoryview)) or v is None else encode_factor(v)
                     for v in fac["factor"]]
            fac["factor"] = pd.Series(blobs, dtype=object, index=fac.index)
            lengths = pd.Series([None if b is None else len(b) // 2 for b in blobs], index=fac.index, dtype="Int64")
            if "dim" not in fac.columns:
                fac["dim"] = lengths
            elif not (pd.to_numeric(fac["dim"]).astype("Int64") == lengths).fillna(False).all():
                raise StoreError(f"{ctx}: factors.dim does not match the length of factors.factor (float16)")

        allowed_ids = set(self.chunk_pair_ids(run_id, k))
        out: dict[str, pa.Table] = {}
        for name in CHUNK_TABLES:
            df = frames[name]
            if df is None:
                out[name] = arrow_schema(name).empty_table()
                continue
            nullable = ("pos_a", "pos_b") if name == "pos_pairs" else ()
            _check_keys(name, df, ctx, nullable=nullable)
            outside = ~df["pair_id"].isin(allowed_ids)
            if outside.any():
                bad = sorted(set(df.loc[outside, "pair_id"].tolist()))[:5]
                raise StoreError(f"{ctx}: table '{name}' has pair_id(s) {bad} that are not in this chunk "
                                 f"(pair_index [{k * seg['chunk_size']}, {(k + 1) * seg['chunk_size']}) of "
                                 f"{seg['dataset_key']!r}; see chunk_pair_ids())")
            df = df.sort_values(list(TABLES[name].key), kind="stable", na_position="last")
            out[name] = _to_arrow(name, df, ctx)
        return out

    @staticmethod
    def _denormalise_token_pairs(tp: pd.DataFrame, tokens: pd.DataFrame | None, ctx: str) -> pd.DataFrame:
        denorm = {"token": "token", "pos": "pos", "word_index": "word", "is_special": "special"}
        wanted = [f"{v}_{s}" for v in denorm.values() for s in ("a", "b")]
        missing = [c for c in wanted if c not in tp.columns]
        if missing and tokens is not None:
            for side, idx in (("a", "i"), ("b", "j")):
                cols = [c for c, v in denorm.items() if f"{v}_{side}" in missing and c in tokens.columns]
                if not cols:
                    continue
                t = tokens.loc[tokens["side"] == side, ["pair_id", "token_index", *cols]]
                t = t.rename(columns={"token_index": idx, **{c: f"{denorm[c]}_{side}" for c in cols}})
                t["_found"] = True
                tp = tp.merge(t, on=["pair_id", idx], how="left", validate="many_to_one")
                if tp["_found"].isna().any():
                    bad = tp.loc[tp["_found"].isna(), ["pair_id", idx]].head(3).to_dict("records")
                    raise StoreError(f"{ctx}: token_pairs rows refer to side-{side} tokens not in 'tokens', e.g. {bad}")
                tp = tp.drop(columns="_found")
            missing = [c for c in wanted if c not in tp.columns]
        hard = [c for c in missing if c.startswith("token_")]
        if hard:
            raise StoreError(f"{ctx}: table 'token_pairs' is missing required column(s) {hard} "
                             f"(give them or a 'tokens' table to derive them from)")
        for side in ("a", "b"):
            col = f"special_{side}"
            tp[col] = tp[col].fillna(False) if col in tp.columns else False
        return tp

    def _derive_predictions(self, pred: pd.DataFrame, seg: Mapping[str, Any], tokens: pd.DataFrame | None,
                            tp: pd.DataFrame | None) -> pd.DataFrame:
        ids = pred["pair_id"]
        if "gold" not in pred.columns or "gold_norm" not in pred.columns:
            gold = self._pairs(seg["dataset_key"]).set_index("pair_id")
            for c in ("gold", "gold_norm"):
                if c not in pred.columns:
                    pred[c] = ids.map(gold[c]).astype(float)
        if tokens is not None:
            counts = tokens.groupby(["pair_id", "side"]).size()
            for side in ("a", "b"):
                col = f"n_tokens_{side}"
                if col not in pred.columns:
                    per = counts.xs(side, level="side") if side in counts.index.get_level_values("side") else pd.Series(dtype=int)
                    pred[col] = ids.map(per).astype("Int64")
        if "matrix_sum" not in pred.columns and tp is not None:
            sums = tp.groupby("pair_id")["relevance"].apply(lambda r: float(np.asarray(r, dtype=np.float64).sum()))
            pred["matrix_sum"] = ids.map(sums).astype(float)
        if "residual" not in pred.columns and "explained_score" in pred.columns and "matrix_sum" in pred.columns:
            pred["residual"] = pd.to_numeric(pred["explained_score"]) - pd.to_numeric(pred["matrix_sum"])
        if "error" not in pred.columns:
            pred["error"] = pd.to_numeric(pred["model_score"]) - pd.to_numeric(pred["gold_norm"])
        pred["truncated"] = pred["truncated"].fillna(False) if "truncated" in pred.columns else False
        return pred


# --------------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------------


def _tables_equal(a: Path, b: Path) -> bool:
    if a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes():
        return True
    try:
        return pq.read_table(a).equals(pq.read_table(b))
    except (OSError, pa.ArrowException):
        return False


def _created_at(path: Path) -> datetime:
    row = _read_one_row(path) or {}
    return row.get("created_at") or datetime.min


def _segment_rank(seg: Mapping[str, Any]) -> tuple:
    t = seg.get("finished_at") or seg.get("started_at") or datetime.min
    return (seg.get("status") == "done", t)


def merge_stores(sources: Sequence[str | os.PathLike], dest: str | os.PathLike) -> dict[str, int]:
    """Merge the chunks, meta data and run segments of ``sources`` into ``dest`` (created if needed).

    Idempotent: records/chunks already present with identical content are skipped. Conflicts
    raise StoreError before anything is copied: a dataset/pairs/model record or a chunk present
    in two stores with different content, or run segments whose identity fields (model,
    dataset, method, layer, steps, quadrature, pooling, similarity, n_pairs, chunk_size)
    disagree. The same (run, shard) segment in several stores resolves to the finished one,
    then the later one. Safe while readers read ``dest``. Returns counts of copied/skipped items.
    """
    dest_root = Path(dest)
    src_roots = []
    for s in sources:
        r = Path(s)
        if not _is_store(r):
            raise StoreError(f"merge_stores: source {str(r)!r} is not a SimLens store")
        if not dest_root.exists() or r.resolve() != dest_root.resolve():
            src_roots.append(r)
    _init_store_dir(dest_root, create=True)
    counts = {"meta_copied": 0, "meta_skipped": 0, "segments_copied": 0, "segments_skipped": 0,
              "chunks_copied": 0, "chunks_skipped": 0}

    # ---- plan (and detect every conflict) before touching dest ----
    meta_plan: dict[tuple[str, str], Path] = {}  # (table, stem) -> source file (latest revision)
    for src in src_roots:
        for t in META_TABLES:
            for stem, revs in _revisions(src / "meta" / t).items():
                path = revs[-1][1]
                key = (t, stem)
                other = meta_plan.get(key) or _latest(dest_root / "meta" / t, stem)
                if other is not None and t == "evaluations" and not _tables_equal(path, other):
                    # an evaluation is a measurement: the newest one wins instead of conflicting
                    if _created_at(path) > _created_at(other):
                        meta_plan[key] = path
                    elif key not in meta_plan:
                        counts["meta_skipped"] += 1
                    continue
                if other is not None:
                    if not _tables_equal(path, other):
                        raise StoreError(f"merge_stores: conflicting {t} record {stem!r}: {path} differs from {other}")
                    if key not in meta_plan:
                        counts["meta_skipped"] += 1
                    continue
                meta_plan[key] = path

    seg_plan: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}  # (run_id, stem) -> winner
    identity: dict[str, tuple[dict[str, Any], str]] = {}

    def _check_identity(seg: dict[str, Any], where: str) -> None:
        rid = seg["run_id"]
        if rid not in identity:
            identity[rid] = (seg, where)
            return
        ref, ref_where = identity[rid]
        diff = [f for f in RUN_IDENTITY if not _same_value(ref.get(f), seg.get(f))]
        if diff:
            raise StoreError(f"merge_stores: conflicting metadata for run {rid}: "
                             + ", ".join(f"{f}={ref.get(f)!r} in {ref_where} vs {seg.get(f)!r} in {where}" for f in diff))

    for root in [dest_root, *src_roots]:
        for rd in _list_dir(root / "runs"):
            if not rd.is_dir() or rd.name.startswith("."):
                continue
            for stem, revs in _revisions(Path(rd.path)).items():
                if not _SEGMENT_STEM_RE.match(stem):
                    continue
                seg = _read_one_row(revs[-1][1])
                if seg is None:
                    continue
                _check_identity(seg, str(revs[-1][1]))
                if root == dest_root:
                    continue
                key = (rd.name, stem)
                current = seg_plan.get(key)
                if current is None:
                    latest = _latest(dest_root / "runs" / rd.name, stem)
                    if latest is not None:
                        current = (_read_one_row(latest) or {}, latest)
                if current is not None and (_tables_equal(revs[-1][1], current[1])
                                            or _segment_rank(seg) <= _segment_rank(current[0])):
                    counts["segments_skipped"] += 1
                    continue
                seg_plan[key] = (seg, revs[-1][1])

    chunk_plan: dict[Path, Path] = {}
    for src in src_roots:
        for rd in _list_dir(src / "chunks"):
            if not rd.name.startswith("run=") or not rd.is_dir():
                continue
            for cd in _list_dir(Path(rd.path)):
                if not _CHUNK_DIR_RE.match(cd.name) or not cd.is_dir():
                    continue
                target = dest_root / "chunks" / rd.name / cd.name
                other = chunk_plan.get(target) or (target if target.exists() else None)
                if other is not None:
                    fa, fb = _chunk_files(Path(cd.path)), _chunk_files(other)
                    for name in sorted(set(fa) | set(fb)):
                        if name not in fa or name not in fb or not _tables_equal(fa[name], fb[name]):
                            raise StoreError(f"merge_stores: conflicting chunk {rd.name}/{cd.name}: "
                                             f"{name} differs between {cd.path} and {other}")
                    if other == target:
                        counts["chunks_skipped"] += 1
                    continue
                chunk_plan[target] = Path(cd.path)

    # ---- execute: meta first, then chunks, then run segments ----
    for (t, stem), src in meta_plan.items():
        _publish(dest_root / "meta" / t, stem, lambda tmp, src=src: _copy_file_synced(src, tmp))
        counts["meta_copied"] += 1
    for target, src in chunk_plan.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / _temp_name(target.name)
        tmp.mkdir()
        try:
            for name, f in _chunk_files(src).items():
                _copy_file_synced(f, tmp / f"{name}.{uuid.uuid4().hex[:8]}.parquet")
            _fsync_dir(tmp)
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                _remove(tmp)  # appeared concurrently; its content is checked on the next merge
                counts["chunks_skipped"] += 1
                continue
        except BaseException:
            _remove(tmp)
            raise
        _fsync_dir(target.parent)
        counts["chunks_copied"] += 1
    for (run_dir, stem), (_seg, src) in seg_plan.items():
        _publish(dest_root / "runs" / run_dir, stem, lambda tmp, src=src: _copy_file_synced(src, tmp))
        counts["segments_copied"] += 1
    return counts


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------

_ALL_TABLES = (*META_TABLES, "runs", *CHUNK_TABLES)
_LEVEL_COLS = {  # level -> (positive sum, negative sum, count) columns of pos_pairs
    "token": ("pos_sum", "neg_sum", "n_token_pairs"),
    "word": ("word_pos_sum", "word_neg_sum", "n_word_pairs"),
}
_EXAMPLE_ORDER = {"abs": "abs(t.relevance) DESC", "pos": "t.relevance DESC", "neg": "t.relevance ASC"}
_HEATMAP_COLS = ["pos_a", "pos_b", "relevance", "pos_sum", "neg_sum", "count", "n_pairs",
                 "relevance_norm", "pos_norm", "neg_norm"]
_RUN_COLS = [
    "run_id", "model_id", "model_name", "dataset_key", "method", "layer", "steps", "quadrature", "pooling",
    "similarity", "code_version", "status", "n_pairs", "n_chunks", "chunk_size", "chunks_present", "complete",
    "started_at", "finished_at", "seconds", "pairs_done", "pairs_per_s", "device", "spearman", "pearson", "mse",
    "error_message", "n_segments", "shards",
]


def _q(col: str) -> str:
    """Quote a column identifier (only names declared in SCHEMA, or fixed internal ones)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", col):
        raise StoreError(f"invalid identifier {col!r}")
    return f'"{col}"'


def _check_band(band: Any, what: str) -> tuple[float, float] | None:
    if band is None:
        return None
    try:
        lo, hi = (float(x) for x in band)
    except (TypeError, ValueError):
        raise StoreError(f"{what} must be a (lo, hi) pair of numbers or None") from None
    return lo, hi


def _norm(values: pd.Series, scale: float) -> pd.Series:
    return values / scale if scale and np.isfinite(scale) and scale > 0 else values * 0.0


def _as_list(run_ids: str | Iterable[str] | None) -> list[str] | None:
    if run_ids is None:
        return None
    if isinstance(run_ids, str):
        return [run_ids]
    return [str(r) for r in run_ids]


class Store:
    """Read-only view of a store for the dashboard; safe while writers write or merges run.

    Every query re-globs the files, so chunks written after opening appear on the next call.
    Query functions return pandas DataFrames; unknown ids give empty frames (see module doc).
    One connection per Store, guarded by a lock: share a Store between threads freely.
    """

    def __init__(self, path: str | os.PathLike, *, union_by_name: bool = True) -> None:
        self.root = Path(path)
        if not self.root.exists():
            raise StoreError(f"SimLens store {str(self.root)!r} does not exist")
        if not self.root.is_dir() or not _is_store(self.root):
            raise StoreError(f"{str(self.root)!r} is not a SimLens store (no {MARKER_FILE})")
        if any(ch in str(self.root.resolve()) for ch in "*?[]{}"):
            raise StoreError(f"store path {str(self.root)!r} must not contain glob characters *?[]{{}}")
        self._union = "true" if union_by_name else "false"
        self._lock = threading.RLock()
        self._con = duckdb.connect(":memory:")
        with contextlib.suppress(duckdb.Error):
            self._con.execute("SET enable_external_file_cache = false")
        self._con.execute("SET parquet_metadata_cache = false")
        root = str(self.root.resolve())
        for t in _ALL_TABLES:
            if TABLES[t].location == "chunk":
                glob = os.path.join(root, "chunks", "run=*", "chunk=*", f"{t}.*.parquet")
            else:  # revisioned records: refresh() lists the latest revision files
                continue
            self._con.execute(f"SET VARIABLE {_q('glob_' + t)} = ?", [glob])
        self._state: dict[str, bool | None] = dict.fromkeys(_ALL_TABLES)

    # ---- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the DuckDB connection."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _latest_files(self, table: str) -> list[str]:
        """The highest revision of every record of a meta/runs table."""
        if TABLES[table].location == "meta":
            dirs = [self.root / "meta" / table]
        else:
            dirs = [Path(rd.path) for rd in _list_dir(self.root / "runs") if rd.is_dir() and not rd.name.startswith(".")]
        return sorted(str(revs[-1][1].resolve()) for d in dirs for revs in _revisions(d).values())

    def _has_files(self, table: str) -> bool:
        if TABLES[table].location != "chunk":
            files = self._latest_files(table)
            self._con.execute(f"SET VARIABLE {_q('glob_' + table)} = ?", [files or [""]])
            return bool(files)
        for rd in _list_dir(self.root / "chunks"):
            if not rd.name.startswith("run="):
                continue
            for cd in _list_dir(Path(rd.path)):
                if cd.name.startswith("chunk=") and table in _chunk_files(Path(cd.path)):
                    return True
        return False

    def _source_sql(self, table: str) -> str:
        if TABLES[table].location == "chunk":
            return (f"read_parquet(getvariable('glob_{table}'), hive_partitioning = true, "
                    f"union_by_name = {self._union}, hive_types = {{'run': VARCHAR, 'chunk': INTEGER}})")
        # revisioned records: the list of latest revisions set by refresh() before every query
        return (f"read_parquet(getvariable('glob_{table}'), hive_partitioning = false, "
                f"union_by_name = {self._union})")

    def _create_view(self, table: str, has_files: bool) -> None:
        cols = SCHEMA[table]
        if not has_files:
            body = ", ".join(f"CAST(NULL AS {typ}) AS {_q(c)}" for c, (typ, _) in cols.items())
            self._con.execute(f"CREATE OR REPLACE VIEW {_q(table)} AS SELECT {body} WHERE false")
            return
        src = self._source_sql(table)
        found = {r[0]: r[1] for r in self._con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        parts = []
        for c, (typ, _) in cols.items():
            phys = {"run_id": "run", "chunk_index": "chunk"}.get(c, c) if TABLES[table].location == "chunk" else c
            if phys not in found:
                parts.append(f"CAST(NULL AS {typ}) AS {_q(c)}")
            elif found[phys] == typ and phys == c:
                parts.append(_q(c))
            else:
                parts.append(f"CAST({_q(phys)} AS {typ}) AS {_q(c)}")
        self._con.execute(f"CREATE OR REPLACE VIEW {_q(table)} AS SELECT {', '.join(parts)} FROM {src}")

    def refresh(self, force: bool = False) -> None:
        """Re-check which tables have files (views switch between empty and file-backed)."""
        with self._lock:
            for t in _ALL_TABLES:
                has = self._has_files(t)
                if force or has != self._state[t]:
                    self._create_view(t, has)
                    self._state[t] = has

    def _df(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> pd.DataFrame:
        with self._lock:
            for attempt in range(3):
                try:
                    self.refresh(force=attempt > 0)
                    return self._con.execute(sql, params or {}).df()
                except duckdb.Error as exc:
                    # a file vanished between glob and read (old revision removed, delete_run): retry
                    transient = isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException)) or \
                        "TProtocolException" in str(exc)
                    if not transient:
                        raise
                    if attempt == 2:
                        raise StoreError(f"query on {str(self.root)!r} failed: {exc}") from exc
                    time.sleep(0.05)
        raise AssertionError("unreachable")

    def _chunk_count(self, run_id: str) -> int:
        return len(completed_chunks(self.root, run_id))

    # ---- raw tables ---------------------------------------------------------------------------
    def table(self, name: str, run_id: str | None = None, pair_id: int | None = None,
              dataset_key: str | None = None) -> pd.DataFrame:
        """Rows of any table in SCHEMA order, optionally filtered (run_id / pair_id / dataset_key)."""
        if name not in SCHEMA:
            raise StoreError(f"unknown table {name!r}; tables: {list(SCHEMA)}")
        cols = SCHEMA[name]
        where, params = [], {}
        if run_id is not None and "run_id" in cols:
            where.append("run_id = $run")
            params["run"] = str(run_id)
        if pair_id is not None and "pair_id" in cols:
            where.append("pair_id = $pid")
            params["pid"] = int(pair_id)
        if dataset_key is not None and "dataset_key" in cols:
            where.append("dataset_key = $ds")
            params["ds"] = str(dataset_key)
        order = ", ".join(_q(c) for c in ("run_id", *TABLES[name].key) if c in cols)
        sql = f"SELECT * FROM {_q(name)}" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._df(sql + f" ORDER BY {order} NULLS LAST", params)

    # ---- catalogue ----------------------------------------------------------------------------
    def models(self) -> pd.DataFrame:
        """All models (models table)."""
        return self._df("SELECT * FROM models ORDER BY name, model_id")

    def datasets(self) -> pd.DataFrame:
        """All datasets (datasets table)."""
        return self._df("SELECT * FROM datasets ORDER BY dataset_key")

    # ---- faithfulness evaluations -------------------------------------------------------------
    def evaluations(self, kind: str | None = None, eval_id: str | None = None, model_id: str | None = None,
                    dataset_key: str | None = None) -> pd.DataFrame:
        """Rows of the stored evaluations (evaluations table, all columns), optionally filtered; newest
        evaluation first, rows in order. Unknown filters give an empty frame."""
        where, params = [], {}
        for col, value in (("kind", kind), ("eval_id", eval_id), ("model_id", model_id), ("dataset_key", dataset_key)):
            if value is not None:
                where.append(f"{_q(col)} = ${col}")
                params[col] = str(value)
        sql = "SELECT * FROM evaluations" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._df(sql + " ORDER BY created_at DESC NULLS LAST, eval_id, row_index", params)

    def evaluation_list(self, kind: str | None = None) -> pd.DataFrame:
        """One row per stored evaluation, newest first: eval_id, kind, model_id, model_name, dataset_key,
        run_id, n_pairs, params (JSON), created_at, seconds, code_version, n_rows."""
        where = "WHERE kind = $kind" if kind is not None else ""
        cols = ", ".join(f"first({_q(c)}) AS {_q(c)}" for c in _EVAL_META_COLS if c != "eval_id")
        return self._df(f"""
            SELECT eval_id, {cols}, CAST(count(*) AS BIGINT) AS n_rows
            FROM evaluations {where}
            GROUP BY eval_id
            ORDER BY created_at DESC NULLS LAST, eval_id
        """, {"kind": str(kind)} if kind is not None else None)

    def model_table1(self, dataset_key: str | None = None) -> pd.DataFrame:
        """Möller et al. (2023) Table 1 from the stored ``table1`` evaluations: Spearman x100 of the cosine and
        of the dot product of each model's embeddings against gold, one row per (model, dataset) (the newest
        evaluation). Columns: model_name, base_model, adjusted, cosine, dot, dataset_key, n_pairs, epochs,
        train_pairs, model_id, eval_id, created_at (base_model/epochs/train_pairs: NULL for models SimLens
        did not fine-tune)."""
        cols = ["model_name", "base_model", "adjusted", "cosine", "dot", "dataset_key", "n_pairs", "epochs",
                "train_pairs", "model_id", "eval_id", "created_at"]
        where = " AND dataset_key = $ds" if dataset_key is not None else ""
        df = self._df(f"""
            SELECT eval_id, first(model_id) AS model_id, first(model_name) AS model_name,
                   first(dataset_key) AS dataset_key, first(n_pairs) AS n_pairs, first(params) AS params,
                   first(created_at) AS created_at,
                   max(y) FILTER (WHERE metric = 'spearman' AND label = 'cosine') AS cosine,
                   max(y) FILTER (WHERE metric = 'spearman' AND label = 'dot') AS dot
            FROM evaluations WHERE kind = 'table1'{where}
            GROUP BY eval_id
            ORDER BY created_at DESC NULLS LAST, eval_id
        """, {"ds": str(dataset_key)} if dataset_key is not None else None)
        if df.empty:
            return pd.DataFrame(columns=cols)
        params = [json.loads(p) if isinstance(p, str) and p else {} for p in df["params"]]
        df["adjusted"] = [bool(p.get("adjusted", False)) for p in params]
        for c in ("base_model", "epochs", "train_pairs"):
            df[c] = [p.get(c) for p in params]
        df = df.drop_duplicates(["model_id", "dataset_key"])
        return df.sort_values(["base_model", "adjusted", "model_name"], kind="stable", na_position="first")[cols] \
            .reset_index(drop=True)

    def runs(self, status: str | None = None) -> pd.DataFrame:
        """One row per run (segments of all shards combined), newest first.

        status: "failed" if any segment failed, else "running" if any runs, else "done".
        seconds/pairs_done are summed over segments; metrics of multi-segment runs are
        recomputed from the stored predictions. Extra columns: model_name, chunks_present,
        complete (all n_chunks present), n_segments, shards.
        """
        df = self._df("""
            SELECT r.run_id, first(r.model_id) AS model_id, first(m.name) AS model_name,
                   first(r.dataset_key) AS dataset_key, first(r.method) AS method, first(r.layer) AS layer,
                   first(r.steps) AS steps, first(r.quadrature) AS quadrature, first(r.pooling) AS pooling,
                   first(r.similarity) AS similarity,
                   string_agg(DISTINCT r.code_version, ', ' ORDER BY r.code_version) AS code_version,
                   CASE WHEN bool_or(r.status = 'failed') THEN 'failed'
                        WHEN bool_or(r.status = 'running') THEN 'running' ELSE 'done' END AS status,
                   first(r.n_pairs) AS n_pairs, first(r.n_chunks) AS n_chunks, first(r.chunk_size) AS chunk_size,
                   min(r.started_at) AS started_at,
                   CASE WHEN bool_and(r.finished_at IS NOT NULL) THEN max(r.finished_at) END AS finished_at,
                   sum(r.seconds) AS seconds, sum(r.pairs_done) AS pairs_done,
                   CASE WHEN count(*) = 1 THEN first(r.pairs_per_s)
                        ELSE sum(r.pairs_done) / nullif(sum(r.seconds), 0) END AS pairs_per_s,
                   string_agg(DISTINCT r.device, ', ' ORDER BY r.device) AS device,
                   first(r.spearman) AS spearman, first(r.pearson) AS pearson, first(r.mse) AS mse,
                   string_agg(r.error_message, '; ' ORDER BY r.shard) AS error_message,
                   count(*) AS n_segments, string_agg(r.shard, ',' ORDER BY r.shard) AS shards
            FROM runs r LEFT JOIN models m ON m.model_id = r.model_id
            GROUP BY r.run_id
            ORDER BY started_at DESC NULLS LAST, r.run_id
        """)
        if df.empty:
            return pd.DataFrame(columns=_RUN_COLS)
        df["chunks_present"] = [self._chunk_count(r) for r in df["run_id"]]
        df["complete"] = df["chunks_present"] >= df["n_chunks"]
        multi = df.loc[df["n_segments"] > 1, "run_id"].tolist()
        if multi:
            preds = self._df("SELECT run_id, model_score, gold, gold_norm FROM predictions "
                             "WHERE list_contains($runs, run_id)", {"runs": multi})
            for rid, g in preds.groupby("run_id"):
                m = score_metrics(g["model_score"].to_numpy(float), g["gold"].to_numpy(float), g["gold_norm"].to_numpy(float))
                for k, v in m.items():
                    df.loc[df["run_id"] == rid, k] = v
        if status is not None:
            df = df[df["status"] == status]
        return df[_RUN_COLS].reset_index(drop=True)

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        """The runs() row of ``run_id`` as a dict, or None if the run does not exist."""
        df = self.runs()
        df = df[df["run_id"] == run_id]
        return None if df.empty else df.iloc[0].to_dict()

    def metrics_table(self) -> pd.DataFrame:
        """Spearman/Pearson (x100) and MSE per (model, dataset), long form.

        Uses the finished ("done") run of each model x dataset, preferring complete runs, then
        "predict" runs, then the latest. Pivot with ``df.pivot(index="model_name",
        columns="dataset_key", values="spearman")``.
        """
        cols = ["model_id", "model_name", "dataset_key", "spearman", "pearson", "mse", "n_pairs", "run_id",
                "method", "complete"]
        runs = self.runs(status="done")
        if runs.empty:
            return pd.DataFrame(columns=cols)
        runs = runs.assign(_pred=runs["method"] == "predict")
        runs = runs.sort_values(["complete", "_pred", "finished_at"], ascending=False, kind="stable")
        best = runs.drop_duplicates(["model_id", "dataset_key"])
        return best.sort_values(["model_name", "dataset_key"])[cols].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Rows, files and bytes on disk per table (files/bytes include the kept previous revisions)."""
        out = []
        for t in _ALL_TABLES:
            n = int(self._df(f"SELECT count(*) AS n FROM {_q(t)}")["n"].iloc[0])
            files, size = self._files_of(t)
            out.append({"table": t, "rows": n, "files": files, "bytes": size})
        return pd.DataFrame(out)

    def _files_of(self, table: str) -> tuple[int, int]:
        loc, files, size = TABLES[table].location, 0, 0
        if loc == "meta":
            paths = [p for revs in _revisions(self.root / "meta" / table).values() for _, p in revs]
        elif loc == "runs":
            paths = [p for rd in _list_dir(self.root / "runs") if rd.is_dir()
                     for revs in _revisions(Path(rd.path)).values() for _, p in revs]
        else:
            paths = [f for rd in _list_dir(self.root / "chunks") if rd.name.startswith("run=")
                     for cd in _list_dir(Path(rd.path)) if cd.name.startswith("chunk=")
                     for t, f in _chunk_files(Path(cd.path)).items() if t == table]
        for p in paths:
            with contextlib.suppress(OSError):
                size += p.stat().st_size
                files += 1
        return files, size

    # ---- per-run / per-pair -------------------------------------------------------------------
    def _run_row(self, run_id: str) -> dict[str, Any] | None:
        df = self._df("SELECT first(dataset_key) AS dataset_key, first(chunk_size) AS chunk_size, "
                      "first(n_pairs) AS n_pairs FROM runs WHERE run_id = $run GROUP BY run_id", {"run": str(run_id)})
        return None if df.empty else df.iloc[0].to_dict()

    def _pair_params(self, run_id: str, pair_id: int) -> dict[str, Any] | None:
        """{run, chunk, pid} query parameters for one pair of a run (chunk: for partition pruning)."""
        df = self._df("""
            SELECT s.pair_index // r.chunk_size AS chunk
            FROM (SELECT first(dataset_key) AS ds, first(chunk_size) AS chunk_size FROM runs
                  WHERE run_id = $run GROUP BY run_id) r
            JOIN pairs s ON s.dataset_key = r.ds AND s.pair_id = $pid
        """, {"run": str(run_id), "pid": int(pair_id)})
        if df.empty:
            return None
        return {"run": str(run_id), "chunk": int(df["chunk"].iloc[0]), "pid": int(pair_id)}

    def predictions(self, run_id: str) -> pd.DataFrame:
        """All predictions of a run (plus sentence1/sentence2), ordered by pair_id."""
        info = self._run_row(run_id)
        return self._df("""
            SELECT p.* EXCLUDE (chunk_index), s.sentence1, s.sentence2
            FROM predictions p LEFT JOIN pairs s ON s.dataset_key = $ds AND s.pair_id = p.pair_id
            WHERE p.run_id = $run ORDER BY p.pair_id
        """, {"run": str(run_id), "ds": info["dataset_key"] if info else None})

    def pair_info(self, dataset_key: str, pair_id: int) -> pd.DataFrame:
        """The pair's sentences and gold plus its dataset's name/split/languages (0 or 1 row)."""
        return self._df("""
            SELECT s.dataset_key, s.pair_id, s.sentence1, s.sentence2, s.gold, s.gold_norm,
                   d.name, d.split, d.lang_a, d.lang_b, d.gold_min, d.gold_max
            FROM pairs s LEFT JOIN datasets d ON d.dataset_key = s.dataset_key
            WHERE s.dataset_key = $ds AND s.pair_id = $pid
        """, {"ds": str(dataset_key), "pid": int(pair_id)})

    def pair_runs(self, dataset_key: str, pair_id: int) -> pd.DataFrame:
        """Every stored run that has this pair: run/model columns + the pair's prediction."""
        runs = self.runs()
        runs = runs[runs["dataset_key"] == dataset_key]
        cols = ["run_id", "model_id", "model_name", "method", "layer", "steps", "quadrature", "status"]
        pcols = ["model_score", "explained_score", "matrix_sum", "residual", "gold", "gold_norm", "error",
                 "n_tokens_a", "n_tokens_b", "truncated"]
        if runs.empty:
            return pd.DataFrame(columns=[*cols, "pair_id", *pcols])
        preds = self._df(f"""
            SELECT run_id, pair_id, {', '.join(_q(c) for c in pcols)} FROM predictions
            WHERE list_contains($runs, run_id) AND pair_id = $pid
        """, {"runs": runs["run_id"].tolist(), "pid": int(pair_id)})
        out = runs[cols].merge(preds, on="run_id", how="inner")
        return out.sort_values(["model_name", "method", "layer", "run_id"], kind="stable").reset_index(drop=True)

    def tokens(self, run_id: str, pair_id: int) -> pd.DataFrame:
        """Tokens of both sentences of a pair in a run, ordered by side, token_index."""
        params = self._pair_params(run_id, pair_id)
        if params is None:
            return self.table("tokens").head(0)
        return self._df("""
            SELECT * FROM tokens WHERE run_id = $run AND chunk_index = $chunk AND pair_id = $pid
            ORDER BY side, token_index
        """, params)

    def load_factors(self, run_id: str, pair_id: int, side: str,
                     return_norm: bool = False) -> np.ndarray | tuple[np.ndarray, float | None]:
        """Factor vectors of one sentence as a float32 array (n_tokens, dim), by token_index.

        With ``return_norm=True`` returns ``(factors, embedding_norm)`` (norm None if not stored);
        a cosine model's matrix of two stored sentences is then F_a @ F_b.T / (|e_a| |e_b|).
        Raises StoreError when none are stored (unknown run/pair, or run without factors).
        """
        if side not in ("a", "b"):
            raise StoreError("side must be 'a' or 'b'")
        params = self._pair_params(run_id, pair_id)
        df = pd.DataFrame()
        if params is not None:
            df = self._df("""
                SELECT token_index, dim, factor, embedding_norm FROM factors
                WHERE run_id = $run AND chunk_index = $chunk AND pair_id = $pid AND side = $side
                ORDER BY token_index
            """, {**params, "side": side})
        if df.empty:
            raise StoreError(f"no factors stored for run {run_id!r}, pair {pair_id}, side {side!r} in {str(self.root)!r}")
        f = np.stack([decode_factor(b, d) for b, d in zip(df["factor"], df["dim"], strict=True)])
        if not return_norm:
            return f
        norm = df["embedding_norm"].iloc[0]
        return f, None if pd.isna(norm) else float(norm)

    def pair_matrix(self, run_id: str, pair_id: int, level: str = "token",
                    include_special: bool = True) -> pd.DataFrame:
        """Relevance matrix of one pair in long form, ordered by (i, j).

        level="token": i, j are token indices. level="word": subword pieces are summed into words
        (tokens.word_index; a special token stays its own unit); i, j are then the 0-based
        positions of the units in sentence order, word_a/word_b their word_index (NULL for special
        tokens), token_a/token_b the word text, pos_* the POS of the word's first piece and
        n_token_pairs how many token pairs were summed.
        Columns: i, j, token_a, token_b, relevance, pos_a, pos_b, word_a, word_b, special_a,
        special_b (+ n_token_pairs at word level).
        """
        if level not in ("token", "word"):
            raise StoreError("level must be 'token' or 'word'")
        params = self._pair_params(run_id, pair_id)
        cols = ["i", "j", "token_a", "token_b", "relevance", "pos_a", "pos_b", "word_a", "word_b",
                "special_a", "special_b"]
        if params is None:
            return pd.DataFrame(columns=cols + (["n_token_pairs"] if level == "word" else []))
        special = "" if include_special else " AND NOT special_a AND NOT special_b"
        tp = self._df(f"""
            SELECT {', '.join(_q(c) for c in cols)} FROM token_pairs
            WHERE run_id = $run AND chunk_index = $chunk AND pair_id = $pid{special}
            ORDER BY i, j
        """, params)
        if level == "token" or tp.empty:
            return tp if level == "token" else pd.DataFrame(columns=[*cols, "n_token_pairs"])
        toks = self._df("""
            SELECT side, token_index, token, word_index, word FROM tokens
            WHERE run_id = $run AND chunk_index = $chunk AND pair_id = $pid
        """, params)
        return _word_matrix(tp, toks)

    # ---- corpus level -------------------------------------------------------------------------
    def _select_runs(self, run_ids: str | Iterable[str] | None, dataset_key: str | None) -> list[str]:
        df = self._df("SELECT DISTINCT run_id, dataset_key FROM runs")
        if run_ids is not None:
            wanted = set(_as_list(run_ids) or [])
            df = df[df["run_id"].isin(wanted)]
        if dataset_key is not None:
            df = df[df["dataset_key"] == dataset_key]
        return sorted(df["run_id"].tolist())

    def pos_heatmap(self, run_ids: str | Iterable[str] | None = None, dataset_key: str | None = None,
                    gold_band: tuple[float, float] | None = None, error_band: tuple[float, float] | None = None,
                    include_special: bool = True, level: str = "token", agg: str = "sum") -> pd.DataFrame:
        """POS x POS relevance over the selected runs' pairs (from pos_pairs; fast).

        run_ids: one id, a list, or None (= all runs, optionally of ``dataset_key``). Filters:
        gold_band = (lo, hi) on predictions.gold_norm (0-1), error_band on predictions.error
        (model_score - gold_norm), both inclusive; include_special=False drops cells with a special
        token. level "token"/"word" chooses token-pair or word-pair sums; agg "sum" or "mean"
        (divided by count = number of token/word pairs in the cell).
        Columns: pos_a, pos_b, relevance (= pos_sum + neg_sum), pos_sum, neg_sum, count, n_pairs
        (sentence pairs contributing), relevance_norm (÷ largest |relevance|), pos_norm, neg_norm
        (both ÷ the largest |pos_sum| or |neg_sum|, so they share one scale). NULL POS stays NULL.
        """
        if level not in _LEVEL_COLS:
            raise StoreError("level must be 'token' or 'word'")
        if agg not in ("sum", "mean"):
            raise StoreError("agg must be 'sum' or 'mean'")
        gold_band = _check_band(gold_band, "gold_band")
        error_band = _check_band(error_band, "error_band")
        runs = self._select_runs(run_ids, dataset_key)
        if not runs:
            return pd.DataFrame(columns=_HEATMAP_COLS)
        ps, ns, n = (_q(c) for c in _LEVEL_COLS[level])
        params: dict[str, Any] = {"runs": runs}
        join, where = "", ["list_contains($runs, p.run_id)"]
        if gold_band or error_band:
            join = "JOIN predictions r ON r.run_id = p.run_id AND r.pair_id = p.pair_id"
            where.append("list_contains($runs, r.run_id)")
            if gold_band:
                where.append("r.gold_norm BETWEEN $glo AND $ghi")
                params.update(glo=gold_band[0], ghi=gold_band[1])
            if error_band:
                where.append("r.error BETWEEN $elo AND $ehi")
                params.update(elo=error_band[0], ehi=error_band[1])
        if not include_special:
            where.append("NOT p.special_a AND NOT p.special_b")
        df = self._df(f"""
            SELECT p.pos_a, p.pos_b, sum(p.{ps}) AS pos_sum, sum(p.{ns}) AS neg_sum,
                   CAST(sum(p.{n}) AS BIGINT) AS count, CAST(sum(p.pair_count) AS BIGINT) AS n_pairs
            FROM pos_pairs p {join}
            WHERE {' AND '.join(where)}
            GROUP BY p.pos_a, p.pos_b
            ORDER BY p.pos_a NULLS LAST, p.pos_b NULLS LAST
        """, params)
        return _finish_heatmap(df, agg)

    def pos_cell_examples(self, run_id: str, pos_a: str | None, pos_b: str | None, limit: int = 20,
                          include_special: bool = True, order: str = "abs") -> pd.DataFrame:
        """The token pairs behind one heat-map cell (NULL POS matches NULL), strongest first.

        order: "abs" (largest |relevance|), "pos" (most positive) or "neg" (most negative).
        Columns: pair_id, i, j, token_a, token_b, relevance, word_a, word_b, sentence1, sentence2.
        """
        if order not in _EXAMPLE_ORDER:
            raise StoreError(f"order must be one of {list(_EXAMPLE_ORDER)}")
        info = self._run_row(run_id)
        special = "" if include_special else " AND NOT t.special_a AND NOT t.special_b"
        return self._df(f"""
            SELECT t.pair_id, t.i, t.j, t.token_a, t.token_b, t.relevance, t.word_a, t.word_b,
                   s.sentence1, s.sentence2
            FROM token_pairs t LEFT JOIN pairs s ON s.dataset_key = $ds AND s.pair_id = t.pair_id
            WHERE t.run_id = $run AND t.pos_a IS NOT DISTINCT FROM CAST($pa AS VARCHAR)
              AND t.pos_b IS NOT DISTINCT FROM CAST($pb AS VARCHAR){special}
            ORDER BY {_EXAMPLE_ORDER[order]}, t.pair_id, t.i, t.j
            LIMIT $lim
        """, {"run": str(run_id), "ds": info["dataset_key"] if info else None, "pa": pos_a, "pb": pos_b,
              "lim": int(limit)})

    def compare_pos(self, run_a: str, run_b: str, dataset_key: str | None = None,
                    gold_band: tuple[float, float] | None = None, error_band: tuple[float, float] | None = None,
                    include_special: bool = True, level: str = "token", agg: str = "sum") -> pd.DataFrame:
        """Per POS pair: pos_heatmap of run_a and run_b side by side and their difference (b - a).

        Columns: pos_a, pos_b, relevance_a, relevance_b, diff, relevance_norm_a, relevance_norm_b,
        diff_norm (normalised values differ, comparable across models with different scales),
        count_a, count_b; cells missing in one run count as 0. Sorted by |diff_norm| descending.
        """
        kw = dict(dataset_key=dataset_key, gold_band=gold_band, error_band=error_band,
                  include_special=include_special, level=level, agg=agg)
        ha = self.pos_heatmap([run_a], **kw)[["pos_a", "pos_b", "relevance", "relevance_norm", "count"]]
        hb = self.pos_heatmap([run_b], **kw)[["pos_a", "pos_b", "relevance", "relevance_norm", "count"]]
        cols = ["pos_a", "pos_b", "relevance_a", "relevance_b", "diff", "relevance_norm_a", "relevance_norm_b",
                "diff_norm", "count_a", "count_b"]
        if ha.empty and hb.empty:
            return pd.DataFrame(columns=cols)
        m = ha.merge(hb, on=["pos_a", "pos_b"], how="outer", suffixes=("_a", "_b"))
        for c in ("relevance_a", "relevance_b", "relevance_norm_a", "relevance_norm_b"):
            m[c] = pd.to_numeric(m[c]).astype(float).fillna(0.0)
        for c in ("count_a", "count_b"):
            m[c] = pd.to_numeric(m[c]).fillna(0).astype("int64")
        m["diff"] = m["relevance_b"] - m["relevance_a"]
        m["diff_norm"] = m["relevance_norm_b"] - m["relevance_norm_a"]
        m = m.assign(_abs=m["diff_norm"].abs()).sort_values(["_abs", "pos_a", "pos_b"], ascending=[False, True, True],
                                                            kind="stable", na_position="last")
        return m[cols].reset_index(drop=True)

    def _unit_pairs_sql(self, level: str, include_special: bool) -> str:
        """SQL for (run_id, pair_id, label_a, label_b, relevance) of the runs in $runs."""
        special = "" if include_special else " AND NOT special_a AND NOT special_b"
        if level == "token":
            return (f"SELECT run_id, pair_id, token_a AS label_a, token_b AS label_b, relevance "
                    f"FROM token_pairs WHERE list_contains($runs, run_id){special}")
        if level != "word":
            raise StoreError("level must be 'token' or 'word'")
        return f"""
            WITH u AS (
                SELECT run_id, pair_id, i, j, relevance, token_a, token_b,
                       CASE WHEN special_a OR word_a IS NULL THEN -1 - i ELSE word_a END AS ua,
                       CASE WHEN special_b OR word_b IS NULL THEN -1 - j ELSE word_b END AS ub
                FROM token_pairs WHERE list_contains($runs, run_id){special}
            ), w AS (
                SELECT run_id, pair_id, ua, ub, sum(relevance) AS relevance,
                       first(token_a ORDER BY i) AS ta, first(token_b ORDER BY j) AS tb
                FROM u GROUP BY run_id, pair_id, ua, ub
            ), words AS (
                SELECT run_id, pair_id, side, word_index, first(word ORDER BY token_index) AS word
                FROM tokens WHERE list_contains($runs, run_id) AND word_index IS NOT NULL
                GROUP BY run_id, pair_id, side, word_index
            )
            SELECT w.run_id, w.pair_id, coalesce(wa.word, w.ta) AS label_a, coalesce(wb.word, w.tb) AS label_b,
                   w.relevance
            FROM w
            LEFT JOIN words wa ON wa.run_id = w.run_id AND wa.pair_id = w.pair_id AND wa.side = 'a'
                               AND wa.word_index = w.ua
            LEFT JOIN words wb ON wb.run_id = w.run_id AND wb.pair_id = w.pair_id AND wb.side = 'b'
                               AND wb.word_index = w.ub
        """

    def compare_token_pairs(self, run_a: str, run_b: str, limit: int = 20, include_special: bool = False,
                            level: str = "token") -> pd.DataFrame:
        """Token (or word) pairs, by text, whose relevance summed over the corpus changed most.

        Columns: token_a, token_b, relevance_a, relevance_b, diff (= b - a), count_a, count_b;
        sorted by |diff| descending. level="word" compares word texts (use it across tokenizers).
        """
        sub = self._unit_pairs_sql(level, include_special)
        return self._df(f"""
            WITH up AS ({sub}),
            a AS (SELECT label_a, label_b, sum(relevance) AS rel, count(*) AS n FROM up
                  WHERE run_id = $ra GROUP BY label_a, label_b),
            b AS (SELECT label_a, label_b, sum(relevance) AS rel, count(*) AS n FROM up
                  WHERE run_id = $rb GROUP BY label_a, label_b)
            SELECT coalesce(a.label_a, b.label_a) AS token_a, coalesce(a.label_b, b.label_b) AS token_b,
                   coalesce(a.rel, 0) AS relevance_a, coalesce(b.rel, 0) AS relevance_b,
                   coalesce(b.rel, 0) - coalesce(a.rel, 0) AS diff,
                   coalesce(a.n, 0) AS count_a, coalesce(b.n, 0) AS count_b
            FROM a FULL OUTER JOIN b ON a.label_a = b.label_a AND a.label_b = b.label_b
            ORDER BY abs(diff) DESC, token_a, token_b
            LIMIT $lim
        """, {"runs": [str(run_a), str(run_b)], "ra": str(run_a), "rb": str(run_b), "lim": int(limit)})

    def compare_metrics(self, run_a: str, run_b: str) -> pd.DataFrame:
        """Metrics of two runs side by side: rows metric, run_a, run_b, diff (= b - a).

        Metrics: spearman, pearson, mse (from the run records), n_predictions, mean_model_score,
        mean_abs_error, mean_abs_residual (from predictions), seconds, pairs_per_s, and
        score_pearson (x100 correlation of the two runs' model_score over the pairs in common;
        same value in both columns).
        """
        cols = ["metric", "run_a", "run_b", "diff"]
        runs = self.runs().set_index("run_id")
        if run_a not in runs.index or run_b not in runs.index:
            return pd.DataFrame(columns=cols)
        agg = self._df("""
            SELECT run_id, count(*) AS n_predictions, avg(model_score) AS mean_model_score,
                   avg(abs(error)) AS mean_abs_error, avg(abs(residual)) AS mean_abs_residual
            FROM predictions WHERE list_contains($runs, run_id) GROUP BY run_id
        """, {"runs": [run_a, run_b]}).set_index("run_id")
        both = self._df("""
            SELECT corr(a.model_score, b.model_score) * 100 AS c
            FROM (SELECT pair_id, model_score FROM predictions WHERE run_id = $ra) a
            JOIN (SELECT pair_id, model_score FROM predictions WHERE run_id = $rb) b USING (pair_id)
        """, {"ra": run_a, "rb": run_b})
        rows = []
        for m in ("spearman", "pearson", "mse"):
            rows.append((m, runs.at[run_a, m], runs.at[run_b, m]))
        for m in ("n_predictions", "mean_model_score", "mean_abs_error", "mean_abs_residual"):
            rows.append((m, agg[m].get(run_a, np.nan), agg[m].get(run_b, np.nan)))
        for m in ("seconds", "pairs_per_s"):
            rows.append((m, runs.at[run_a, m], runs.at[run_b, m]))
        c = both["c"].iloc[0] if not both.empty else np.nan
        rows.append(("score_pearson", c, c))
        out = pd.DataFrame(rows, columns=["metric", "run_a", "run_b"])
        out["run_a"] = pd.to_numeric(out["run_a"], errors="coerce").astype(float)
        out["run_b"] = pd.to_numeric(out["run_b"], errors="coerce").astype(float)
        out["diff"] = out["run_b"] - out["run_a"]
        return out

    def failures(self, run_id: str, kind: str = "over", limit: int = 10, top_k: int = 3,
                 include_special: bool = False) -> pd.DataFrame:
        """Pairs the model got most wrong, with each pair's strongest token pairs.

        kind="over": largest error (model_score - gold_norm > 0, similarity over-estimated),
        kind="under": most negative error. Columns: pair_id, model_score, gold, gold_norm, error,
        explained_score, sentence1, sentence2, top_pairs (list of dicts token_a, token_b, i, j,
        relevance: the ``top_k`` largest |relevance|), top_pairs_text ("a↔b (+0.123); ...").
        """
        if kind not in ("over", "under"):
            raise StoreError("kind must be 'over' or 'under'")
        direction = "DESC" if kind == "over" else "ASC"
        info = self._run_row(run_id)
        cols = ["pair_id", "model_score", "gold", "gold_norm", "error", "explained_score", "sentence1",
                "sentence2", "top_pairs", "top_pairs_text"]
        if info is None:
            return pd.DataFrame(columns=cols)
        worst = self._df(f"""
            SELECT p.pair_id, p.model_score, p.gold, p.gold_norm, p.error, p.explained_score, s.sentence1,
                   s.sentence2, p.chunk_index
            FROM predictions p LEFT JOIN pairs s ON s.dataset_key = $ds AND s.pair_id = p.pair_id
            WHERE p.run_id = $run AND p.error IS NOT NULL
            ORDER BY p.error {direction}, p.pair_id
            LIMIT $lim
        """, {"run": str(run_id), "ds": info["dataset_key"], "lim": int(limit)})
        if worst.empty:
            return pd.DataFrame(columns=cols)
        special = "" if include_special else " AND NOT special_a AND NOT special_b"
        chunks = sorted({int(c) for c in worst["chunk_index"]})
        top = self._df(f"""
            SELECT pair_id, token_a, token_b, i, j, relevance FROM (
                SELECT pair_id, token_a, token_b, i, j, relevance,
                       row_number() OVER (PARTITION BY pair_id ORDER BY abs(relevance) DESC, i, j) AS rn
                FROM token_pairs
                WHERE run_id = $run AND list_contains($chunks, chunk_index) AND list_contains($pids, pair_id){special}
            ) WHERE rn <= $k ORDER BY pair_id, rn
        """, {"run": str(run_id), "chunks": chunks, "pids": [int(p) for p in worst["pair_id"]], "k": int(top_k)})
        lists: dict[int, list[dict[str, Any]]] = {}
        for rec in top.to_dict("records"):
            lists.setdefault(int(rec["pair_id"]), []).append(
                {"token_a": rec["token_a"], "token_b": rec["token_b"], "i": int(rec["i"]), "j": int(rec["j"]),
                 "relevance": float(rec["relevance"])})
        worst["top_pairs"] = [lists.get(int(p), []) for p in worst["pair_id"]]
        worst["top_pairs_text"] = [
            "; ".join(f"{d['token_a']}↔{d['token_b']} ({d['relevance']:+.3f})" for d in tp) for tp in worst["top_pairs"]
        ]
        return worst[cols]

    def quartile_top_pairs(self, run_id: str, quartile: str = "high", k: int = 5, include_special: bool = False,
                           level: str = "token") -> pd.DataFrame:
        """Most relevant token (or word) pairs among the 25% pairs with the highest/lowest model_score.

        The quartile = the ceil(n/4) pairs with the highest (lowest) model_score, ties broken by
        pair_id; their token pairs are grouped by text (token_a, token_b) and ranked by summed
        relevance, largest first (BiLRP paper, Fig. 5).
        Columns: token_a, token_b, relevance (sum), mean_relevance, count (token pairs), n_pairs.
        """
        if quartile not in ("high", "low"):
            raise StoreError("quartile must be 'high' or 'low'")
        sub = self._unit_pairs_sql(level, include_special)
        direction = "DESC" if quartile == "high" else "ASC"
        return self._df(f"""
            WITH q AS (
                SELECT pair_id, row_number() OVER (ORDER BY model_score {direction}, pair_id) AS rn,
                       count(*) OVER () AS n
                FROM predictions WHERE run_id = $run AND model_score IS NOT NULL
            ), up AS ({sub})
            SELECT label_a AS token_a, label_b AS token_b, sum(relevance) AS relevance,
                   avg(relevance) AS mean_relevance, count(*) AS count, count(DISTINCT pair_id) AS n_pairs
            FROM up WHERE pair_id IN (SELECT pair_id FROM q WHERE rn <= ceil(n / 4.0))
            GROUP BY label_a, label_b
            ORDER BY relevance DESC, token_a, token_b
            LIMIT $k
        """, {"run": str(run_id), "runs": [str(run_id)], "k": int(k)})


def _finish_heatmap(df: pd.DataFrame, agg: str) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=_HEATMAP_COLS)
    for c in ("pos_sum", "neg_sum"):
        df[c] = df[c].astype(float)
    if agg == "mean":
        denom = df["count"].where(df["count"] > 0).astype(float)
        df["pos_sum"] = df["pos_sum"] / denom
        df["neg_sum"] = df["neg_sum"] / denom
    df["relevance"] = df["pos_sum"] + df["neg_sum"]
    df["relevance_norm"] = _norm(df["relevance"], float(df["relevance"].abs().max()))
    scale = float(max(df["pos_sum"].abs().max(), df["neg_sum"].abs().max()))
    df["pos_norm"] = _norm(df["pos_sum"], scale)
    df["neg_norm"] = _norm(df["neg_sum"], scale)
    return df[_HEATMAP_COLS].reset_index(drop=True)


def _word_units(tp: pd.DataFrame, toks: pd.DataFrame, side: str) -> pd.DataFrame:
    """One row per token of ``side``: its unit key, the unit's label/pos/word index/order."""
    idx = "i" if side == "a" else "j"
    t = tp[[idx, f"token_{side}", f"pos_{side}", f"word_{side}", f"special_{side}"]].drop_duplicates(idx)
    t = t.sort_values(idx).reset_index(drop=True)
    special = t[f"special_{side}"].fillna(False).astype(bool) | t[f"word_{side}"].isna()
    word = t[f"word_{side}"].astype("Int64")
    t["unit"] = np.where(special, -1 - t[idx].astype(int), word.fillna(-1).astype(int))
    texts = toks[(toks["side"] == side) & toks["word_index"].notna()].sort_values("token_index")
    word_text = texts.drop_duplicates("word_index").set_index("word_index")["word"]
    pieces = {}
    for u, g in t.groupby("unit", sort=False):
        toks_u = [str(x) for x in g[f"token_{side}"]]
        pieces[u] = toks_u[0] + "".join(x[2:] if x.startswith("##") else x for x in toks_u[1:])
    first = t.drop_duplicates("unit").copy()
    first["label"] = [
        (word_text.get(w) if not sp and w in word_text.index and pd.notna(word_text.get(w)) else None) or pieces[u]
        for u, w, sp in zip(first["unit"], first[f"word_{side}"], special.loc[first.index], strict=True)
    ]
    first["order"] = np.arange(len(first))
    first["word"] = first[f"word_{side}"].where(~special.loc[first.index])
    first = first.set_index("unit")[["label", f"pos_{side}", "word", f"special_{side}", "order"]]
    return t[[idx, "unit"]].merge(first, left_on="unit", right_index=True)


def _word_matrix(tp: pd.DataFrame, toks: pd.DataFrame) -> pd.DataFrame:
    ua = _word_units(tp, toks, "a")
    ub = _word_units(tp, toks, "b")
    m = tp[["i", "j", "relevance"]].merge(ua[["i", "unit"]], on="i").merge(
        ub[["j", "unit"]], on="j", suffixes=("_a", "_b"))
    g = m.groupby(["unit_a", "unit_b"], sort=False).agg(
        relevance=("relevance", lambda r: float(np.asarray(r, dtype=np.float64).sum())),
        n_token_pairs=("relevance", "size")).reset_index()
    attrs_a = ua.drop_duplicates("unit").set_index("unit")
    attrs_b = ub.drop_duplicates("unit").set_index("unit")
    out = pd.DataFrame({
        "i": g["unit_a"].map(attrs_a["order"]).astype("int64"),
        "j": g["unit_b"].map(attrs_b["order"]).astype("int64"),
        "token_a": g["unit_a"].map(attrs_a["label"]),
        "token_b": g["unit_b"].map(attrs_b["label"]),
        "relevance": g["relevance"],
        "pos_a": g["unit_a"].map(attrs_a["pos_a"]),
        "pos_b": g["unit_b"].map(attrs_b["pos_b"]),
        "word_a": g["unit_a"].map(attrs_a["word"]).astype("Int16"),
        "word_b": g["unit_b"].map(attrs_b["word"]).astype("Int16"),
        "special_a": g["unit_a"].map(attrs_a["special_a"]).astype(bool),
        "special_b": g["unit_b"].map(attrs_b["special_b"]).astype(bool),
        "n_token_pairs": g["n_token_pairs"].astype("int64"),
    })
    return out.sort_values(["i", "j"]).reset_index(drop=True)
