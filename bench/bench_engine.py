"""Engine benchmark: forward-mode factors against the per-dimension reverse-mode loop, batched throughput,
and integrated-Jacobians completeness against steps.

    python bench/bench_engine.py [--pairs 20] [--ij-steps 16] [--data-dir ../shared/data]

Prints markdown tables (copied into the README) and writes bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import explain, explain_pairs, load_model  # noqa: E402


def stsb_pairs(data_dir: Path, n: int) -> list[tuple[str, str]]:
    path = data_dir / "stsb" / "test.tsv"
    if not path.exists():
        sys.exit(f"STS-b test file not found at {path}: pass --data-dir pointing at a copy of shared/data")
    frame = pd.read_csv(path, sep="\t", keep_default_na=False).head(n)
    return list(zip(frame["sentence1"], frame["sentence2"], strict=True))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def speed_table(model, pairs, ij_steps: int, methods: list[str]) -> list[dict]:
    rows = []
    for method, steps in [(m, ij_steps if m == "ij" else None) for m in methods]:
        for autodiff in ("forward", "reverse"):  # warm-up: first calls pay one-time costs
            explain(model, *pairs[0], method=method, steps=steps, autodiff=autodiff)
        fwd, t_fwd = timed(lambda m=method, s=steps: [explain(model, a, b, method=m, steps=s) for a, b in pairs])
        rev, t_rev = timed(lambda m=method, s=steps: [explain(model, a, b, method=m, steps=s, autodiff="reverse")
                                                      for a, b in pairs])
        diff = max(float(np.abs(f.matrix - r.matrix).max() / max(np.abs(r.matrix).max(), 1e-12))
                   for f, r in zip(fwd, rev, strict=True))
        batched, t_batch = timed(lambda m=method, s=steps: explain_pairs(model, pairs, method=m, steps=s))
        rows.append({
            "method": method, "steps": steps or "", "forward s/pair": t_fwd / len(pairs),
            "reverse loop s/pair": t_rev / len(pairs), "speed-up": t_rev / t_fwd,
            "max rel. diff": diff, "batched pairs/s": len(pairs) / t_batch,
        })
    return rows


def completeness_table(model, pairs, layers: list[int], steps_list: list[int]) -> list[dict]:
    rows = []
    for layer in layers:
        for rule in ("uniform", "gauss-legendre"):
            for steps in steps_list:
                exps = explain_pairs(model, pairs, method="ij", layer=layer, steps=steps, quadrature=rule)
                rel = np.array([e.relative_residual for e in exps])
                rows.append({"layer": layer, "quadrature": rule, "steps": steps, "median rel. error": float(np.median(rel)),
                             "max rel. error": float(rel.max()), "share ≤ 1e-3": float((rel <= 1e-3).mean())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--ij-steps", type=int, default=16, help="steps for the forward-vs-reverse ij timing")
    parser.add_argument("--steps", default="8,16,32,64,128", help="steps for the completeness table")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-completeness", action="store_true")
    parser.add_argument("--methods", default="bilrp,hxp,ij", help="methods of the speed table")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    model = load_model("all-MiniLM-L6-v2", device="cpu")
    pairs = stsb_pairs(args.data_dir, args.pairs)
    print(f"all-MiniLM-L6-v2, CPU ({torch.get_num_threads()} threads), {len(pairs)} STS-b test pairs\n")
    speed = speed_table(model, pairs, args.ij_steps, args.methods.split(","))
    print(pd.DataFrame(speed).to_markdown(index=False, floatfmt=".3g"), "\n")
    complete = []
    if not args.skip_completeness:
        middle = model.num_layers // 2
        complete = completeness_table(model, pairs, [0, middle], [int(s) for s in args.steps.split(",")])
        print(pd.DataFrame(complete).to_markdown(index=False, floatfmt=".3g"))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps({"speed": speed, "completeness": complete}, indent=2))


if __name__ == "__main__":
    main()
