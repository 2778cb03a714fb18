"""Search indexes in the store: their schema, writer and every query (``python -m precompute index|search``).

STORAGE INTERFACE. This module is the whole storage side of search: :class:`IndexWriter` (start, chunks,
finish) and :class:`IndexStore` (list, search, read windows and passages); callers only use the two classes.
The schema is declared once in :data:`INDEX_SCHEMA` (documented in docs/STORE.md); every file is published
atomically (written under a temporary name, fsynced, renamed) and a chunk is written exactly once. Models go
into the DuckLake ``models`` table. The index files themselves are Parquet files in the store's folder, beside
the DuckLake catalog, not DuckLake tables (yet): indexes need a local store folder.

Layout, in the store's folder::

    <store>/indexes/<index_id>/index.parquet              the index record (replaced atomically on every change)
    <store>/indexes/<index_id>/passages.parquet           every distinct text, in corpus order
    <store>/indexes/<index_id>/chunk=<k:06d>/windows.<tag>.parquet
            chunk k: the windows of passages [k*C, (k+1)*C), renamed into place complete
    <store>/indexes/<index_id>/vectors.duckdb             derived: the embeddings in a DuckDB table, with an
                                                          HNSW index (DuckDB vss) when the index is large

The Parquet files are the index; ``vectors.duckdb`` is rebuilt from them (``IndexWriter.build_vectors``) and
is never the only copy of anything. Until it exists (an index still being built), searches scan the windows'
Parquet files through an in-memory table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.store.catalog import CATALOG_FILE, parse_location
from core.store.reader import pid_alive as _pid_alive
from core.store.records import StoreError, check_id, utcnow
from core.store.writer import StoreWriter

#: Indexes with at least this many windows get an HNSW index (smaller ones are scanned exactly).
HNSW_MIN_WINDOWS = 100_000
SEARCH_MODES = ("auto", "exact", "hnsw")
STATUSES = ("running", "done", "failed")

# fmt: off
INDEX_SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "indexes": {
        "index_id": ("VARCHAR", "Deterministic hash of model_id, the corpus' content hash, method, layer, steps, quadrature, prompt and window settings."),
        "corpus_key": ("VARCHAR", "What was indexed: dataset keys joined by `+` (`stsb:train+stsb:dev+stsb:test`) or `file:<name>[:<column>]`."),
        "corpus_source": ("VARCHAR", "Where the texts were read from."),
        "corpus_hash": ("VARCHAR", "SHA-256 (first 16 hex digits) of the distinct texts in order."),
        "model_id": ("VARCHAR", "Model whose embeddings and factors are stored (-> models.model_id)."),
        "model_name": ("VARCHAR", "Denormalised models.name."),
        "model_path": ("VARCHAR", "Where the model was loaded from (the Search page loads the query's model from here)."),
        "similarity": ("VARCHAR", "The model's similarity (`cosine` or `dot`): what the search ranks by."),
        "dim": ("INTEGER", "Embedding dimension D."),
        "method": ("VARCHAR", "Attribution method of the stored factors (`bilrp`, `ij`, `hxp`)."),
        "layer": ("INTEGER", "Layer the factors attribute to."),
        "steps": ("INTEGER", "Integration steps (NULL for step-free methods)."),
        "quadrature": ("VARCHAR", "Quadrature rule (NULL for step-free methods)."),
        "prompt_name": ("VARCHAR", "Name of the prompt prepended to every passage (NULL: none)."),
        "prompt": ("VARCHAR", "Its text ('' when none); the stored tokens include it."),
        "query_prompt_name": ("VARCHAR", "Prompt the search prepends to queries by default (NULL: none)."),
        "query_prompt": ("VARCHAR", "Its text ('' when none)."),
        "window_tokens": ("INTEGER", "Content tokens per window at most (the model's maximum minus special and prompt tokens, or smaller)."),
        "window_overlap": ("INTEGER", "Tokens two consecutive windows of a passage share (about; windows are cut between words)."),
        "n_passages": ("INTEGER", "Distinct texts indexed (rows of `passages`)."),
        "chunk_size": ("INTEGER", "Passages per chunk C."),
        "n_chunks": ("INTEGER", "ceil(n_passages / C)."),
        "status": ("VARCHAR", "`running`, `done` or `failed` (readers show a `running` index whose writer process is gone as `interrupted`)."),
        "started_at": ("TIMESTAMP", "UTC time the index was first started."),
        "finished_at": ("TIMESTAMP", "UTC time it finished or failed."),
        "seconds": ("DOUBLE", "Compute seconds over all attempts."),
        "n_windows": ("INTEGER", "Windows stored (set when done)."),
        "max_windows": ("INTEGER", "Most windows of one passage (set when done)."),
        "code_version": ("VARCHAR", "Commit of the code that built it."),
        "device": ("VARCHAR", "Device the factors were computed on."),
        "host": ("VARCHAR", "Host name of the writer."),
        "pid": ("INTEGER", "Process id of the writer (a `running` index whose writer is gone reads as `interrupted`)."),
        "error_message": ("VARCHAR", "Why it failed (NULL unless failed)."),
    },
    "index_passages": {
        "passage_id": ("INTEGER", "0-based position of the distinct text in the corpus (first occurrence order)."),
        "text": ("VARCHAR", "The passage."),
        "dataset_key": ("VARCHAR", "Dataset of its first occurrence (NULL for a corpus file)."),
        "pair_id": ("INTEGER", "Pair of its first occurrence in that dataset (-> pairs.pair_id; NULL for a corpus file)."),
        "side": ("VARCHAR", "`a` (sentence1) or `b` (sentence2) of that pair (NULL for a corpus file)."),
        "source_row": ("INTEGER", "0-based row of its first occurrence in a corpus file (NULL for datasets)."),
        "occurrences": ("INTEGER", "How often the text occurs in the corpus."),
    },
    "index_windows": {
        "chunk_index": ("INTEGER", "Chunk (from the directory name)."),
        "passage_id": ("INTEGER", "Passage (-> index_passages.passage_id)."),
        "window_index": ("SMALLINT", "0-based window of the passage (a passage that fits the model is one window)."),
        "char_start": ("INTEGER", "The window's first character in the passage."),
        "char_end": ("INTEGER", "One past its last character."),
        "n_tokens": ("SMALLINT", "Tokens of the model input (prompt and special tokens included) = factor rows."),
        "tokens": ("VARCHAR[]", "The tokens of the model input (prompt + window)."),
        "token_start": ("INTEGER[]", "Character offset of each token in prompt + window text (0 for special tokens)."),
        "token_end": ("INTEGER[]", "One past each token's end."),
        "special": ("BOOLEAN[]", "Whether each token is a special token."),
        "word_ids": ("INTEGER[]", "Pre-tokenizer word of each token (-1 for special tokens)."),
        "embedding": ("FLOAT[D]", "The model's sentence embedding of the window (what the search compares)."),
        "factor": ("BLOB", "The (n_tokens, D) factor, float16 little-endian, row-major."),
        "target": ("BLOB", "The (D,) vector the factor rows sum to, float32 little-endian."),
        "scale": ("DOUBLE", "The window's multiplier of pair products (1/|e| for cosine models)."),
        "truncated": ("BOOLEAN", "Whether the input was cut at the model's maximum (never, unless a single word is longer)."),
    },
}
# fmt: on

_ARROW = {"VARCHAR": pa.string(), "INTEGER": pa.int32(), "SMALLINT": pa.int16(), "DOUBLE": pa.float64(),
          "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us"), "BLOB": pa.binary(),
          "VARCHAR[]": pa.list_(pa.string()), "INTEGER[]": pa.list_(pa.int32()), "BOOLEAN[]": pa.list_(pa.bool_())}
_CHUNK_RE = re.compile(r"^chunk=(\d{6})$")
_WINDOWS_FILE_RE = re.compile(r"^windows\.[0-9a-f]{8}\.parquet$")


def index_arrow_schema(table: str, dim: int | None = None) -> pa.Schema:
    """The Arrow schema of a table's files (``dim``: the embedding size, for ``index_windows``)."""
    fields = []
    for name, (typ, _) in INDEX_SCHEMA[table].items():
        if table == "index_windows" and name == "chunk_index":
            continue  # from the directory name
        arrow = pa.list_(pa.float32(), int(dim)) if typ == "FLOAT[D]" else _ARROW[typ]
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


def index_schema_markdown() -> str:
    """The index tables as markdown (the last part of docs/STORE.md)."""
    layout = __doc__.split("Layout, in the store's folder::")[1].split("The Parquet files")[0]
    lines = ["## Search indexes (`python -m precompute index`)", "", "```", *[ln[4:] for ln in layout.strip("\n").splitlines()],
             "```", "", "A chunk directory is renamed into place complete, so a killed build resumes with exactly the "
             "missing chunks; `vectors.duckdb` is derived from the chunks and rebuilt from them.", ""]
    for table, cols in INDEX_SCHEMA.items():
        lines += [f"### `{table}`", "", "| column | type | description |", "|---|---|---|"]
        lines += [f"| `{c}` | {t} | {d} |" for c, (t, d) in cols.items()]
        lines.append("")
    return "\n".join(lines)


def make_index_id(model_id: str, corpus_hash: str, method: str, layer: int, steps: int | None,
                  quadrature: str | None, prompt: str, window_tokens: int, window_overlap: int) -> str:
    """Deterministic 16-hex-digit index id from everything that defines an index's contents."""
    key = "|".join(str(v) for v in (model_id, corpus_hash, method, layer, steps, quadrature, prompt,
                                    window_tokens, window_overlap))
    return "ix" + hashlib.sha256(key.encode()).hexdigest()[:14]


def corpus_hash(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def encode_matrix(matrix: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(np.asarray(matrix, dtype=np.float32).astype(dtype)).tobytes()


def decode_matrix(blob: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(bytes(blob), dtype=dtype).astype(np.float32)
    if arr.size != int(np.prod(shape)):
        raise StoreError(f"stored array has {arr.size} values, expected shape {shape}")
    return arr.reshape(shape)


# ---- atomic files (the index's own; the DuckLake tables use the catalog's transactions) ----------


def _temp_name(name: str, prefix: str = "tmp") -> str:
    return f".{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}.part"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_parquet(table: pa.Table, path: Path) -> None:
    with open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())


def _publish_parquet(table: pa.Table, path: Path) -> None:
    """Write ``path`` atomically: readers see the old file or the new one, never a part."""
    tmp = path.parent / _temp_name(path.name)
    try:
        _write_parquet(table, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


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


def _local_root(path: str | os.PathLike) -> Path:
    root = parse_location(path).root
    if root is None:
        raise StoreError(f"search indexes live in a local store folder; {str(path)!r} is a remote DuckLake store")
    return root


def _is_store(root: Path) -> bool:
    return (root / CATALOG_FILE).is_file()


def _vss_extension() -> str:
    try:
        import duckdb_extension_vss
    except ImportError as exc:
        raise StoreError("HNSW search needs DuckDB's vss extension: pip install duckdb-extension-vss"
                         f"=={duckdb.__version__}") from exc
    found = sorted(Path(duckdb_extension_vss.__file__).parent.glob("extensions/*/vss.duckdb_extension"))
    if not found:
        raise StoreError(f"the duckdb-extension-vss package has no extension file ({duckdb_extension_vss.__file__})")
    return str(found[-1])


def _load_vss(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"LOAD '{_vss_extension()}'")
    con.execute("SET hnsw_enable_experimental_persistence = true")


def _index_dir(root: Path, index_id: str) -> Path:
    return root / "indexes" / check_id(index_id, "index_id")


def _chunk_dirs(root: Path, index_id: str) -> dict[int, Path]:
    out = {}
    for e in _list_dir(_index_dir(root, index_id)):
        m = _CHUNK_RE.match(e.name)
        if m and e.is_dir():
            out[int(m.group(1))] = Path(e.path)
    return out


def _window_files(root: Path, index_id: str, chunks: Iterable[int] | None = None) -> list[str]:
    dirs = _chunk_dirs(root, index_id)
    wanted = sorted(dirs) if chunks is None else sorted(set(chunks) & set(dirs))
    return [str(Path(e.path).resolve()) for k in wanted for e in _list_dir(dirs[k]) if _WINDOWS_FILE_RE.match(e.name)]


def _read_record(root: Path, index_id: str) -> dict[str, Any] | None:
    path = _index_dir(root, index_id) / "index.parquet"
    try:
        rows = pq.read_table(path).to_pylist()
    except FileNotFoundError:
        return None
    return rows[0] if rows else None


def _live_status(record: dict[str, Any]) -> dict[str, Any]:
    """The record with ``status`` "interrupted" when it says running but its writer process on this host is gone."""
    if record["status"] == "running" and record.get("host") == socket.gethostname() and record.get("pid") \
            and not _pid_alive(int(record["pid"])):
        record["status"] = "interrupted"
    return record


def _signature(root: Path, index_id: str) -> str:
    return ",".join(str(k) for k in sorted(_chunk_dirs(root, index_id)))


class IndexWriter:
    """Writes one store's search indexes (used by ``precompute index``); every call is atomic."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.root = _local_root(path)
        StoreWriter(path).close()  # creates the store if needed

    def put_model(self, meta: Mapping[str, Any]) -> None:
        """Record the model in the store's ``models`` table."""
        with StoreWriter(self.root) as writer:
            writer.put_model(meta)

    def record(self, index_id: str) -> dict[str, Any] | None:
        return _read_record(self.root, index_id)

    def _publish(self, record: Mapping[str, Any]) -> None:
        frame = pd.DataFrame([{c: record.get(c) for c in INDEX_SCHEMA["indexes"]}])
        table = pa.Table.from_pandas(frame, schema=index_arrow_schema("indexes"), preserve_index=False)
        directory = _index_dir(self.root, record["index_id"])
        directory.mkdir(parents=True, exist_ok=True)
        _publish_parquet(table, directory / "index.parquet")

    def start_index(self, record: Mapping[str, Any], passages: pd.DataFrame, *, force: bool = False) -> str | None:
        """Register (or resume) an index; returns the previous status (None: new; "done": nothing to do
        unless ``force``, which deletes it and starts afresh)."""
        record = dict(record)
        index_id = check_id(record["index_id"], "index_id")
        previous = self.record(index_id)
        if previous is not None and previous["status"] == "done" and not force:
            return "done"
        if force and previous is not None:
            self.delete_index(index_id)
            previous = None
        directory = _index_dir(self.root, index_id)
        directory.mkdir(parents=True, exist_ok=True)
        self._cleanup(directory)
        passages_file = directory / "passages.parquet"
        if not passages_file.exists():
            table = pa.Table.from_pandas(passages[list(INDEX_SCHEMA["index_passages"])].reset_index(drop=True),
                                         schema=index_arrow_schema("index_passages"), preserve_index=False)
            _publish_parquet(table, passages_file)
        record.update(status="running", pid=os.getpid(), host=socket.gethostname(), finished_at=None, error_message=None,
                      started_at=(previous or {}).get("started_at") or utcnow(),
                      seconds=(previous or {}).get("seconds"))
        self._publish(record)
        return None if previous is None else previous["status"]

    @staticmethod
    def _cleanup(directory: Path) -> None:
        for e in _list_dir(directory):
            if e.name.startswith(".tmp-") and str(os.getpid()) not in e.name:
                _remove(Path(e.path))

    def completed_chunks(self, index_id: str) -> set[int]:
        return set(_chunk_dirs(self.root, index_id))

    def pending_chunks(self, index_id: str) -> list[int]:
        record = self.record(index_id)
        if record is None:
            raise StoreError(f"index {index_id} is not started in {str(self.root)!r}")
        done = self.completed_chunks(index_id)
        return [k for k in range(record["n_chunks"]) if k not in done]

    def write_chunk(self, index_id: str, chunk_index: int, windows: pd.DataFrame) -> Path:
        """Write chunk ``chunk_index`` (windows of passages [k*C, (k+1)*C)) atomically, exactly once.

        ``windows`` has the columns of ``index_windows`` (no chunk_index); ``factor``/``target`` may be arrays
        (stored as float16/float32) and ``embedding`` arrays of length D."""
        record = self.record(index_id)
        ctx = f"index {index_id}, chunk {chunk_index}"
        if record is None or record["status"] != "running":
            raise StoreError(f"{ctx}: the index is not running; call start_index() first")
        k, size = int(chunk_index), int(record["chunk_size"])
        if not 0 <= k < record["n_chunks"]:
            raise StoreError(f"{ctx}: chunk index outside 0..{record['n_chunks'] - 1}")
        lo, hi = k * size, min((k + 1) * size, record["n_passages"])
        ids = windows["passage_id"].astype(int)
        if len(ids) and (ids.min() < lo or ids.max() >= hi):
            raise StoreError(f"{ctx}: passage ids outside this chunk's [{lo}, {hi})")
        if set(ids) != set(range(lo, hi)):
            raise StoreError(f"{ctx}: every passage in [{lo}, {hi}) needs at least one window")
        if windows.duplicated(["passage_id", "window_index"]).any():
            raise StoreError(f"{ctx}: repeated (passage_id, window_index)")
        frame = windows.copy()
        frame["factor"] = [v if isinstance(v, bytes) else encode_matrix(v, "<f2") for v in frame["factor"]]
        frame["target"] = [v if isinstance(v, bytes) else encode_matrix(v, "<f4") for v in frame["target"]]
        dim = int(record["dim"])
        bad = [len(e) for e in frame["embedding"] if len(e) != dim]
        if bad:
            raise StoreError(f"{ctx}: embeddings must have {dim} values, got {bad[0]}")
        frame["embedding"] = [np.asarray(e, dtype=np.float32) for e in frame["embedding"]]
        cols = [c for c in INDEX_SCHEMA["index_windows"] if c != "chunk_index"]
        frame = frame.sort_values(["passage_id", "window_index"], kind="stable")[cols].reset_index(drop=True)
        schema = index_arrow_schema("index_windows", dim)
        arrays = [pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(frame["embedding"].tolist()) if len(frame)
                                                             else np.zeros(0, np.float32)), dim)
                  if f.name == "embedding" else pa.array(frame[f.name].tolist(), type=f.type) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        final = _index_dir(self.root, index_id) / f"chunk={k:06d}"
        if final.exists():
            raise StoreError(f"{ctx}: chunk already complete at {final}")
        tmp = final.parent / _temp_name(final.name)
        tmp.mkdir()
        try:
            _write_parquet(table, tmp / f"windows.{uuid.uuid4().hex[:8]}.parquet")
            _fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            _remove(tmp)
            raise
        _fsync_dir(final.parent)
        return final

    def finish_index(self, index_id: str, seconds: float, hnsw: bool | None = None) -> dict[str, Any]:
        """Mark the index done (all chunks present) and build its vectors table; returns the record."""
        record = self.record(index_id)
        missing = [k for k in range(record["n_chunks"]) if k not in self.completed_chunks(index_id)]
        if missing:
            raise StoreError(f"index {index_id}: chunks {missing[:5]} are missing; it cannot be finished")
        counts = self.build_vectors(index_id, hnsw)
        record.update(status="done", finished_at=utcnow(), seconds=(record.get("seconds") or 0.0) + seconds,
                      n_windows=counts["n_windows"], max_windows=counts["max_windows"])
        self._publish(record)
        return record

    def fail_index(self, index_id: str, message: str, seconds: float) -> None:
        record = self.record(index_id)
        if record is not None:
            record.update(status="failed", error_message=message, finished_at=utcnow(),
                          seconds=(record.get("seconds") or 0.0) + seconds)
            self._publish(record)

    def delete_index(self, index_id: str) -> None:
        directory = _index_dir(self.root, index_id)
        if directory.exists():
            trash = self.root / "indexes" / _temp_name(index_id, prefix="trash")
            trash.parent.mkdir(exist_ok=True)
            os.rename(directory, trash)
            _remove(trash)

    def build_vectors(self, index_id: str, hnsw: bool | None = None, ef_construction: int | None = None,
                      m: int | None = None) -> dict[str, int]:
        """(Re)build ``vectors.duckdb`` from the windows' Parquet files: a table of (passage_id,
        window_index, chunk_index, embedding FLOAT[D]) and, when ``hnsw`` (None: at least
        HNSW_MIN_WINDOWS windows), an HNSW index with the model's metric. Written to a temporary file and
        renamed into place, so searches keep using the old file until the new one is complete."""
        record = self.record(index_id)
        files = _window_files(self.root, index_id)
        if not files:
            raise StoreError(f"index {index_id} has no windows yet")
        directory = _index_dir(self.root, index_id)
        tmp = directory / _temp_name("vectors.duckdb")
        con = duckdb.connect(str(tmp))
        try:
            dim = int(record["dim"])
            con.execute(f"""
                CREATE TABLE vectors AS
                SELECT CAST(passage_id AS INTEGER) AS passage_id, CAST(window_index AS SMALLINT) AS window_index,
                       CAST(chunk AS INTEGER) AS chunk_index, CAST(embedding AS FLOAT[{dim}]) AS embedding
                FROM read_parquet($files, hive_partitioning = true, hive_types = {{'chunk': INTEGER}})
                ORDER BY passage_id, window_index
            """, {"files": files})
            n_windows, max_windows = con.execute(
                "SELECT sum(n), max(n) FROM (SELECT passage_id, count(*) AS n FROM vectors GROUP BY passage_id)"
            ).fetchone()
            use_hnsw = n_windows >= HNSW_MIN_WINDOWS if hnsw is None else bool(hnsw)
            if use_hnsw:
                _load_vss(con)
                options = [f"metric = '{_METRIC[record['similarity']]}'"]
                if ef_construction:
                    options.append(f"ef_construction = {int(ef_construction)}")
                if m:
                    options.append(f"M = {int(m)}")
                con.execute(f"CREATE INDEX vectors_hnsw ON vectors USING HNSW (embedding) WITH ({', '.join(options)})")
            con.execute("CREATE TABLE meta AS SELECT $sig AS signature, $hnsw AS hnsw, $n AS n_windows, $m AS max_windows",
                        {"sig": _signature(self.root, index_id), "hnsw": use_hnsw, "n": n_windows, "m": max_windows})
            con.execute("CHECKPOINT")
        except BaseException:
            con.close()
            _remove(tmp)
            raise
        con.close()
        os.replace(tmp, directory / "vectors.duckdb")
        with contextlib.suppress(OSError):
            os.remove(str(tmp) + ".wal")
        _fsync_dir(directory)
        return {"n_windows": int(n_windows), "max_windows": int(max_windows), "hnsw": int(use_hnsw)}


_METRIC = {"cosine": "cosine", "dot": "ip"}
_DISTANCE = {"cosine": ("array_cosine_distance", "1 - "), "dot": ("array_negative_inner_product", "-")}
_SIMILARITY = {"cosine": "array_cosine_similarity", "dot": "array_inner_product"}


class IndexStore:
    """Read-only queries on a store's search indexes; safe while an index is being written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.root = _local_root(path)
        if not self.root.is_dir() or not _is_store(self.root):
            raise StoreError(f"{str(self.root)!r} is not a SimLens store")
        self._con = duckdb.connect(":memory:")
        self._lock = threading.RLock()
        self._attached: dict[str, tuple[float, str]] = {}  # index_id -> (vectors file mtime, schema name)
        self._scanned: dict[str, tuple[str, int]] = {}  # index_id -> (chunk signature, max windows)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextlib.contextmanager
    def _registered(self, name: str, frame: pd.DataFrame):
        self._con.register(name, frame)
        try:
            yield
        finally:
            self._con.unregister(name)

    # ---- catalogue ------------------------------------------------------------------------------
    def indexes(self) -> pd.DataFrame:
        """Every index (latest record) with ``chunks_present``, newest first."""
        rows = []
        for e in _list_dir(self.root / "indexes"):
            if e.is_dir() and not e.name.startswith("."):
                record = _read_record(self.root, e.name)
                if record is not None:
                    rows.append({**_live_status(record), "chunks_present": len(_chunk_dirs(self.root, e.name))})
        cols = [*INDEX_SCHEMA["indexes"], "chunks_present"]
        if not rows:
            return pd.DataFrame(columns=cols)
        return pd.DataFrame(rows)[cols].sort_values("started_at", ascending=False, kind="stable").reset_index(drop=True)

    def index_info(self, index_id: str) -> dict[str, Any]:
        """The index's record; an unknown id raises a StoreError listing the indexes there are."""
        record = None
        with contextlib.suppress(StoreError):
            record = _read_record(self.root, str(index_id))
        if record is None:
            known = self.indexes()
            listing = ", ".join(f"{r.index_id} ({r.corpus_key}, {r.model_name}, {r.method})"
                                for r in known.itertuples()) or "none (build one with python -m precompute index)"
            raise StoreError(f"no search index {index_id!r} in {str(self.root)!r}; indexes: {listing}")
        record["chunks_present"] = len(_chunk_dirs(self.root, index_id))
        return _live_status(record)

    # ---- search ---------------------------------------------------------------------------------
    def _vectors_source(self, index_id: str, record: Mapping[str, Any]) -> tuple[str, bool, int]:
        """(table to search, has an HNSW index, max windows per passage) for an index."""
        path = _index_dir(self.root, index_id) / "vectors.duckdb"
        sig = _signature(self.root, index_id)
        if path.exists():
            mtime = path.stat().st_mtime
            cached = self._attached.get(index_id)
            if cached is None or cached[0] != mtime:
                schema = f"v_{index_id}_{len(self._attached)}"
                if cached is not None:
                    self._con.execute(f"DETACH {cached[1]}")
                _load_vss(self._con)
                self._con.execute(f"ATTACH '{path}' AS {schema} (READ_ONLY)")
                self._attached[index_id] = (mtime, schema)
            schema = self._attached[index_id][1]
            meta = self._con.execute(f"SELECT signature, hnsw, max_windows FROM {schema}.meta").fetchone()
            if meta[0] == sig:
                return f"{schema}.vectors", bool(meta[1]), int(meta[2])
        table = f"scan_{index_id}"
        if self._scanned.get(index_id, ("",))[0] != sig:
            files = _window_files(self.root, index_id)
            if not files:
                raise StoreError(f"index {index_id} has no windows yet")
            self._con.execute(f"""
                CREATE OR REPLACE TEMP TABLE {table} AS
                SELECT CAST(passage_id AS INTEGER) AS passage_id, CAST(window_index AS SMALLINT) AS window_index,
                       CAST(chunk AS INTEGER) AS chunk_index, CAST(embedding AS FLOAT[{int(record['dim'])}]) AS embedding
                FROM read_parquet($files, hive_partitioning = true, hive_types = {{'chunk': INTEGER}})
            """, {"files": files})
            (most,) = self._con.execute(f"SELECT coalesce(max(n), 1) FROM (SELECT count(*) AS n FROM {table} "
                                        "GROUP BY passage_id)").fetchone()
            self._scanned[index_id] = (sig, int(most))
        return table, False, self._scanned[index_id][1]

    def search_windows(self, index_id: str, query: np.ndarray, n: int, mode: str = "auto",
                       ef_search: int | None = None) -> tuple[pd.DataFrame, str]:
        """The ``n`` best windows for a query embedding by the model's similarity, and the mode used
        (``exact``: a scan of every stored embedding; ``hnsw``: the approximate HNSW index).
        Columns: passage_id, window_index, chunk_index, score."""
        if mode not in SEARCH_MODES:
            raise StoreError(f"search mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        record = self.index_info(index_id)
        dim, similarity = int(record["dim"]), record["similarity"]
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.size != dim:
            raise StoreError(f"query embedding has {q.size} values but index {index_id} stores {dim}")
        with self._lock:
            table, has_hnsw, _ = self._vectors_source(index_id, record)
            if mode == "hnsw" and not has_hnsw:
                raise StoreError(f"index {index_id} has no HNSW index (it is built for indexes of at least "
                                 f"{HNSW_MIN_WINDOWS:,} windows, or with precompute index --hnsw)")
            use = "hnsw" if has_hnsw and mode != "exact" else "exact"
            literal = f"[{', '.join(repr(float(v)) for v in q)}]::FLOAT[{dim}]"  # a constant lets HNSW apply
            if use == "hnsw":
                if ef_search:
                    self._con.execute(f"SET hnsw_ef_search = {int(ef_search)}")
                fn, to_score = _DISTANCE[similarity]
                sql = (f"SELECT passage_id, window_index, chunk_index, {to_score}d AS score FROM ("
                       f"SELECT *, {fn}(embedding, {literal}) AS d FROM {table} ORDER BY d LIMIT {int(n)})")
            else:
                sql = (f"SELECT passage_id, window_index, chunk_index, "
                       f"CAST({_SIMILARITY[similarity]}(embedding, {literal}) AS DOUBLE) AS score FROM {table} "
                       f"ORDER BY score DESC, passage_id, window_index LIMIT {int(n)}")
            return self._con.execute(sql).df(), use

    def explain_plan(self, index_id: str, query: np.ndarray, n: int, mode: str) -> str:
        """DuckDB's plan of a search (tests check that HNSW is used)."""
        record = self.index_info(index_id)
        with self._lock:
            table, _, _ = self._vectors_source(index_id, record)
            fn, _ = _DISTANCE[record["similarity"]] if mode == "hnsw" else (_SIMILARITY[record["similarity"]], "")
            literal = f"[{', '.join(repr(float(v)) for v in np.asarray(query).reshape(-1))}]::FLOAT[{int(record['dim'])}]"
            order = "d" if mode == "hnsw" else "d DESC"
            rows = self._con.execute(f"EXPLAIN SELECT {fn}(embedding, {literal}) AS d FROM {table} "
                                     f"ORDER BY {order} LIMIT {int(n)}").fetchall()
            return "\n".join(r[1] for r in rows)

    # ---- windows and passages -------------------------------------------------------------------
    def windows(self, index_id: str, keys: Sequence[tuple[int, int, int]]) -> pd.DataFrame:
        """The stored windows ``(chunk_index, passage_id, window_index)`` with every column of
        ``index_windows``, factors decoded: ``factor`` (n_tokens, D) and ``target`` (D,) float32 arrays."""
        if not keys:
            return pd.DataFrame(columns=list(INDEX_SCHEMA["index_windows"]))
        record = self.index_info(index_id)
        dim = int(record["dim"])
        files = _window_files(self.root, index_id, [k[0] for k in keys])
        wanted = pd.DataFrame(keys, columns=["chunk_index", "passage_id", "window_index"])
        with self._lock, self._registered("wanted_windows", wanted):
            df = self._con.execute("""
                SELECT w.* EXCLUDE (chunk), CAST(w.chunk AS INTEGER) AS chunk_index
                FROM read_parquet($files, hive_partitioning = true, hive_types = {'chunk': INTEGER}) w
                SEMI JOIN wanted_windows k ON k.chunk_index = w.chunk AND k.passage_id = w.passage_id
                                         AND k.window_index = w.window_index
            """, {"files": files}).df()
        df["factor"] = [decode_matrix(b, "<f2", (int(n), dim)) for b, n in zip(df["factor"], df["n_tokens"], strict=True)]
        df["target"] = [decode_matrix(b, "<f4", (dim,)) for b in df["target"]]
        df["embedding"] = [np.asarray(e, dtype=np.float32) for e in df["embedding"]]
        order = {(int(p), int(w)): i for i, (_, p, w) in enumerate(keys)}
        df["_order"] = [order[(int(p), int(w))] for p, w in zip(df["passage_id"], df["window_index"], strict=True)]
        return df.sort_values("_order").drop(columns="_order").reset_index(drop=True)

    def passages(self, index_id: str, passage_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Passages of an index (all, or those ids in the order given)."""
        self.index_info(index_id)
        path = _index_dir(self.root, index_id) / "passages.parquet"
        with self._lock:
            if passage_ids is None:
                return self._con.execute("SELECT * FROM read_parquet($p) ORDER BY passage_id", {"p": str(path)}).df()
            ids = pd.DataFrame({"passage_id": [int(p) for p in passage_ids], "_order": range(len(passage_ids))})
            with self._registered("wanted_passages", ids):
                return self._con.execute("""
                    SELECT p.* FROM wanted_passages w JOIN read_parquet($p) p USING (passage_id) ORDER BY w._order
                """, {"p": str(path)}).df()

    def all_embeddings(self, index_id: str) -> pd.DataFrame:
        """Every window's (passage_id, window_index, embedding) (tests compare searches with numpy)."""
        files = _window_files(self.root, index_id)
        with self._lock:
            return self._con.execute("SELECT passage_id, window_index, embedding FROM read_parquet($f) "
                                     "ORDER BY passage_id, window_index", {"f": files}).df()

