"""Integrated Jacobians with ``steps="auto"``: steps used and completeness error reached, per model and layer,
on STS-b test pairs.

    python bench/bench_ij_auto.py [--pairs 50] [--tol 1e-3] [--budget-s 3600] [--data-dir ../shared/data]
    python bench/bench_ij_auto.py --settings all-mpnet-base-v2:7,all-mpnet-base-v2:9 --out bench/out/ij_auto_mpnet.jsonl
    python bench/bench_ij_auto.py --table [--out ...]  # the markdown table of the rows a run wrote

Pairs run round-robin over the (model, layer) settings, one pair at a time, each row appended to
bench/out/ij_auto.jsonl as it finishes, so a run cut short by ``--budget-s`` still covers every setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import stsb_pairs  # noqa: E402

from core import explain, load_model  # noqa: E402

OUT = ROOT / "bench" / "out" / "ij_auto.jsonl"
SETTINGS = [("all-MiniLM-L6-v2", layer) for layer in (0, 3, 5)] + [("all-mpnet-base-v2", layer) for layer in (0, 3, 7, 9)]


def table(rows: list[dict]) -> str:
    lines = ["| model | layer | pairs | sentence steps median / max | pair error median | pair error max | "
             "capped pairs | s per pair |", "|---|---|---|---|---|---|---|---|"]
    for model, layer in dict.fromkeys((r["model"], r["layer"]) for r in rows):
        sub = [r for r in rows if (r["model"], r["layer"]) == (model, layer)]
        steps = [s for r in sub for s in (r["steps_a"], r["steps_b"])]
        errors = np.abs([r["residual"] for r in sub])
        lines.append(f"| {model} | {layer} | {len(sub)} | {int(np.median(steps))} / {max(steps)} | "
                     f"{np.median(errors):.1e} | {errors.max():.1e} | {sum(r['capped'] for r in sub)} | "
                     f"{np.mean([r['seconds'] for r in sub]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--budget-s", type=float, default=3600.0)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--settings", default=None,
                        help="comma-separated model:layer settings (default: MiniLM 0/3/5, MPNet 0/3/7/9)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSONL of the rows (default {OUT})")
    parser.add_argument("--device", default="cpu", help="torch device of the models (default cpu)")
    parser.add_argument("--table", action="store_true", help="print the table of the rows already written")
    args = parser.parse_args()
    written = args.out
    if args.table:
        print(table([json.loads(line) for line in written.read_text().splitlines()]))
        return
    settings = SETTINGS if args.settings is None else [
        (name, int(layer)) for name, _, layer in (s.rpartition(":") for s in args.settings.split(","))]
    pairs = stsb_pairs(args.data_dir, args.pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {name: load_model(name, device=args.device) for name in dict.fromkeys(n for n, _ in settings)}
    written.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with written.open("a") as out:
        for index, pair in enumerate(pairs):
            for name, layer in settings:
                if time.perf_counter() - start > args.budget_s:
                    print(table([json.loads(line) for line in written.read_text().splitlines()]))
                    return
                began, load = time.perf_counter(), os.getloadavg()[0]
                exp = explain(models[name], *pair, method="ij", layer=layer, steps="auto", tol=args.tol)
                row = {"model": name, "layer": layer, "pair": index, "steps_a": exp.steps_a, "steps_b": exp.steps_b,
                       "residual": exp.residual, "score": exp.score, "capped": exp.capped, "tol": args.tol,
                       "seconds": time.perf_counter() - began, "load": load}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(row, flush=True)
    print(table([json.loads(line) for line in written.read_text().splitlines()]))


if __name__ == "__main__":
    main()
