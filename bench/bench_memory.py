"""Peak memory (RSS) of one explanation per method for two long texts, each in a fresh process.

    .venv/bin/python bench/bench_memory.py                                     # MPNet, 512 tokens, default bound
    .venv/bin/python bench/bench_memory.py --model all-MiniLM-L6-v2 --tokens 256 --max-memory 2GB

MPNet's encoder takes 512 tokens (its configuration cuts at 384, MiniLM's at 256): a ``--tokens`` above the
configured maximum but within the encoder's positions lifts the cut, which the table says. Each run loads the model, warms up on a short pair, then explains
two texts of ``--tokens`` tokens with ``core.explain(..., max_memory=...)`` while a thread samples the
process's RSS. A factor of a 512-token text takes hours on a small CPU (512 Jacobian-vector products of a
512-token sequence; ij: 64 times that), so ``--seconds`` stops each run after that long: the passes of one
explanation repeat the same allocations, so the peak is reached in the first ones; the table gives the peak
over the first half and over the whole window, and how far the run got. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, threading, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from core import explain, load_model
model_name, method, n_tokens, max_memory, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
model = load_model(model_name, device="cpu")
configured = model.max_length  # MPNet's configuration cuts at 384 tokens, its encoder has 514 positions
if n_tokens > configured and n_tokens <= model.encoder.config.max_position_embeddings:
    model.max_length = n_tokens
explain(model, "a short warm-up pair", "for the allocator", method=method, steps=2 if method == "ij" else None)
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
words = "the quick brown fox jumps over a lazy dog while seven old men watch from the bridge".split()
def text_of(offset):
    chosen = (words * (n_tokens // len(words) + 3))[offset : offset + n_tokens]
    while len(model.tokenize([" ".join(chosen)]).tokens[0]) > n_tokens:
        chosen = chosen[:-1]
    return " ".join(chosen)
a, b = text_of(0), text_of(5)
before = rss()
start = time.perf_counter()
state = {"peak": before, "half": None, "done": False}
def report(finished):
    peak = max(state["peak"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if finished else 0)
    print(json.dumps({"before": before, "peak": peak, "half": state["half"] or peak, "finished": finished,
                      "seconds": time.perf_counter() - start, "tokens": len(model.tokenize([a]).tokens[0]),
                      "configured": configured}),
          flush=True)
def watch():
    while not state["done"]:
        state["peak"] = max(state["peak"], rss())
        elapsed = time.perf_counter() - start
        if state["half"] is None and elapsed > seconds / 2:
            state["half"] = state["peak"]
        if elapsed > seconds:
            report(False)
            os._exit(0)
        time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
explain(model, a, b, method=method, max_memory=max_memory)
state["done"] = True
report(True)
"""


def measure(model: str, method: str, tokens: int, max_memory: str, seconds: float) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), model, method, str(tokens), max_memory,
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 900)
    if out.returncode != 0:
        raise SystemExit(f"{method}: the child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-mpnet-base-v2")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--methods", default="bilrp,hxp,ij,embedding")
    parser.add_argument("--max-memory", default="1GiB", help="the bound given to core.explain (default: its default)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop each run after this long")
    args = parser.parse_args(argv)
    gib = 1 << 30
    print(f"{args.model}, two texts of {args.tokens} tokens, max_memory={args.max_memory}, CPU, "
          f"window {args.seconds:.0f} s per method\n")
    print("| method | tokens explained | RSS before | peak RSS (first half) | peak RSS | growth | finished |")
    print("|:--|--:|--:|--:|--:|--:|:--|")
    for method in args.methods.split(","):
        r = measure(args.model, method, args.tokens, args.max_memory, args.seconds)
        done = "yes" if r["finished"] else f"no (stopped at {r['seconds']:.0f} s)"
        lifted = f" (configured cut {r['configured']} lifted)" if r["tokens"] > r["configured"] else ""
        print(f"| {method} | {r['tokens']}{lifted} | {r['before'] / gib:.2f} GiB | {r['half'] / gib:.2f} GiB | {r['peak'] / gib:.2f} GiB | "
              f"{(r['peak'] - r['before']) / gib:.2f} GiB | {done} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
