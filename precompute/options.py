"""The command line's shared option groups and argument types: every verb's parser is built from these, so an
option means the same (name, default, help) wherever it appears. Add an option used by several verbs here.
(The model and method registries are imported when a parser is built: importing this module stays light.)"""

from __future__ import annotations

import argparse
import os

from core.datasets import DATA_DIR_ENV, DUPLICATE_POLICIES, ON_BAD
from core.memory import DEFAULT_MAX_MEMORY, format_memory, parse_memory
from core.quadrature import AUTO, DEFAULT_MAX_STEPS, DEFAULT_TOL, QUADRATURES
from core.safe_text import parse_ascii_decimal, parse_ascii_int

DEFAULT_STORE = os.environ.get("SIMLENS_STORE", "").strip() or "store"
STORE_HELP = (f"store folder or DuckLake connection string, e.g. 'ducklake:postgres:dbname=simlens host=db "
              f"data_path=s3://bucket/simlens/' (default $SIMLENS_STORE or ./store; now {DEFAULT_STORE})")


# ---- argument types -------------------------------------------------------------------------------------


def _int(text: str, minimum: int, what: str) -> int:
    value = parse_ascii_int(text)  # int() would also take Arabic-Indic and other non-ASCII digits
    if value is None:
        raise argparse.ArgumentTypeError(f"expected {what} in ASCII digits, got {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A positive integer in ASCII digits."""
    return _int(text, 1, "a positive integer")


def steps_value(text: str) -> int | str:
    """Integration steps: a positive integer in ASCII digits, or ``auto``."""
    return AUTO if text.strip() == AUTO else _int(text, 1, f"a positive integer or {AUTO}")


def positive_float(text: str) -> float:
    """A positive finite number in ASCII (``1e-3``, ``0.001``)."""
    value = parse_ascii_decimal(text)
    if value is None or not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number such as 1e-3, got {text!r}")
    return value


def layer_number(text: str) -> int:
    """A layer: an integer >= 0 in ASCII digits."""
    return _int(text, 0, "a layer number >= 0 (0 = input embeddings)")


def shard(text: str) -> str:
    """``K/N`` with 1 <= K <= N."""
    k, slash, n = text.partition("/")
    k_value, n_value = parse_ascii_int(k), parse_ascii_int(n)
    if not slash or k_value is None or n_value is None or not 1 <= k_value <= n_value:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 1/2, got {text!r}")
    return f"{k_value}/{n_value}"


def memory_size(text: str) -> int:
    """Bytes from a size such as ``2GB``, ``512MiB`` or a number of bytes (see ``core.memory.parse_memory``)."""
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("max_memory must be", "expected", 1)) from None


def ints(text: str) -> list[int]:
    """``0,3,5`` -> [0, 3, 5]."""
    values = [parse_ascii_int(v) for v in text.split(",") if v.strip()]
    if any(v is None for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def step_list(text: str) -> list[int]:
    """``1,2,4`` -> [1, 2, 4], every value positive."""
    values = ints(text)
    bad = [v for v in values if v < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"steps must be positive integers, got {bad[0]}")
    return values


def names(text: str) -> list[str]:
    """``bilrp, ij`` -> ["bilrp", "ij"]."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value}")
    return value


def column_mapping(text: str | None) -> dict[str, str] | None:
    """``--columns sentence1=a,sentence2=b,score=c`` as a dict."""
    if text is None:
        return None
    try:
        return dict(item.split("=", 1) for item in text.split(","))
    except ValueError:
        raise ValueError(f"--columns must look like sentence1=a,sentence2=b,score=c, got {text!r}") from None


def gold_range(text: str | None) -> tuple[float, float] | None:
    """``--gold-range 0,5`` as (0.0, 5.0)."""
    if text is None:
        return None
    values = [parse_ascii_decimal(v) for v in text.split(",")]
    if len(values) != 2 or any(v is None for v in values):
        raise ValueError(f"--gold-range must look like 0,5 (ASCII numbers), got {text!r}")
    return values[0], values[1]


# ---- option groups ----------------------------------------------------------------------------------------


def add_model(parser: argparse.ArgumentParser, what: str = "model folder, packaged name or hub id") -> None:
    from core.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"{what} (default {DEFAULT_MODEL})")


def add_routes(parser: argparse.ArgumentParser) -> None:
    """--route, --route-a, --route-b: the routes of a Router/Asym model's sides (``core.explain``'s
    route_a/route_b), and --trust-remote-code."""
    parser.add_argument("--route", default=None, metavar="TASK",
                        help="route of both sentences through a Router/Asym model: a task (query, document) or a "
                             "route name, as sentence-transformers' encode(task=...) resolves it (default: plain "
                             "encode's route)")
    parser.add_argument("--route-a", default=None, metavar="TASK", help="route of sentence1 (e.g. query)")
    parser.add_argument("--route-b", default=None, metavar="TASK", help="route of sentence2 (e.g. document)")
    add_trust_remote_code(parser)


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the custom code a model folder names in its config's auto_map (refused without "
                             "it, as sentence-transformers refuses it); only for code you trust")


def add_model_loading(parser: argparse.ArgumentParser) -> None:
    """--truncate-dim and --dtype: how the model is loaded (``core.load_model``'s options; each makes a variant)."""
    from core.models import DTYPES

    parser.add_argument("--truncate-dim", type=positive_int, default=None, metavar="K",
                        help="cut embeddings to their first K dimensions, as sentence-transformers' truncate_dim "
                             "(default: the model's own; a run with another K is another model variant)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="float32 (default: half-precision weights are upcast, explanations conserve) or native "
                             "(the checkpoint's dtype; the rounding shows as each explanation's residual)")


def load_options(args: argparse.Namespace) -> dict:
    """``core.load_model``'s keyword arguments from --truncate-dim and --dtype, only those not at their default."""
    options = {"truncate_dim": args.truncate_dim, "dtype": args.dtype}
    return {k: v for k, v in options.items() if v is not None and not (k == "dtype" and v == "float32")}


def add_store(parser: argparse.ArgumentParser, required: bool = False, what: str = "store directory") -> None:
    if required:
        parser.add_argument("--store", required=True, help=what)
    else:
        parser.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help=f"folder laid out like shared/data (default: ${DATA_DIR_ENV} or ../shared/data)")


def add_dataset(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--dataset (required without a default) and how to read a user's file: --data-dir, --lang, --columns,
    --gold-range (:func:`dataset_arguments` turns them into ``load_dataset`` arguments)."""
    if default is None:
        parser.add_argument("--dataset", required=True,
                            help="stsb:test, sick:trial, biosses, mstsb:de:test, mstsb:en-de:test, a CSV/TSV/"
                                 "Parquet/JSONL file, or hf:<owner>/<name>[:<split>]")
    else:
        parser.add_argument("--dataset", default=default, help=f"pairs to evaluate (default {default}; any "
                            "dataset spec or file `attribute` takes)")
    add_data_dir(parser)
    parser.add_argument("--lang", default=None,
                        help="language of a user file's sentences (ISO code, e.g. en; sets the POS tagger)")
    parser.add_argument("--columns", default=None,
                        help="column mapping of a user file, e.g. sentence1=text_a,sentence2=text_b,score=label")
    parser.add_argument("--gold-range", default=None, help="gold scale of a user file, e.g. 0,5")
    parser.add_argument("--on-bad", default="error", choices=ON_BAD,
                        help="rows with a missing/non-numeric/out-of-range gold or an empty sentence: stop with a "
                             "list of them (error, default) or drop and count them (skip)")
    parser.add_argument("--duplicates", default=None, choices=DUPLICATE_POLICIES,
                        help="rows repeating an earlier (sentence1, sentence2) pair: error, skip (keep the first) or "
                             "keep (default: keep for the built-in benchmarks, --on-bad for files)")


def dataset_arguments(args: argparse.Namespace) -> dict:
    """``load_dataset`` keyword arguments from :func:`add_dataset`'s options (and ``--limit``: the dataset is
    its first N pairs, keyed ``<key>:firstN``)."""
    return dict(data_dir=args.data_dir, columns=column_mapping(args.columns), lang=args.lang,
                gold_range=gold_range(args.gold_range), on_bad=args.on_bad, duplicates=args.duplicates,
                limit=getattr(args, "limit", None))


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")


def add_compute(parser: argparse.ArgumentParser, batch_default: int = 16) -> None:
    """--batch-size, --limit and --device."""
    parser.add_argument("--batch-size", type=positive_int, default=batch_default,
                        help=f"sentences per forward batch (default {batch_default})")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="only the first N pairs (the store records only those; the dataset key ends in :firstN)")
    add_device(parser)


def add_settings(parser: argparse.ArgumentParser, layer_help: str = "hidden layer to attribute to (0 = input)",
                 layer: bool = True, tolerance: bool = True) -> None:
    """An attribution setting: --layer, --steps, --quadrature, and (``tolerance``) --tol and --max-steps."""
    if layer:
        parser.add_argument("--layer", type=layer_number, default=None, help=layer_help)
    parser.add_argument("--steps", type=steps_value, default=None,
                        help="integration steps for ij: a count, or auto (the default): refined per sentence until "
                             "the completeness error meets --tol or --max-steps is reached")
    if tolerance:
        parser.add_argument("--tol", type=positive_float, default=None,
                            help="--steps auto: the completeness tolerance |score - sum of the matrix| "
                                 f"(default {DEFAULT_TOL:g})")
        parser.add_argument("--max-steps", type=positive_int, default=None,
                            help=f"--steps auto: the cap on one sentence's steps (default {DEFAULT_MAX_STEPS})")
    parser.add_argument("--quadrature", default=None, choices=QUADRATURES,
                        help="ij rule for a fixed step count (default gauss-legendre; auto uses its panels)")


def add_memory(parser: argparse.ArgumentParser) -> None:
    """--max-memory: the bound on one batch's working memory beyond the model."""
    parser.add_argument("--max-memory", type=memory_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                        help="working memory one batch of factors may take beyond the model, e.g. 2GB or 512MiB "
                             f"(default {format_memory(DEFAULT_MAX_MEMORY)}); sets sentences per batch and "
                             "sequences per forward pass, not the results")


def add_methods(parser: argparse.ArgumentParser, default_methods: str, layer_help: str) -> None:
    """--methods (comma-separated) with one attribution setting for all of them (``ij`` to the default tolerance
    under --steps auto)."""
    from core.methods import METHODS

    parser.add_argument("--methods", type=names, default=None,
                        help=f"comma-separated methods from {', '.join(sorted(METHODS))} (default {default_methods})")
    add_settings(parser, layer_help, tolerance=False)


def add_training(parser: argparse.ArgumentParser, epochs: int, lr: float) -> None:
    """Fine-tuning hyper-parameters (:class:`core.finetune.FinetuneConfig`) and the training pairs."""
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--lr", type=float, default=lr, help=f"AdamW learning rate (default {lr:g})")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="fraction of the steps with linear warm-up (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order and dropout (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="retrain even if --output holds a finished model or a checkpoint of other settings")
    parser.add_argument("--train-dataset", default="stsb:train", help="training pairs (default stsb:train)")
