"""Search indexes in store maintenance: merging stores built apart copies their indexes exactly once (a search
in the merged store equals the search in the source; merging twice changes nothing), compact deletes the losing
writes of index chunks, and the HNSW path (DuckDB vss) is the plan's index scan with high recall near stored
vectors."""

from __future__ import annotations

import warnings
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from core.search import exact_top_k, search_index
from core.store import StoreError, compact, merge_stores
from core.store.catalog import transaction
from core.store.index_search import IndexStore
from core.store.index_writer import IndexWriter
from core.store.schema import INDEX_CHUNK_TABLES
from precompute import cli
from precompute.index import build_index, dataset_corpus

INDEX_TABLES = ("indexes", "index_chunks", *INDEX_CHUNK_TABLES)


def _raw_counts(store) -> dict[str, int]:
    """Rows of the index tables as stored (every write, losing ones included)."""
    with IndexWriter(store) as w:
        return {t: int(w._con.execute(f"SELECT count(*) FROM {w._lake}.{t}").fetchone()[0]) for t in INDEX_TABLES}


def _vector_index(index_id: str, n: int, dim: int, chunk: int, similarity: str = "cosine") -> dict:
    return {"index_id": index_id, "corpus_key": f"vectors:{n}", "model_id": "toy", "model_name": "toy",
            "similarity": similarity, "dim": dim, "method": "bilrp", "layer": 0, "n_passages": n, "chunk_size": chunk,
            "n_chunks": (n + chunk - 1) // chunk}


def _vector_chunk(x: np.ndarray, lo: int, hi: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Passages [lo, hi) with one window each: embedding x[i], a one-token factor."""
    ids = np.arange(lo, hi)
    passages = pd.DataFrame({"passage_id": ids, "text": [f"text {i}" for i in ids], "occurrences": 1})
    windows = pd.DataFrame({"passage_id": ids, "window_index": 0, "n_tokens": 1, "tokens": [["t"]] * len(ids),
                            "embedding": list(x[lo:hi]), "factor": [x[i : i + 1] for i in ids],
                            "target": list(x[lo:hi])})
    return passages, windows


def _write_chunks(writer: IndexWriter, record: dict, x: np.ndarray, chunks) -> None:
    c = record["chunk_size"]
    for k in chunks:
        writer.write_chunk(record["index_id"], k, *_vector_chunk(x, k * c, min((k + 1) * c, record["n_passages"])))


def _second_write(writer: IndexWriter, index_id: str, k: int) -> None:
    """Chunk k committed once more with other rows (what two writers whose checks raced on a catalog leave)."""
    def again(con):
        for t in ("index_passages", "index_windows", "index_chunks"):
            con.execute(f"INSERT INTO {writer._lake}.{t} SELECT * REPLACE (write_id + 1 AS write_id"
                        + (", list_transform(embedding, v -> -v) AS embedding" if t == "index_windows" else "")
                        + f") FROM {writer._lake}.{t} WHERE index_id = $i AND chunk_index = $k", {"i": index_id, "k": k})

    transaction(writer._con, again, "duplicate")


# --------------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------------


def _searches(store, index_ids: list[str], model, queries: list[str]) -> list:
    out = []
    with IndexStore(store) as reader:
        for index_id in index_ids:
            info = reader.index_info(index_id)
            out.append({k: v for k, v in info.items() if k != "chunks_present"} | {"chunks": info["chunks_present"]})
            for q in queries:
                for mode in ("auto", "exact"):
                    r = search_index(model, reader, index_id, q, k=6, mode=mode)
                    out.append([(h.passage_id, h.window_index, h.chunk_index, round(h.score, 6), h.passage,
                                 h.explanation.matrix.round(6).tolist()) for h in r.hits])
    return out


def test_merge_copies_indexes_and_the_merged_store_searches_like_its_sources(tmp_path, tiny_models):
    model = tiny_models["bert"]
    corpus = dataset_corpus([str(ROOT / "data" / "demo_pairs.tsv")])
    a, c, dest = tmp_path / "a", tmp_path / "c", tmp_path / "dest"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        windowed = build_index(model, corpus, a, window_tokens=8, window_overlap=3, chunk_size=16, progress=False,
                               hnsw=True).index_id
        plain = build_index(model, corpus, c, chunk_size=16, progress=False).index_id
    queries = ["A man is playing a guitar.", corpus.passages["text"].iloc[5]]
    expected = _searches(a, [windowed], model, queries) + _searches(c, [plain], model, queries)
    counts = merge_stores([a, c], dest)
    assert counts["indexes_copied"] == 2 and counts["index_chunks_copied"] == 8 and counts["index_chunks_skipped"] == 0
    assert _searches(dest, [windowed, plain], model, queries) == expected  # HNSW, exact and the lake scan alike
    before = _raw_counts(dest)
    again = merge_stores([a, c], dest)  # merging twice changes nothing
    assert again["indexes_copied"] == again["index_chunks_copied"] == 0
    assert again["indexes_skipped"] == 2 and again["index_chunks_skipped"] == 8
    assert _raw_counts(dest) == before
    assert _searches(dest, [windowed, plain], model, queries) == expected


def test_merge_of_an_index_built_apart_copies_each_chunks_winning_write_once(tmp_path):
    """Chunk 0 written in store A (twice: the losing write must not travel), chunk 1 in store B; the merged
    store holds both chunks once, and the index finishes there with no chunk to compute."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    record = _vector_index("ixhalves", 6, 4, 3, "dot")
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "dest"
    for store, chunks in ((a, [0]), (b, [1])):
        with IndexWriter(store) as w:
            w.put_model({"model_id": "toy", "name": "toy"})
            w.start_index(record)
            _write_chunks(w, record, x, chunks)
            if store == a:
                _second_write(w, "ixhalves", 0)
    counts = merge_stores([a, b], dest)
    assert (counts["index_chunks_copied"], counts["indexes_copied"]) == (2, 1)
    assert _raw_counts(dest) == {"indexes": 1, "index_chunks": 2, "index_passages": 6, "index_windows": 6}
    with IndexWriter(dest) as w:
        assert w.pending_chunks("ixhalves") == []
        w.finish_index("ixhalves", 0.0)
    with IndexStore(dest) as reader:
        assert reader.index_info("ixhalves")["status"] == "done"
        emb = reader.all_embeddings("ixhalves")
        np.testing.assert_array_equal(np.stack(emb["embedding"]), x)  # the first write of chunk 0, not its negation
    assert merge_stores([a, b], dest)["index_chunks_copied"] == 0

    other = tmp_path / "other"  # the same index id with another layout: refused before anything is copied
    with IndexWriter(other) as w:
        w.put_model({"model_id": "toy", "name": "toy"})
        w.start_index({**record, "chunk_size": 2, "n_chunks": 3})
    before = _raw_counts(dest)
    with pytest.raises(StoreError, match="conflicting records of index ixhalves: chunk_size=3 in .* vs 2 in"):
        merge_stores([other], dest)
    assert _raw_counts(dest) == before


# --------------------------------------------------------------------------------------------------
# compact
# --------------------------------------------------------------------------------------------------


def test_compact_deletes_the_losing_writes_of_index_chunks_and_searches_stay(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    record = _vector_index("ixraced", 9, 4, 3, "dot")
    store = tmp_path / "store"
    with IndexWriter(store) as w:
        w.put_model({"model_id": "toy", "name": "toy"})
        w.start_index(record)
        _write_chunks(w, record, x, range(3))
        _second_write(w, "ixraced", 1)
        _second_write(w, "ixraced", 2)
        w.finish_index("ixraced", 0.0)
    queries = rng.normal(size=(5, 4))

    def searches():
        with IndexStore(store) as reader:
            return [reader.search_windows("ixraced", q, 4)[0].to_dict("list") for q in queries], \
                reader.all_embeddings("ixraced")["embedding"].map(list).tolist()

    seen = searches()
    assert np.allclose(seen[1], x)
    raw = _raw_counts(store)
    assert cli.main(["compact", "--store", str(store), "--dry-run"]) == 0
    assert "would delete" in capsys.readouterr().out
    report = compact(store, dry_run=True)
    assert {t: report.hidden_rows[t] for t in INDEX_TABLES[1:]} == \
        {"index_chunks": 2, "index_passages": 6, "index_windows": 6}
    assert "index_windows 6" in report.lines()[0] and _raw_counts(store) == raw  # the dry run changes nothing
    compact(store, keep=timedelta(0))
    assert _raw_counts(store) == {"indexes": 1, "index_chunks": 3, "index_passages": 9, "index_windows": 9}
    assert searches() == seen
    assert sum(compact(store, dry_run=True).hidden_rows[t] for t in INDEX_TABLES[1:]) == 0


# --------------------------------------------------------------------------------------------------
# HNSW
# --------------------------------------------------------------------------------------------------


def test_hnsw_is_the_plans_index_scan_and_finds_the_neighbours_of_near_queries(tmp_path):
    """3,000 unit vectors in 60 clusters (D = 32, cosine): queries near stored vectors find their exact top 10
    through the HNSW index scan with recall >= 0.9 (the exact mode is exact), whatever ef_search an earlier
    search set."""
    rng = np.random.default_rng(2)
    n, dim = 3000, 32
    centres = rng.normal(size=(60, dim))
    x = centres[rng.integers(0, 60, n)] + 0.35 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    record = _vector_index("ixhnsw", n, dim, 1000)
    store = tmp_path / "store"
    with IndexWriter(store) as w:
        w.put_model({"model_id": "toy", "name": "toy"})
        w.start_index(record)
        _write_chunks(w, record, x, range(3))
        w.finish_index("ixhnsw", 0.0, hnsw=True)
    picks = rng.choice(n, 30, replace=False)
    queries = x[picks] + 0.1 * rng.normal(size=(30, dim)) / np.sqrt(dim)
    ids = np.arange(n)
    with IndexStore(store) as reader:
        plan = reader.explain_plan("ixhnsw", queries[0], 10, "hnsw")
        assert "HNSW_INDEX_SCAN" in plan and "SEQ_SCAN" not in plan
        assert "HNSW_INDEX_SCAN" not in reader.explain_plan("ixhnsw", queries[0], 10, "exact")
        recall = []
        for i, q in enumerate(queries):
            truth = exact_top_k(q, x, ids, np.zeros(n), "cosine", 10)
            exact, _ = reader.search_windows("ixhnsw", q, 10, mode="exact")
            assert exact["passage_id"].tolist() == [h.passage_id for h in truth]
            got, used = reader.search_windows("ixhnsw", q, 10, mode="hnsw", ef_search=8 if i == 0 else None)
            assert used == "hnsw" and len(got) == 10
            sims = x[got["passage_id"]] @ q / np.linalg.norm(q)
            np.testing.assert_allclose(got["score"], sims, atol=1e-5)  # the scores are the true similarities
            if i:
                recall.append(len(set(got["passage_id"]) & {h.passage_id for h in truth}) / 10)
                assert got["passage_id"].iloc[0] == picks[i]  # the stored vector the query was drawn near
    assert np.mean(recall) >= 0.9
