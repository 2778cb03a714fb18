"""Cost of a sentence's factor against its length, in forward mode (jvp + vmap: one Jacobian-vector product per
token) and in reverse mode (one backward pass per embedding dimension), and the mode ``autodiff="auto"`` takes.

    .venv/bin/python bench/bench_modes.py                                  # MiniLM (384 dims), 8..512 tokens
    .venv/bin/python bench/bench_modes.py --model all-mpnet-base-v2 --lengths 8,64,512

One sentence per length (repeated English words, cut to exactly N tokens with the special tokens), method
``hxp`` (``bilrp`` costs the same up to its rules), seconds of one ``compute_factors`` call per mode after a
warm-up, with the default ``max_memory``. Forward mode's cost grows with the tokens, reverse mode's with the
dimensions, so the two cross where tokens ~ dims. MiniLM's sentence-transformers configuration cuts texts at 256
tokens although its BERT encoder has 512 positions: lengths above the configured maximum (up to the encoder's
positions) are reached by lifting that cut, which the table says. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--lengths", default="8,16,32,64,128,256,384,512")
    parser.add_argument("--method", default="hxp")
    args = parser.parse_args(argv)
    import torch

    from core import compute_factors, load_model
    from core.memory import EncoderShape, cheaper_mode

    warnings.simplefilter("ignore")
    model = load_model(args.model, device="cpu")
    shape = EncoderShape.of(model.encoder.config, model.hidden_size)
    lengths = [int(v) for v in args.lengths.split(",")]
    positions = int(getattr(model.encoder.config, "max_position_embeddings", model.max_length))
    configured = model.max_length
    too_long = [n for n in lengths if n > positions]
    if too_long:
        parser.error(f"{args.model}'s encoder has {positions} positions; drop {too_long}")
    model.max_length = max(configured, *lengths)
    compute_factors(model, [sentence_of(model, 8)], method=args.method, prompts="", autodiff="forward")  # warm-up
    compute_factors(model, [sentence_of(model, 8)], method=args.method, prompts="", autodiff="reverse")
    print(f"{args.model} ({shape.dims} dims, {model.num_layers} layers), {args.method}, one sentence, CPU, "
          f"{torch.get_num_threads()} thread(s); configured maximum {configured} tokens"
          + (f" (lifted to {model.max_length} here: the encoder has {positions} positions)"
             if model.max_length > configured else "") + "\n")
    print("| tokens | forward s | reverse s | forward / reverse | faster | auto takes | auto's time / best |")
    print("|--:|--:|--:|--:|:--|:--|--:|")
    for n in lengths:
        text = sentence_of(model, n)
        seconds = {}
        for mode in ("forward", "reverse"):
            start = time.perf_counter()
            compute_factors(model, [text], method=args.method, prompts="", autodiff=mode)
            seconds[mode] = time.perf_counter() - start
        auto = cheaper_mode(shape, n)
        best = min(seconds, key=seconds.get)
        print(f"| {n} | {seconds['forward']:.3g} | {seconds['reverse']:.3g} | "
              f"{seconds['forward'] / seconds['reverse']:.2f} | {best} | {auto} | "
              f"{seconds[auto] / seconds[best]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
