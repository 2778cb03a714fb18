"""Content checksums of the store's data files: taken in the transaction that writes a file, checked by readers
before they return a file's rows (once per process and file) and by ``python -m precompute verify``.

DuckDB 1.5.5 neither writes nor checks Parquet page checksums (it has no setting for either), and a flipped byte
inside a data page decodes to another value: without these checksums a damaged file reads as data. Rows that
DuckLake inlines into the catalog database (small writes) have no file; the catalog database is trusted.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from core.store.records import StoreError, quote
from core.store.schema import SCHEMA, TABLES, arrow_schema

CHECKSUMS = "file_checksums"
#: columns of a table that say what its rows belong to (a file's "holds": run, search index, chunk)
OWNER_COLUMNS = ("run_id", "index_id", "chunk_index")
_NOT_FOUND = re.compile(r"No files found|not found|does not exist|No such file|404", re.I)
#: DuckLake's default of ``data_inlining_row_limit``: an INSERT of at most this many rows is inlined into the
#: catalog (no file); checked by tests/test_integrity.py (every file of a written store has a checksum)
DEFAULT_INLINING_ROW_LIMIT = 10
_INLINING: dict[str, int] = {}  # lake alias -> its smallest inlining limit (aliases are unique in a process)
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime ns) -> SHA-256 computed by this process
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime ns) of files that matched their checksum
_DIGESTS_LOCK = threading.Lock()
_FOLDERS: dict[tuple[str, str], str] = {}  # (lake alias, table) -> the folder DuckLake resolves its relative paths in


def checked_tables() -> tuple[str, ...]:
    """The tables whose data files carry checksums (all but the checksum table itself)."""
    return tuple(t for t in TABLES if t != CHECKSUMS)


def owners(table: str) -> list[str]:
    return [c for c in OWNER_COLUMNS if c in SCHEMA[table]]


def _remote(path: str) -> bool:
    return "://" in path


def file_stat(con: duckdb.DuckDBPyConnection, path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of a local or remote file, or None when it does not exist."""
    if not _remote(path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns
    try:
        row = con.execute("SELECT size, epoch_ns(last_modified) FROM read_blob(?)", [path]).fetchone()
    except duckdb.Error as exc:
        if _NOT_FOUND.search(str(exc)):
            return None
        raise
    return (int(row[0]), int(row[1] or 0)) if row else None


def file_sha256(con: duckdb.DuckDBPyConnection, path: str) -> str:
    """SHA-256 (hex) of a file's bytes: streamed from a local file, read through DuckDB (httpfs) from a remote one."""
    if not _remote(path):
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    return hashlib.sha256(con.execute("SELECT content FROM read_blob(?)", [path]).fetchone()[0]).hexdigest()


def cached_sha256(con: duckdb.DuckDBPyConnection, path: str, stat: tuple[int, int]) -> str:
    """:func:`file_sha256`, computed once per process for a file of this path, size and modification time."""
    key = (path, *stat)
    with _DIGESTS_LOCK:
        found = _DIGESTS.get(key)
    if found is None:
        found = file_sha256(con, path)
        with _DIGESTS_LOCK:
            _DIGESTS[key] = found
    return found


def writes_file(con: duckdb.DuckDBPyConnection, lake: str, n_rows: int) -> bool:
    """Whether an INSERT of ``n_rows`` rows may write a data file: DuckLake inlines an INSERT of at most
    ``data_inlining_row_limit`` rows into the catalog (the smallest limit of any scope counts here)."""
    if lake not in _INLINING:
        set_ = [int(r[0]) for r in con.execute(f"SELECT value FROM ducklake_options('{lake}') "
                                               f"WHERE option_name = 'data_inlining_row_limit'").fetchall()]
        _INLINING[lake] = min(set_, default=DEFAULT_INLINING_ROW_LIMIT)
    return n_rows > _INLINING[lake]


def checksum_rows(con: duckdb.DuckDBPyConnection, lake: str, table: str, write_id: int) -> pa.Table:
    """The ``file_checksums`` rows of the data files that write ``write_id`` wrote into ``table``, taken inside
    its transaction (DuckLake has written the files when the INSERT returns; ``filename`` names them)."""
    cols = owners(table)
    sel = ", ".join(["filename", *(quote(c) for c in cols)])
    found = con.execute(f"SELECT DISTINCT {sel} FROM {lake}.{quote(table)} WHERE write_id = $w AND "
                        f"filename LIKE '%.parquet'", {"w": write_id}).fetchall()  # not inlined rows
    return checksum_table(con, table, [(r[0], dict(zip(cols, r[1:], strict=True))) for r in found])


def checksum_table(con: duckdb.DuckDBPyConnection, table: str, held: Sequence[tuple[str, dict]]) -> pa.Table:
    """``file_checksums`` rows: one per (file path, what it holds), each file hashed once."""
    digests: dict[str, tuple[str, int]] = {}
    out: dict[str, list] = {c: [] for c in SCHEMA[CHECKSUMS]}
    for path, holds in held:
        if path not in digests:
            stat = file_stat(con, path)
            if stat is None:
                raise StoreError(f"the data file {path} of table {table!r} vanished while its checksum was taken")
            digests[path] = (cached_sha256(con, path, stat), stat[0])
        row = {"table_name": table, "file": os.path.basename(path), "sha256": digests[path][0],
               "file_size": digests[path][1], **dict.fromkeys(OWNER_COLUMNS), **holds}
        for c in out:
            out[c].append(row[c])
    return pa.table(out, schema=arrow_schema(CHECKSUMS))


@dataclass(frozen=True)
class DataFile:
    """A Parquet data file of ``table`` as the catalog lists it: ``path`` (absolute or URL), ``size`` in bytes."""

    table: str
    path: str
    size: int

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def data_files(con: duckdb.DuckDBPyConnection, lake: str, tables: Iterable[str],
               snapshot: int | None = None) -> list[DataFile]:
    """The data files of ``tables`` at ``snapshot`` (None: the newest), from one query of DuckLake's catalog
    (``ducklake_data_file``); relative paths are resolved in the folder ``ducklake_list_files`` gives the table
    (asked once per process and table: a moved folder store resolves into its own ``data/``)."""
    names = [t for t in dict.fromkeys(tables) if t != CHECKSUMS]
    if not names:
        return []
    meta = f"__ducklake_metadata_{lake}"
    snap = f"(SELECT max(snapshot_id) FROM {meta}.ducklake_snapshot)" if snapshot is None else str(int(snapshot))
    live = "{0}.begin_snapshot <= {1} AND ({0}.end_snapshot IS NULL OR {0}.end_snapshot > {1})"
    rows = con.execute(f"""
        SELECT t.table_name, f.path, f.path_is_relative, f.file_size_bytes
        FROM {meta}.ducklake_data_file f JOIN {meta}.ducklake_table t ON f.table_id = t.table_id AND {live.format('t', snap)}
        WHERE {live.format('f', snap)} AND t.table_name IN ({', '.join('?' * len(names))})
        ORDER BY t.table_name, f.data_file_id""", names).fetchall()
    out = []
    for table, path, relative, size in rows:
        if relative:
            if (lake, table) not in _FOLDERS:
                listed = con.execute(f"SELECT data_file FROM ducklake_list_files('{lake}', '{table}'"
                                     + ("" if snapshot is None else f", snapshot_version => {int(snapshot)}")
                                     + ") WHERE suffix(data_file, ?)", ["/" + path]).fetchone()
                if listed is None:
                    raise StoreError(f"DuckLake does not list the data file {path} of table {table!r}")
                _FOLDERS[(lake, table)] = listed[0][: -len(path)]
            path = _FOLDERS[(lake, table)] + path
        out.append(DataFile(table, path, int(size)))
    return out


@dataclass(frozen=True)
class Checksum:
    """What ``file_checksums`` says about one file: its SHA-256, its size, and what it holds (``holds``, e.g.
    ``run 81452eda538f562b chunk 2``)."""

    sha256: str
    size: int
    holds: str
    runs: frozenset[str] = frozenset()


def holds_label(rows: Iterable[tuple]) -> str:
    """``run R chunk 0`` / ``run R chunks 0, 1, 2`` / ``index I chunk 3`` / ``run R`` from (run_id, index_id,
    chunk_index) tuples."""
    by_owner: dict[str, list[int]] = {}
    for run_id, index_id, chunk in rows:
        owner = f"run {run_id}" if run_id is not None else f"index {index_id}" if index_id is not None else ""
        by_owner.setdefault(owner, [])
        if chunk is not None:
            by_owner[owner].append(int(chunk))
    parts = []
    for owner, chunks in sorted(by_owner.items()):
        chunks = sorted(set(chunks))
        shown = ", ".join(map(str, chunks[:10])) + (f" and {len(chunks) - 10} more" if len(chunks) > 10 else "")
        word = "chunk" if len(chunks) == 1 else "chunks"
        parts.append(" ".join(x for x in (owner, f"{word} {shown}" if chunks else "") if x))
    return "; ".join(p for p in parts if p) or "no run or chunk"


def expected_checksums(con: duckdb.DuckDBPyConnection, lake: str, tables: Iterable[str],
                       snapshot: int | None = None) -> dict[tuple[str, str], Checksum]:
    """(table, file name) -> its recorded :class:`Checksum`, for the files of ``tables`` at ``snapshot``
    (the checksum table must exist there)."""
    at = "" if snapshot is None else f" AT (VERSION => {int(snapshot)})"
    names = list(tables)
    if not names:
        return {}
    rows = con.execute(f"SELECT table_name, file, sha256, file_size, run_id, index_id, chunk_index FROM "
                       f"{lake}.{CHECKSUMS}{at} WHERE table_name IN ({', '.join('?' * len(names))})", names).fetchall()
    grouped: dict[tuple[str, str], list[tuple]] = {}
    for r in rows:
        grouped.setdefault((r[0], r[1]), []).append(r)
    return {k: Checksum(g[0][2], int(g[0][3]), holds_label(x[4:] for x in g), frozenset(x[4] for x in g if x[4]))
            for k, g in grouped.items()}


@dataclass(frozen=True)
class FileProblem:
    """A data file that does not verify. ``status``: ``damaged`` (its bytes differ from its checksum, or its size
    from the catalog's), ``missing`` (it does not exist), or ``unchecked`` (no checksum recorded: written before
    checksums existed, or merged by a ``compact`` killed before it recorded them; ``compact`` adds them)."""

    status: str
    table: str
    path: str
    holds: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<9} {self.table:<15} {self.path} ({self.holds}): {self.detail}"

    def message(self, where: str) -> str:
        return (f"{where}: the data file of table {self.table!r} at {self.path} is missing or damaged "
                f"({self.holds}: {self.detail}). Restore the file, or rebuild the affected runs (--force); "
                f"`python -m precompute verify` lists every damaged file")


def check_file(con: duckdb.DuckDBPyConnection, f: DataFile, expected: Checksum | None, holds: str = "") -> FileProblem | None:
    """None when ``f`` matches its checksum; else what is wrong with it (``holds``: what it holds when no
    checksum says so)."""
    holds = expected.holds if expected is not None else holds or "what it holds is not recorded"
    stat = file_stat(con, f.path)
    if stat is None:
        return FileProblem("missing", f.table, f.path, holds, "the file does not exist")
    if stat[0] != f.size:
        return FileProblem("damaged", f.table, f.path, holds, f"it has {stat[0]} bytes, the catalog says {f.size}")
    if expected is None:
        return FileProblem("unchecked", f.table, f.path, holds,
                           "no checksum recorded (written before checksums; `compact` adds them)")
    digest = cached_sha256(con, f.path, stat)
    if digest != expected.sha256:
        return FileProblem("damaged", f.table, f.path, holds,
                           f"its SHA-256 is {digest[:16]}…, its checksum says {expected.sha256[:16]}…")
    with _DIGESTS_LOCK:
        _VERIFIED.add((f.path, *stat))
    return None


def check_files(con: duckdb.DuckDBPyConnection, lake: str, files: Sequence[DataFile], snapshot: int | None, *,
                with_checksums: bool) -> list[FileProblem]:
    """:func:`check_file` of each file; a file this process has verified before (same path, size and
    modification time) costs one ``stat`` (for a remote file, one request) and no checksum lookup."""
    todo = []
    for f in files:
        stat = file_stat(con, f.path)
        with _DIGESTS_LOCK:
            if stat is not None and (f.path, *stat) in _VERIFIED:
                continue
        todo.append(f)
    if not todo:
        return []
    expected = expected_checksums(con, lake, {f.table for f in todo}, snapshot) if with_checksums else {}
    return [p for f in todo if (p := check_file(con, f, expected.get((f.table, f.name)))) is not None]


def raise_damaged(problems: Sequence[FileProblem], where: str) -> None:
    """A StoreError for the damaged or missing files among ``problems`` (files without a checksum pass)."""
    bad = [p for p in problems if p.status != "unchecked"]
    if bad:
        more = f" (and {len(bad) - 1} more damaged or missing files)" if len(bad) > 1 else ""
        raise StoreError(bad[0].message(where) + more)


def file_holds(con: duckdb.DuckDBPyConnection, f: DataFile) -> list[tuple] | None:
    """(run_id, index_id, chunk_index) of the rows in ``f``, read from the file itself (a file without a checksum
    row; one all-NULL tuple for a table without these columns); None when the file cannot be read."""
    cols = owners(f.table)
    sel = ", ".join(quote(c) if c in cols else f"NULL AS {c}" for c in OWNER_COLUMNS)
    try:
        return con.execute(f"SELECT DISTINCT {sel} FROM read_parquet(?)", [f.path]).fetchall() or [(None,) * 3]
    except duckdb.Error:
        return None


@dataclass
class VerifyReport:
    """What :func:`verify_files` found at ``snapshot``: ``files`` data files and their ``bytes`` looked at
    (``run_id``: only those holding rows of that run), ``problems`` every one that did not verify."""

    snapshot: int | None
    files: int = 0
    bytes: int = 0
    run_id: str | None = None
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        counts = {s: sum(p.status == s for p in self.problems) for s in ("damaged", "missing", "unchecked")}
        scope = f" holding rows of run {self.run_id}" if self.run_id else ""
        return [p.line() for p in self.problems] + [
            f"checked {self.files} data files{scope} ({self.bytes} bytes) at snapshot {self.snapshot}: "
            + ("all match their checksums" if self.ok else ", ".join(f"{n} {s}" for s, n in counts.items()))]


def verify_files(con: duckdb.DuckDBPyConnection, lake: str, tables: Sequence[str], snapshot: int | None, *,
                 with_checksums: bool, run_id: str | None = None, progress: bool = False) -> VerifyReport:
    """Check every data file of ``tables`` (the tables at ``snapshot``) against its checksum (``with_checksums``:
    whether the checksum table exists there); ``run_id``: only the files holding rows of that run."""
    report = VerifyReport(snapshot, run_id=run_id)
    files = data_files(con, lake, tables, snapshot)
    expected = expected_checksums(con, lake, tables, snapshot) if with_checksums else {}
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, desc="verify", disable=not progress,
               leave=False)
    with bar:
        for f in files:
            exp = expected.get((f.table, f.name))
            rows = [] if exp is not None else file_holds(con, f) or []
            runs = exp.runs if exp is not None else {r[0] for r in rows}
            if run_id is not None and run_id not in runs:
                bar.update(f.size)
                continue
            problem = check_file(con, f, exp, holds_label(rows) if rows else "")
            report.files += 1
            report.bytes += f.size
            if problem is not None:
                report.problems.append(problem)
            bar.update(f.size)
    return report
