"""``python -m precompute``: attribute, predict, list, merge, compact, migrate and verify; the faithfulness evaluations of
precompute/evaluations/ (one verb each, from the registry) and
``evaluations`` to list what a store holds; search indexes (index, search)."""

# Start-up: parsing the command line imports no torch. The verbs are listed from their registries with their
# help only; the options of the one verb on the command line are built when it is parsed (the model and method
# registries a run's options need are imported then), and what a verb runs is imported when it runs.

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from precompute import evaluations, search_cli
from precompute import options as opt

if TYPE_CHECKING:
    from core.datasets import PairDataset
    from precompute.distributed import RayOptions


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """What ``attribute`` and ``predict`` take: a model, a dataset, a store, sharding, chunking, batch/limit/device."""
    opt.add_model(parser)
    opt.add_model_loading(parser)
    opt.add_dataset(parser)
    opt.add_store(parser)
    parser.add_argument("--shard", type=opt.shard, default=None,
                        help="K/N: process every N-th chunk starting at K (1-based)")
    opt.add_compute(parser)
    from precompute.runner import DEFAULT_CHUNK_SIZE

    parser.add_argument("--chunk-size", type=opt.positive_int, default=DEFAULT_CHUNK_SIZE,
                        help=f"pairs per atomically written chunk (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--force", action="store_true", help="recompute a run that is already done")
    _add_model_setup_options(parser)
    _add_ray_options(parser)


def _add_model_setup_options(parser: argparse.ArgumentParser) -> None:
    """--pooling, the prompts, routes and POS taggers of a run (each side may have its own), --trust-remote-code."""
    from core.models import POOLINGS

    parser.add_argument("--pooling", default=None, choices=POOLINGS,
                        help="pooling of a plain Hugging Face model (default mean; sentence-transformers models "
                             "keep their own)")
    parser.add_argument("--prompt", default=None, metavar="NAME_OR_TEXT",
                        help="prompt prepended to both sentences: one of the model's prompt names or a text "
                             "(default: the model's default prompt; '' for none)")
    parser.add_argument("--prompt-a", default=None, metavar="NAME_OR_TEXT", help="prompt of sentence1 (e.g. query)")
    parser.add_argument("--prompt-b", default=None, metavar="NAME_OR_TEXT",
                        help="prompt of sentence2 (e.g. passage)")
    opt.add_routes(parser)
    parser.add_argument("--tagger", default=None, metavar="NAME_OR_PATH",
                        help="spaCy pipeline for POS tags of both sides: an installed package or a folder "
                             "(default: an installed pipeline of each side's language)")
    parser.add_argument("--tagger-a", default=None, metavar="NAME_OR_PATH", help="spaCy pipeline of sentence1")
    parser.add_argument("--tagger-b", default=None, metavar="NAME_OR_PATH", help="spaCy pipeline of sentence2")


def _side(args: argparse.Namespace, name: str, side: str) -> str | None:
    """The side's own option (--prompt-a) if given, else the option for both sides (--prompt)."""
    own = getattr(args, f"{name}_{side}", None)
    return own if own is not None else getattr(args, name, None)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as the CLI's own one-line messages on stderr (on a line of their own under a progress bar)."""
    from tqdm.auto import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    from precompute.distributed import DEFAULT_CPUS_PER_WORKER, LOCAL

    ray = parser.add_argument_group("distributed on Ray (instead of --shard)")
    ray.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                     help="run the chunks on a Ray actor pool: alone, a local cluster on this machine; with an "
                          "address (auto, host:6379, ray://host:10001), an existing cluster")
    ray.add_argument("--workers", type=opt.positive_int, default=None, help="actors in the pool (default 2)")
    ray.add_argument("--gpus-per-worker", type=_non_negative, default=None, metavar="G",
                     help="GPUs per actor, fractions share one (e.g. 0.5; default 1 when the cluster has GPUs)")
    ray.add_argument("--cpus-per-worker", type=_positive, default=None, metavar="C",
                     help=f"CPUs per actor (default {DEFAULT_CPUS_PER_WORKER}: fractions leave Ray's own tasks room)")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _ray_options(args: argparse.Namespace) -> RayOptions | None:
    """The Ray options of a run, or None (one process); Ray-only flags without --ray are an error."""
    given = [f"--{name.replace('_', '-')}" for name in ("workers", "gpus_per_worker", "cpus_per_worker")
             if getattr(args, name) is not None]
    if args.ray is None:
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --ray")
        return None
    if args.shard is not None:
        raise ValueError("--shard and --ray are alternatives: a Ray run spreads every chunk over its workers")
    from precompute.distributed import DEFAULT_CPUS_PER_WORKER, RayOptions

    options = RayOptions(address=args.ray or None, workers=args.workers or 2, gpus_per_worker=args.gpus_per_worker,
                         cpus_per_worker=args.cpus_per_worker or DEFAULT_CPUS_PER_WORKER)
    options.validate()
    return options


def _evaluation_options(cls, sub: argparse.ArgumentParser) -> None:
    before = len(sub._actions)
    cls.add_arguments(sub)
    own = [a.dest for a in sub._actions[before:] if a.dest not in _SHARED_DESTS]
    sub.set_defaults(evaluation=cls, evaluation_options=own)


def _evaluations_options(listing: argparse.ArgumentParser) -> None:
    opt.add_store(listing)
    listing.add_argument("--kind", default=None, choices=evaluations.kinds())


# options every evaluation verb shares (the frame's arguments, not an evaluation's own)
_SHARED_DESTS = {"model", "dataset", "store", "data_dir", "lang", "columns", "gold_range", "on_bad", "duplicates",
                 "batch_size", "limit", "device"}


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line ``error: ...`` after the usage (verbs' parsers inherit it)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")


def _attribute_options(attribute: argparse.ArgumentParser) -> None:
    from core.methods import METHODS

    _add_run_options(attribute)
    attribute.add_argument("--method", default="bilrp", choices=sorted(METHODS))
    opt.add_settings(attribute)
    opt.add_memory(attribute)
    attribute.add_argument("--save-factors", action="store_true",
                           help="also store per-token factors (float16) to explain stored pairs without the model")


def _merge_options(merge: argparse.ArgumentParser) -> None:
    merge.add_argument("sources", nargs="+", help="stores built apart (folders or DuckLake connection strings)")
    opt.add_store(merge, required=True, what="destination store")


def _compact_options(comp: argparse.ArgumentParser) -> None:
    opt.add_store(comp)
    comp.add_argument("--dry-run", action="store_true", help="only say what would be done")
    comp.add_argument("--keep-hours", type=float, default=1.0,
                      help="keep snapshots (and their files) younger than this (default 1 hour)")


def _migrate_options(mig: argparse.ArgumentParser) -> None:
    mig.add_argument("old", help="the old store folder (or, alone, the store whose model ids to migrate)")
    mig.add_argument("new", nargs="?", default=None,
                     help="the new store (folder or DuckLake connection string)")


def _verify_options(ver: argparse.ArgumentParser) -> None:
    opt.add_store(ver)
    ver.add_argument("--run", default=None, metavar="ID", help="only the files holding rows of this run")


def _verbs() -> dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]]:
    """verb -> (help, description, adds its options), in listing order."""
    from core.store.kinds import PREDICT

    verbs = {
        "attribute": ("explain every pair of a dataset into the store",
                      "Explain every pair of a dataset into the store (resumable).", _attribute_options),
        PREDICT.name: (f"store {PREDICT.description}",
                       "Store the model's similarity scores for a dataset, and its metrics.", _add_run_options),
        "schema": ("print the store schema as markdown",
                   "Print the store's layout and every table's columns as markdown (docs/STORE.md).", lambda _p: None),
        "list": ("show what the store holds", "Show the runs in a store.", opt.add_store),
        "merge": ("merge shard stores into one",
                  "Copy the datasets, models, runs and chunks of SOURCE stores into DEST.", _merge_options),
        "compact": ("merge small files, expire old snapshots, delete unreferenced files",
                    "Drop rows no reader sees (replaced records, losing writes of raced chunks), merge small data "
                    "files, expire snapshots older than --keep and delete files nothing references (also those of "
                    "killed writers).", _compact_options),
        "migrate": ("convert a store of the old Parquet-directory layout; record old model ids by content",
                    "With OLD NEW: copy a store of the Parquet-directory layout (SIMLENS_STORE.json) into a DuckLake "
                    "store. With one STORE: record the models of a store written before model ids were content "
                    "hashes under their content ids (docs/model-identity.md); a copy does this too. Resumable, and "
                    "running it again changes nothing.", _migrate_options),
        "verify": ("check every data file against its checksum (like git fsck)",
                   "Check every data file of the store's newest snapshot against the SHA-256 recorded when it was "
                   "written, and list each damaged, missing or unchecked (no checksum yet: `compact` adds them) file "
                   "with its table, run and chunk. Exit status 1 when any file does not verify.", _verify_options),
    }
    for verb in evaluations.verbs():  # one verb per registered evaluation (precompute/evaluations/)
        cls = evaluations.get_evaluation(verb)
        verbs[verb] = (cls.help, cls.description, partial(_evaluation_options, cls))
    verbs["evaluations"] = ("list the stored evaluations", "Show the faithfulness evaluations in a store.",
                            _evaluations_options)
    for verb, (help_text, description) in search_cli.VERBS.items():
        verbs[verb] = (help_text, description, partial(search_cli.add_options, verb, default_store=opt.DEFAULT_STORE))
    return verbs


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. ``verb``: only that verb's options are built (what parsing one command line
    needs; any other name, such as "" for ``--help`` alone, builds none); None: every verb's."""
    parser = _Parser(prog="python -m precompute", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, (help_text, description, add_options) in _verbs().items():
        sub = verbs.add_parser(name, help=help_text, description=description)
        if verb is None or verb == name:
            add_options(sub)
    return parser


def _verb_of(argv: list[str]) -> str:
    """The verb of a command line: its first word that is not an option ("" when there is none)."""
    return next((word for word in argv if not word.startswith("-")), "")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.2f}"
    return "" if value is None else str(value)


def _list(store: str) -> int:
    from core.store import Store

    with Store(store) as reader:
        runs = reader.runs()
    if runs.empty:
        print(f"{store}: no runs yet (python -m precompute attribute --dataset stsb:test --store {store})")
        return 0
    runs = runs.assign(pairs=runs["coverage"], chunks=[f"{int(k)}/{int(n)}" for k, n in
                                                       zip(runs["chunks_present"], runs["n_chunks"], strict=True)])
    cols = ["run_id", "model_name", "dataset_key", "method", "layer", "steps", "status", "pairs", "chunks",
            "spearman", "pearson", "mse", "pairs_per_s"]
    print(runs[cols].to_string(index=False, formatters={c: _fmt for c in cols}))
    return 0


def _verify(store: str, run_id: str | None) -> int:
    """``verify``: every problem file on its own line, then a summary; 1 when any file does not verify."""
    from core.store import Store

    with Store(store) as s:
        report = s.verify(run_id, progress=True)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _evaluations(store: str, kind: str | None) -> int:
    from core.store import Store

    with Store(store) as reader:
        found = reader.evaluation_list(kind)
    if found.empty:
        print(f"{store}: no evaluations yet (python -m precompute perturbation --limit 100 --store {store})")
        return 0
    cols = ["eval_id", "kind", "model_name", "dataset_key", "n_pairs", "n_rows", "created_at", "seconds"]
    print(found[cols].to_string(index=False, formatters={c: _fmt for c in cols}))
    return 0


def _load_pairs(args: argparse.Namespace) -> PairDataset:
    """The dataset of ``args`` (its first ``--limit`` pairs), with its skip/duplicate counts reported on stderr."""
    from core.datasets import load_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        dataset = load_dataset(args.dataset, **opt.dataset_arguments(args))
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    counts = [f"{len(dataset)} pairs" + (f" (the first of {dataset.limited_from})" if dataset.limited_from else "")]
    if dataset.skipped:
        counts.append(f"{sum(dataset.skipped.values())} rows skipped ("
                      + ", ".join(f"{n} {reason}" for reason, n in dataset.skipped.items()) + ")")
    if dataset.duplicates_kept:
        counts.append(f"{dataset.duplicates_kept} duplicate pairs kept")
    print(f"dataset {dataset.key}: " + "; ".join(counts), file=sys.stderr)
    return dataset


def check_store_path(store: str | os.PathLike) -> None:
    """Raise OSError naming the path when a folder ``store`` cannot be created or written (nothing is created);
    a DuckLake connection string is checked when it is opened."""
    if str(store).startswith("ducklake:"):
        return
    path = Path(store)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "exists and is not a directory (a store is a directory)", str(path))
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(20, f"cannot be created: {existing} is a file", str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(13, f"cannot be written (no write permission on {existing})", str(path))


def os_error_message(exc: OSError) -> str:
    """One line naming the path: ``<path>: <reason>``."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


def _evaluate(args: argparse.Namespace) -> int:
    from core.datasets import DatasetError
    from core.finetune import TrainingInterrupted
    from core.store import StoreError

    cls = args.evaluation
    try:
        check_store_path(args.store)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was truncated.*")
            result = evaluations.evaluate(cls, **cls.arguments(args, args.evaluation_options))
    except TrainingInterrupted as exc:
        print(f"\ninterrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was stored for this evaluation", file=sys.stderr)
        return 130
    except (ValueError, StoreError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    for line in result.summary:
        print(line)
    print(f"stored evaluation {result.eval_id} ({result.kind}, {len(result.rows)} rows, {result.seconds:.0f}s) "
          f"in {args.store}")
    return 0


def main(argv: list[str] | None = None) -> int:
    previous = warnings.showwarning
    warnings.showwarning = _print_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = previous


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_verb_of(argv)).parse_args(argv)  # every option's value is checked here (exit 2), before
    if getattr(args, "evaluation", None) is not None:     # anything runs
        return _evaluate(args)
    from core.datasets import DatasetError
    from core.store import StoreError, compact, merge_stores, migrate_store
    from core.store.kinds import PREDICT
    from core.store.schema import schema_markdown

    errors: tuple[type[Exception], ...] = (ValueError, StoreError, DatasetError)  # one-line errors (exit 2)
    try:
        if args.verb in search_cli.VERBS:
            return search_cli.main(args)
        if args.verb == "evaluations":
            return _evaluations(args.store, args.kind)
        if args.verb == "schema":
            print(schema_markdown() + "\n" + evaluations.kinds_markdown())
            return 0
        if args.verb == "list":
            return _list(args.store)
        if args.verb == "verify":
            return _verify(args.store, args.run)
        if args.verb == "merge":
            check_store_path(args.store)
            counts = merge_stores(args.sources, args.store)
            print(f"merged into {args.store}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
        if args.verb == "compact":
            if not args.dry_run:
                check_store_path(args.store)  # a read-only store: the one-line "cannot be written"
            report = compact(args.store, dry_run=args.dry_run, keep=timedelta(hours=args.keep_hours))
            print(f"{'dry run: ' if args.dry_run else ''}compact {args.store}")
            for line in report.lines():
                print(f"  {line}")
            return 0
        if args.verb == "migrate" and args.new is None:
            from core.store.migrate import migrate_model_ids

            mapped = migrate_model_ids(args.old)
            print(f"migrated {len(mapped)} model id(s) of {args.old} to content ids"
                  + "".join(f"\n  {old} -> {new}" for old, new in mapped.items()))
            return 0
        if args.verb == "migrate":
            counts = migrate_store(args.old, args.new)
            print(f"migrated {args.old} into {args.new}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
        from core.loading import as_model
        from precompute.distributed import RayRunError, run_on_ray
        from precompute.runner import run

        errors += (RayRunError,)
        dataset = _load_pairs(args)
        check_store_path(args.store)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was truncated.*")
            ray_options = _ray_options(args)
            common = dict(method=args.method if args.verb == "attribute" else PREDICT.name,
                          layer=getattr(args, "layer", None), steps=getattr(args, "steps", None),
                          quadrature=getattr(args, "quadrature", None), tol=getattr(args, "tol", None),
                          max_steps=getattr(args, "max_steps", None), batch_size=args.batch_size,
                          chunk_size=args.chunk_size, limit=args.limit, force=args.force,
                          save_factors=getattr(args, "save_factors", False), device=args.device,
                          pooling=args.pooling, prompt_a=_side(args, "prompt", "a"),
                          prompt_b=_side(args, "prompt", "b"), tagger_a=_side(args, "tagger", "a"),
                          tagger_b=_side(args, "tagger", "b"), route_a=_side(args, "route", "a"),
                          route_b=_side(args, "route", "b"), trust_remote_code=args.trust_remote_code,
                          **({"max_memory": args.max_memory} if args.verb == "attribute" else {}))
            loading = opt.load_options(args)
            if ray_options is None:
                model = as_model(args.model, args.device, pooling=args.pooling, **loading) if loading else args.model
                result = run(model, dataset, args.store, shard=args.shard, **common)
            elif loading:
                raise ValueError(f"Ray workers do not take --{', --'.join(k.replace('_', '-') for k in loading)} "
                                 f"yet: run without Ray, or without these options")
            else:
                result = run_on_ray(args.model, dataset, args.store, ray_options, **common)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
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
