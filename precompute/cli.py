"""``python -m precompute``: attribute, predict, list and merge."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

from core.datasets import DATA_DIR_ENV, DatasetError, load_dataset
from core.methods import METHODS
from core.models import DEFAULT_MODEL
from core.quadrature import QUADRATURES
from core.store import Store, StoreError, merge_stores
from precompute.runner import DEFAULT_CHUNK_SIZE, run

DEFAULT_STORE = "store"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model folder, packaged name or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", required=True,
                        help="stsb:test, sick:trial, biosses, mstsb:de:test, mstsb:en-de:test, a CSV/TSV/Parquet/"
                             "JSONL file, or hf:<owner>/<name>[:<split>]")
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"store directory (default ./{DEFAULT_STORE})")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder laid out like shared/data (default: ${DATA_DIR_ENV} or ../shared/data)")
    parser.add_argument("--lang", default=None,
                        help="language of a user file's sentences (ISO code, e.g. en; sets the POS tagger)")
    parser.add_argument("--columns", default=None,
                        help="column mapping of a user file, e.g. sentence1=text_a,sentence2=text_b,score=label")
    parser.add_argument("--gold-range", default=None, help="gold scale of a user file, e.g. 0,5")
    parser.add_argument("--shard", default=None, help="K/N: process every N-th chunk starting at K (1-based)")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per forward batch (default 16)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"pairs per atomically written chunk (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--force", action="store_true", help="recompute a run that is already done")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m precompute", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    attribute = verbs.add_parser("attribute", help="explain every pair of a dataset into the store",
                                 description="Explain every pair of a dataset into the store (resumable).")
    _add_run_options(attribute)
    attribute.add_argument("--method", default="bilrp", choices=sorted(METHODS))
    attribute.add_argument("--layer", type=int, default=None, help="hidden layer to attribute to (0 = input)")
    attribute.add_argument("--steps", type=int, default=None, help="integration steps for ij (default 64)")
    attribute.add_argument("--quadrature", default=None, choices=QUADRATURES, help="ij rule (default gauss-legendre)")
    attribute.add_argument("--save-factors", action="store_true",
                           help="also store per-token factors (float16) to explain stored pairs without the model")
    predict = verbs.add_parser("predict", help="store the model's scores and metrics only (fast)",
                               description="Store the model's similarity scores for a dataset, and its metrics.")
    _add_run_options(predict)
    listing = verbs.add_parser("list", help="show what the store holds", description="Show the runs in a store.")
    listing.add_argument("--store", default=DEFAULT_STORE)
    merge = verbs.add_parser("merge", help="merge shard stores into one",
                             description="Copy the datasets, models, runs and chunks of SOURCE stores into DEST.")
    merge.add_argument("sources", nargs="+", help="store directories written by shards")
    merge.add_argument("--store", required=True, help="destination store")
    return parser


def _mapping(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        return dict(item.split("=", 1) for item in text.split(","))
    except ValueError:
        raise ValueError(f"--columns must look like sentence1=a,sentence2=b,score=c, got {text!r}") from None


def _range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--gold-range must look like 0,5, got {text!r}") from None
    return low, high


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.2f}"
    return "" if value is None else str(value)


def _list(store: str) -> int:
    runs = Store(store).runs()
    if runs.empty:
        print(f"{store}: no runs yet (python -m precompute attribute --dataset stsb:test --store {store})")
        return 0
    cols = ["run_id", "model_name", "dataset_key", "method", "layer", "steps", "status", "chunks_present",
            "n_chunks", "spearman", "pearson", "mse", "pairs_per_s"]
    print(runs[cols].to_string(index=False, formatters={c: _fmt for c in cols}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "list":
            return _list(args.store)
        if args.verb == "merge":
            counts = merge_stores(args.sources, args.store)
            print(f"merged into {args.store}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
        dataset = load_dataset(args.dataset, data_dir=args.data_dir, columns=_mapping(args.columns),
                               lang=args.lang, gold_range=_range(args.gold_range))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was truncated.*")
            result = run(
                args.model, dataset, args.store, method=args.method if args.verb == "attribute" else "predict",
                layer=getattr(args, "layer", None), steps=getattr(args, "steps", None),
                quadrature=getattr(args, "quadrature", None), shard=args.shard, batch_size=args.batch_size,
                chunk_size=args.chunk_size, limit=args.limit, force=args.force,
                save_factors=getattr(args, "save_factors", False), device=args.device,
            )
    except (ValueError, StoreError, DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the chunks written so far are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    if result.status == "skipped":
        print(f"run {result.run_id} is already done in {args.store} (use --force to recompute)")
        return 0
    metrics = " ".join(f"{k}={_fmt(v)}" for k, v in result.metrics.items())
    print(f"run {result.run_id}: {result.status}, {result.pairs_written} pairs in {result.seconds:.1f}s; {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
