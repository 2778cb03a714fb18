"""End-to-end precompute benchmark: a dataset into a fresh store with the CLI's own code path.

    python bench/bench_precompute.py [--dataset stsb:test] [--methods bilrp,ij] [--limit N]

Prints, per method, the wall time, pairs/s, rows written and the store size per 1,000 pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import load_model  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.store import Store  # noqa: E402
from precompute.runner import run  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="stsb:test")
    parser.add_argument("--methods", default="bilrp,ij")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    rows = []
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            start = time.perf_counter()
            model = load_model("all-MiniLM-L6-v2", device="cpu")
            result = run(model, dataset, store, method=method, limit=args.limit, progress=True)
            seconds = time.perf_counter() - start
            reader = Store(store)
            n = len(reader.predictions(result.run_id))
            token_pairs = int(reader.summary().set_index("table").loc["token_pairs", "rows"])
            rows.append({"method": method, "steps": "" if method != "ij" else 64, "pairs": n,
                         "end-to-end s": seconds, "pairs/s": n / seconds, "token-pair rows": token_pairs,
                         "MB per 1,000 pairs": folder_bytes(store) / 1e6 / n * 1000,
                         "spearman": result.metrics["spearman"]})
    print(f"\nall-MiniLM-L6-v2 on {dataset.key}, CPU\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
