"""The search indexes' writer (used by ``python -m precompute index``): an index's record, and every chunk of
it as one DuckLake transaction with the store's exactly-once rule.

Chunk k (the passages ``[k*C, (k+1)*C)``) commits its ``index_passages`` and ``index_windows`` rows with its
``index_chunks`` row; a writer that finds the chunk committed raises :class:`ChunkExistsError` (nothing is
written), and when two writers race, readers see the first committed write only. Works on every store
location :class:`StoreWriter` opens (a local folder, or a PostgreSQL catalog with data on S3).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.store.catalog import transaction
from core.store.index import HNSW_MIN_WINDOWS, clean_record, encode_matrix
from core.store.records import ChunkExistsError, StoreError, check_columns, check_id, quote, to_arrow, utcnow
from core.store.schema import INDEX_CHUNK_TABLES, SCHEMA, TABLES
from core.store.writer import StoreWriter, insert, latest_rows, new_write

# Record fields that must agree when an index is resumed (the id covers the rest).
RESUME_IDENTITY = ("n_passages", "chunk_size", "n_chunks", "dim", "similarity")


def _winners(lake: str) -> str:
    return (f"SELECT index_id, chunk_index, write_id FROM {lake}.index_chunks QUALIFY row_number() OVER "
            f"(PARTITION BY index_id, chunk_index ORDER BY snapshot_id, write_id) = 1")


class IndexWriter(StoreWriter):
    """Writes search indexes into a store (created if needed); every method is one transaction."""

    def record(self, index_id: str) -> dict[str, Any] | None:
        """The index's latest record (None: never started, or deleted)."""
        df = latest_rows(self._con, self._lake, "indexes", "index_id = $v", {"v": check_id(index_id, "index_id")})
        if df.empty or df.iloc[0]["status"] == "deleted":
            return None
        return clean_record({c: v for c, v in df.iloc[0].to_dict().items() if c in SCHEMA["indexes"]})

    def _publish(self, record: Mapping[str, Any], con: duckdb.DuckDBPyConnection | None = None) -> None:
        row = {c: record.get(c) for c in SCHEMA["indexes"]}
        row["heartbeat_at"] = utcnow()
        rows = to_arrow("indexes", pd.DataFrame([row]), f"index {row['index_id']}")
        if con is not None:
            insert(con, self._lake, "indexes", rows, *new_write())
        else:
            transaction(self._con, lambda c: insert(c, self._lake, "indexes", rows, *new_write()),
                        f"index {row['index_id']}")

    def start_index(self, record: Mapping[str, Any], *, force: bool = False) -> str | None:
        """Register (or resume) an index; returns the previous status (None: new; ``"done"``: nothing to do
        unless ``force``, which deletes it and starts afresh; ``"running"``/``"failed"``: resumed, its
        committed chunks stay)."""
        record = dict(record)
        index_id = check_id(record.get("index_id"), "index_id")
        unknown = [c for c in record if c not in SCHEMA["indexes"]]
        missing = [c for c in TABLES["indexes"].required if record.get(c) is None]
        if unknown or missing:
            raise StoreError(f"start_index({index_id}): unknown field(s) {unknown}, missing field(s) {missing}")
        previous = self.record(index_id)
        if previous is not None and previous["status"] == "done" and not force:
            return "done"
        if previous is not None and not force:
            diff = [f"{f}={previous.get(f)!r} (now {record.get(f)!r})" for f in RESUME_IDENTITY
                    if previous.get(f) != record.get(f)]
            if diff:
                raise StoreError(f"index {index_id} was started with {', '.join(diff)}: resume it with the same "
                                 f"settings (--chunk-size {previous['chunk_size']}), or pass --force to rebuild it")
        if force and previous is not None:
            self.delete_index(index_id)
            previous = None
        record.update(status="running", pid=os.getpid(), host=socket.gethostname(), finished_at=None,
                      error_message=None, hnsw=None, n_windows=None, max_windows=None,
                      started_at=(previous or {}).get("started_at") or utcnow(),
                      seconds=(previous or {}).get("seconds"))
        self._publish(record)
        return None if previous is None else previous["status"]

    def completed_chunks(self, index_id: str) -> set[int]:
        """Committed chunks of the index."""
        rows = self._con.execute(f"SELECT DISTINCT chunk_index FROM {self._lake}.index_chunks WHERE index_id = $i",
                                 {"i": check_id(index_id, "index_id")}).fetchall()
        return {int(r[0]) for r in rows}

    def pending_chunks(self, index_id: str) -> list[int]:
        """Chunks not committed yet, in order."""
        record = self.record(index_id)
        if record is None:
            raise StoreError(f"index {index_id} is not started in {self.location}; call start_index() first")
        done = self.completed_chunks(index_id)
        return [k for k in range(int(record["n_chunks"])) if k not in done]

    def write_chunk(self, index_id: str, chunk_index: int, passages: pd.DataFrame, windows: pd.DataFrame,
                    seconds: float | None = None) -> int:
        """Commit chunk ``chunk_index``: ``passages`` (the ``index_passages`` columns of passages [k*C, (k+1)*C))
        and their ``windows`` (``index_windows`` columns; ``factor``/``target`` may be arrays, stored as
        float16/float32, ``embedding`` arrays of D values), in one transaction; returns the windows written.
        Raises ChunkExistsError when the chunk is committed already."""
        record = self.record(index_id)
        k = int(chunk_index)
        ctx = f"index {index_id}, chunk {k}"
        if record is None or record["status"] != "running":
            raise StoreError(f"{ctx}: the index is not running; call start_index() first")
        if not 0 <= k < record["n_chunks"]:
            raise StoreError(f"{ctx}: chunk index outside 0..{record['n_chunks'] - 1}")
        lo, hi = k * int(record["chunk_size"]), min((k + 1) * int(record["chunk_size"]), int(record["n_passages"]))
        tables = {"index_passages": self._prepare("index_passages", passages, index_id, k, ctx),
                  "index_windows": self._prepare("index_windows", windows, index_id, k, ctx, int(record["dim"]))}
        ids = tables["index_passages"]["passage_id"].to_pylist()
        if sorted(ids) != list(range(lo, hi)):
            raise StoreError(f"{ctx}: the passages must be exactly passage ids [{lo}, {hi})")
        if set(tables["index_windows"]["passage_id"].to_pylist()) != set(ids):
            raise StoreError(f"{ctx}: every passage in [{lo}, {hi}) needs at least one window, and only those")
        n_windows = tables["index_windows"].num_rows
        where = {"i": index_id, "k": k}

        def body(con: duckdb.DuckDBPyConnection) -> None:
            found = con.execute(f"SELECT count(*) FROM {self._lake}.index_chunks WHERE index_id = $i AND "
                                f"chunk_index = $k", where).fetchone()[0]
            if found:
                raise ChunkExistsError(f"{ctx}: chunk is committed already in {self.location}")
            wid, at = new_write()
            for name, rows in tables.items():
                insert(con, self._lake, name, rows, wid, at)
            ledger = {"index_id": index_id, "chunk_index": k, "n_passages": hi - lo, "n_windows": n_windows,
                      "seconds": seconds, "host": socket.gethostname(), "pid": os.getpid(), "committed_at": at}
            insert(con, self._lake, "index_chunks", to_arrow("index_chunks", pd.DataFrame([ledger]), ctx), wid, at)
            if self._before_commit is not None:  # test hook: inside the chunk's transaction
                self._before_commit(k)

        transaction(self._con, body, ctx)
        return n_windows

    def _prepare(self, table: str, df: pd.DataFrame, index_id: str, k: int, ctx: str, dim: int = 0) -> pa.Table:
        """``df`` as the Arrow rows of ``table`` for chunk ``k``: checked, blobs encoded, sorted by key."""
        check_columns(table, df, TABLES[table].required, ctx)
        frame = df.copy()
        for col, value in (("index_id", index_id), ("chunk_index", k)):
            if col in frame.columns and not (frame[col] == value).all():
                raise StoreError(f"{ctx}: {table}.{col} has values other than {value!r}")
            frame[col] = value
        key = [c for c in TABLES[table].key if c != "index_id"]
        if frame.duplicated(key).any():
            raise StoreError(f"{ctx}: {table} repeats a key {key}")
        frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
        embedding = None
        if table == "index_windows":
            frame["factor"] = [v if isinstance(v, bytes) else encode_matrix(v, "<f2") for v in frame["factor"]]
            if "target" in frame.columns:
                frame["target"] = [v if isinstance(v, bytes) or v is None else encode_matrix(v, "<f4")
                                   for v in frame["target"]]
            bad = [len(e) for e in frame["embedding"] if len(e) != dim]
            if bad:
                raise StoreError(f"{ctx}: embeddings must have {dim} values, got {bad[0]}")
            values = np.concatenate([np.asarray(e, np.float32) for e in frame["embedding"]]) if len(frame) \
                else np.zeros(0, np.float32)
            embedding = pa.ListArray.from_arrays(pa.array(np.arange(len(frame) + 1, dtype=np.int32) * dim),
                                                 pa.array(values))
            frame = frame.drop(columns="embedding")
        rows = to_arrow(table, frame, ctx)
        if embedding is not None:
            rows = rows.set_column(rows.schema.get_field_index("embedding"), rows.schema.field("embedding"), embedding)
        return rows

    def finish_index(self, index_id: str, seconds: float, hnsw: bool | None = None) -> dict[str, Any]:
        """Mark the index done (every chunk committed) with its window counts; ``hnsw`` (None: at least
        :data:`HNSW_MIN_WINDOWS` windows) says whether searches use an HNSW index. Returns the record."""
        record = self.record(index_id)
        if record is None:
            raise StoreError(f"index {index_id} is not started in {self.location}")
        missing = [k for k in range(int(record["n_chunks"])) if k not in self.completed_chunks(index_id)]
        if missing:
            raise StoreError(f"index {index_id}: chunks {missing[:5]} are missing; it cannot be finished")
        n_windows, max_windows = self._con.execute(f"""
            SELECT coalesce(sum(n), 0), coalesce(max(n), 0) FROM (
                SELECT count(*) AS n FROM {self._lake}.index_windows w
                SEMI JOIN ({_winners(self._lake)}) c
                    ON w.index_id = c.index_id AND w.chunk_index = c.chunk_index AND w.write_id = c.write_id
                WHERE w.index_id = $i GROUP BY w.passage_id)
        """, {"i": index_id}).fetchone()
        record.update(status="done", finished_at=utcnow(), seconds=(record.get("seconds") or 0.0) + seconds,
                      n_windows=int(n_windows), max_windows=int(max_windows),
                      hnsw=bool(n_windows >= HNSW_MIN_WINDOWS if hnsw is None else hnsw))
        self._publish(record)
        return record

    def fail_index(self, index_id: str, message: str, seconds: float) -> None:
        """Mark the index failed with ``message`` (its committed chunks stay for a resume)."""
        record = self.record(index_id)
        if record is not None:
            record.update(status="failed", error_message=str(message), finished_at=utcnow(),
                          seconds=(record.get("seconds") or 0.0) + seconds)
            self._publish(record)

    def delete_index(self, index_id: str) -> None:
        """Delete an index's chunks and mark its record deleted, in one transaction."""
        record = self.record(index_id)

        def body(con: duckdb.DuckDBPyConnection) -> None:
            for table in (*INDEX_CHUNK_TABLES, "index_chunks"):
                con.execute(f"DELETE FROM {self._lake}.{quote(table)} WHERE index_id = $i", {"i": index_id})
            if record is not None:
                self._publish({**record, "status": "deleted"}, con)

        transaction(self._con, body, f"delete index {index_id}")

