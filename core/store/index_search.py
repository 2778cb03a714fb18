"""The search indexes' reader: the indexes of a store, top-k windows by the model's own similarity, and the
stored windows and passages of hits (``python -m precompute search``, the Search page).

A finished index is searched in a local DuckDB copy of its windows and passages (:mod:`core.store.index_vectors`),
built from the lake on the first search (or at the end of the build) and reused: an exact scan, or the HNSW
index of the copy when the index's record says ``hnsw`` (``mode="exact"`` still scans); the hits' passages and
windows (their float16 factors) are read from it too, so a search costs no query of the lake. An index that is
not finished is read from the lake, at the reader's snapshot: an exact scan in SQL of ``index_windows``, and
the hits' rows from the winning writes of the hits' chunks only, filtered on chunk and passage ids so that
DuckLake reads only those chunks' files. Every query reads one snapshot, so searches are safe while indexes are being written; a finished
index's record and winning writes are cached per snapshot (they do not change while it is done).
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
from core.store.records import StoreError, check_id, quote
from core.store.schema import SCHEMA

_SIMILARITY = {"cosine": "list_cosine_similarity", "dot": "list_inner_product"}
_WINDOW_KEY = ["chunk_index", "passage_id", "window_index"]


class IndexStore(StoreReader):
    """Read-only queries on a store's search indexes; safe while an index is being written."""

    def __init__(self, path: str | os.PathLike | StoreLocation, *, snapshot: int | None = None) -> None:
        super().__init__(path, snapshot=snapshot)
        self._local: dict[str, LocalVectors] = {}
        self._local_lock = threading.Lock()
        self._finished: dict[tuple[int, str], tuple[dict[str, Any], dict[int, int]]] = {}

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
        return dict(self._state(index_id)[0])

    def _state(self, index_id: str) -> tuple[dict[str, Any], dict[int, int]]:
        """The index's record and its chunks' winning writes (chunk_index -> write_id) at the reader's
        snapshot; cached for a finished index (two lake queries per snapshot instead of per call)."""
        with self._snapshot() as snap:
            cached = self._finished.get((snap, str(index_id)))
            if cached is not None:
                return cached
            found = self.indexes()
            match = found[found["index_id"] == str(index_id)]
            if match.empty:
                listing = ", ".join(f"{r.index_id} ({r.corpus_key}, {r.model_name}, {r.method})"
                                    for r in found.itertuples()) or "none (build one with python -m precompute index)"
                raise StoreError(f"no search index {index_id!r} in {self.location}; indexes: {listing}")
            record = clean_record(match.iloc[0].to_dict())
            wins = self._df("SELECT chunk_index, write_id FROM _index_chunks_wins WHERE index_id = $i",
                            {"i": record["index_id"]})
            state = (record, {int(k): int(w) for k, w in zip(wins["chunk_index"], wins["write_id"], strict=True)})
            if record["status"] == "done":
                self._finished = {key: v for key, v in self._finished.items() if key[0] == snap}
                self._finished[(snap, record["index_id"])] = state
            return state

    # ---- search ---------------------------------------------------------------------------------
    def local_vectors(self, index_id: str, ef_construction: int | None = None, m: int | None = None) -> LocalVectors:
        """The local copy of a finished index's embeddings, with its HNSW index when the record says ``hnsw``
        (built now when missing)."""
        record = self.index_info(index_id)
        if record["status"] != "done":
            raise StoreError(f"index {index_id} is {record['status']}: its local copy is built once it is done")
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
            passages = self._con.execute("SELECT * FROM index_passages WHERE index_id = $i", {"i": index_id}).to_arrow_table()
            batches = self._con.execute("SELECT * FROM index_windows WHERE index_id = $i",
                                        {"i": index_id}).fetch_record_batch(2048)
            out = build_vectors(path, batches, passages, int(record["dim"]), record["similarity"],
                                bool(record["hnsw"]), ef_construction, m)
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
            if record["status"] == "done":
                use = "hnsw" if record["hnsw"] and mode != "exact" else "exact"
                return self.local_vectors(index_id).search(q, n, use, ef_search), use
            return self.scan_lake(index_id, q, n, record["similarity"]), "exact"

    def scan_lake(self, index_id: str, query: np.ndarray, n: int, similarity: str) -> pd.DataFrame:
        """The exact scan in SQL over the lake's ``index_windows`` (what ``search_windows`` does for an index
        that is not finished); columns passage_id, window_index, chunk_index, score."""
        return self._df(f"""
            SELECT passage_id, window_index, chunk_index,
                   CAST({_SIMILARITY[similarity]}(embedding, $q::FLOAT[]) AS DOUBLE) AS score
            FROM index_windows WHERE index_id = $i
            ORDER BY score DESC, passage_id, window_index LIMIT {int(n)}""",
                        {"q": np.asarray(query, np.float32).reshape(-1).tolist(), "i": check_id(index_id, "index_id")})

    def explain_plan(self, index_id: str, query: np.ndarray, n: int, mode: str) -> str:
        """DuckDB's plan of a search of a finished index's local copy (tests check that HNSW is used)."""
        record, q = self._check_query(index_id, query, mode)
        return self.local_vectors(index_id).plan(q, n, "hnsw" if record["hnsw"] and mode != "exact" else "exact")

    # ---- windows and passages -------------------------------------------------------------------
    def _hit_rows(self, table: str, index_id: str, chunks: Sequence[int], passage_ids: Sequence[int]) -> pd.DataFrame:
        """The rows of ``table`` (index_windows or index_passages) of those passages in those chunks, from the
        chunks' winning writes only, read from the lake at the reader's snapshot with filters DuckLake prunes
        the other chunks' files with."""
        with self._snapshot():
            wins = self._state(index_id)[1]
            writes = [wins[k] for k in set(chunks) if k in wins]
            return self._df(f"""
                SELECT {', '.join(quote(c) for c in SCHEMA[table])}
                FROM {self._lake}.{table} AT (VERSION => getvariable('simlens_snapshot'))
                WHERE index_id = $i AND chunk_index IN {in_list(list(chunks))}
                  AND passage_id IN {in_list(list(passage_ids))} AND write_id IN {in_list(writes)}""",
                            {"i": index_id})

    def windows(self, index_id: str, keys: Sequence[tuple[int, int, int]]) -> pd.DataFrame:
        """The stored windows ``(chunk_index, passage_id, window_index)``, in that order, with every column of
        ``index_windows``, decoded: ``factor`` (n_tokens, D) and ``target`` (D,) float32 arrays."""
        if not keys:
            return pd.DataFrame(columns=list(SCHEMA["index_windows"]))
        check_id(index_id, "index_id")
        with self._snapshot():
            record = self.index_info(index_id)
            dim = int(record["dim"])
            if record["status"] == "done":  # the local copy holds them
                rows = self.local_vectors(index_id).windows(index_id, [k[1] for k in keys])
            else:
                rows = self._hit_rows("index_windows", index_id, [k[0] for k in keys], [k[1] for k in keys])
        wanted = pd.DataFrame([[int(v) for v in k] for k in keys], columns=_WINDOW_KEY)
        df = wanted.merge(rows.astype(dict.fromkeys(_WINDOW_KEY, "int64")), on=_WINDOW_KEY)[list(SCHEMA["index_windows"])]
        df["factor"] = [decode_matrix(b, "<f2", (int(n), dim)) for b, n in zip(df["factor"], df["n_tokens"], strict=True)]
        df["target"] = [decode_matrix(b, "<f4", (dim,)) for b in df["target"]]
        df["embedding"] = [np.asarray(e, dtype=np.float32) for e in df["embedding"]]
        return df

    def passages(self, index_id: str, passage_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Passages of an index (all, or those ids in the order given)."""
        check_id(index_id, "index_id")
        if passage_ids is None:
            return self._df("SELECT * FROM index_passages WHERE index_id = $i ORDER BY passage_id", {"i": index_id})
        ids = [int(p) for p in passage_ids]
        with self._snapshot():
            record = self.index_info(index_id)
            if record["status"] == "done":  # the local copy holds them
                rows = self.local_vectors(index_id).passages(ids)
            else:
                size = int(record["chunk_size"])
                rows = self._hit_rows("index_passages", index_id, [p // size for p in ids], ids)
        order = pd.DataFrame({"passage_id": ids})
        return order.merge(rows.astype({"passage_id": "int64"}), on="passage_id")[list(SCHEMA["index_passages"])]

    def all_embeddings(self, index_id: str) -> pd.DataFrame:
        """Every window's (passage_id, window_index, embedding) (tests compare searches with numpy)."""
        df = self._df("SELECT passage_id, window_index, embedding FROM index_windows WHERE index_id = $i "
                      "ORDER BY passage_id, window_index", {"i": check_id(index_id, "index_id")})
        df["embedding"] = [np.asarray(e, dtype=np.float32) for e in df["embedding"]]
        return df
