"""Store maintenance (``python -m precompute compact``): check every data file against its checksum (a damaged one
stops it), summarize complete runs that lack a current summary
(stores written before summaries existed), drop rows no reader sees, merge small data files, expire old
snapshots and delete files nothing references any more (also those of killed writers); the merged files, and
files written before checksums existed, get their checksums.

Every step is its own DuckLake transaction or DuckLake's own maintenance function, so a killed compaction
leaves a store that reads exactly as before; running it again finishes the job. Snapshots younger than
``keep`` (and the files they need) are kept, so readers pinned to a recent snapshot keep working and files
that a live writer is about to commit are never taken for orphans.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import duckdb

from core.store import integrity
from core.store.catalog import StoreLocation, transaction
from core.store.records import StoreError, quote, utcnow
from core.store.schema import CHUNK_TABLES, INDEX_CHUNK_TABLES, TABLES
from core.store.store import Store
from core.store.summaries import runs_to_summarize, summarize_runs
from core.store.writer import StoreWriter

DEFAULT_KEEP = timedelta(hours=1)


@dataclass
class CompactReport:
    """What compact did (or, with ``dry_run``, would do). ``hidden_rows``: table -> rows no reader sees
    (superseded records and events, losing writes of raced run and index chunks); ``files_before``/``files_after``: data
    files per table; ``expired``: snapshot ids; ``deleted_files``: paths removed (old and orphaned); ``summarized``:
    the complete runs whose summary (:mod:`core.store.summaries`) was missing or stale and is now written;
    ``checksummed``: the data files that had no checksum (merged by this compaction, or written before checksums
    existed) and now have one."""

    dry_run: bool
    hidden_rows: dict[str, int] = field(default_factory=dict)
    files_before: dict[str, int] = field(default_factory=dict)
    files_after: dict[str, int] = field(default_factory=dict)
    expired: list[int] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    summarized: list[str] = field(default_factory=list)
    checksummed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else ""
        rows = sum(self.hidden_rows.values())
        out = [f"{'would delete' if self.dry_run else 'deleted'} {rows} rows no reader sees"
               + (f" ({', '.join(f'{t} {n}' for t, n in self.hidden_rows.items() if n)})" if rows else "")]
        before, after = sum(self.files_before.values()), sum(self.files_after.values())
        out.append(f"data files: {before}" + (f" -> {after} after merging small files" if not self.dry_run
                                               else f" ({verb} merge small files of each table)"))
        out.append(f"{'would expire' if self.dry_run else 'expired'} {len(self.expired)} snapshots")
        out.append(f"{'would delete' if self.dry_run else 'deleted'} {len(self.deleted_files)} unreferenced files")
        out.append(f"{'would summarize' if self.dry_run else 'summarized'} {len(self.summarized)} complete runs "
                   f"without a current summary")
        out.append(f"{'would record' if self.dry_run else 'recorded'} the checksums of {len(self.checksummed)} "
                   f"data files that had none")
        return out


def _hidden(lake: str) -> dict[str, str]:
    """table -> WHERE clause of its rows that no reader sees (the complement of the reader's views)."""
    out = {}
    for t, info in TABLES.items():
        if info.kind == "record" and t != "pairs":
            key = ", ".join(quote(c) for c in info.record_key)
            out[t] = (f"write_id NOT IN (SELECT arg_max(write_id, written_at) FROM {lake}.{quote(t)} "
                      f"GROUP BY {key})")
    out["pairs"] = (f"write_id NOT IN (SELECT arg_max(write_id, written_at) FROM {lake}.datasets "
                    f"GROUP BY dataset_hash)")
    out["runs"] = (f"write_id NOT IN (SELECT write_id FROM {lake}.runs QUALIFY row_number() OVER (PARTITION BY "
                   f"run_id, shard ORDER BY written_at DESC, write_id DESC) = 1 AND status <> 'deleted')")
    for ledger, owner, tables in (("chunks", "run_id", CHUNK_TABLES), ("index_chunks", "index_id", INDEX_CHUNK_TABLES)):
        wins = (f"SELECT {owner}, chunk_index, write_id FROM {lake}.{ledger} QUALIFY row_number() OVER "
                f"(PARTITION BY {owner}, chunk_index ORDER BY snapshot_id, write_id) = 1")
        for t in (*tables, ledger):  # the losing writes of raced run and index chunks
            out[t] = f"({owner}, chunk_index, write_id) NOT IN ({wins})"
    return out


def _files(con: duckdb.DuckDBPyConnection, lake: str) -> dict[str, int]:
    df = con.execute(f"SELECT table_name, file_count FROM ducklake_table_info('{lake}')").df()
    return {r.table_name: int(r.file_count) for r in df.itertuples()}


def compact(store: str | os.PathLike | StoreLocation, *, dry_run: bool = False,
            keep: timedelta = DEFAULT_KEEP) -> CompactReport:
    """Compact the store; with ``dry_run`` only report what would be done (nothing changes)."""
    if keep < timedelta(0):
        raise StoreError("compact: keep must not be negative")
    writer = StoreWriter(store, create=False)
    con, lake = writer._con, writer._lake
    report = CompactReport(dry_run=dry_run)
    try:
        problems = writer.verify().problems  # nothing is rewritten from a damaged file
        integrity.raise_damaged(problems, f"compact {writer.location} refused")
        report.checksummed = [p.path for p in problems] if dry_run else []
        with Store(writer.location) as reader:
            report.summarized = runs_to_summarize(reader)
        if report.summarized and not dry_run:  # first, so that their rows are merged with the rest
            summarize_runs(writer.location, report.summarized, writer=writer)
        hidden = _hidden(lake)
        for t, where in hidden.items():
            report.hidden_rows[t] = int(con.execute(f"SELECT count(*) FROM {lake}.{quote(t)} WHERE {where}").fetchone()[0])
        report.files_before = _files(con, lake)
        older = (utcnow() - keep).isoformat(sep=" ")
        flag = "true" if dry_run else "false"
        if not dry_run:
            def drop(c: duckdb.DuckDBPyConnection) -> None:
                for t, where in hidden.items():
                    if report.hidden_rows[t]:
                        c.execute(f"DELETE FROM {lake}.{quote(t)} WHERE {where}")

            if any(report.hidden_rows.values()):
                transaction(con, drop, f"compact {writer.location}: delete hidden rows")
            report.checksummed = writer.merge_small_files()
        # the snapshots older than ``keep`` chosen here, by their ids: DuckLake's own ``older_than`` compares the
        # SQLite catalog's timestamps as text and expires every snapshot of the cutoff's day (DuckDB 1.5.5)
        old = [int(r[0]) for r in con.execute(
            f"SELECT snapshot_id FROM ducklake_snapshots('{lake}') WHERE snapshot_time < TIMESTAMPTZ '{older}+00' "
            f"AND snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots('{lake}'))").fetchall()]
        if old:
            expired = con.execute(f"SELECT snapshot_id FROM ducklake_expire_snapshots('{lake}', dry_run => {flag}, "
                                  f"versions => {old})").fetchall()
            report.expired = [int(r[0]) for r in expired]
        for fn in ("ducklake_cleanup_old_files", "ducklake_delete_orphaned_files"):
            files = con.execute(f"FROM {fn}('{lake}', dry_run => {flag}, "
                                f"older_than => TIMESTAMPTZ '{older}+00')").df()
            report.deleted_files += [str(p) for p in files.iloc[:, 0]] if len(files) else []
        report.files_after = _files(con, lake)
    except duckdb.Error as exc:
        raise StoreError(f"compact {writer.location}: {exc}") from None
    finally:
        writer.close()
    return report
