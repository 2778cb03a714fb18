"""Search benchmark: a real index of STS-b, and exact scan against HNSW on synthetic unit vectors.

    python bench/bench_search.py [--datasets stsb:train,stsb:dev,stsb:test] [--queries 50] [--store DIR]
    python bench/bench_search.py --skip-real --synthetic 100000,1000000 --hnsw-max 100000 [--ef-construction 128]
    python bench/bench_search.py --skip-real --synthetic '' --shaped   # latency at STS-b's size, random factors

Real part: every distinct sentence of the datasets indexed with all-MiniLM-L6-v2 (bilrp) through the CLI's code
path (build time, size in the lake, its local copy), then ``--queries`` SICK test sentences as queries: latency
of a top-10 search with explanations (query encoding, the search in the index's local copy, the ten hits'
matrices from stored factors), median and p95; then recall@10 and latency of an HNSW index of the same
embeddings against the exact scan, for the same queries.
Synthetic part: N random unit vectors (D = 384) written into an index through the index writer (one-token
zero factors: the searches read only the embeddings); the exact scan (in the lake, and in the local copy)
against the HNSW index of the local copy (DuckDB vss; only for N up to ``--hnsw-max``): latency, recall@10 of
HNSW against exact, for random queries and for queries near stored vectors (with how often the stored vector
is the first hit).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store.index_search import IndexStore  # noqa: E402
from core.store.index_writer import IndexWriter  # noqa: E402

DIM = 384
INDEX_TABLES = ("indexes", "index_chunks", "index_passages", "index_windows")


def index_bytes(reader: IndexStore) -> int:
    """Bytes of the index tables' data files in the store (every index in it)."""
    summary = reader.summary().set_index("table")
    return int(summary.loc[list(INDEX_TABLES), "bytes"].sum())


def stats(values: list[float]) -> dict[str, float]:
    return {"median ms": 1000 * float(np.median(values)), "p95 ms": 1000 * float(np.percentile(values, 95))}


def real_index(datasets: list[str], n_queries: int, store: Path) -> None:
    from core import load_model
    from core.datasets import load_dataset
    from precompute.index import build_index, dataset_corpus

    model = load_model("all-MiniLM-L6-v2", device="cpu")
    corpus = dataset_corpus(datasets)
    start = time.perf_counter()
    result = build_index(model, corpus, store, method="bilrp", progress=True)
    build = time.perf_counter() - start
    with IndexStore(store) as reader:
        info = reader.index_info(result.index_id)
        size = index_bytes(reader)
        local = reader.build_local_vectors(result.index_id)  # what the build's end (or a first search) does
        print(f"\nindex of {corpus.key}: {info['n_passages']:,} distinct sentences, {info['n_windows']:,} windows; "
              f"built in {build:.0f} s in this call ({result.passages_written:,} texts written; "
              f"{info['seconds']:.0f} s compute over all attempts); index tables {size / 1e6:.1f} MB of Parquet "
              f"in the lake ({size / info['n_windows'] / 1e3:.1f} kB per window); local copy {local['bytes'] / 1e6:.1f} "
              f"MB, built in {local['seconds_table']:.1f} s; {'HNSW' if info['hnsw'] else 'exact scan'}\n", flush=True)
        queries = list(dict.fromkeys(load_dataset("sick:test").frame["sentence1"]))[: n_queries + 1]
        cold, rows, found = query_latency(model, reader, result.index_id, queries)
        embeddings = [f.query_factors.embedding for f in found]
        exact = [set(reader.search_windows(result.index_id, e, 10, mode="exact")[0]["passage_id"]) for e in embeddings]
        hnsw_rows = real_hnsw(reader, result.index_id, embeddings, exact)
    print(f"top-10 with explanations over {len(found)} SICK test queries (first query, excluded: "
          f"{cold * 1000:.0f} ms)\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"), flush=True)
    print("\nHNSW on the real embeddings (a copy of the index's local file with an HNSW index; recall@10 of the "
          "same queries against the exact scan)\n")
    print(pd.DataFrame(hnsw_rows).to_markdown(index=False, floatfmt=".3g"), flush=True)


def real_hnsw(reader: IndexStore, index_id: str, embeddings: list[np.ndarray], exact: list[set]) -> list[dict]:
    """Build an HNSW index of the real index's embeddings (a temporary file) and measure recall@10 against
    the exact top 10 and latency, for two ef_search values."""
    from core.store.index_vectors import LocalVectors, build_vectors

    record = reader.index_info(index_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "real_hnsw.duckdb"
        with reader._snapshot():
            passages = reader._con.execute("SELECT * FROM index_passages WHERE index_id = $i",
                                           {"i": index_id}).to_arrow_table()
            batches = reader._con.execute("SELECT * FROM index_windows WHERE index_id = $i",
                                          {"i": index_id}).fetch_record_batch(2048)
            built = build_vectors(path, batches, passages, int(record["dim"]), record["similarity"], hnsw=True)
        vectors = LocalVectors(path, int(record["dim"]), record["similarity"])
        rows = []
        for ef in (64, 256):
            times, recall = [], []
            for e, truth in zip(embeddings, exact, strict=True):
                t = time.perf_counter()
                got = vectors.search(e, 10, "hnsw", ef)
                times.append(time.perf_counter() - t)
                recall.append(len(set(got["passage_id"]) & truth) / 10)
            rows.append({"windows": built["windows"], "HNSW build s": built["seconds_hnsw"], "ef_search": ef,
                         **stats(times), "recall@10": float(np.mean(recall))})
        vectors.close()
    return rows


def query_latency(model, reader: IndexStore, index_id: str, queries: list[str]) -> tuple[float, list[dict], list]:
    """Top-10 searches with explanations: the first query's total seconds (cold: the local copy opened), the
    median and p95 of each part over the other queries (wall clock, and the process's CPU time per query: on
    a shared machine the wall clock also counts the waits for a core), and their results."""
    from core.search import search_index

    cold = search_index(model, reader, index_id, queries[0], k=10).seconds["total"]
    parts: dict[str, list[float]] = {"total": [], "encode": [], "search": [], "explain": [], "CPU time, total": []}
    found = []
    for q in queries[1:]:
        c0 = time.process_time()
        result = search_index(model, reader, index_id, q, k=10)
        parts["CPU time, total"].append(time.process_time() - c0)
        for key in ("total", "encode", "search", "explain"):
            parts[key].append(result.seconds[key])
        found.append(result)
    return cold, [{"part": k, **stats(v)} for k, v in parts.items()], found


def shaped_latency(datasets: list[str], n_queries: int, store: Path) -> None:
    """Query latency at the real index's size while its build cannot finish (a loaded machine): an index with
    one window per distinct sentence of ``datasets``, each with that sentence's MiniLM token count, a random unit
    embedding and a random float16 factor, under MiniLM's model id, so that ``search_index`` runs its whole
    real path (MiniLM encodes the query and computes its factor, the exact scan in the lake, the ten hits'
    windows read and explained). The hits are meaningless; the timings are those of the real index's sizes."""
    from core import load_model
    from core.datasets import load_dataset
    from precompute.index import DEFAULT_CHUNK_SIZE, dataset_corpus

    model = load_model("all-MiniLM-L6-v2", device="cpu")
    texts = dataset_corpus(datasets).passages["text"].tolist()
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    n, chunk, rng = len(texts), DEFAULT_CHUNK_SIZE, np.random.default_rng(0)  # chunks as the real build cuts them
    record = {"index_id": "ixshaped", "corpus_key": "shaped:" + "+".join(datasets), "model_id": model.model_id,
              "model_name": model.name, "model_path": str(model.path), "similarity": model.similarity,
              "dim": model.hidden_size, "method": "bilrp", "layer": 0, "prompt": "", "query_prompt": "",
              "window_tokens": 254, "window_overlap": 32, "n_passages": n, "chunk_size": chunk,
              "n_chunks": (n + chunk - 1) // chunk}
    with IndexWriter(store) as writer:
        writer.put_model({"model_id": model.model_id, "name": model.name})
        writer.start_index(record, force=True)
        for k in range(record["n_chunks"]):
            ids = np.arange(k * chunk, min((k + 1) * chunk, n))
            x = rng.normal(size=(len(ids), DIM)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            toks = [lengths[i] for i in ids]
            passages = pd.DataFrame({"passage_id": ids, "text": [texts[i] for i in ids], "occurrences": 1})
            windows = pd.DataFrame({
                "passage_id": ids, "window_index": 0, "char_start": 0, "char_end": [len(texts[i]) for i in ids],
                "n_tokens": toks, "tokens": [["t"] * t for t in toks], "token_start": [[0] * t for t in toks],
                "token_end": [[0] * t for t in toks], "special": [[False] * t for t in toks],
                "word_ids": [[0] * t for t in toks], "embedding": list(x),
                "factor": [rng.normal(size=(t, DIM)).astype(np.float16).tobytes() for t in toks],
                "target": [x[j].tobytes() for j in range(len(ids))], "scale": 1.0, "truncated": False})
            writer.write_chunk("ixshaped", k, passages, windows)
        writer.finish_index("ixshaped", 0.0)
    queries = list(dict.fromkeys(load_dataset("sick:test").frame["sentence1"]))[: n_queries + 1]
    with IndexStore(store) as reader:
        size = index_bytes(reader)
        cold, rows, found = query_latency(model, reader, "ixshaped", queries)
    print(f"\nindex shaped like {'+'.join(datasets)}: {n:,} windows of {np.mean(lengths):.1f} tokens on average, "
          f"{size / 1e6:.1f} MB of Parquet; top-10 with explanations over {len(found)} SICK test queries (first "
          f"query, excluded: {cold * 1000:.0f} ms)\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"), flush=True)


def synthetic_index(store: Path, n: int, seed: int = 0, chunk: int = 50_000, hnsw: bool = True) -> str:
    """An index of ``n`` random unit vectors (D = 384) written through the index writer, one window per
    passage with a one-token zero factor (the searches read only the embeddings)."""
    index_id = f"synthetic{n}"
    record = {"index_id": index_id, "corpus_key": f"synthetic:{n}", "corpus_source": "random", "corpus_hash": "",
              "model_id": "synthetic", "model_name": "synthetic", "model_path": "", "similarity": "cosine",
              "dim": DIM, "method": "bilrp", "layer": 0, "prompt": "", "query_prompt": "", "window_tokens": 1,
              "window_overlap": 0, "n_passages": n, "chunk_size": chunk, "n_chunks": (n + chunk - 1) // chunk}
    rng = np.random.default_rng(seed)
    zero = np.zeros((1, DIM), np.float16).tobytes()
    with IndexWriter(store) as writer:
        writer.put_model({"model_id": "synthetic", "name": "synthetic"})
        writer.start_index(record, force=True)
        for k in range(record["n_chunks"]):
            m = min(chunk, n - k * chunk)
            x = rng.normal(size=(m, DIM)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            ids = np.arange(k * chunk, k * chunk + m, dtype=np.int32)
            passages = pd.DataFrame({"passage_id": ids, "text": "", "occurrences": 1})
            windows = pd.DataFrame({"passage_id": ids, "window_index": 0, "char_start": 0, "char_end": 0,
                                    "n_tokens": 1, "tokens": [["x"]] * m, "embedding": list(x), "factor": zero,
                                    "scale": 1.0, "truncated": False})
            writer.write_chunk(index_id, k, passages, windows)
        writer.finish_index(index_id, 0.0, hnsw=hnsw)
    return index_id


def synthetic(sizes: list[int], n_queries: int, ef_construction: int | None, ef_search: list[int],
              hnsw_max: int) -> None:
    """Exact scans (lake, local copy) against HNSW (indexes of at most ``hnsw_max`` vectors) on random unit
    vectors: latency, recall@10 against the exact top 10, and how often the first hit of a query drawn near a
    stored vector is that vector."""
    rows = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
        try:
            store = tmp / "store"
            t0 = time.perf_counter()
            index_id = synthetic_index(store, n, hnsw=n <= hnsw_max)
            written = time.perf_counter() - t0
            reader = IndexStore(store)
            built = reader.build_local_vectors(index_id, ef_construction=ef_construction)
            print(f"{n:,} vectors: written to the lake in {written:.0f} s ({index_bytes(reader) / 1e6:.0f} MB); "
                  f"local copy {built['seconds_table']:.0f} s" + (
                      f", HNSW index {built['seconds_hnsw']:.0f} s ({n / built['seconds_hnsw']:.0f} vectors/s; "
                      f"ef_construction {ef_construction or 'default 128'}, M 16)" if n <= hnsw_max else
                      f", no HNSW index (over --hnsw-max {hnsw_max:,})") + f"; local file {built['bytes'] / 1e6:.0f} MB",
                  flush=True)
            rng = np.random.default_rng(1)
            random_q = rng.normal(size=(n_queries, DIM))
            g = np.random.default_rng(0)  # the first stored vectors, drawn again from the same seed
            stored = g.normal(size=(n_queries, DIM)).astype(np.float32)
            stored /= np.linalg.norm(stored, axis=1, keepdims=True)
            near_q = stored + 0.1 * rng.normal(size=stored.shape) / np.sqrt(DIM)  # cosine about 0.995 to it
            sets = (("random", random_q), ("near a stored vector", near_q))
            exact: dict[str, list[set]] = {}
            for name, qs in sets:
                times, found, lake, first = [], [], [], []
                for i, q in enumerate(qs):
                    t = time.perf_counter()
                    df, _ = reader.search_windows(index_id, q, 10, mode="exact")
                    times.append(time.perf_counter() - t)
                    found.append(set(df["passage_id"]))
                    first.append(int(df["passage_id"].iloc[0]) == i)
                    if i < 5:  # the scan in the lake (what an unfinished index uses) is slow at this size
                        t = time.perf_counter()
                        assert set(reader.scan_lake(index_id, q, 10, "cosine")["passage_id"]) == found[-1]
                        lake.append(time.perf_counter() - t)
                exact[name] = found
                near = name != "random"
                rows.append({"vectors": n, "search": "exact scan, lake (5 queries)", "queries": name, **stats(lake),
                             "recall@10": 1.0, "stored vector first": np.mean(first[:5]) if near else None})
                rows.append({"vectors": n, "search": "exact scan, local copy", "queries": name, **stats(times),
                             "recall@10": 1.0, "stored vector first": np.mean(first) if near else None})
            for ef in ef_search if n <= hnsw_max else ():
                for name, qs in sets:
                    times, recall, first = [], [], []
                    for i, (q, truth) in enumerate(zip(qs, exact[name], strict=True)):
                        t = time.perf_counter()
                        df, _ = reader.search_windows(index_id, q, 10, mode="hnsw", ef_search=ef)
                        times.append(time.perf_counter() - t)
                        recall.append(len(set(df["passage_id"]) & truth) / 10)
                        first.append(int(df["passage_id"].iloc[0]) == i)
                    rows.append({"vectors": n, "search": f"HNSW ef_search={ef}", "queries": name, **stats(times),
                                 "recall@10": float(np.mean(recall)),
                                 "stored vector first": np.mean(first) if name != "random" else None})
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
    parser.add_argument("--shaped", action="store_true", help="query latency on an index shaped like the real one "
                                                              "(random factors; when the real build cannot finish)")
    parser.add_argument("--synthetic", default="1000000", help="sizes of the synthetic indexes ('' for none)")
    parser.add_argument("--ef-construction", type=int, default=None)
    parser.add_argument("--ef-search", default="64,256")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000,
                        help="build HNSW for synthetic indexes of at most this many vectors (vss builds a few hundred "
                             "vectors/s on this CPU)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.shaped:
        with tempfile.TemporaryDirectory() as tmp:
            shaped_latency(args.datasets.split(","), args.queries, Path(tmp) / "store")
    if not args.skip_real:
        with tempfile.TemporaryDirectory() as tmp:
            real_index(args.datasets.split(","), args.queries, Path(args.store or Path(tmp) / "store"))
    sizes = [int(s) for s in args.synthetic.split(",") if s.strip()]
    if sizes:
        synthetic(sizes, args.queries, args.ef_construction, [int(e) for e in args.ef_search.split(",")],
                  args.hnsw_max)


if __name__ == "__main__":
    main()
