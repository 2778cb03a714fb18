"""Per-architecture benchmark: seconds per pair for BiLRP and integrated Jacobians, and how exactly BiLRP
conserves once every bias is zeroed (the sum of the matrix against the score), for a tiny random model of every
registered architecture, for every pooling mode and sentence-transformers module (on the tiny BERT), and for the
packaged real models (all-MiniLM-L6-v2, all-mpnet-base-v2).

    python bench/bench_architectures.py [--pairs 5] [--ij-steps 16] [--real-pairs 3] [--skip-real]
                                        [--kinds bert,t5,...] [--pipelines NAME,...|none]

Prints a markdown table (copied into the README) and writes bench/out/architectures.json.
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import stsb_pairs  # noqa: E402
from st_folders import DenseSpec, Pipeline, save_st_folder  # noqa: E402
from tiny_models import save_sentence_transformer  # noqa: E402

from core import explain, explain_pairs, load_model  # noqa: E402
from core.architectures import ARCHITECTURES  # noqa: E402
from core.sentence_pipeline import POOLING_MODES  # noqa: E402

#: Module pipelines after the tiny BERT, one row each: every pooling mode alone, then the modules. Dense layers
#: without a bias, so that the bias-free conservation check is about the rules alone.
PIPELINES = {
    **{f"{mode} pooling": Pipeline(pooling=mode) for mode in POOLING_MODES},
    "mean pooling (prompt excluded)": Pipeline(pooling="mean", include_prompt=False, prompts={"q": "query: "},
                                              default_prompt_name="q"),
    "lasttoken pooling (left padding)": Pipeline(pooling="lasttoken", padding_side="left"),
    "cls+max+mean concatenated": Pipeline(pooling=["cls", "max", "mean"]),
    "mean + Dense(tanh) + Normalize": Pipeline(pooling="mean", dense=[DenseSpec(out_features=16, bias=False)],
                                               normalize=True),
    "max + Dense(GELU) + Dense(identity)": Pipeline(pooling="max", dense=[
        DenseSpec(out_features=24, activation="torch.nn.modules.activation.GELU", bias=False),
        DenseSpec(out_features=12, activation="torch.nn.modules.linear.Identity", bias=False, seed=2)]),
}


def per_pair(model, pairs, **kwargs) -> float:
    explain(model, *pairs[0], **kwargs)  # warm-up: first calls pay one-time costs
    start = time.perf_counter()
    for a, b in pairs:
        explain(model, a, b, **kwargs)
    return (time.perf_counter() - start) / len(pairs)


def conservation(model, pairs) -> tuple[float, float, float]:
    """(max |sum - score| / |score| of BiLRP, the same for H x P, max |score - model score|) over ``pairs``."""
    bilrp = explain_pairs(model, pairs, method="bilrp")
    hxp = explain_pairs(model, pairs, method="hxp")
    return (max(e.relative_residual for e in bilrp), max(e.relative_residual for e in hxp),
            max(abs(e.score - e.model_score) for e in bilrp))


def zero_biases(model) -> None:
    with torch.no_grad():
        for name, param in model.encoder.named_parameters():
            if name.endswith("bias"):
                param.zero_()


def row(label: str, kind: str, model, zeroed, pairs, ij_steps: int) -> dict:
    bilrp_err, hxp_err, score_err = conservation(zeroed, pairs)
    return {
        "architecture": kind, "model": label, "layers": model.num_layers, "hidden": model.hidden_size,
        "bilrp s/pair": per_pair(model, pairs, method="bilrp"),
        f"ij s/pair ({ij_steps} steps)": per_pair(model, pairs, method="ij", steps=ij_steps),
        "BiLRP conservation error (biases zeroed)": bilrp_err, "H×P error (biases zeroed)": hxp_err,
        "score - model score": score_err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="STS-b test pairs per tiny model")
    parser.add_argument("--real-pairs", type=int, default=3, help="STS-b test pairs per packaged model")
    parser.add_argument("--ij-steps", type=int, default=16)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-real", action="store_true", help="only the tiny models")
    parser.add_argument("--kinds", default=",".join(sorted(ARCHITECTURES)), help="'none': no tiny architectures")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="names from PIPELINES, comma-separated; 'none': no pooling/module rows")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    pairs = stsb_pairs(args.data_dir, max(args.pairs, args.real_pairs))
    print(f"CPU ({torch.get_num_threads()} threads), float32, STS-b test pairs: {args.pairs} per tiny model "
          f"(texts truncated at 24 tokens), {args.real_pairs} per packaged model\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [] if args.kinds == "none" else args.kinds.split(","):
            model = load_model(save_sentence_transformer(Path(tmp) / kind, kind), device="cpu")
            zeroed = load_model(save_sentence_transformer(Path(tmp) / f"{kind}-0", kind, zero_bias=True), device="cpu")
            rows.append(row("tiny random", kind, model, zeroed, pairs[: args.pairs], args.ij_steps))
            print(f"  {kind}: {json.dumps(rows[-1], default=float)}", file=sys.stderr)  # progress, row by row
        for name in [] if args.pipelines == "none" else args.pipelines.split(","):
            folder = save_st_folder(Path(tmp) / name.replace(" ", "_"), "bert", PIPELINES[name])
            model, zeroed = load_model(folder, device="cpu"), load_model(folder, device="cpu")
            zero_biases(zeroed)
            rows.append(row(f"tiny random, {name}", "bert", model, zeroed, pairs[: args.pairs], args.ij_steps))
            print(f"  {name}: {json.dumps(rows[-1], default=float)}", file=sys.stderr)
    if not args.skip_real:
        for name in ("all-MiniLM-L6-v2", "all-mpnet-base-v2"):
            try:
                model, zeroed = load_model(name, device="cpu"), load_model(name, device="cpu")
            except ValueError as exc:
                print(f"  {name}: skipped ({exc})", file=sys.stderr)
                continue
            zero_biases(zeroed)
            rows.append(row(name, model.architecture.name, model, zeroed, pairs[: args.real_pairs], args.ij_steps))
            print(f"  {name}: {json.dumps(rows[-1], default=float)}", file=sys.stderr)
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False, floatfmt=".3g"))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "architectures.json").write_text(json.dumps(rows, indent=2, default=float))
    worst = float(np.max([r["BiLRP conservation error (biases zeroed)"] for r in rows]))
    print(f"\nworst BiLRP conservation error with biases zeroed: {worst:.2g}")


if __name__ == "__main__":
    main()
