"""Precompute on Ray against one process, in one run: the same pairs into fresh stores, one process, then a local
Ray cluster with 1 and with 2 workers (same code path as ``python -m precompute attribute --ray``).

    python bench/bench_ray.py [--dataset stsb:test] [--limit 128] [--method bilrp] [--chunk-size 16]
                              [--workers 1,2] [--cpus-per-worker 0.5]

One process runs with all cores' torch threads and with one (what Ray gives an actor asking for less than a
CPU). Per setting: end-to-end seconds (model load, for Ray also cluster start and each actor's model load), the run's
own seconds and pairs/s as stored, and the steady rate once every worker is up (pairs after the first committed
chunk over the time to the last one); ratios are against the single process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import load_model  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.store import Store  # noqa: E402
from precompute.distributed import RayOptions, ray_cluster, run_on_ray  # noqa: E402
from precompute.runner import run  # noqa: E402


class Stamps:
    """Progress callback recording (time, pairs done) at every committed chunk."""

    def __init__(self) -> None:
        self.points: list[tuple[float, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.points.append((time.perf_counter(), done))

    def steady_rate(self) -> float:
        """Pairs per second from the first to the last committed chunk (the first chunk's pairs excluded)."""
        if len(self.points) < 2 or self.points[-1][0] <= self.points[0][0]:
            return float("nan")
        (t0, n0), (t1, n1) = self.points[0], self.points[-1]
        return (n1 - n0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="stsb:test")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--method", default="bilrp")
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="comma-separated pool sizes")
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    common = dict(method=args.method, limit=args.limit, chunk_size=args.chunk_size, batch_size=args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        threads = torch.get_num_threads()
        for n_threads in dict.fromkeys((threads, 1)):  # Ray gives an actor with < 1 CPU one torch thread
            torch.set_num_threads(n_threads)
            stamps, start, store = Stamps(), time.perf_counter(), Path(tmp) / f"single{n_threads}"
            model = load_model(args.model, device="cpu")
            result = run(model, dataset, store, device="cpu", progress=stamps, **common)
            rows.append({"setting": f"one process, {n_threads} torch thread{'s' if n_threads > 1 else ''}",
                         "workers": 0, "end-to-end s": time.perf_counter() - start, **_stored(store, result.run_id),
                         "steady pairs/s": stamps.steady_rate()})
        torch.set_num_threads(threads)
        with ray_cluster(None):
            for n in (int(w) for w in args.workers.split(",")):
                stamps, start, store = Stamps(), time.perf_counter(), Path(tmp) / f"ray{n}"
                options = RayOptions(workers=n, cpus_per_worker=args.cpus_per_worker)
                result = run_on_ray(args.model, dataset, store, options, device="cpu", progress=stamps, **common)
                rows.append({"setting": f"Ray, {n} worker{'s' if n > 1 else ''} x {args.cpus_per_worker:g} CPU",
                             "workers": n, "end-to-end s": time.perf_counter() - start,
                             **_stored(store, result.run_id), "steady pairs/s": stamps.steady_rate()})
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["steady vs one process"] = table["steady pairs/s"] / base["steady pairs/s"]
    table["run vs one process"] = table["run pairs/s"] / base["run pairs/s"]
    print(f"\n{args.model}, {args.method}, {dataset.key} first {args.limit} pairs, chunks of {args.chunk_size}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(table.to_markdown(index=False, floatfmt=".3g"))


def _stored(store: Path, run_id: str) -> dict:
    info = Store(store).run_info(run_id)
    return {"pairs": int(info["pairs_done"]), "run s": float(info["seconds"]), "run pairs/s": float(info["pairs_per_s"])}


if __name__ == "__main__":
    logging.getLogger("ray").setLevel(logging.WARNING)
    main()
