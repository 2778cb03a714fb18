"""The store's writer (used by precompute): datasets, models and evaluations as records, runs as
append-only events, and every chunk of a run as one DuckLake transaction.

Exactly-once as read: a chunk's rows, its ``chunks`` row and a heartbeat event of its run commit together.
A writer that finds the chunk committed already raises :class:`ChunkExistsError` (nothing is written); two
writers racing on the same chunk may both commit, and readers then see only the first committed write's rows.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.store import integrity
from core.store.catalog import StoreLocation, connect, ensure_tables, parse_location, transaction
from core.store.kinds import RUN_KINDS, kind_of_method, method_names, methodless_kinds
from core.store.meta import dataset_rows, evaluation_rows, model_row, run_segment
from core.store.prepare import content_hash, prepare_chunk
from core.store.records import (
    ChunkExistsError,
    StoreError,
    check_id,
    chunk_pair_range,
    parse_shard,
    quote,
    same_value,
    shard_chunks,
    to_arrow,
    utcnow,
)
from core.store.schema import CHUNK_TABLES, SCHEMA, columns

STATUSES = ("running", "done", "failed")
# Run fields that must agree between all segments (shards, earlier attempts) of one run.
RUN_IDENTITY = ("model_id", "dataset_key", "dataset_hash", "method", "layer", "steps", "quadrature", "tol", "max_steps",
                "pooling", "similarity", "n_pairs", "n_chunks", "chunk_size")
# Fields a caller may pass to finish_run(metrics=...).
FINISH_FIELDS = ("spearman", "pearson", "mse", "seconds", "pairs_per_s", "pairs_done", "device")


def insert(con: duckdb.DuckDBPyConnection, lake: str, table: str, rows: pa.Table, write_id: int, written_at: Any) -> None:
    """INSERT ``rows`` (SCHEMA columns of ``table``) with the write's bookkeeping columns, and the checksums of
    the data files the INSERT wrote (:func:`insert_checksums`)."""
    if rows.num_rows == 0:
        return
    name = f"_rows_{table}"
    con.register(name, rows)
    try:
        cols = list(columns(table))
        sel = ", ".join(quote(c) for c in cols)
        con.execute(f"INSERT INTO {lake}.{quote(table)} ({sel}, write_id, written_at) "
                    f"SELECT {sel}, $wid, $at FROM {name}", {"wid": write_id, "at": written_at})
    finally:
        con.unregister(name)
    if integrity.writes_file(con, lake, rows.num_rows):
        insert_checksums(con, lake, table, write_id, written_at)


def insert_checksums(con: duckdb.DuckDBPyConnection, lake: str, table: str, write_id: int, written_at: Any) -> None:
    """In the transaction of write ``write_id``: the ``file_checksums`` rows of the data files it wrote into
    ``table`` (call it after an INSERT of more rows than DuckLake inlines: :func:`integrity.writes_file`)."""
    if table != integrity.CHECKSUMS:
        insert(con, lake, integrity.CHECKSUMS, integrity.checksum_rows(con, lake, table, write_id), write_id,
               written_at)


def new_write() -> tuple[int, Any]:
    """(write_id, written_at) of a new write."""
    return secrets.randbits(62), utcnow()


def latest_rows(con: duckdb.DuckDBPyConnection, lake: str, table: str, where: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of the latest write among ``table``'s rows matching ``where`` (a record's current value)."""
    return con.execute(f"""
        SELECT * EXCLUDE (written_at) FROM {lake}.{quote(table)} WHERE {where} AND write_id = (
            SELECT arg_max(write_id, written_at) FROM {lake}.{quote(table)} WHERE {where})
    """, dict(params)).df()


class StoreWriter:
    """Writes a store (created if needed). One instance = one shard ``K/N`` of the runs it writes.

    Safe to run in several processes (and, on a PostgreSQL catalog, machines) at once, also for the same
    run and shard: each write is one transaction, retried while another writer holds the catalog.
    """

    def __init__(self, path: str | os.PathLike | StoreLocation, shard: str | tuple[int, int] | None = None,
                 *, create: bool = True) -> None:
        self.location = parse_location(path)
        self.root = self.location.root if self.location.root is not None else self.location.spec
        if not create and self.location.root is not None and not self.location.root.exists():
            raise StoreError(f"SimLens store {str(self.location.root)!r} does not exist")
        self.shard = parse_shard(shard)
        self._attachment = connect(self.location, read_only=False)
        self._con, self._lake = self._attachment.con, self._attachment.alias
        try:
            ensure_tables(self._con, self._lake)
        except BaseException:
            self._attachment.close()
            raise
        self._segments: dict[str, dict[str, Any]] = {}
        self._pairs_cache: dict[str, pd.DataFrame] = {}
        self._owned: set[str] = set()  # runs this writer started or resumed: its host/pid mark their liveness
        self._before_commit: Callable[[int], None] | None = None  # test hook: inside a chunk's transaction

    def merge_small_files(self) -> list[str]:
        """Merge the store's small data files (a chunk commit writes one per table) into larger ones, in one
        DuckLake transaction (``ducklake_merge_adjacent_files``): queries then open a few files instead of one
        per chunk. The merged files stay referenced by the older snapshots until ``compact`` expires them, so
        readers pinned to those keep working; what readers see does not change.

        Every file is checked against its checksum first (a damaged or missing one is a StoreError naming it:
        merging would copy its wrong values into a file with a valid checksum); the merged files' checksums are
        recorded in the transaction right after the merge (DuckLake names them only once it has committed);
        returns the files whose checksums were recorded (:meth:`add_missing_checksums`)."""
        what = f"merge the small files of {self.location}"
        integrity.raise_damaged(self.verify().problems, what)
        transaction(self._con, lambda c: c.execute(f"CALL ducklake_merge_adjacent_files('{self._lake}')"), what)
        return self.add_missing_checksums()

    def _tables(self) -> list[str]:
        """The tables whose files carry checksums, as far as the store has them."""
        have = {r[0] for r in self._con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                                                [self._lake]).fetchall()}
        return [t for t in integrity.checked_tables() if t in have]

    def verify(self) -> integrity.VerifyReport:
        """Every data file of the newest snapshot checked against its checksum (:mod:`core.store.integrity`)."""
        return integrity.verify_files(self._con, self._lake, self._tables(), None, with_checksums=True)

    def add_missing_checksums(self) -> list[str]:
        """Record the checksums of the newest snapshot's data files that have none (written before checksums
        existed, or merged by a compaction), in one transaction; returns their paths. What such a file holds
        is read from the file itself: its checksum vouches for its bytes from now on, not before."""
        def body(con: duckdb.DuckDBPyConnection) -> list[str]:
            tables = self._tables()
            expected = integrity.expected_checksums(con, self._lake, tables)
            wid, at = new_write()
            added = []
            for t in tables:
                todo = [f for f in integrity.data_files(con, self._lake, [t]) if (t, f.name) not in expected]
                holds = {f.path: integrity.file_holds(con, f) for f in todo}  # None: unreadable, stays unchecked
                held = [(p, dict(zip(integrity.OWNER_COLUMNS, h, strict=True)))
                        for p, rows in holds.items() for h in rows or []]
                insert(con, self._lake, integrity.CHECKSUMS, integrity.checksum_table(con, t, held), wid, at)
                added += [p for p, rows in holds.items() if rows is not None]
            return added

        return transaction(self._con, body, f"record the missing checksums of {self.location}")

    def close(self) -> None:
        """Close the store (closing again does nothing)."""
        self._attachment.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- records ------------------------------------------------------------------------------
    def _write_records(self, parts: Mapping[str, pd.DataFrame], what: str, written_at: Any = None) -> None:
        """Write the frames of ``parts`` (table -> rows) as one write (one transaction, one write_id);
        ``written_at``: the time the records count from (default now; merge keeps the source's)."""
        arrow = {t: to_arrow(t, df, what) for t, df in parts.items()}
        wid, at = new_write()
        at = at if written_at is None else written_at
        transaction(self._con, lambda con: [insert(con, self._lake, t, rows, wid, at) for t, rows in arrow.items()], what)

    def _latest(self, table: str, key: str, value: Any) -> dict[str, Any] | None:
        df = latest_rows(self._con, self._lake, table, f"{quote(key)} = $v", {"v": value})
        return None if df.empty else df.iloc[0].to_dict()

    def put_dataset(self, meta: Mapping[str, Any], pairs: pd.DataFrame, *, replace: bool = False) -> str:
        """Store a dataset's metadata and its pairs. Returns "written" or "unchanged".

        ``meta`` needs dataset_key, name, split (lang_a, lang_b, source, skipped (dict or JSON), gold_min,
        gold_max optional; n_pairs is checked/derived). ``pairs`` needs sentence1, sentence2, gold in dataset
        order; pair_id (unique, >= 0, gaps allowed) defaults to the row number; pair_index is the row number;
        gold_norm defaults to (gold - gold_min) / (gold_max - gold_min). The dataset's identity is the hash
        of its pairs (``dataset_hash``), not ``source``: the same content from another path is "unchanged".
        Different content under a stored key needs ``replace=True`` and becomes the key's next revision.
        """
        ds, rows = dataset_rows(meta, pairs)
        key = ds["dataset_key"]
        old = self._latest("datasets", "dataset_key", key)
        if old is not None:
            same = [f for f in ("dataset_hash", "name", "split", "lang_a", "lang_b", "gold_min", "gold_max")
                    if not same_value(old.get(f), ds.get(f))]
            if not same:
                return "unchanged"
            if not replace:
                raise StoreError(f"put_dataset({key}): the store holds different content for this dataset "
                                 f"(revision {old.get('revision')}, differing in {', '.join(same)}); pass "
                                 f"replace=True (--force) to register it as a new revision")
        ds["revision"] = int(old["revision"] or 0) + 1 if old is not None else 1
        rows["dataset_hash"] = ds["dataset_hash"]
        self._write_records({"datasets": pd.DataFrame([ds]), "pairs": rows}, f"put_dataset({key})")
        self._pairs_cache.pop(ds["dataset_hash"], None)
        return "written"

    def put_model(self, meta: Mapping[str, Any], *, replace: bool = False) -> str:
        """Store a model's metadata (model_id, name required). Returns "written" or "unchanged".

        A model id is its content, so the same model loaded by another name or from another folder (a record
        that differs only in name and path) is unchanged: the first name stays, unless ``replace``."""
        row = model_row(meta)
        old = self._latest("models", "model_id", row["model_id"])
        if old is not None:
            same = [c for c in SCHEMA["models"] if same_value(old.get(c), row.get(c))]
            if len(same) == len(SCHEMA["models"]) or (not replace and set(SCHEMA["models"]) - set(same) <= {"name", "path"}):
                return "unchanged"
            if not replace:
                raise StoreError(f"put_model({row['model_id']}): the store holds different content for this model; "
                                 f"pass replace=True to overwrite it")
        self._write_records({"models": pd.DataFrame([row])}, f"put_model({row['model_id']})")
        return "written"

    def put_evaluation(self, meta: Mapping[str, Any], rows: pd.DataFrame) -> str:
        """Store one faithfulness evaluation (all its rows) as one record; returns its eval_id.

        ``meta`` needs kind and model_id (the model must be stored: :meth:`put_model`), and may give
        model_name (default: the stored model's name), dataset_key (must be stored), run_id, n_pairs, params
        (dict or JSON object text), seconds, code_version, created_at (default: now). eval_id is
        :func:`make_eval_id` of kind, model_id, dataset_key and params (a given one must match), so re-running
        the same evaluation replaces the record. ``rows`` (at least one) needs metric and y and may hold
        method, layer, steps, quadrature, series, label, x, y_sd, n and extra (dict or JSON text).
        """
        model = self._latest("models", "model_id", meta.get("model_id")) if meta.get("model_id") else None
        key = meta.get("dataset_key")
        if key is not None and self._latest("datasets", "dataset_key", str(key)) is None:
            raise StoreError(f"put_evaluation: dataset {key!r} is not in the store; call put_dataset() first")
        eval_id, df = evaluation_rows(meta, rows, model)
        self._write_records({"evaluations": df}, f"put_evaluation({meta.get('kind')}, {eval_id})")
        return eval_id

    def put_run_summary(self, run_id: str, rows: pd.DataFrame, written_at: Any = None) -> None:
        """Store a complete run's summary (``quartile_pairs`` rows, ``Store.quartile_summary``) as one record,
        replacing the run's earlier one; ``written_at``: the time it counts from (merge keeps the source's)."""
        if rows.empty:
            return
        if set(rows["run_id"].astype(str)) != {str(run_id)}:
            raise StoreError(f"put_run_summary({run_id}): the rows belong to {sorted(set(rows['run_id']))}")
        self._write_records({"quartile_pairs": rows}, f"put_run_summary({run_id})", written_at=written_at)

    def _pairs(self, dataset_hash: str) -> pd.DataFrame:
        """pair_id, pair_index, gold, gold_norm of a dataset revision, in pair_index order."""
        if dataset_hash not in self._pairs_cache:
            df = latest_rows(self._con, self._lake, "pairs", "dataset_hash = $h", {"h": dataset_hash})
            if df.empty:
                raise StoreError(f"dataset revision {dataset_hash} has no pairs in {self.location}")
            self._pairs_cache[dataset_hash] = df[["pair_id", "pair_index", "gold", "gold_norm"]] \
                .sort_values("pair_index").reset_index(drop=True)
        return self._pairs_cache[dataset_hash]

    def chunk_pair_ids(self, run_id: str, chunk_index: int) -> list[int]:
        """pair_ids of chunk ``chunk_index`` of a run: pair_index in [k*C, (k+1)*C), in order."""
        seg = self._segment(run_id)
        r = chunk_pair_range(chunk_index, seg["chunk_size"], seg["n_pairs"])
        return [int(x) for x in self._pairs(seg["dataset_hash"])["pair_id"].iloc[r.start:r.stop]]

    # ---- runs ---------------------------------------------------------------------------------
    def _all_segments(self, run_id: str) -> list[dict[str, Any]]:
        """The latest event of every live (not deleted) segment of ``run_id``."""
        df = self._con.execute(f"""
            SELECT * EXCLUDE (written_at, write_id) FROM {self._lake}.runs WHERE run_id = $r
            QUALIFY row_number() OVER (PARTITION BY shard ORDER BY written_at DESC, write_id DESC) = 1
        """, {"r": run_id}).df()
        return [r for r in df.to_dict("records") if r["status"] != "deleted"]

    def _read_segment(self, run_id: str) -> dict[str, Any] | None:
        mine = f"{self.shard[0]}/{self.shard[1]}"
        return next((s for s in self._all_segments(run_id) if s["shard"] == mine), None)

    def _event(self, con: duckdb.DuckDBPyConnection, seg: dict[str, Any]) -> None:
        seg["heartbeat_at"] = utcnow()
        if seg["run_id"] in self._owned or seg.get("pid") is None:
            # the run's owner (the process that started it) marks its liveness; a worker committing chunks of
            # a run started elsewhere (a Ray actor) keeps the owner's host/pid
            seg["host"], seg["pid"] = socket.gethostname(), os.getpid()
        wid, at = new_write()
        insert(con, self._lake, "runs", to_arrow("runs", pd.DataFrame([seg]), f"run {seg['run_id']}"), wid, at)

    def _publish(self, seg: dict[str, Any], what: str) -> None:
        transaction(self._con, lambda con: self._event(con, seg), what)
        self._segments[seg["run_id"]] = dict(seg)

    def _segment(self, run_id: str) -> dict[str, Any]:
        check_id(run_id, "run_id")
        seg = self._segments.get(run_id) or self._read_segment(run_id)
        if seg is None:
            raise StoreError(f"run {run_id} (shard {self.shard[0]}/{self.shard[1]}) is not started in "
                             f"{self.location}; call start_run() first")
        self._segments[run_id] = seg
        return seg

    def start_run(self, run: Mapping[str, Any], *, force: bool = False) -> str | None:
        """Register (or resume) this writer's segment of a run; returns the previous status.

        ``run`` needs model_id, dataset_key, method, layer, chunk_size; optional steps, quadrature,
        pooling/similarity (default: the model's), code_version, device, n_pairs (default: the dataset's),
        run_id (checked against :func:`make_run_id`). Returns None for a new segment, ``"done"`` for a
        finished one (nothing changed: skip it unless ``force``; ``force=True`` deletes the run's results (a
        sharded writer: only its shard's) and starts afresh), or ``"running"``/``"failed"`` for a resumed one
        (its committed chunks stay: skip :meth:`completed_chunks`; its seconds keep adding up).
        """
        allowed = set(RUN_IDENTITY) | {"run_id", "shard", "code_version", "device", "kind"}
        unknown = [k for k in run if k not in allowed]
        if unknown:
            raise StoreError(f"start_run: unknown run field(s) {unknown}; allowed: {sorted(allowed)}")
        method = run.get("method")
        if method not in methodless_kinds() and method not in method_names():
            raise StoreError(f"start_run: unknown method {method!r}; known: {method_names() + methodless_kinds()}")
        kind = RUN_KINDS[run["kind"]] if run.get("kind") else kind_of_method(method)
        if "shard" in run and parse_shard(run["shard"]) != self.shard:
            raise StoreError(f"start_run: run shard {run['shard']} differs from the writer's shard "
                             f"{self.shard[0]}/{self.shard[1]}")
        ds = self._latest("datasets", "dataset_key", str(run.get("dataset_key")))
        model = self._latest("models", "model_id", run.get("model_id")) if run.get("model_id") else None
        seg = run_segment(run, ds, model, kind.name, f"{self.shard[0]}/{self.shard[1]}")
        run_id = seg["run_id"]
        scope = "run" if self.shard == (1, 1) else "shard"
        for other in self._all_segments(run_id):
            if force and (scope == "run" or other.get("shard") == seg["shard"]):
                continue
            diff = [f for f in RUN_IDENTITY if not same_value(other.get(f), seg[f])]
            if diff:
                raise StoreError(
                    f"start_run: run {run_id} already exists (shard {other.get('shard')}) with different "
                    f"{', '.join(f'{f}={other.get(f)!r} (new {seg[f]!r})' for f in diff)}"
                    + ("; pass --force to recompute it" if "dataset_hash" in diff else ""))
        self._segments.pop(run_id, None)
        prev = self._read_segment(run_id)
        prev_status = prev["status"] if prev else None
        if prev_status == "done" and not force:
            return "done"
        if force:
            self.delete_run(run_id, scope=scope)
        elif prev is not None:
            seg["started_at"] = prev.get("started_at") or seg["started_at"]
            seg["seconds"] = prev.get("seconds")
            seg["pairs_done"] = prev.get("pairs_done")
        self._owned.add(run_id)
        self._publish(seg, f"start_run({run_id})")
        return prev_status

    def _progress(self, con: duckdb.DuckDBPyConnection, run_id: str,
                  chunk: int | None = None) -> tuple[int, float | None, int]:
        """(writes of chunk ``chunk`` committed so far, the segment's seconds now, pairs in this shard's committed
        chunks other than ``chunk``), in one catalog read.

        The seconds are the segment's latest event's seconds plus the time since that event's heartbeat. Every
        event (start, each chunk's commit by whichever process, finish) carries the sum forward, so the
        seconds add up across processes, Ray actors and resumes; a resume starts from the stored seconds (the
        time between a killed writer's last commit and the resume is not counted)."""
        k, n = self.shard
        found, done, seconds, beat = con.execute(f"""
            SELECT (SELECT count(*) FROM {self._lake}.chunks WHERE run_id = $r AND chunk_index = $c),
                   (SELECT coalesce(sum(n_pairs), 0) FROM (
                        SELECT chunk_index, first(n_pairs) AS n_pairs FROM {self._lake}.chunks
                        WHERE run_id = $r AND chunk_index % $n = $k AND chunk_index IS DISTINCT FROM $c
                        GROUP BY chunk_index)),
                   e.seconds, e.heartbeat_at
            FROM (SELECT 1) LEFT JOIN (
                SELECT seconds, heartbeat_at FROM {self._lake}.runs WHERE run_id = $r AND shard = $s
                ORDER BY written_at DESC, write_id DESC LIMIT 1) e ON true
        """, {"r": run_id, "c": None if chunk is None else int(chunk), "n": n, "k": k - 1,
              "s": f"{k}/{n}"}).fetchone()
        elapsed = None if beat is None else float(seconds or 0.0) + max(0.0, (utcnow() - beat).total_seconds())
        return int(found), elapsed, int(done)

    def completed_chunks(self, run_id: str) -> set[int]:
        """Committed chunks of the run (any shard) in this store."""
        check_id(run_id, "run_id")
        rows = self._con.execute(f"SELECT DISTINCT chunk_index FROM {self._lake}.chunks WHERE run_id = $r",
                                 {"r": run_id}).fetchall()
        return {int(r[0]) for r in rows}

    def pending_chunks(self, run_id: str) -> list[int]:
        """This shard's chunks of the run that are not committed yet, in order."""
        seg = self._segment(run_id)
        done = self.completed_chunks(run_id)
        return [c for c in shard_chunks(seg["n_chunks"], self.shard) if c not in done]

    def finish_run(self, run_id: str, metrics: Mapping[str, Any] | None = None, status: str = "done") -> None:
        """Mark this writer's segment finished, storing metrics.

        ``metrics`` may hold spearman, pearson (x100), mse (0-1), and override seconds (default: the
        segment's seconds over every process that worked on it), pairs_done (default: pairs in this shard's
        committed chunks), pairs_per_s (default: pairs_done / seconds), device.
        """
        if status not in STATUSES:
            raise StoreError(f"finish_run: status must be one of {STATUSES}")
        metrics = dict(metrics or {})
        unknown = [k for k in metrics if k not in FINISH_FIELDS]
        if unknown:
            raise StoreError(f"finish_run: unknown metric(s) {unknown}; allowed: {FINISH_FIELDS}")
        seg = dict(self._segment(run_id))

        def body(con: duckdb.DuckDBPyConnection) -> None:
            _, elapsed, done = self._progress(con, run_id)
            seg["pairs_done"] = metrics.get("pairs_done", done)
            seconds = metrics.get("seconds", elapsed)
            seg["seconds"] = seconds
            default_rate = seg["pairs_done"] / seconds if seconds else None
            seg["pairs_per_s"] = metrics.get("pairs_per_s", default_rate)
            for k, v in metrics.items():
                if v is not None and k not in ("pairs_done", "seconds", "pairs_per_s"):
                    seg[k] = v
            seg["status"] = status
            seg["finished_at"] = utcnow() if status != "running" else None
            self._event(con, seg)

        transaction(self._con, body, f"finish_run({run_id})")
        self._segments[run_id] = seg

    def fail_run(self, run_id: str, message: str) -> None:
        """Mark this writer's segment failed with ``message`` (committed chunks are kept)."""
        seg = dict(self._segment(run_id))

        def body(con: duckdb.DuckDBPyConnection) -> None:
            seg.update(status="failed", error_message=str(message), finished_at=utcnow(),
                       seconds=self._progress(con, run_id)[1])
            self._event(con, seg)

        transaction(self._con, body, f"fail_run({run_id})")
        self._segments[run_id] = seg

    def delete_run(self, run_id: str, *, scope: str = "auto") -> None:
        """Delete a run's results (for ``--force``), in one transaction.

        scope="run": every chunk and segment; scope="shard": this writer's segment and the chunks its shard
        owns; "auto" = "run" for an unsharded writer, else "shard".
        """
        check_id(run_id, "run_id")
        if scope == "auto":
            scope = "run" if self.shard == (1, 1) else "shard"
        if scope not in ("run", "shard"):
            raise StoreError("delete_run: scope must be 'auto', 'run' or 'shard'")
        k, n = self.shard
        where = "run_id = $r" + ("" if scope == "run" else " AND chunk_index % $n = $k")
        params = {"r": run_id} if scope == "run" else {"r": run_id, "n": n, "k": k - 1}
        segments = [s for s in self._all_segments(run_id) if scope == "run" or s["shard"] == f"{k}/{n}"]

        def body(con: duckdb.DuckDBPyConnection) -> None:
            for table in (*CHUNK_TABLES, "chunks"):
                con.execute(f"DELETE FROM {self._lake}.{quote(table)} WHERE {where}", params)
            for seg in segments:
                self._event(con, {**seg, "status": "deleted"})

        transaction(self._con, body, f"delete_run({run_id})")
        self._segments.pop(run_id, None)

    # ---- chunks -------------------------------------------------------------------------------
    def write_chunk(self, run_id: str, chunk_index: int, tables: Mapping[str, pd.DataFrame | None],
                    *, overwrite: bool = False, compute_seconds: float = 0.0) -> str:
        """Commit chunk ``chunk_index`` of a run in one transaction; returns its content hash.

        ``tables`` maps chunk table names (predictions, tokens, token_pairs, pos_pairs, factors) to
        DataFrames (a run_id/chunk_index column, if present, must match). Missing tables stay empty;
        derivable columns are filled in: token_pairs' token_*/pos_*/word_*/special_* from ``tokens``;
        pos_pairs via :func:`pos_pair_aggregate`; predictions' gold/gold_norm from the dataset, n_tokens_* from
        tokens, matrix_sum from token_pairs, residual = explained_score - matrix_sum, error = model_score -
        gold_norm. Factor vectors may be given as arrays (stored as float16). pair_ids must belong to the
        chunk (:meth:`chunk_pair_ids`); keys must be unique. Raises ChunkExistsError if the chunk is
        committed already (``overwrite=True`` replaces it in the same transaction). ``compute_seconds``: the
        time the caller spent computing the chunk, stored with the commit's own time in ``chunks.seconds``.
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
        t_chunk = time.monotonic()
        pairs = self._pairs(seg["dataset_hash"])
        prepared = prepare_chunk(run_id, k, tables, pairs, set(self.chunk_pair_ids(run_id, k)),
                                 seg["chunk_size"], ctx)
        digest = content_hash(prepared)
        n_rows = prepared["predictions"].num_rows
        where = {"r": run_id, "k": k}

        def body(con: duckdb.DuckDBPyConnection) -> None:
            found, elapsed, done = self._progress(con, run_id, k)  # one catalog read for the bookkeeping
            if found and not overwrite:
                raise ChunkExistsError(f"{ctx}: chunk is committed already in {self.location}")
            if found:
                for table in (*CHUNK_TABLES, "chunks"):
                    con.execute(f"DELETE FROM {self._lake}.{quote(table)} WHERE run_id = $r AND chunk_index = $k", where)
            wid, at = new_write()
            for name, rows in prepared.items():
                insert(con, self._lake, name, rows, wid, at)
            record = {"run_id": run_id, "chunk_index": k, "shard": seg["shard"], "n_pairs": n_rows,
                      "content_hash": digest,
                      "seconds": compute_seconds + time.monotonic() - t_chunk, "host": socket.gethostname(),
                      "pid": os.getpid(), "committed_at": at}
            insert(con, self._lake, "chunks", to_arrow("chunks", pd.DataFrame([record]), ctx), wid, at)
            beat = dict(seg)
            beat["seconds"] = elapsed
            beat["pairs_done"] = done + n_rows  # the shard's other chunks and this one
            self._event(con, beat)
            if self._before_commit is not None:
                self._before_commit(k)

        transaction(self._con, body, ctx)
        return digest


