"""Benchmark of the SimLens store (core/store.py): write a synthetic corpus audit through
StoreWriter, then time every dashboard query on it.

    .venv/bin/python bench/bench_store.py [--pairs 1379] [--runs 12] [--tokens 25] [--chunk-size 100]
                                          [--repeat 5] [--factor-dim 384] [--keep DIR]

Default: 1379 pairs (STS-b test) x ~25x25 token pairs x 12 runs ~ 10.3 million token_pairs rows,
plus float16 factors (dim 384) for one run. Prints write throughput, a table of query timings
(first call and median of --repeat calls) and the store size per 1,000 (pair, run) records.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.store import Store, StoreWriter, make_run_id  # noqa: E402

POS = ["NOUN", "VERB", "ADJ", "ADV", "DET", "ADP", "PRON", "PROPN", "AUX", "CCONJ", "NUM", "PUNCT", None]
VOCAB = [f"w{k}" for k in range(3000)]
DATASET = "stsb:test"


def synth_tokens(rng: np.random.Generator, pair_ids: np.ndarray, mean_len: int) -> pd.DataFrame:
    """[CLS] words... [SEP] per side; ~20% of words split into two pieces."""
    frames = []
    for p in pair_ids:
        for side in ("a", "b"):
            n = int(rng.integers(max(3, mean_len - 7), mean_len + 8))
            n_words = max(1, int(round((n - 2) / 1.2)))
            word_of = np.sort(rng.integers(0, n_words, size=n - 2))
            word_of = np.unique(word_of, return_inverse=True)[1]  # dense word ids in order
            words = rng.integers(0, len(VOCAB), size=word_of.max() + 1)
            pos = rng.integers(0, len(POS), size=word_of.max() + 1)
            first = np.r_[True, word_of[1:] != word_of[:-1]]
            tok = [VOCAB[words[w]] if f else "##" + VOCAB[words[w]][1:] for w, f in zip(word_of, first, strict=True)]
            frames.append(pd.DataFrame({
                "pair_id": p, "side": side, "token_index": np.arange(n),
                "token": ["[CLS]", *tok, "[SEP]"],
                "start": np.r_[-1, np.arange(n - 2) * 4, -1], "end": np.r_[-1, np.arange(n - 2) * 4 + 3, -1],
                "is_special": np.r_[True, np.zeros(n - 2, bool), True],
                "word_index": pd.array([None, *word_of.tolist(), None], dtype="Int16"),
                "word": [None, *[VOCAB[words[w]] for w in word_of], None],
                "pos": ["[CLS]", *[POS[pos[w]] for w in word_of], "[SEP]"],
            }))
    return pd.concat(frames, ignore_index=True)


def synth_chunk(rng: np.random.Generator, tokens: pd.DataFrame, pair_ids: np.ndarray, factor_dim: int = 0
                ) -> dict[str, pd.DataFrame]:
    lens = tokens.groupby(["pair_id", "side"]).size()
    tps, preds, facs = [], [], []
    for p in pair_ids:
        la, lb = int(lens[(p, "a")]), int(lens[(p, "b")])
        rel = (rng.standard_normal(la * lb) * 0.01).astype(np.float32)
        tps.append(pd.DataFrame({"pair_id": p, "i": np.repeat(np.arange(la), lb), "j": np.tile(np.arange(lb), la),
                                 "relevance": rel}))
        s = float(rel.astype(np.float64).sum())
        preds.append({"pair_id": p, "model_score": float(np.clip(0.5 + s, -1, 1)), "explained_score": s + 1e-3})
        if factor_dim:
            for side, n in (("a", la), ("b", lb)):
                f = rng.standard_normal((n, factor_dim)).astype("<f2")
                facs.append(pd.DataFrame({"pair_id": p, "side": side, "token_index": np.arange(n),
                                          "factor": [row.tobytes() for row in f], "dim": factor_dim,
                                          "embedding_norm": 1.0}))
    out = {"predictions": pd.DataFrame(preds), "tokens": tokens, "token_pairs": pd.concat(tps, ignore_index=True)}
    if facs:
        out["factors"] = pd.concat(facs, ignore_index=True)
    return out


def build(path: Path, n_pairs: int, n_runs: int, mean_len: int, chunk_size: int, factor_dim: int) -> dict:
    rng = np.random.default_rng(0)
    w = StoreWriter(path)
    pair_ids = np.arange(n_pairs)
    gold = np.round(rng.uniform(0, 5, n_pairs), 2)
    w.put_dataset({"dataset_key": DATASET, "name": "stsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "source": "synthetic", "gold_min": 0.0, "gold_max": 5.0},
                  pd.DataFrame({"pair_id": pair_ids, "sentence1": [f"s1 {p}" for p in pair_ids],
                                "sentence2": [f"s2 {p}" for p in pair_ids], "gold": gold}))
    methods = ["bilrp", "ij", "hxp", "embedding"]
    n_models = -(-n_runs // len(methods))
    for m in range(n_models):
        w.put_model({"model_id": f"model{m}", "name": f"synthetic-model-{m}", "pooling": "mean",
                     "similarity": "cosine", "dim": 384, "num_layers": 6})
    tokens_by_model = {}
    t0 = time.perf_counter()
    rows = 0
    run_ids = []
    for r in range(n_runs):
        m, method = r // len(methods), methods[r % len(methods)]
        if m not in tokens_by_model:
            tokens_by_model[m] = synth_tokens(rng, pair_ids, mean_len)
        toks = tokens_by_model[m]
        w.start_run({"model_id": f"model{m}", "dataset_key": DATASET, "method": method, "layer": 0,
                     "chunk_size": chunk_size, "device": "cpu", "code_version": "bench"})
        rid = make_run_id(f"model{m}", DATASET, method, 0)
        run_ids.append(rid)
        for k in w.pending_chunks(rid):
            ids = np.asarray(w.chunk_pair_ids(rid, k))
            tables = synth_chunk(rng, toks[toks.pair_id.isin(ids)], ids, factor_dim if r == 0 else 0)
            rows += len(tables["token_pairs"])
            w.write_chunk(rid, k, tables)
        w.finish_run(rid, {"spearman": float(rng.uniform(70, 90)), "pearson": float(rng.uniform(70, 90)),
                           "mse": float(rng.uniform(0.02, 0.1))})
        print(f"  run {r + 1}/{n_runs} written ({rows:,} token pairs so far, {time.perf_counter() - t0:.0f} s)",
              flush=True)
    return {"seconds": time.perf_counter() - t0, "token_pairs": rows, "run_ids": run_ids}


def timed(fn, repeat: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), len(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1379)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=25, help="mean tokens per sentence (incl. [CLS]/[SEP])")
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--factor-dim", type=int, default=384, help="factor dim for the first run (0: no factors)")
    ap.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    args = ap.parse_args()

    tmp = None
    if args.keep is None:
        tmp = Path(tempfile.mkdtemp(prefix="simlens-bench-"))
        path = tmp / "store"
    else:
        path = args.keep
    try:
        print(f"building {args.pairs} pairs x {args.runs} runs (mean {args.tokens} tokens/side) in {path}")
        info = build(path, args.pairs, args.runs, args.tokens, args.chunk_size, args.factor_dim)
        print(f"wrote {info['token_pairs']:,} token_pairs rows in {info['seconds']:.1f} s "
              f"({info['token_pairs'] / info['seconds']:,.0f} rows/s, "
              f"{args.pairs * args.runs / info['seconds']:,.0f} pairs/s)")
        s = Store(path)
        ra, rb = info["run_ids"][0], info["run_ids"][1]
        pid = args.pairs // 2
        queries = [
            ("runs()", lambda: s.runs()),
            ("summary()", lambda: s.summary()),
            ("metrics_table()", lambda: s.metrics_table()),
            ("pos_heatmap() all runs", lambda: s.pos_heatmap()),
            ("pos_heatmap(all, word, mean)", lambda: s.pos_heatmap(level="word", agg="mean")),
            ("pos_heatmap(one run)", lambda: s.pos_heatmap(ra)),
            ("pos_heatmap(one run, gold+error band, no special)",
             lambda: s.pos_heatmap(ra, gold_band=(0.6, 1.0), error_band=(-1.0, 0.0), include_special=False)),
            ("pos_heatmap(all, dataset, gold band)", lambda: s.pos_heatmap(dataset_key=DATASET, gold_band=(0, .4))),
            ("pos_cell_examples(run, NOUN, VERB)", lambda: s.pos_cell_examples(ra, "NOUN", "VERB", limit=20)),
            ("predictions(run)", lambda: s.predictions(ra)),
            ("pair_info", lambda: s.pair_info(DATASET, pid)),
            ("pair_runs", lambda: s.pair_runs(DATASET, pid)),
            ("pair_matrix(token)", lambda: s.pair_matrix(ra, pid)),
            ("pair_matrix(word)", lambda: s.pair_matrix(ra, pid, level="word")),
            ("load_factors", lambda: s.load_factors(ra, pid, "a")),
            ("failures(over, 10)", lambda: s.failures(ra, "over", limit=10)),
            ("quartile_top_pairs(high, token)", lambda: s.quartile_top_pairs(ra, "high", k=5)),
            ("quartile_top_pairs(low, word)", lambda: s.quartile_top_pairs(ra, "low", k=5, level="word")),
            ("compare_pos(a, b)", lambda: s.compare_pos(ra, rb)),
            ("compare_token_pairs(a, b, token)", lambda: s.compare_token_pairs(ra, rb, limit=20)),
            ("compare_token_pairs(a, b, word)", lambda: s.compare_token_pairs(ra, rb, limit=20, level="word")),
            ("compare_metrics(a, b)", lambda: s.compare_metrics(ra, rb)),
        ]
        print(f"\n| query | first call (s) | median of {args.repeat} (s) | rows |")
        print("|---|---:|---:|---:|")
        for name, fn in queries:
            first, med, n = timed(fn, args.repeat)
            print(f"| {name} | {first:.3f} | {med:.3f} | {n} |")
        summ = s.summary().set_index("table")
        records = args.pairs * args.runs
        print("\n| table | rows | files | MB | KB per 1,000 (pair, run) records |")
        print("|---|---:|---:|---:|---:|")
        for t, r in summ.iterrows():
            denom = args.pairs if t in ("factors",) else (args.pairs if t in ("pairs", "datasets", "models")
                                                             else records)
            print(f"| {t} | {int(r['rows']):,} | {int(r['files'])} | {r['bytes'] / 1e6:.1f} | "
                  f"{r['bytes'] / 1e3 / (denom / 1000):.0f} |")
        total = summ.drop(index="factors")["bytes"].sum()
        print(f"\ntotal without factors: {total / 1e6:.1f} MB = {total / 1e6 / (records / 1000):.1f} MB per 1,000 "
              f"(pair, run) records; factors (dim {args.factor_dim}, one run): "
              f"{summ.loc['factors', 'bytes'] / 1e6 / (args.pairs / 1000):.1f} MB per 1,000 pairs")
        s.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
