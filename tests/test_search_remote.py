"""A search index in a store on a PostgreSQL catalog with its data on S3 (the servers of
tests/test_store_remote.py): an interrupted build resumes with exactly the missing chunks, searches equal a
brute-force numpy search, and an HNSW index is built in the local cache from the remote lake."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from test_store_remote import postgres, s3  # noqa: F401  (fixtures: the servers)

from core.search import exact_top_k, search_index
from core.store.index_search import IndexStore
from core.store.index_vectors import CACHE_ENV
from precompute.index import build_index, file_corpus


class _Stop(KeyboardInterrupt):
    """Ctrl-C after some chunks (an interrupted build)."""


@pytest.mark.slow
def test_an_index_in_a_postgres_catalog_store_with_s3_data(postgres, s3, tiny_models, tmp_path, monkeypatch):  # noqa: F811
    import boto3

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    store = (f"ducklake:postgres:dbname=postgres host=127.0.0.1 port={postgres} user=postgres "
             f"data_path=s3://simlens/lake/")
    model = tiny_models["bert"]
    texts = pd.read_csv(ROOT / "data" / "demo_pairs.tsv", sep="\t")["sentence1"].head(15).tolist()
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    corpus = file_corpus(tmp_path / "c.txt")

    def stop_after_two(done: int, total: int) -> None:
        if done >= 10:
            raise _Stop

    settings = {"chunk_size": 5, "window_tokens": 6, "window_overlap": 2}  # > 10 windows a chunk: not inlined

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(_Stop):
            build_index(model, corpus, store, progress=stop_after_two, **settings)
        with IndexStore(store) as reader:
            (info,) = reader.indexes().to_dict("records")
            assert info["status"] == "running" and info["chunks_present"] == 2  # this process is alive
        result = build_index(model, corpus, store, progress=False, hnsw=True, **settings)
    assert result.passages_written == len(texts) - 10
    with IndexStore(store) as reader:
        info = reader.index_info(result.index_id)
        assert info["status"] == "done" and info["chunks_present"] == info["n_chunks"] == 3 and info["hnsw"]
        assert reader.passages(result.index_id)["text"].tolist() == list(dict.fromkeys(texts))
        emb = reader.all_embeddings(result.index_id)
        assert emb["window_index"].max() > 0  # passages cut into windows
        assert not emb.duplicated(["passage_id", "window_index"]).any()
        matrix = np.stack(emb["embedding"].to_numpy())
        for mode in ("exact", "hnsw"):
            found = search_index(model, reader, result.index_id, "A man is playing a guitar.", k=5, mode=mode)
            ref = exact_top_k(found.query_factors.embedding, matrix, emb["passage_id"], emb["window_index"],
                              "cosine", 5)
            assert [h.passage_id for h in found.hits] == [h.passage_id for h in ref]
            assert all(h.explanation is not None for h in found.hits)
        assert list((tmp_path / "cache").glob(f"{result.index_id}-*.duckdb"))  # the local HNSW copy
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="simlens")["Contents"]]
    assert any("index_windows" in k and k.endswith(".parquet") for k in keys)  # the windows really are on S3
