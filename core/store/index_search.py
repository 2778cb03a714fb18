"""The search indexes' reader: the indexes of a store, top-k windows by the model's own similarity, and the
stored windows and passages of hits (``python -m precompute search``, the Search page).

Small indexes are scanned exactly, in SQL, in the lake (``index_windows`` at the reader's snapshot). An index
whose record says ``hnsw`` is searched in a local DuckDB copy of its embeddings with an HNSW index
(:mod:`core.store.index_vectors`), built on the first search and reused; ``mode="exact"`` scans that copy.
Every query reads one snapshot, so searches are safe while indexes are being written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.store.catalog import StoreLocation
from core.store.index import HNSW_MIN_WINDOWS, SEARCH_MODES, clean_record, decode_matrix, in_list, live_status
from core.store.index_vectors import LocalVectors, build_vectors, vectors_path
from core.store.reader import STALE_AFTER_S, StoreReader, pid_alive
from core.store.records import StoreError, check_id
from core.store.schema import SCHEMA

_SIMILARITY = {"cosine": "list_cosine_similarity", "dot": "list_inner_product"}


class IndexStore(StoreReader):
    """Read-only queries on a store's search indexes; safe while an index is being written."""

    def __init__(self, path: str | os.PathLike | StoreLocation, *, snapshot: int | None = None) -> None:
        super().__init__(path, snapshot=snapshot)
        self._local: dict[str, LocalVectors] = {}
        self._local_lock = threading.Lock()

    def close(self) -> None:
        with self._local_lock:
            for vectors in self._local.values():
                vectors.close()
            self._local.clear()
        super().close()

    # ---- catalogue ------------------------------------------------------------------------------
    def indexes(self) -> pd.DataFrame:
        """Every index with ``chunks_present`` and its live status (``interrupted`` when a running index's
        writer is gone), newest first."""
        with self._snapshot():
            df = self._df("""
                SELECT i.*, coalesce(c.n, 0) AS chunks_present, c.last_at
                FROM indexes i LEFT JOIN (SELECT index_id, count(*) AS n, max(committed_at) AS last_at
                                          FROM index_chunks GROUP BY index_id) c USING (index_id)
                ORDER BY i.started_at DESC, i.index_id""")
        df["status"] = [live_status(r, r["last_at"], STALE_AFTER_S, pid_alive) for r in df.to_dict("records")]
        df["chunks_present"] = df["chunks_present"].astype(int)
        return df.drop(columns="last_at").reset_index(drop=True)

    def index_info(self, index_id: str) -> dict[str, Any]:
        """The index's record with ``chunks_present``; an unknown id raises a StoreError listing the indexes."""
        found = self.indexes()
        match = found[found["index_id"] == str(index_id)]
        if match.empty:
            listing = ", ".join(f"{r.index_id} ({r.corpus_key}, {r.model_name}, {r.method})"
                                for r in found.itertuples()) or "none (build one with python -m precompute index)"
            raise StoreError(f"no search index {index_id!r} in {self.location}; indexes: {listing}")
        return clean_record(match.iloc[0].to_dict())

    # ---- search ---------------------------------------------------------------------------------
    def local_vectors(self, index_id: str, ef_construction: int | None = None, m: int | None = None) -> LocalVectors:
        """The local copy of a finished index's embeddings with its HNSW index (built now when missing)."""
        record = self.index_info(index_id)
        if record["status"] != "done":
            raise StoreError(f"index {index_id} is {record['status']}: its HNSW index is built once it is done")
        path = vectors_path(self.location, record)
        with self._local_lock:
            cached = self._local.get(index_id)
            if cached is not None and cached.path == path:
                return cached
            if not path.exists():
                self.build_local_vectors(index_id, ef_construction, m)
            if cached is not None:
                cached.close()
            self._local[index_id] = LocalVectors(path, int(record["dim"]), record["similarity"])
            return self._local[index_id]

    def build_local_vectors(self, index_id: str, ef_construction: int | None = None,
                            m: int | None = None) -> dict[str, Any]:
        """(Re)build the local vectors file of a finished index from the lake; returns its timings."""
        record = self.index_info(index_id)
        path = vectors_path(self.location, record)
        with self._snapshot():
            batches = self._con.execute("SELECT passage_id, window_index, chunk_index, embedding FROM index_windows "
                                        "WHERE index_id = $i", {"i": index_id}).fetch_record_batch(50_000)
            out = build_vectors(path, batches, int(record["dim"]), record["similarity"], ef_construction, m)
        for old in Path(path.parent).glob(f"{index_id}-*.duckdb"):  # earlier builds of the index
            if old != path:
                old.unlink(missing_ok=True)
        return {**out, "path": str(path), "bytes": path.stat().st_size}

    def _check_query(self, index_id: str, query: np.ndarray, mode: str) -> tuple[dict[str, Any], np.ndarray]:
        if mode not in SEARCH_MODES:
            raise StoreError(f"search mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        record = self.index_info(index_id)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.size != int(record["dim"]):
            raise StoreError(f"query embedding has {q.size} values but index {index_id} stores {record['dim']}")
        if mode == "hnsw" and not record["hnsw"]:
            raise StoreError(f"index {index_id} has no HNSW index (it is built for indexes of at least "
                             f"{HNSW_MIN_WINDOWS:,} windows, or with precompute index --hnsw yes)")
        return record, q

    def search_windows(self, index_id: str, query: np.ndarray, n: int, mode: str = "auto",
                       ef_search: int | None = None) -> tuple[pd.DataFrame, str]:
        """The ``n`` best windows for a query embedding by the model's similarity, and the mode used
        (``exact``: every stored embedding; ``hnsw``: the approximate HNSW index).
        Columns: passage_id, window_index, chunk_index, score."""
        with self._snapshot():
            record, q = self._check_query(index_id, query, mode)
            if record["hnsw"]:
                use = "exact" if mode == "exact" else "hnsw"
                return self.local_vectors(index_id).search(q, n, use, ef_search), use
            return self.scan_lake(index_id, q, n, record["similarity"]), "exact"

    def scan_lake(self, index_id: str, query: np.ndarray, n: int, similarity: str) -> pd.DataFrame:
        """The exact scan in SQL over the lake's ``index_windows`` (what ``search_windows`` does for indexes
        without HNSW); columns passage_id, window_index, chunk_index, score."""
        return self._df(f"""
            SELECT passage_id, window_index, chunk_index,
                   CAST({_SIMILARITY[similarity]}(embedding, $q::FLOAT[]) AS DOUBLE) AS score
            FROM index_windows WHERE index_id = $i
            ORDER BY score DESC, passage_id, window_index LIMIT {int(n)}""",
                        {"q": np.asarray(query, np.float32).reshape(-1).tolist(), "i": check_id(index_id, "index_id")})

    def explain_plan(self, index_id: str, query: np.ndarray, n: int, mode: str) -> str:
        """DuckDB's plan of a search of an index with a local HNSW copy (tests check that HNSW is used)."""
        record, q = self._check_query(index_id, query, mode)
        if not record["hnsw"]:
            raise StoreError(f"index {index_id} is scanned in the lake; it has no local HNSW copy")
        return self.local_vectors(index_id).plan(q, n, "exact" if mode == "exact" else "hnsw")

    # ---- windows and passages -------------------------------------------------------------------
    def windows(self, index_id: str, keys: Sequence[tuple[int, int, int]]) -> pd.DataFrame:
        """The stored windows ``(chunk_index, passage_id, window_index)``, in that order, with every column of
        ``index_windows``, decoded: ``factor`` (n_tokens, D) and ``target`` (D,) float32 arrays."""
        if not keys:
            return pd.DataFrame(columns=list(SCHEMA["index_windows"]))
        check_id(index_id, "index_id")
        wanted = pd.DataFrame([(k, p, w, i) for i, (k, p, w) in enumerate(keys)],
                              columns=["chunk_index", "passage_id", "window_index", "_order"])
        with self._snapshot():
            dim = int(self.index_info(index_id)["dim"])
            self._con.register("_wanted_windows", wanted)
            try:
                df = self._df(f"""
                    SELECT w.*, k._order FROM index_windows w JOIN _wanted_windows k
                        ON k.chunk_index = w.chunk_index AND k.passage_id = w.passage_id
                       AND k.window_index = w.window_index
                    WHERE w.index_id = $i AND w.chunk_index IN {in_list([k[0] for k in keys])}
                    ORDER BY k._order""", {"i": index_id})
            finally:
                self._con.unregister("_wanted_windows")
        df["factor"] = [decode_matrix(b, "<f2", (int(n), dim)) for b, n in zip(df["factor"], df["n_tokens"], strict=True)]
        df["target"] = [decode_matrix(b, "<f4", (dim,)) for b in df["target"]]
        df["embedding"] = [np.asarray(e, dtype=np.float32) for e in df["embedding"]]
        return df.drop(columns="_order").reset_index(drop=True)

    def passages(self, index_id: str, passage_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Passages of an index (all, or those ids in the order given)."""
        check_id(index_id, "index_id")
        if passage_ids is None:
            return self._df("SELECT * FROM index_passages WHERE index_id = $i ORDER BY passage_id", {"i": index_id})
        order = pd.DataFrame({"passage_id": [int(p) for p in passage_ids], "_order": range(len(passage_ids))})
        with self._snapshot():
            self._con.register("_wanted_passages", order)
            try:
                return self._df(f"""
                    SELECT p.* FROM _wanted_passages w JOIN index_passages p USING (passage_id)
                    WHERE p.index_id = $i AND p.passage_id IN {in_list(order['passage_id'].tolist())}
                    ORDER BY w._order""", {"i": index_id})
            finally:
                self._con.unregister("_wanted_passages")

    def all_embeddings(self, index_id: str) -> pd.DataFrame:
        """Every window's (passage_id, window_index, embedding) (tests compare searches with numpy)."""
        df = self._df("SELECT passage_id, window_index, embedding FROM index_windows WHERE index_id = $i "
                      "ORDER BY passage_id, window_index", {"i": check_id(index_id, "index_id")})
        df["embedding"] = [np.asarray(e, dtype=np.float32) for e in df["embedding"]]
        return df

