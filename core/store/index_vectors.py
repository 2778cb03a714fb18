"""The local copy of a finished index's embeddings, searched exactly or with an HNSW index (DuckDB's ``vss``).

A scan of DuckLake's Parquet files pays the lake's per-query costs on every search, and an HNSW index cannot
live in DuckLake (its tables are Parquet files plus a catalog), so the reader copies
``(passage_id, window_index, chunk_index, embedding FLOAT[D])`` of a finished index from the lake into a local
DuckDB file once, with an HNSW index of the model's metric when the index's record says ``hnsw`` (written
under a temporary name and renamed into place, so concurrent readers never see a part), and reuses it:
``<store>/cache/`` for a local store, ``$SIMLENS_CACHE`` (default ``~/.cache/simlens``) for a remote one. The
file is derived: deleting it costs one rebuild. Its name carries the index's finish time, so a rebuilt index
(``--force``) gets a new file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.store.catalog import StoreLocation, duckdb_config, load_extension
from core.store.schema import SCHEMA

CACHE_ENV = "SIMLENS_CACHE"
METRIC = {"cosine": "cosine", "dot": "ip"}
DISTANCE = {"cosine": ("array_cosine_distance", "1 - "), "dot": ("array_negative_inner_product", "-")}
SIMILARITY = {"cosine": "array_cosine_similarity", "dot": "array_inner_product"}
_KEY = ("passage_id", "window_index", "chunk_index")


def cache_folder(location: StoreLocation) -> Path:
    """Where the local vectors files of a store's indexes live: the store folder's ``cache/`` (the user's cache
    for a store this process cannot write, such as a read-only mount, and for remote stores)."""
    if location.root is not None:
        own = location.root / "cache"
        if os.access(own if own.exists() else location.root, os.W_OK):
            return own
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "simlens")


def vectors_path(location: StoreLocation, record: Mapping[str, Any]) -> Path:
    """The local vectors file of a finished index."""
    stamp = pd.Timestamp(record["finished_at"]).strftime("%Y%m%dT%H%M%S%f")
    return cache_folder(location) / f"{record['index_id']}-{stamp}.duckdb"


def _load_vss(con: duckdb.DuckDBPyConnection) -> None:
    load_extension(con, "vss")
    con.execute("SET hnsw_enable_experimental_persistence = true")


def build_vectors(path: Path, batches: pa.RecordBatchReader, passages: pa.Table, dim: int, similarity: str,
                  hnsw: bool = True, ef_construction: int | None = None, m: int | None = None) -> dict[str, Any]:
    """Write ``path`` from ``batches`` (the index's ``index_windows`` rows) and ``passages`` (its
    ``index_passages`` rows), with an HNSW index of the model's metric on the embeddings when ``hnsw`` (built
    after the bulk load, not row by row); returns {windows, seconds_table, seconds_hnsw}."""
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}"
    con = duckdb.connect(str(tmp), config=duckdb_config())
    try:
        t0 = time.perf_counter()
        # stored uncompressed: every exact scan reads all embeddings, and decompressing them cost more than the
        # similarities (embeddings hardly compress anyway)
        con.execute("SET force_compression = 'uncompressed'")
        con.register("lake_vectors", batches)
        rest = ", ".join(c for c in SCHEMA["index_windows"] if c not in _KEY + ("index_id", "embedding"))
        con.execute(f"""
            CREATE TABLE vectors AS SELECT CAST(passage_id AS INTEGER) AS passage_id,
                   CAST(window_index AS SMALLINT) AS window_index, CAST(chunk_index AS INTEGER) AS chunk_index,
                   CAST(embedding AS FLOAT[{int(dim)}]) AS embedding, {rest}
            FROM lake_vectors""")  # no sort: the lake gives each chunk in order, and lookups use the ART index
        con.unregister("lake_vectors")
        con.register("lake_passages", passages)
        con.execute("CREATE TABLE passages AS SELECT * FROM lake_passages ORDER BY passage_id")
        con.unregister("lake_passages")
        for table in ("vectors", "passages"):  # the hits' rows are looked up by passage id
            con.execute(f"CREATE INDEX {table}_passage ON {table} (passage_id)")
        (n,) = con.execute("SELECT count(*) FROM vectors").fetchone()
        t1 = time.perf_counter()
        if hnsw:
            _load_vss(con)
            options = [f"metric = '{METRIC[similarity]}'"]
            if ef_construction:
                options.append(f"ef_construction = {int(ef_construction)}")
            if m:
                options.append(f"M = {int(m)}")
            con.execute(f"CREATE INDEX vectors_hnsw ON vectors USING HNSW (embedding) WITH ({', '.join(options)})")
        con.execute("CHECKPOINT")
        t2 = time.perf_counter()
    except BaseException:
        con.close()
        for p in (tmp, Path(str(tmp) + ".wal")):
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    con.close()
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        os.remove(str(tmp) + ".wal")
    return {"windows": int(n), "seconds_table": t1 - t0, "seconds_hnsw": t2 - t1}


class LocalVectors:
    """A read-only connection to a local vectors file: exact scans and HNSW searches."""

    def __init__(self, path: Path, dim: int, similarity: str) -> None:
        self.path, self.dim, self.similarity = path, int(dim), similarity
        self._con = duckdb.connect(":memory:", config=duckdb_config())
        _load_vss(self._con)
        # DuckDB's late materialization rewrites the HNSW top-n into a semi join on rowid with a full scan of the
        # table (every embedding read per query, slower than the exact scan); this connection only searches
        self._con.execute("SET disabled_optimizers = 'late_materialization'")
        self._con.execute(f"ATTACH '{path}' AS vec (READ_ONLY)")

    def close(self) -> None:
        self._con.close()

    def _sql(self, n: int, use: str) -> str:
        # The query is a parameter: vss still replaces ``ORDER BY <the index's distance> LIMIT n`` with its
        # HNSW_INDEX_SCAN (the plan test checks), and binding 384 floats is far cheaper than parsing them. Only the
        # key columns and the distance are selected (the embeddings are never read back).
        q = f"$q::FLOAT[{self.dim}]"
        if use == "hnsw":
            fn, to_score = DISTANCE[self.similarity]
            return (f"SELECT passage_id, window_index, chunk_index, {to_score}d AS score FROM (SELECT passage_id, "
                    f"window_index, chunk_index, {fn}(embedding, {q}) AS d FROM vec.vectors ORDER BY d LIMIT {int(n)})")
        return (f"SELECT passage_id, window_index, chunk_index, CAST({SIMILARITY[self.similarity]}(embedding, {q}) "
                f"AS DOUBLE) AS score FROM vec.vectors ORDER BY score DESC, passage_id, window_index LIMIT {int(n)}")

    @staticmethod
    def _params(q: np.ndarray) -> dict[str, list[float]]:
        return {"q": np.asarray(q, np.float32).reshape(-1).tolist()}

    def search(self, q: np.ndarray, n: int, use: str, ef_search: int | None = None) -> pd.DataFrame:
        """The ``n`` best windows (passage_id, window_index, chunk_index, score) by ``use``: hnsw or exact;
        ``ef_search``: the HNSW search's candidate list (None: vss's default, 64)."""
        self._con.execute(f"SET hnsw_ef_search = {int(ef_search)}" if ef_search else "RESET hnsw_ef_search")
        return self._con.execute(self._sql(n, use), self._params(q)).df()

    def passages(self, passage_ids: list[int]) -> pd.DataFrame:
        """The stored passages (``index_passages`` rows) of those ids, in any order."""
        return self._con.execute(f"SELECT * FROM vec.passages WHERE passage_id IN {_ids(passage_ids)}").df()

    def windows(self, index_id: str, passage_ids: list[int]) -> pd.DataFrame:
        """Every stored window (``index_windows`` columns, blobs encoded) of those passages, in any order."""
        cols = ", ".join("$i AS index_id" if c == "index_id" else c for c in SCHEMA["index_windows"])
        return self._con.execute(f"SELECT {cols} FROM vec.vectors WHERE passage_id IN {_ids(passage_ids)}",
                                 {"i": index_id}).df()

    def plan(self, q: np.ndarray, n: int, use: str) -> str:
        """DuckDB's plan of a search (tests check that HNSW is used)."""
        return "\n".join(r[1] for r in self._con.execute("EXPLAIN " + self._sql(n, use), self._params(q)).fetchall())


def _ids(values: list[int]) -> str:
    return "(" + (", ".join(str(int(v)) for v in values) or "NULL") + ")"
