"""Search benchmark: a real index of STS-b, and exact scan against HNSW on synthetic unit vectors.

    python bench/bench_search.py [--datasets stsb:train,stsb:dev,stsb:test] [--queries 50] [--store DIR]
    python bench/bench_search.py --skip-real --synthetic 100000,1000000 [--ef-construction 128]

Real part: every distinct sentence of the datasets indexed with all-MiniLM-L6-v2 (bilrp) through the CLI's code
path (build time, size on disk), then ``--queries`` SICK test sentences as queries: latency of a top-10 search
with explanations (query encoding, search in DuckDB, the ten hits' matrices from stored factors), median and p95.
Synthetic part: N random unit vectors (D = 384) in an index's vectors table; exact scan against the HNSW index
(DuckDB vss), latency and recall@10 of HNSW against exact, for random queries and for queries near stored vectors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store.index import IndexStore, IndexWriter, _index_dir, _write_parquet  # noqa: E402

DIM = 384


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stats(values: list[float]) -> dict[str, float]:
    return {"median ms": 1000 * float(np.median(values)), "p95 ms": 1000 * float(np.percentile(values, 95))}


def real_index(datasets: list[str], n_queries: int, store: Path) -> None:
    from core import load_model
    from core.datasets import load_dataset
    from core.search import search_index
    from precompute.index import build_index, dataset_corpus

    model = load_model("all-MiniLM-L6-v2", device="cpu")
    corpus = dataset_corpus(datasets)
    start = time.perf_counter()
    result = build_index(model, corpus, store, method="bilrp", progress=True)
    build = time.perf_counter() - start
    reader = IndexStore(store)
    info = reader.index_info(result.index_id)
    size = folder_bytes(_index_dir(store, result.index_id))
    print(f"\nindex of {corpus.key}: {info['n_passages']:,} distinct sentences, {info['n_windows']:,} windows; "
          f"built in {build:.0f} s ({result.passages_written:,} written in this call, "
          f"{info['seconds']:.0f} s compute over all attempts); {size / 1e6:.1f} MB on disk "
          f"({size / info['n_windows'] / 1e3:.1f} kB per window)\n")
    queries = list(dict.fromkeys(load_dataset("sick:test").frame["sentence1"]))[: n_queries + 1]
    cold = search_index(model, reader, result.index_id, queries[0], k=10).seconds["total"]
    parts: dict[str, list[float]] = {"total": [], "encode": [], "search": [], "explain": []}
    for q in queries[1:]:
        s = search_index(model, reader, result.index_id, q, k=10).seconds
        for key in parts:
            parts[key].append(s[key])
    rows = [{"part": k, **stats(v)} for k, v in parts.items()]
    print(f"top-10 with explanations over {len(parts['total'])} SICK test queries (first query, excluded: "
          f"{cold * 1000:.0f} ms)\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))


def synthetic_index(store: Path, n: int, seed: int = 0) -> str:
    """An index record plus chunk files holding only (passage_id, window_index, embedding) of ``n`` random unit
    vectors: what the vectors table and the searches read (no factors, no passages' texts of interest)."""
    writer = IndexWriter(store)
    chunk = 100_000
    index_id = f"synthetic{n}"
    record = {"index_id": index_id, "corpus_key": f"synthetic:{n}", "corpus_source": "random", "corpus_hash": "",
              "model_id": "synthetic", "model_name": "synthetic", "model_path": "", "similarity": "cosine",
              "dim": DIM, "method": "bilrp", "layer": 0, "prompt": "", "query_prompt": "", "window_tokens": 1,
              "window_overlap": 0, "n_passages": n, "chunk_size": chunk, "n_chunks": (n + chunk - 1) // chunk}
    passages = pd.DataFrame({"passage_id": np.arange(n, dtype=np.int32), "text": "", "dataset_key": None,
                             "pair_id": None, "side": None, "source_row": None, "occurrences": 1})
    writer.start_index(record, passages, force=True)
    rng = np.random.default_rng(seed)
    for k in range(record["n_chunks"]):
        m = min(chunk, n - k * chunk)
        x = rng.normal(size=(m, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        table = pa.table({"passage_id": pa.array(np.arange(k * chunk, k * chunk + m, dtype=np.int32)),
                          "window_index": pa.array(np.zeros(m, dtype=np.int16)),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)})
        directory = _index_dir(store, index_id) / f"chunk={k:06d}"
        directory.mkdir()
        _write_parquet(table, directory / "windows.0000abcd.parquet")
    return index_id


def synthetic(sizes: list[int], n_queries: int, ef_construction: int | None, ef_search: list[int]) -> None:
    rows = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
        try:
            store = tmp / "store"
            index_id = synthetic_index(store, n)
            writer = IndexWriter(store)
            t0 = time.perf_counter()
            writer.build_vectors(index_id, hnsw=False)
            table_s = time.perf_counter() - t0
            exact_reader = IndexStore(store)
            rng = np.random.default_rng(1)
            random_q = rng.normal(size=(n_queries, DIM))
            g = np.random.default_rng(0)  # the first stored vectors, drawn again from the same seed
            stored = g.normal(size=(n_queries, DIM)).astype(np.float32)
            stored /= np.linalg.norm(stored, axis=1, keepdims=True)
            near_q = stored + 0.5 * rng.normal(size=stored.shape) / np.sqrt(DIM)
            exact: dict[str, list[set]] = {}
            for name, qs in (("random", random_q), ("near a stored vector", near_q)):
                times, found = [], []
                for q in qs:
                    t = time.perf_counter()
                    df, _ = exact_reader.search_windows(index_id, q, 10, mode="exact")
                    times.append(time.perf_counter() - t)
                    found.append(set(df["passage_id"]))
                exact[name] = found
                rows.append({"vectors": n, "search": "exact scan", "queries": name, **stats(times), "recall@10": 1.0})
            exact_reader.close()
            t0 = time.perf_counter()
            writer.build_vectors(index_id, hnsw=True, ef_construction=ef_construction)
            hnsw_s = time.perf_counter() - t0
            print(f"{n:,} vectors: vectors table {table_s:.0f} s; with HNSW index {hnsw_s:.0f} s "
                  f"(ef_construction {ef_construction or 'default 128'}, M 16); "
                  f"vectors.duckdb {(_index_dir(store, index_id) / 'vectors.duckdb').stat().st_size / 1e6:.0f} MB",
                  flush=True)
            reader = IndexStore(store)
            t0 = time.perf_counter()
            reader.search_windows(index_id, random_q[0], 10, mode="hnsw")
            print(f"  first HNSW query (loads the index): {time.perf_counter() - t0:.1f} s", flush=True)
            for ef in ef_search:
                for name, qs in (("random", random_q), ("near a stored vector", near_q)):
                    times, recall = [], []
                    for q, truth in zip(qs, exact[name], strict=True):
                        t = time.perf_counter()
                        df, _ = reader.search_windows(index_id, q, 10, mode="hnsw", ef_search=ef)
                        times.append(time.perf_counter() - t)
                        recall.append(len(set(df["passage_id"]) & truth) / 10)
                    rows.append({"vectors": n, "search": f"HNSW ef_search={ef}", "queries": name, **stats(times),
                                 "recall@10": float(np.mean(recall))})
            reader.close()
            print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="stsb:train,stsb:dev,stsb:test")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--store", default=None, help="keep the real index here (default: a temporary folder)")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--synthetic", default="1000000", help="sizes of the synthetic indexes ('' for none)")
    parser.add_argument("--ef-construction", type=int, default=None)
    parser.add_argument("--ef-search", default="64,256")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not args.skip_real:
        with tempfile.TemporaryDirectory() as tmp:
            real_index(args.datasets.split(","), args.queries, Path(args.store or Path(tmp) / "store"))
    sizes = [int(s) for s in args.synthetic.split(",") if s.strip()]
    if sizes:
        synthetic(sizes, args.queries, args.ef_construction, [int(e) for e in args.ef_search.split(",")])


if __name__ == "__main__":
    main()
