"""Where a store lives and how to open it: DuckDB extensions, the DuckLake ATTACH, the tables from the
schema, and transactions that retry when another writer holds the catalog.

A store *location* is a local folder (``./store``: ``catalog.sqlite`` + ``data/``) or a DuckLake connection
string such as ``ducklake:postgres:dbname=simlens host=db user=me data_path=s3://bucket/simlens/``
(``data_path=`` is needed when the store is created; S3 credentials come from the usual ``AWS_*``
environment variables, ``AWS_ENDPOINT_URL`` for a non-AWS endpoint).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import duckdb

from core.store.records import StoreError, quote
from core.store.schema import TABLES, columns

CATALOG_FILE = "catalog.sqlite"
DATA_DIR = "data"
LEGACY_MARKER = "SIMLENS_STORE.json"  # the Parquet-directory layout of format 1
_EXTENSION_PACKAGES = {"ducklake": "duckdb_extension_ducklake", "sqlite": "duckdb_extension_sqlite",
                       "postgres": "duckdb_extension_postgres", "httpfs": "duckdb_extension_httpfs",
                       "vss": "duckdb_extension_vss"}
#: DuckDB's own name of an extension whose short name is an alias (it names the file's entry point)
_CANONICAL = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}
_EXTENSION_DIR: list[Path] = []
_EXTENSION_LOCK = threading.Lock()  # concurrent first LOADs of an extension
T = TypeVar("T")


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store location. ``catalog``: the DuckLake connection string (without ``data_path``);
    ``data_path``: where new data files go (None: the catalog knows); ``root``: the folder of a local store."""

    spec: str
    catalog: str
    data_path: str | None
    root: Path | None

    def __str__(self) -> str:
        return self.spec

    @property
    def kind(self) -> str:
        """``sqlite``, ``postgres``, ``duckdb`` ... : the catalog database."""
        return self.catalog.split(":", 2)[1] if self.catalog.count(":") >= 2 else "duckdb"

    @property
    def remote_data(self) -> bool:
        return bool(self.data_path and urlparse(self.data_path).scheme not in ("", "file"))


def parse_location(spec: str | os.PathLike | StoreLocation) -> StoreLocation:
    """A folder path, or a ``ducklake:`` connection string with an optional ``data_path=<url>`` token."""
    if isinstance(spec, StoreLocation):
        return spec
    text = str(spec).strip()
    if not text:
        raise StoreError("empty store location")
    if text.startswith("ducklake:"):
        tokens = text.split()
        data = [t.split("=", 1)[1] for t in tokens if t.startswith("data_path=")]
        catalog = " ".join(t for t in tokens if not t.startswith("data_path="))
        return StoreLocation(text, catalog, data[-1] if data else None, None)
    root = Path(text).expanduser()
    return StoreLocation(text, f"ducklake:sqlite:{root / CATALOG_FILE}", str(root / DATA_DIR) + os.sep, root)


def is_legacy(loc: StoreLocation) -> bool:
    """Whether ``loc`` is a store in the Parquet-directory layout of format 1 (convert it with ``migrate``)."""
    return loc.root is not None and (loc.root / LEGACY_MARKER).is_file()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _packaged_extension(name: str) -> Path:
    """The extension file that the ``duckdb-extension-<name>`` package installed into the environment."""
    hint = f"pip install duckdb-extension-{name}=={duckdb.__version__}"
    try:
        module = importlib.import_module(_EXTENSION_PACKAGES[name])
    except ImportError:
        raise StoreError(f"DuckDB's {name} extension is not installed: {hint}") from None
    found = sorted(Path(module.__file__).parent.glob(f"extensions/v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        raise StoreError(f"the duckdb-extension-{name} package has no extension file for DuckDB "
                         f"{duckdb.__version__} (in {Path(module.__file__).parent}): {hint}")
    return found[0]


def extension_directory() -> Path:
    """This process's DuckDB extension directory: a temporary folder (removed at exit) in DuckDB's layout
    (``v<version>/<platform>/<canonical name>.duckdb_extension``) linking to the files the ``duckdb-extension-*``
    packages installed. DuckDB connections use it instead of ``~/.duckdb``, so nothing outside the environment
    (a user's home, the network) decides which extensions load. Files are linked as they are first needed."""
    with _EXTENSION_LOCK:
        if not _EXTENSION_DIR:
            root = Path(tempfile.mkdtemp(prefix="simlens-duckdb-ext-"))
            atexit.register(shutil.rmtree, root, True)
            _EXTENSION_DIR.append(root)
        return _EXTENSION_DIR[0]


def duckdb_config() -> dict[str, object]:
    """DuckDB ``connect`` options for every SimLens connection: extensions only from this environment."""
    return {"extension_directory": str(extension_directory()), "autoinstall_known_extensions": False}


def _linked_extension(con: duckdb.DuckDBPyConnection, name: str) -> Path:
    """The packaged file of ``name`` linked into the extension directory under DuckDB's canonical name (the
    name decides the entry point DuckDB looks for: ``sqlite`` is ``sqlite_scanner``)."""
    source = _packaged_extension(name)
    platform = con.execute("PRAGMA platform").fetchone()[0]
    target = extension_directory() / f"v{duckdb.__version__}" / platform / f"{_CANONICAL.get(name, name)}.duckdb_extension"
    with _EXTENSION_LOCK:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(source)
            except FileExistsError:
                pass
            except OSError:  # no symlinks on this file system: a copy
                shutil.copyfile(source, target)
    return target


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD a DuckDB extension from the file its PyPI package (``duckdb-extension-<name>``) installed, by path:
    never from ``~/.duckdb``, never DuckDB's ``INSTALL`` or autoinstall (no network, no per-user state). An
    extension that cannot be loaded is a StoreError naming the package to install."""
    path = _linked_extension(con, name)
    try:
        con.execute(f"LOAD {_literal(str(path))}")
    except duckdb.Error as exc:
        raise StoreError(f"cannot load DuckDB's {name} extension from {path} "
                         f"({str(exc).splitlines()[0][:200]}); reinstall it: pip install --force-reinstall "
                         f"duckdb-extension-{name}=={duckdb.__version__}") from None


def _s3_secret(con: duckdb.DuckDBPyConnection) -> None:
    env = os.environ
    if not env.get("AWS_ACCESS_KEY_ID"):
        return
    parts = [f"KEY_ID {_literal(env['AWS_ACCESS_KEY_ID'])}",
             f"SECRET {_literal(env.get('AWS_SECRET_ACCESS_KEY', ''))}",
             f"REGION {_literal(env.get('AWS_REGION') or env.get('AWS_DEFAULT_REGION') or 'us-east-1')}"]
    if env.get("AWS_SESSION_TOKEN"):
        parts.append(f"SESSION_TOKEN {_literal(env['AWS_SESSION_TOKEN'])}")
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlparse(endpoint if "//" in endpoint else f"https://{endpoint}")
        parts += [f"ENDPOINT {_literal(url.netloc)}", "URL_STYLE 'path'", f"USE_SSL {str(url.scheme == 'https').lower()}"]
    con.execute(f"CREATE OR REPLACE SECRET simlens_s3 (TYPE s3, {', '.join(parts)})")


#: seconds a writer waits for another process that is creating the same store's catalog, and any store
#: operation for another writer that holds the catalog (``$SIMLENS_STORE_WAIT_S`` overrides it)
WAIT_ENV = "SIMLENS_STORE_WAIT_S"
DEFAULT_WAIT_S = 120.0
IDLE_INSTANCES = 4  # DuckDB instances of closed stores kept for the next store this process opens
_IDLE: list[duckdb.DuckDBPyConnection] = []
_IDLE_LOCK = threading.Lock()  # the list of idle instances (held for list operations only)
_ALIASES = itertools.count(1)


def wait_limit() -> float:
    """Seconds a store operation waits for another writer (``$SIMLENS_STORE_WAIT_S``, default 120)."""
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return DEFAULT_WAIT_S
    try:
        value = float(text)
    except ValueError:
        raise StoreError(f"${WAIT_ENV} must be a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise StoreError(f"${WAIT_ENV} must be a finite number of seconds >= 0, got {text!r}")
    return value


def _new_instance() -> duckdb.DuckDBPyConnection:
    """A DuckDB instance of its own with the store extensions loaded (~0.25 s: DuckDB checks their signatures)."""
    con = duckdb.connect(":memory:", config=duckdb_config())
    try:
        for name in ("ducklake", "sqlite"):
            load_extension(con, name)
    except BaseException:
        con.close()
        raise
    return con


def _take_instance() -> duckdb.DuckDBPyConnection:
    with _IDLE_LOCK:
        if _IDLE:
            return _IDLE.pop()
    return _new_instance()


def _release(instance: duckdb.DuckDBPyConnection, con: duckdb.DuckDBPyConnection, alias: str,
             copies: list[tempfile.TemporaryDirectory], catalog_fd: int | None) -> None:
    """DETACH the store, close its connection and keep ``instance`` for the next store when nothing is attached
    to it any more (else close it); remove the catalog copy. Also run by the garbage collector for a store that
    was never closed, so it never waits for the idle list's lock (no lock is taken twice)."""
    try:
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")
        con.close()
        instance.execute("DROP SECRET IF EXISTS simlens_s3")
        clean = not instance.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal "
                                     "AND database_name <> 'memory'").fetchall()
    except duckdb.Error:
        clean = False
    kept = False
    if clean and _IDLE_LOCK.acquire(blocking=False):
        try:
            if len(_IDLE) < IDLE_INSTANCES:
                _IDLE.append(instance)
                kept = True
        finally:
            _IDLE_LOCK.release()
    if not kept:
        instance.close()
    for copy in copies:
        copy.cleanup()
    if catalog_fd is not None:
        os.close(catalog_fd)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _read_only_copy(catalog: Path) -> tempfile.TemporaryDirectory:
    """A private copy of a folder store's catalog that this process cannot write (a read-only mount, a
    published store of another user): SQLite opens a catalog in WAL mode only where it can create the
    ``-shm`` file next to it. The copy is SQLite's own backup of the catalog (a consistent state even while its
    owner writes) or, where SQLite cannot open it in place at all (a read-only medium: nothing writes it), a
    copy of its files. Removed when the store closes (or the returned object is collected)."""
    folder = tempfile.TemporaryDirectory(prefix="simlens-catalog-")
    target = Path(folder.name) / CATALOG_FILE
    try:
        try:
            with contextlib.closing(sqlite3.connect(f"{catalog.absolute().as_uri()}?mode=ro", uri=True,
                                                    timeout=wait_limit())) as src, \
                    contextlib.closing(sqlite3.connect(target)) as dst:
                src.backup(dst)
        except sqlite3.Error:
            target.unlink(missing_ok=True)
            for suffix in ("", "-wal"):
                if Path(f"{catalog}{suffix}").exists():
                    shutil.copyfile(f"{catalog}{suffix}", f"{target}{suffix}")
    except (OSError, sqlite3.Error) as exc:
        folder.cleanup()
        raise StoreError(f"cannot read the catalog {catalog}: {exc}") from None
    return folder


def _check_folder(loc: StoreLocation, read_only: bool) -> None:
    """The checks of a folder store before it is attached; a writer creates the folder (and waits, bounded, for
    another process creating the same catalog)."""
    if is_legacy(loc):
        raise StoreError(f"{str(loc.root)!r} is a SimLens store in the old Parquet-directory layout; convert it "
                         f"with: python -m precompute migrate {loc.root} NEW_STORE")
    if loc.root.exists() and not loc.root.is_dir():
        raise StoreError(f"store path {str(loc.root)!r} exists and is not a directory")
    catalog = loc.root / CATALOG_FILE
    if read_only and not loc.root.exists():
        raise StoreError(f"SimLens store {str(loc.root)!r} does not exist")
    if not catalog.exists() and loc.root.is_dir() and any(True for _ in loc.root.iterdir()):
        raise StoreError(f"{str(loc.root)!r} is a non-empty directory that is not a SimLens store (no {CATALOG_FILE})")
    if read_only and not catalog.exists():
        raise StoreError(f"{str(loc.root)!r} is not a SimLens store (no {CATALOG_FILE})")
    if read_only:
        return
    for path in (loc.root, catalog):
        if path.exists() and not _writable(path):
            raise StoreError(f"cannot write the store {str(loc.root)!r}: {path} is read-only (no write permission "
                             f"or a read-only file system); readers can open it, writers need write access")
    patience = wait_limit()
    try:
        (loc.root / DATA_DIR).mkdir(parents=True, exist_ok=True)
        if not catalog.exists():  # WAL: a writer's open transaction does not block the others' commits
            # another process may be creating the same store right now (two shards started at once)
            # and hold the catalog's lock while DuckLake initialises it: wait for it, as SQLite does
            with contextlib.closing(sqlite3.connect(catalog, timeout=patience)) as db:
                db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StoreError(f"cannot create the store {str(loc.root)!r}: gave up after waiting {patience:.0f} s "
                             f"for another process that holds the lock of {catalog} (${WAIT_ENV} sets the "
                             f"wait)") from None
        raise StoreError(f"cannot create the store folder {str(loc.root)!r}: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot create the store folder {str(loc.root)!r}: {exc}") from None


class Attachment:
    """One open store: a DuckDB instance of its own (extensions loaded) with the store attached as ``alias``,
    and ``con``, a connection of that instance. Nothing else is ever attached to the instance, so a store that
    is closed, deleted or unreadable cannot affect another store of the process. :meth:`close` detaches the
    store and keeps the instance for the next store the process opens; an attachment that is never closed
    frees its instance when it is collected.

    A folder store that this process cannot write is read from a private copy of its catalog
    (:func:`_read_only_copy`), so read-only mounts and other users' published stores open for reading."""

    def __init__(self, loc: StoreLocation, *, read_only: bool) -> None:
        if loc.root is not None:
            _check_folder(loc, read_only)
        self.alias = f"lake{next(_ALIASES)}"
        # the catalog file held open: its inode stays this store's while the store is open (a store deleted and
        # built again at the same path gets another one)
        self._catalog_fd = _open_catalog(loc)
        try:
            instance = _take_instance()
        except BaseException:
            if self._catalog_fd is not None:
                os.close(self._catalog_fd)
            raise
        self.con = instance.cursor()
        copies: list[tempfile.TemporaryDirectory] = []  # the catalog copy of a read-only store
        self._release = weakref.finalize(self, _release, instance, self.con, self.alias, copies, self._catalog_fd)
        try:
            if loc.kind == "postgres":
                load_extension(self.con, "postgres")
            if loc.root is None:
                load_extension(self.con, "httpfs")
                _s3_secret(self.con)
            copy = attach(self.con, loc, self.alias, read_only=read_only)
            if copy is not None:
                copies.append(copy)
        except duckdb.Error as exc:
            self.close()
            raise StoreError(f"cannot open the store {loc}: {_attach_error(exc, loc)}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """DETACH the store, close the connection and remove the catalog copy; closing again does nothing."""
        self._release()

    @property
    def closed(self) -> bool:
        return not self._release.alive

    def is_current(self, loc: StoreLocation) -> bool:
        """Whether this attachment still reads the store now at ``loc``: open, and (a folder store) the catalog
        file it opened is still there (not deleted, not replaced by a rebuilt store)."""
        if self.closed:
            return False
        if self._catalog_fd is None:
            return True
        try:
            now, opened = (loc.root / CATALOG_FILE).stat(), os.fstat(self._catalog_fd)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _open_catalog(loc: StoreLocation) -> int | None:
    """A read-only descriptor of a folder store's catalog file (None for other catalogs)."""
    if loc.root is None:
        return None
    try:
        return os.open(loc.root / CATALOG_FILE, os.O_RDONLY)
    except OSError as exc:
        raise StoreError(f"cannot read the catalog of the store {str(loc.root)!r}: {exc}") from None


def _attach_error(exc: duckdb.Error, loc: StoreLocation) -> str:
    """DuckDB's error of an ATTACH in the store's words."""
    text = str(exc)
    if "creating a new DuckLake is explicitly disabled" in text or "not initialized" in text.lower():
        return (f"its catalog holds no DuckLake metadata yet (a store whose creation did not finish?); write to it "
                f"(python -m precompute predict ... --store {loc}) or delete it")
    return text


def connect(loc: StoreLocation, *, read_only: bool) -> Attachment:
    """The store at ``loc`` attached in a DuckDB instance of its own (created when writable): close it when
    done (:meth:`Attachment.close`)."""
    return Attachment(loc, read_only=read_only)


def attach(con: duckdb.DuckDBPyConnection, loc: StoreLocation, alias: str, *,
           read_only: bool) -> tempfile.TemporaryDirectory | None:
    """ATTACH the store at ``loc`` as ``alias`` (extensions loaded already). A folder store reads and writes the
    files of its own ``data/`` folder: its catalog records the folder it was created in, and a copied or moved
    store would otherwise read (or miss) the files of that original folder. A folder store that this process
    cannot write is attached (for reading) from a private copy of its catalog (:func:`_read_only_copy`), which
    is returned: remove it (``cleanup()``) once the store is detached."""
    catalog, copy = loc.catalog, None
    if read_only and loc.root is not None and not (_writable(loc.root) and _writable(loc.root / CATALOG_FILE)):
        copy = _read_only_copy(loc.root / CATALOG_FILE)
        catalog = f"ducklake:sqlite:{Path(copy.name) / CATALOG_FILE}"
    options = ["READ_ONLY"] if read_only else []
    if loc.root is not None:  # a folder store's data is its own data/ folder, wherever the folder is now
        options += [f"DATA_PATH {_literal(str(loc.root.absolute() / DATA_DIR) + os.sep)}", "OVERRIDE_DATA_PATH true"]
    elif loc.data_path and not read_only:
        options.append(f"DATA_PATH {_literal(loc.data_path)}")
    suffix = f" ({', '.join(options)})" if options else ""
    def attempt() -> None:
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")
        con.execute(f"ATTACH {_literal(catalog)} AS {alias}{suffix}")

    try:
        retry(attempt, f"open {loc}")  # retried too when another writer is creating the catalog right now
    except BaseException:
        if copy is not None:
            copy.cleanup()
        raise
    return copy


def existing_columns(con: duckdb.DuckDBPyConnection, lake: str) -> dict[str, list[str]]:
    """table -> column names of the store's tables as they are now."""
    rows = con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? "
                       "ORDER BY table_name, column_index", [lake]).fetchall()
    out: dict[str, list[str]] = {}
    for table, col in rows:
        out.setdefault(table, []).append(col)
    return out


def ensure_tables(con: duckdb.DuckDBPyConnection, lake: str) -> None:
    """Create the schema's tables, and add the columns a newer schema declares, in one transaction."""
    def create(c: duckdb.DuckDBPyConnection) -> None:
        have = existing_columns(c, lake)
        for table in TABLES:
            cols = columns(table, bookkeeping=True)
            if table not in have:
                body = ", ".join(f"{quote(n)} {t}" for n, t in cols.items())
                c.execute(f"CREATE TABLE {lake}.{quote(table)} ({body})")
                continue
            for n, t in cols.items():
                if n not in have[table]:
                    c.execute(f"ALTER TABLE {lake}.{quote(table)} ADD COLUMN {quote(n)} {t}")

    have = existing_columns(con, lake)
    wanted = {t: list(columns(t, bookkeeping=True)) for t in TABLES}
    if all(t in have and set(cols) <= set(have[t]) for t, cols in wanted.items()):
        return
    transaction(con, create, "create the store's tables")


_TRANSIENT = re.compile(r"database is locked|busy|conflict|could not serialize|deadlock|Failed to commit|"
                        r"duplicate key value|already exists", re.I)


#: causes that no wait cures (a read-only role or file), also inside a "Failed to commit"
_PERMANENT = re.compile(r"permission denied|read-only|readonly|access denied", re.I)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and bool(_TRANSIENT.search(str(exc))) and not _PERMANENT.search(str(exc))


def retry(fn: Callable[[], T], what: str) -> T:
    """``fn()``, retried (with a growing pause) while another writer holds the catalog or a concurrent commit
    conflicts, for at most :func:`wait_limit` seconds; then a StoreError that says what it waited for and how
    long. Any other DuckDB error is raised at once."""
    patience = wait_limit()
    start = time.monotonic()
    delay, attempts = 0.005, 0
    while True:
        attempts += 1
        try:
            return fn()
        except duckdb.Error as exc:
            if not _transient(exc):
                raise
            waited = time.monotonic() - start
            if waited >= patience:
                raise StoreError(
                    f"{what}: gave up after waiting {waited:.1f} s ({attempts} attempts) for the store's catalog, "
                    f"which another writer held or changed at the same time (last error: "
                    f"{' '.join(str(exc).split())[:300]}); ${WAIT_ENV} sets the wait (now {patience:g} s)") from None
            time.sleep(min(delay * (0.5 + random.random()), max(0.0, patience - waited)))
            delay = min(delay * 1.5, 0.5)


def transaction(con: duckdb.DuckDBPyConnection, body: Callable[[duckdb.DuckDBPyConnection], T], what: str) -> T:
    """Run ``body(con)`` in one transaction; retried from the start while another writer holds the catalog
    or a concurrent commit conflicts. Any other error rolls back and is raised (DuckDB's as StoreError)."""
    def attempt() -> T:
        con.execute("BEGIN TRANSACTION")
        try:
            result = body(con)
            con.execute("COMMIT")
            return result
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    try:
        return retry(attempt, what)
    except duckdb.Error as exc:
        raise StoreError(f"{what}: {exc}") from None


def data_file_error(exc: BaseException, where: str) -> StoreError | None:
    """A clear StoreError for a missing or damaged data file (naming its table and path), or None."""
    text = str(exc)
    m = re.search(r"""['"]?((?:[a-z0-9]+://)?[^\s'"]*?/([a-z_]+)/[^\s'"/]*\.parquet)""", text)
    if m is None or not re.search(r"No such file|No files found|not exist|magic bytes|Invalid|corrupt|"
                                  r"could not|Could not|too small|truncated|Parquet|HTTP", text):
        return None
    return StoreError(f"{where}: the data file of table {m.group(2)!r} at {m.group(1)} is missing or damaged "
                      f"({text.splitlines()[0][:200]}). Restore the file, or rebuild the affected runs (--force).")


def describe(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    """column -> type of a query's result (without running it)."""
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {sql}").fetchall()}
