"""GPU benchmark of the attribution engine and of a precompute run into the store.

    python bench/bench_gpu.py                       # on a machine with a CUDA GPU: STS-b test, MiniLM and MPNet
    python bench/bench_gpu.py --device cpu --quick  # the same code path on a few pairs on the CPU (a smoke run)

Per model and method (``bilrp``, and ``ij`` with its default steps): pairs/s of ``explain_pairs`` over the pairs
at every batch size (sentences per batch) and ``max_rows`` (sequences per forward pass) in float32, with the peak
GPU memory; then, at the fastest batch setting, TF32 matmuls and bfloat16 autocast (which the engine refuses: the
row says so) with their pairs/s, peak memory,
the largest relative difference of their matrices from float32 (max |M - M32| / max |M32| over the pairs) and the
completeness error (|score - sum M| / |score|, median and max; for ``bilrp`` that is the bias relevance, which
float32 has too). Last, the end-to-end run into a fresh store (``precompute.runner.run``: POS tagging, store
writes and metrics included) for each model with ``bilrp`` at its fastest batch setting. Goal on one H100/H200:
>= 200 pairs/s for ``bilrp`` on MiniLM.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import load_model  # noqa: E402
from core.attribution import explain_pairs  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from precompute.runner import run  # noqa: E402

PRECISIONS = ("float32", "tf32", "bfloat16")


@contextlib.contextmanager
def precision(name: str, device: str) -> Iterator[None]:
    """float32 (TF32 off), TF32 matmuls and convolutions (CUDA only), or bfloat16 autocast."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        if name == "bfloat16":
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(model, pairs, method, steps, batch_size, max_rows, mode, device) -> tuple[list, float, float]:
    """(explanations, seconds, peak GPU MiB; NaN on the CPU) of explaining ``pairs`` once."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with precision(mode, device):
        synchronize(device)
        start = time.perf_counter()
        out = explain_pairs(model, pairs, method=method, steps=steps, batch_size=batch_size, max_rows=max_rows)
        synchronize(device)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return out, seconds, peak


def accuracy(out: list, reference: list | None) -> dict[str, float]:
    errors = np.array([e.relative_residual for e in out])
    row = {"completeness median": float(np.median(errors)), "completeness max": float(errors.max())}
    if reference is not None:
        row["max rel. diff vs float32"] = max(
            float(np.abs(e.matrix - r.matrix).max() / max(np.abs(r.matrix).max(), 1e-30))
            for e, r in zip(out, reference, strict=True))
    return row


def bench_model(name: str, args, pairs: list[tuple[str, str]], ij_pairs: list[tuple[str, str]]) -> tuple[list, dict]:
    """Rows of the engine table for one model, and its fastest bilrp (batch_size, max_rows)."""
    model = load_model(name, device=args.device)
    rows, fastest = [], {}
    for method in args.methods:
        subset = ij_pairs if method == "ij" else pairs
        steps = args.ij_steps if method == "ij" else None
        explain_pairs(model, subset[:4], method=method, steps=steps)  # warm-up (kernels, allocator)
        base = dict(model=name, method=method, steps=steps or (64 if method == "ij" else ""), pairs=len(subset))
        reference, best = None, None
        for batch_size in args.batch_sizes:
            for max_rows in args.max_rows:
                out, seconds, peak = timed(model, subset, method, steps, batch_size, max_rows, "float32", args.device)
                reference = reference or out
                rate = len(subset) / seconds
                rows.append({**base, "batch": batch_size, "max_rows": max_rows, "precision": "float32",
                             "pairs/s": rate, "peak GPU MiB": peak, **accuracy(out, None)})
                if best is None or rate > best[0]:
                    best = (rate, batch_size, max_rows)
        _, batch_size, max_rows = best
        fastest[method] = (batch_size, max_rows)
        for mode in args.precisions:
            if mode == "float32" or (mode == "tf32" and args.device != "cuda"):
                continue  # TF32 is a CUDA matmul mode: on the CPU it would be float32 again
            try:
                out, seconds, peak = timed(model, subset, method, steps, batch_size, max_rows, mode, args.device)
            except ValueError as exc:  # the engine refuses autocast rather than lose precision silently
                rows.append({**base, "batch": batch_size, "max_rows": max_rows, "precision": mode,
                             "refused": str(exc).split(":")[0]})
                continue
            rows.append({**base, "batch": batch_size, "max_rows": max_rows, "precision": mode,
                         "pairs/s": len(subset) / seconds, "peak GPU MiB": peak, **accuracy(out, reference)})
    return rows, fastest


def end_to_end(name: str, dataset, args, batch_size: int) -> dict:
    """One bilrp run of the pairs into a fresh store, model load included."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = load_model(name, device=args.device)
        result = run(model, dataset, Path(tmp) / "store", method="bilrp", batch_size=batch_size, limit=args.limit,
                     progress=False)
        seconds = time.perf_counter() - start
    return {"model": name, "method": "bilrp", "pairs": result.pairs_written, "batch": batch_size,
            "end-to-end s": seconds, "pairs/s end to end": result.pairs_written / seconds,
            "pairs/s of the run (after model load)": result.pairs_written / result.seconds,
            "spearman": result.metrics["spearman"]}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dataset", default="stsb:test")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default="all-MiniLM-L6-v2,all-mpnet-base-v2")
    parser.add_argument("--methods", default="bilrp,ij")
    parser.add_argument("--batch-sizes", type=_ints, default=[32, 128, 512])
    parser.add_argument("--max-rows", type=_ints, default=[2048, 16384])
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--limit", type=int, default=None, help="pairs for bilrp and end to end (default all)")
    parser.add_argument("--ij-limit", type=int, default=256, help="pairs for ij (default 256)")
    parser.add_argument("--ij-steps", type=int, default=None, help="ij steps (default: the method's, 64)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 8 pairs (4 for ij, 8 steps), MiniLM, two small batch settings")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: pass --device cpu (with --quick for a smoke run of the code path)")
    if args.quick:
        args.limit, args.ij_limit, args.ij_steps = 8, 4, args.ij_steps or 8
        args.models, args.batch_sizes, args.max_rows = "all-MiniLM-L6-v2", [4, 16], [512]
    args.models, args.methods = args.models.split(","), args.methods.split(",")
    args.precisions = args.precisions.split(",")
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown precision(s) {unknown}; choose from {', '.join(PRECISIONS)}")
    warnings.filterwarnings("ignore")
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    frame = dataset.frame if args.limit is None else dataset.frame.head(args.limit)
    pairs = list(zip(frame["sentence1"], frame["sentence2"], strict=True))
    ij_pairs = pairs[: args.ij_limit]
    engine, runs = [], []
    for name in args.models:
        rows, fastest = bench_model(name, args, pairs, ij_pairs)
        engine += rows
        if "bilrp" in fastest:
            runs.append(end_to_end(name, dataset, args, fastest["bilrp"][0]))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{dataset.key}, {where}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f"{' (--quick smoke run)' if args.quick else ''}\n")
    print(pd.DataFrame(engine).to_markdown(index=False, floatfmt=".3g"))
    if runs:
        print("\nEnd to end into a fresh store (bilrp, float32)\n")
        print(pd.DataFrame(runs).to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
