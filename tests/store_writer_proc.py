"""Helper for tests/test_store.py: a precompute-like writer process for one synthetic run.

    python tests/store_writer_proc.py STORE [--n-pairs 24] [--chunk-size 2] [--sleep 0.05]
                                            [--shard K/N] [--commit-wait 0.0] [--scale 1.0] [--churn 0]
                                            [--wait-file PATH]

Puts a deterministic dataset + model, starts (or resumes) the run, writes every pending chunk of
its shard (sleeping between chunks), then finishes the run. Prints one line per event:
``start <previous status>``, ``commit-wait <k>`` (inside the commit hook, before the chunk's
rename), ``wrote <k>``, ``done``. The content of every chunk is a pure function of the pair ids, so
tests can recompute exactly what must be stored (``expected_tables``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.metrics import score_metrics  # noqa: E402
from core.store import StoreWriter, make_run_id  # noqa: E402

DATASET_KEY = "synth:test"
MODEL_ID = "synthmodel"
WORDS = [("the", "DET"), ("dog", "NOUN"), ("runs", "VERB"), ("quickly", "ADV"), ("red", "ADJ"),
         ("playing", "VERB"), ("in", "ADP"), ("park", "NOUN")]


def pair_ids(n_pairs: int) -> list[int]:
    """The dataset's pair ids: increasing, with gaps (like source rows that were skipped)."""
    return [2 * p + (p % 3 == 0) for p in range(n_pairs)]


def dataset_frames(n_pairs: int) -> tuple[dict, pd.DataFrame]:
    """Deterministic dataset meta and pairs (with an extra source column the store ignores)."""
    meta = {"dataset_key": DATASET_KEY, "name": "synth", "split": "test", "lang_a": "en", "lang_b": "en",
            "source": "tests/store_writer_proc.py", "gold_min": 0.0, "gold_max": 5.0, "skipped": {"empty": 1}}
    ids = pair_ids(n_pairs)
    pairs = pd.DataFrame({
        "pair_id": ids,
        "sentence1": [f"sentence a {p}" for p in ids],
        "sentence2": [f"sentence b {p}" for p in ids],
        "gold": [round((p * 7 % 11) / 2.0, 1) for p in ids],
        "genre": "synthetic",
    })
    return meta, pairs


MODEL = {"model_id": MODEL_ID, "name": "synth-model", "path": "/nowhere", "revision": "abc", "architecture": "Bert",
         "pooling": "mean", "similarity": "cosine", "dim": 8, "num_layers": 2}


def _side_tokens(pair_id: int, side: str) -> pd.DataFrame:
    """[CLS] + words (every 3rd word split into two pieces) + [SEP]; POS None for 'in'."""
    n_words = 2 + (pair_id + (0 if side == "a" else 1)) % 4
    rows = [{"token": "[CLS]", "is_special": True, "word_index": None, "word": None, "pos": None}]
    for w in range(n_words):
        word, pos = WORDS[(pair_id * 3 + w + (0 if side == "a" else 5)) % len(WORDS)]
        pos = None if word == "in" else pos
        split = (w + pair_id) % 3 == 0 and len(word) > 3
        pieces = [word[:3], "##" + word[3:]] if split else [word]
        for piece in pieces:
            rows.append({"token": piece, "is_special": False, "word_index": w, "word": word, "pos": pos})
    rows.append({"token": "[SEP]", "is_special": True, "word_index": None, "word": None, "pos": None})
    df = pd.DataFrame(rows)
    df.insert(0, "token_index", np.arange(len(df)))
    df.insert(0, "side", side)
    df.insert(0, "pair_id", pair_id)
    return df


def expected_tables(pair_ids, scale: float = 1.0) -> dict[str, pd.DataFrame]:
    """The chunk tables (as handed to write_chunk) for these pair ids."""
    tokens, tps, preds, factors = [], [], [], []
    for p in pair_ids:
        ta, tb = _side_tokens(p, "a"), _side_tokens(p, "b")
        tokens += [ta, tb]
        i, j = np.meshgrid(np.arange(len(ta)), np.arange(len(tb)), indexing="ij")
        rel = (scale * np.sin(p * 1.7 + i.ravel() * 0.9 - j.ravel() * 0.4) / 10).astype(np.float32)
        tps.append(pd.DataFrame({"pair_id": p, "i": i.ravel(), "j": j.ravel(), "relevance": rel}))
        score = float(0.5 + 0.45 * math.sin(p * 0.77))
        preds.append({"pair_id": p, "model_score": score, "explained_score": float(rel.astype(np.float64).sum()) + 0.001})
        for side, t in (("a", ta), ("b", tb)):
            for k in range(len(t)):
                factors.append({"pair_id": p, "side": side, "token_index": k,
                                "factor": np.array([p, k, 0.5, -1.0], dtype=np.float32)})
    return {
        "predictions": pd.DataFrame(preds),
        "tokens": pd.concat(tokens, ignore_index=True),
        "token_pairs": pd.concat(tps, ignore_index=True),
        "factors": pd.DataFrame(factors),
    }


def run_spec(n_pairs: int, chunk_size: int, layer: int = 0) -> dict:
    return {"model_id": MODEL_ID, "dataset_key": DATASET_KEY, "method": "bilrp", "layer": layer,
            "chunk_size": chunk_size, "n_pairs": n_pairs, "code_version": "test", "device": "cpu"}


def write_run(w: StoreWriter, n_pairs: int, chunk_size: int, layer: int = 0, scale: float = 1.0,
              chunks: list[int] | None = None, force: bool = False) -> str:
    """The test dataset, model and a bilrp run of ``layer`` through ``w`` (relevances times ``scale``; only
    ``chunks`` when given, else every pending one), unfinished; returns the run id."""
    meta, pairs = dataset_frames(n_pairs)
    w.put_dataset(meta, pairs)
    w.put_model(MODEL)
    w.start_run(run_spec(n_pairs, chunk_size, layer), force=force)
    rid = make_run_id(MODEL_ID, DATASET_KEY, "bilrp", layer)
    for k in w.pending_chunks(rid):
        if chunks is None or k in chunks:
            w.write_chunk(rid, k, expected_tables(w.chunk_pair_ids(rid, k), scale=scale))
    return rid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--n-pairs", type=int, default=24)
    ap.add_argument("--chunk-size", type=int, default=2)
    ap.add_argument("--sleep", type=float, default=0.05)
    ap.add_argument("--shard", default=None)
    ap.add_argument("--commit-wait", type=float, default=0.0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--layer", type=int, default=0, help="the run's layer (another layer: another run)")
    ap.add_argument("--wait-file", default=None, help="after start_run, wait until this file exists (<= 60 s)")
    ap.add_argument("--churn", type=float, default=0.0,
                    help="after the chunks, rewrite the run record (status/metrics) in a loop for this many seconds")
    args = ap.parse_args(argv)

    w = StoreWriter(args.store, shard=args.shard)
    meta, pairs = dataset_frames(args.n_pairs)
    w.put_dataset(meta, pairs)
    w.put_model(MODEL)
    spec = run_spec(args.n_pairs, args.chunk_size, args.layer)
    prev = w.start_run(spec)
    print(f"start {prev}", flush=True)
    from core.store import ChunkExistsError, make_run_id

    run_id = make_run_id(MODEL_ID, DATASET_KEY, "bilrp", args.layer)
    if prev == "done":
        print("done", flush=True)
        return 0
    if args.wait_file:
        deadline = time.monotonic() + 60
        while not Path(args.wait_file).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    if args.commit_wait > 0:
        def hook(k: int) -> None:
            print(f"commit-wait {k}", flush=True)
            time.sleep(args.commit_wait)
        w._before_commit = hook
    for k in w.pending_chunks(run_id):
        try:
            w.write_chunk(run_id, k, expected_tables(w.chunk_pair_ids(run_id, k), args.scale))
            print(f"wrote {k}", flush=True)
        except ChunkExistsError:  # a writer of the same run committed it first
            print(f"skipped {k}", flush=True)
        time.sleep(args.sleep)
    preds = expected_tables(pair_ids(args.n_pairs))["predictions"]
    gold = pairs.set_index("pair_id")["gold"]
    g = preds["pair_id"].map(gold).to_numpy(float)
    m = score_metrics(preds["model_score"].to_numpy(float), g, g / 5.0)
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < args.churn:
        w.finish_run(run_id, {**m, "device": "x" * (n % 40)}, status="running" if n % 2 else "done")
        n += 1
    if args.churn:
        print(f"churned {n}", flush=True)
    w.finish_run(run_id, m)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
