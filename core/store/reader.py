"""The store's reader: one DuckDB connection with the store attached read-only, and typed views of every
table at one snapshot.

A :class:`StoreReader` follows the newest snapshot (each query reads the snapshot that is newest when it
starts); :meth:`StoreReader.at` gives a reader pinned to one snapshot (the dashboard pins one per page run,
"Reload store" moves to the newest). Views show what readers may see: a record's latest write, a run
segment's latest event, a chunk's first committed write (exactly-once as read).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd

from core.store import integrity
from core.store.catalog import StoreLocation, connect, data_file_error, parse_location, retry
from core.store.records import StoreError, quote
from core.store.schema import CHUNK_TABLES, SCHEMA, TABLES, columns

#: Views small enough to hold in memory (a store has a few rows per dataset, model, evaluation metric, run and
#: chunk): copied when a reader moves to a snapshot, then joined from memory by every query (dependency order).
CATALOG_VIEWS = ("_datasets_rev", "_datasets_w", "datasets", "models", "evaluations", "quartile_pairs", "runs",
                 "_chunk_wins", "chunks")
_LAKE_PREFIX = "_lake_"
#: the tables :data:`CATALOG_VIEWS` read: their files are checked before the catalogue is copied into memory
_CATALOG_TABLES = ("datasets", "models", "evaluations", "quartile_pairs", "runs", "chunks")
STALE_AFTER_S = 15 * 60.0  # a running segment of another host without a heartbeat this long is interrupted
_HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _names(name: str, sql: str) -> bool:
    """Whether ``sql`` names the view or table ``name`` (as a whole identifier: quoted or not, qualified or not)."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", sql) is not None


def _empty_view(table: str, extra: Mapping[str, str] | None = None) -> str:
    cols = {**columns(table), **(extra or {})}
    return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {quote(c)}" for c, t in cols.items()) + " WHERE false"


def _select(table: str, have: Mapping[str, str], alias: str = "", extra: Sequence[str] = ()) -> str:
    pre = f"{alias}." if alias else ""
    parts = []
    for c, typ in columns(table).items():
        parts.append(f"{pre}{quote(c)}" if c in have else f"CAST(NULL AS {typ}) AS {quote(c)}")
    parts += [f"{pre}{quote(c)}" for c in extra]
    return ", ".join(parts)


def ledger_views(src: Callable[[str], str], have: Mapping[str, Mapping[str, str]], ledger: str, owner: str,
                 tables: Sequence[str], losers: bool = True) -> dict[str, str]:
    """The views of a chunk ledger and of the tables its chunks fill (exactly-once as read): ``_<ledger>_wins``
    (the first committed write of each ``(owner, chunk_index)``; ``_chunk_wins`` for ``chunks``), ``ledger``,
    and each table's rows of the winning write only (every row when no chunk has a losing write: ``losers``
    False). ``src(t)``: the table at the reader's snapshot; ``have``: the tables' columns there."""
    wins = "_chunk_wins" if ledger == "chunks" else f"_{ledger}_wins"
    if ledger in have:
        sql = {wins: f"SELECT {_select(ledger, have[ledger], extra=['write_id'])} FROM {src(ledger)} "
                     f"QUALIFY row_number() OVER (PARTITION BY {owner}, chunk_index ORDER BY snapshot_id, write_id) = 1"}
    else:
        sql = {wins: _empty_view(ledger, {"write_id": "BIGINT"})}
    sql[ledger] = f"SELECT * EXCLUDE (write_id) FROM {wins}"
    for t in tables:
        if t not in have:
            sql[t] = _empty_view(t)
        elif losers:
            sql[t] = (f"SELECT {_select(t, have[t], 't')} FROM (FROM {src(t)}) t SEMI JOIN {wins} w ON "
                      f"t.{owner} = w.{owner} AND t.chunk_index = w.chunk_index AND t.write_id = w.write_id")
        else:
            sql[t] = f"SELECT {_select(t, have[t])} FROM {src(t)}"
    return sql


class StoreReader:
    """Read-only access to a store; safe while writers write, merges or compactions run.

    One connection per reader, guarded by a lock: share a reader between threads freely.
    """

    def __init__(self, path: str | os.PathLike | StoreLocation, *, snapshot: int | None = None) -> None:
        self.location = parse_location(path)
        self.root = self.location.root if self.location.root is not None else self.location.spec
        self._attachment = connect(self.location, read_only=True)
        self._con, self._lake = self._attachment.con, self._attachment.alias
        self._lock = threading.RLock()
        self._views: dict[str, Any] = {"snapshot": None, "schema_version": None, "columns": {}}
        self._pin = snapshot
        self._scope: list[int] = []
        if not self._has_tables():
            self._attachment.close()
            raise StoreError(f"{self.location} is not a SimLens store (its catalog has no SimLens tables)")

    def _has_tables(self) -> bool:
        rows = self._con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [self._lake]).fetchall()
        return "runs" in {r[0] for r in rows}

    # ---- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the DuckDB connection (of this reader and every reader made by :meth:`at`)."""
        with self._lock:
            self._attachment.close()

    def is_current(self) -> bool:
        """Whether this reader is open and still reads the store now at its location (a folder store that was
        deleted or replaced by a rebuilt one since it was opened is not: open the location anew)."""
        return self._attachment.is_current(self.location)

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot_id(self) -> int:
        """The newest committed snapshot of the store."""
        with self._lock:
            return int(retry(lambda: self._con.execute(f"FROM {self._lake}.current_snapshot()").fetchone()[0],
                             f"read the newest snapshot of {self.location}"))

    def forget_snapshot(self) -> None:
        """Drop what this reader holds of its snapshot (the catalogue copy of :data:`CATALOG_VIEWS`): the next
        query reads it from the catalog again, as after a move to a new snapshot (benchmarks: a cold page)."""
        with self._lock:
            self._views.update(snapshot=None, memo={})

    def _memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per snapshot and ``key``: for answers that depend on the snapshot alone (never on
        the clock or on writers' liveness), which several queries of one page ask for."""
        with self._snapshot() as snap:
            memo = self._views.setdefault("memo", {})
            if (snap, *key) not in memo:
                memo[(snap, *key)] = compute()
            return memo[(snap, *key)]

    @property
    def pinned(self) -> int | None:
        """The snapshot this reader is pinned to (None: it follows the newest)."""
        return self._pin

    def at(self, snapshot: int | None) -> StoreReader:
        """A reader of the same store pinned to ``snapshot`` (None: following the newest); shares this
        reader's connection."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._pin = None if snapshot is None else int(snapshot)
        return clone

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[int]:
        """One snapshot for everything queried inside (nested scopes share the outer one)."""
        with self._lock:
            if self._scope:
                yield self._scope[-1]
                return
            snap = self._pin if self._pin is not None else self.snapshot_id()
            self._use(snap)
            self._scope.append(snap)
            try:
                yield snap
            finally:
                self._scope.pop()

    def _use(self, snap: int) -> None:
        """Point the views at snapshot ``snap`` (recreated only when the schema or the chunk winners' rule
        changes; otherwise one variable moves)."""
        if self._views["snapshot"] == snap:
            return
        try:
            found = self._con.execute(
                f"SELECT (SELECT schema_version FROM ducklake_snapshots(?) WHERE snapshot_id = ?), "
                f"(SELECT count(*) > count(DISTINCT (run_id, chunk_index)) FROM {self._lake}.chunks "
                f"AT (VERSION => {int(snap)}))", [self._lake, snap]).fetchone()
        except duckdb.Error as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                found = self._con.execute("SELECT schema_version, false FROM ducklake_snapshots(?) "
                                          "WHERE snapshot_id = ?", [self._lake, snap]).fetchone()
            else:
                raise StoreError(f"cannot read the snapshots of {self.location}: {exc}") from None
        if found is None or found[0] is None:
            raise StoreError(f"snapshot {snap} of {self.location} does not exist (expired by compact?); "
                             f"reload the store")
        version, losers = found[0], bool(found[1])
        self._views["memo"] = {}
        self._views["checked"] = {snap: set()}
        self._con.execute("SET VARIABLE simlens_snapshot = ?", [int(snap)])
        if version != self._views["schema_version"]:
            self._views["columns"] = self._columns_at(snap)
        self._check_files(snap, _CATALOG_TABLES)  # before the catalogue is copied into memory
        if (version, losers) != (self._views["schema_version"], self._views.get("losers")):
            self._create_views(self._views["columns"], losers)
            self._views.update(schema_version=version, losers=losers)
        else:
            self._materialize()
        self._views["snapshot"] = snap

    def _materialize(self) -> None:
        """Copy the small catalogue tables (:data:`CATALOG_VIEWS`) at the current snapshot into temporary
        tables: every later query joins them from memory instead of reading the DuckLake catalog again."""
        for name in CATALOG_VIEWS:
            self._con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(name)} AS FROM {quote(_LAKE_PREFIX + name)}")

    def _columns_at(self, snap: int) -> dict[str, dict[str, str]]:
        tables = {r[0] for r in self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [self._lake]).fetchall()}
        out = {}
        for t in TABLES:
            if t not in tables:
                continue
            try:
                out[t] = {r[0]: r[1] for r in self._con.execute(
                    f"DESCRIBE SELECT * FROM {self._lake}.{quote(t)} AT (VERSION => {int(snap)})").fetchall()}
            except duckdb.Error:
                continue  # created after this snapshot
        return out

    def _create_views(self, have: Mapping[str, Mapping[str, str]], losers: bool) -> None:
        def src(t: str) -> str:
            return f"{self._lake}.{quote(t)} AT (VERSION => getvariable('simlens_snapshot'))"

        sql: dict[str, str] = {}
        bk = {"write_id": "BIGINT", "written_at": "TIMESTAMP"}
        if "datasets" in have:
            sql["_datasets_rev"] = (f"SELECT {_select('datasets', have['datasets'], extra=list(bk))} FROM "
                                    f"{src('datasets')} WHERE write_id IN (SELECT arg_max(write_id, written_at) "
                                    f"FROM {src('datasets')} GROUP BY dataset_hash)")
        else:
            sql["_datasets_rev"] = _empty_view("datasets", bk)
        sql["_datasets_w"] = ("SELECT * FROM _datasets_rev WHERE write_id IN (SELECT arg_max(write_id, written_at) "
                              "FROM _datasets_rev GROUP BY dataset_key)")
        sql["datasets"] = "SELECT * EXCLUDE (write_id, written_at) FROM _datasets_w"
        if "pairs" in have:
            sql["_pairs_all"] = (f"SELECT {_select('pairs', have['pairs'], extra=['write_id'])} FROM {src('pairs')} "
                                 f"WHERE write_id IN (SELECT write_id FROM _datasets_rev)")
        else:
            sql["_pairs_all"] = _empty_view("pairs", {"write_id": "BIGINT"})
        sql["pairs"] = "SELECT * EXCLUDE (write_id) FROM _pairs_all WHERE write_id IN (SELECT write_id FROM _datasets_w)"
        for t in ("models", "evaluations", "quartile_pairs"):
            key = ", ".join(quote(c) for c in TABLES[t].record_key)
            sql[t] = (f"SELECT {_select(t, have[t])} FROM {src(t)} WHERE write_id IN (SELECT arg_max(write_id, "
                      f"written_at) FROM {src(t)} GROUP BY {key})") if t in have else _empty_view(t)
        if "runs" in have:
            sql["runs"] = (f"SELECT * FROM (SELECT {_select('runs', have['runs'])} FROM {src('runs')} "
                           f"QUALIFY row_number() OVER (PARTITION BY run_id, shard ORDER BY written_at DESC, "
                           f"write_id DESC) = 1) WHERE status <> 'deleted'")
        else:
            sql["runs"] = _empty_view("runs")
        sql.update(ledger_views(src, have, "chunks", "run_id", CHUNK_TABLES, losers))
        from core.store.index import index_views  # the search indexes' tables

        sql.update(index_views(src, have))
        check = integrity.CHECKSUMS
        sql[check] = f"SELECT {_select(check, have[check])} FROM {src(check)}" if check in have else _empty_view(check)
        deps: dict[str, set[str]] = {}  # view -> the tables it reads (views are in dependency order)
        for name, body in sql.items():
            deps[name] = {t for t in TABLES if _names(t, body)}.union(*(deps[v] for v in deps if _names(v, body)))
        self._views["deps"] = deps
        for name, body in sql.items():
            if name in CATALOG_VIEWS:  # a view of the lake under another name, copied into a table of this name
                self._con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(_LAKE_PREFIX + name)} AS {body}")
                self._con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(name)} AS FROM {quote(_LAKE_PREFIX + name)}")
            else:
                self._con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {body}")

    def _check_files(self, snap: int, tables: Iterable[str]) -> None:
        """Check the data files of ``tables`` at snapshot ``snap`` against their checksums before anything reads
        them (each file is hashed once per process: :func:`integrity.cached_sha256`); a damaged or missing file is
        a StoreError naming its table, file, run and chunk. Files without a checksum (stores written before
        checksums, until ``compact``) are read unchecked; ``verify`` lists them."""
        done = self._views["checked"].setdefault(snap, set())
        have = self._views["columns"]
        todo = [t for t in dict.fromkeys(tables) if t in have and t not in done and t != integrity.CHECKSUMS]
        if not todo:
            return
        files = integrity.data_files(self._con, self._lake, todo, snap)
        problems = integrity.check_files(self._con, self._lake, files, snap,
                                         with_checksums=integrity.CHECKSUMS in have)
        integrity.raise_damaged(problems, f"reading {self.location}")
        done.update(todo)

    def _tables_read(self, sql: str) -> set[str]:
        """The tables a query reads: through the views it names, or directly."""
        deps = self._views.get("deps", {})
        return {t for t in TABLES if _names(t, sql)}.union(*(deps[v] for v in deps if _names(v, sql)))

    def verify(self, run_id: str | None = None, *, progress: bool = False) -> integrity.VerifyReport:
        """Every data file of the newest snapshot (the pinned one) checked against its checksum, like ``git fsck``
        (``python -m precompute verify``); ``run_id``: only the files holding that run's rows. Reads no table
        through the views, so a damaged store is listed, not refused."""
        with self._lock:
            snap = self._pin if self._pin is not None else self.snapshot_id()
            have = self._columns_at(snap)
            if run_id is not None:
                runs = sorted({r[0] for r in self._con.execute(
                    f"SELECT DISTINCT run_id FROM {self._lake}.runs AT (VERSION => {int(snap)})").fetchall()})
                if run_id not in runs:
                    raise StoreError(f"verify: no run {run_id!r} in {self.location}; its runs: {', '.join(runs) or 'none'}")
            tables = [t for t in integrity.checked_tables() if t in have]
            return integrity.verify_files(self._con, self._lake, tables, snap, run_id=run_id, progress=progress,
                                          with_checksums=integrity.CHECKSUMS in have)

    def _df(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> pd.DataFrame:
        with self._snapshot() as snap:
            self._check_files(snap, self._tables_read(sql))
            try:
                return retry(lambda: self._con.execute(sql, params or {}).df(), f"read {self.location}")
            except duckdb.Error as exc:
                clear = data_file_error(exc, f"reading {self.location}")
                if clear is not None:
                    raise clear from None
                raise

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
        order = ", ".join(quote(c) for c in ("run_id", *TABLES[name].key) if c in cols)
        sql = f"SELECT * FROM {quote(name)}" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._df(sql + f" ORDER BY {order} NULLS LAST", params)

    def summary(self) -> pd.DataFrame:
        """Rows as read, and data files/bytes on disk (all snapshots' files until ``compact``), per table."""
        with self._snapshot():
            files = self._df(f"SELECT table_name, file_count, file_size_bytes FROM ducklake_table_info('{self._lake}')")
            files = files.set_index("table_name")
            counts = self._df("SELECT " + ", ".join(f"(SELECT count(*) FROM {quote(t)}) AS {quote(t)}" for t in SCHEMA))
            out = []
            for t in SCHEMA:
                n = int(counts[t].iloc[0])
                f = files.loc[t] if t in files.index else None
                out.append({"table": t, "rows": n, "files": int(f["file_count"]) if f is not None else 0,
                            "bytes": int(f["file_size_bytes"]) if f is not None else 0})
            return pd.DataFrame(out)

    def live_status(self, runs: pd.DataFrame) -> pd.Series:
        """Each segment's status with ``running`` shown as ``interrupted`` when its writer is gone: a dead
        pid on this host, or no heartbeat for :data:`STALE_AFTER_S` from another host."""
        now = pd.Timestamp.utcnow().tz_localize(None)
        out = []
        for status, host, pid, beat in zip(runs["status"], runs["host"], runs["pid"], runs["heartbeat_at"],
                                           strict=True):
            if status == "running":
                dead = pd.notna(pid) and not pid_alive(int(pid)) if host == _HOST else \
                    pd.isna(beat) or (now - pd.Timestamp(beat)).total_seconds() > STALE_AFTER_S
                status = "interrupted" if dead else status
            out.append(status)
        return pd.Series(out, index=runs.index, dtype=object)
