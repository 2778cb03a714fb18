"""Scores-only speed: ``precompute predict`` against sentence-transformers' own ``encode``, in one run.

    python bench/bench_predict.py [--dataset stsb:test] [--batch-size 16] [--limit N] [--repeats 2]

Both sides score the same sentences (sentence1 and sentence2 of every pair) with the same batch size on the
CPU, alternating, best of ``--repeats``: sentence-transformers as ``encode(sentence1s)`` + ``encode(sentence2s)``
+ ``similarity_pairwise``; SimLens as ``model.embed`` of the same lists (the scoring path alone) and as the
whole ``precompute predict`` run into a fresh store (chunks, store writes, metrics). Prints a table and the
ratio of predict's time to encode's (< 1: predict is faster), and checks that the scores agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import load_model  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.store import Store  # noqa: E402
from precompute.runner import run  # noqa: E402

MODEL = "all-MiniLM-L6-v2"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="stsb:test")
    parser.add_argument("--batch-size", type=int, default=16, help="the CLI's default (16)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from sentence_transformers import SentenceTransformer

    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    frame = dataset.frame if args.limit is None else dataset.frame.head(args.limit)
    s1, s2 = frame["sentence1"].tolist(), frame["sentence2"].tolist()
    model = load_model(MODEL, device="cpu")
    st = SentenceTransformer(str(model.path), device="cpu", local_files_only=True)
    bs = args.batch_size

    def st_scores() -> np.ndarray:
        a = st.encode(s1, batch_size=bs, convert_to_tensor=True)
        b = st.encode(s2, batch_size=bs, convert_to_tensor=True)
        return st.similarity_pairwise(a, b).numpy()

    def simlens_scores() -> np.ndarray:
        return model.similarity_of(model.embed(s1, batch_size=bs), model.embed(s2, batch_size=bs))

    def predict_run() -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(model, dataset, Path(tmp) / "store", method="predict", batch_size=bs, limit=args.limit,
                         progress=False)
            return Store(Path(tmp) / "store").predictions(result.run_id).sort_values("pair_id")["model_score"].to_numpy()

    times: dict[str, list[float]] = {"sentence-transformers encode": [], "SimLens embed": [], "precompute predict": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in zip(times, (st_scores, simlens_scores, predict_run), strict=True):
            seconds, outputs[name] = timed(fn)
            times[name].append(seconds)
    reference = outputs["sentence-transformers encode"]
    n = len(s1)
    rows = [{"path": name, "seconds (best)": min(ts), "sentences/s": 2 * n / min(ts),
             "max |score - ST|": float(np.abs(np.asarray(outputs[name]) - reference).max()),
             "ratio to encode": min(ts) / min(times["sentence-transformers encode"])} for name, ts in times.items()]
    print(f"\n{MODEL} on {dataset.key} ({n} pairs, {2 * n} sentences), batch size {bs}, CPU, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
