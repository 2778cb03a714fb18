"""``python -m precompute``: attribute, predict, list and merge; faithfulness evaluations (convergence,
conservation, perturbation, distributions, pos-subsets, agreement, ground-truth, table1, evaluations) and
fine-tuning of exact-attribution models (finetune); search indexes (index, search)."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

from core.datasets import DATA_DIR_ENV, DatasetError, load_dataset
from core.finetune import FinetuneConfig, TrainingInterrupted
from core.methods import METHODS
from core.models import DEFAULT_MODEL, POOLINGS
from core.quadrature import QUADRATURES
from core.store import Store, StoreError, merge_stores
from core.store.index import index_schema_markdown
from core.store.schema import schema_markdown
from precompute import evaluate, search_cli
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
    _add_model_setup_options(parser)


def _add_model_setup_options(parser: argparse.ArgumentParser) -> None:
    """--pooling, the prompts and the POS taggers of a run (each side may have its own)."""
    parser.add_argument("--pooling", default=None, choices=POOLINGS,
                        help="pooling of a plain Hugging Face model (default mean; sentence-transformers models "
                             "keep their own)")
    parser.add_argument("--prompt", default=None, metavar="NAME_OR_TEXT",
                        help="prompt prepended to both sentences: one of the model's prompt names or a text "
                             "(default: the model's default prompt; '' for none)")
    parser.add_argument("--prompt-a", default=None, metavar="NAME_OR_TEXT", help="prompt of sentence1 (e.g. query)")
    parser.add_argument("--prompt-b", default=None, metavar="NAME_OR_TEXT",
                        help="prompt of sentence2 (e.g. passage)")
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


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _step_list(text: str) -> list[int]:
    values = _ints(text)
    bad = [v for v in values if v < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"steps must be positive integers, got {bad[0]}")
    return values


def _names(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value}")
    return value


def _add_eval_options(parser: argparse.ArgumentParser, batch_default: int = 16) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model folder, packaged name or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", default="stsb:test", help="pairs to evaluate (default stsb:test; any "
                        "dataset spec or file `attribute` takes)")
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"store directory (default ./{DEFAULT_STORE})")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder laid out like shared/data (default: ${DATA_DIR_ENV} or ../shared/data)")
    parser.add_argument("--lang", default=None, help="language of a user file's sentences (e.g. en)")
    parser.add_argument("--columns", default=None,
                        help="column mapping of a user file, e.g. sentence1=text_a,sentence2=text_b,score=label")
    parser.add_argument("--gold-range", default=None, help="gold scale of a user file, e.g. 0,5")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs (default: all)")
    parser.add_argument("--batch-size", type=int, default=batch_default,
                        help=f"sentences per forward batch (default {batch_default})")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")


def _add_method_options(parser: argparse.ArgumentParser, default_methods: str, layer_help: str) -> None:
    parser.add_argument("--methods", type=_names, default=None,
                        help=f"comma-separated methods from {', '.join(sorted(METHODS))} (default {default_methods})")
    parser.add_argument("--layer", type=int, default=None, help=layer_help)
    parser.add_argument("--steps", type=int, default=None, help="integration steps for ij (default 64)")
    parser.add_argument("--quadrature", default=None, choices=QUADRATURES, help="ij rule (default gauss-legendre)")


def _add_training_options(parser: argparse.ArgumentParser, epochs: int, lr: float) -> None:
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--lr", type=float, default=lr, help=f"AdamW learning rate (default {lr:g})")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="fraction of the steps with linear warm-up (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order and dropout (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="retrain even if --output holds a finished model or a checkpoint of other settings")
    parser.add_argument("--train-dataset", default="stsb:train", help="training pairs (default stsb:train)")


def _add_evaluation_verbs(verbs) -> None:
    conv = verbs.add_parser(
        "convergence", help="ij attribution error against integration steps (IJ Fig. 2)",
        description="Residual |sum(A) - score| of integrated Jacobians against the number of steps, per layer and "
                    "quadrature rule, mean and sd over pairs.")
    _add_eval_options(conv)
    conv.add_argument("--layers", type=_ints, default=None,
                      help="comma-separated layers (default 0, L/2, L-1)")
    conv.add_argument("--steps", type=_step_list, default=list(evaluate.DEFAULT_STEPS),
                      help="comma-separated step counts (default 1,2,4,8,16,32,64,128)")
    conv.add_argument("--quadratures", type=_names, default=list(QUADRATURES),
                      help=f"comma-separated rules from {', '.join(QUADRATURES)} (default both)")
    cons = verbs.add_parser(
        "conservation", help="BiLRP relevance sum vs score, with/without biases, and HxP (BiLRP Fig. 6)",
        description="Relevance sum against the explained score for BiLRP, BiLRP on a copy of the model with all "
                    "biases zeroed (exact conservation) and Hessian x Product.")
    _add_eval_options(cons)
    cons.add_argument("--layer", type=int, default=0, help="layer to attribute to (default 0)")
    pert = verbs.add_parser(
        "perturbation", help="AUPC per method and a random ranking, Wilcoxon tests (BiLRP §4.3)",
        description="Tokens ranked by pooled pair relevance are added back, 4%% of a sentence per step, to a fully "
                    "masked sentence; the distance to the unperturbed embedding traces a curve whose area (AUPC) "
                    "is lower for better rankings.")
    _add_eval_options(pert)
    _add_method_options(pert, ",".join(evaluate.DEFAULT_METHODS), "layer for every method (default: each method's)")
    pert.add_argument("--seed", type=int, default=0, help="seed of the random ranking (default 0)")
    pert.add_argument("--step", type=_fraction, default=0.04, help="fraction of tokens added per step (default 0.04)")
    pert.add_argument("--no-random", action="store_true", help="leave out the random baseline")
    dist = verbs.add_parser(
        "distributions", help="attribution histograms, negative share, top-k%% share (IJ Figs. 3, 5)",
        description="Histogram of token-pair attributions per layer with the share that is negative, and the "
                    "cumulative share of the score explained by the top-k%% attributions by |value|.")
    _add_eval_options(dist)
    dist.add_argument("--methods", type=_names, default=None, help="comma-separated methods (default ij)")
    dist.add_argument("--layers", type=_ints, default=None, help="comma-separated layers (default 0, L/2, L-1, L)")
    dist.add_argument("--steps", type=int, default=None, help="integration steps for ij (default 64)")
    dist.add_argument("--quadrature", default=None, choices=QUADRATURES, help="ij rule (default gauss-legendre)")
    dist.add_argument("--bins", type=int, default=60, help="histogram bins (default 60)")
    pos = verbs.add_parser(
        "pos-subsets", help="share of the score explained by noun/verb and top-10 POS relations (IJ §3.4)",
        description="Share of the explained score carried by noun/verb relations and by the ten POS relations most "
                    "frequent among the top 10%% attributions; from a stored run (--run) or computed.")
    _add_eval_options(pos)
    _add_method_options(pos, "ij", "layer to attribute to (default: the method's)")
    pos.add_argument("--run", default=None, help="read relevances and POS from this stored run (no model needed)")
    pos.add_argument("--top-n", type=int, default=10, help="how many top relations (default 10)")
    agree = verbs.add_parser(
        "agreement", help="Spearman rank agreement between methods' matrices",
        description="Per pair, the Spearman correlation between the matrices of every two methods; mean and sd.")
    _add_eval_options(agree)
    _add_method_options(agree, ",".join(evaluate.DEFAULT_METHODS), "layer for every method (default: each method's)")
    truth = verbs.add_parser(
        "ground-truth", help="noun-counting model and ACS of each method with true interactions (BiLRP Fig. 1)",
        description="Fine-tune a small encoder so that the dot product of mean-pooled embeddings predicts the number "
                    "of shared nouns/proper nouns (spaCy lemmas), then measure the average cosine similarity (ACS) "
                    "of each method's matrix with the true noun-noun interaction matrix on test pairs.")
    _add_eval_options(truth)
    _add_method_options(truth, ",".join(evaluate.DEFAULT_METHODS), "layer for every method (default: each method's)")
    _add_training_options(truth, epochs=3, lr=5e-5)
    truth.add_argument("--train-limit", type=int, default=None, help="only the first N training pairs")
    truth.add_argument("--train-batch-size", type=int, default=16, help="training batch size (default 16)")
    truth.add_argument("--output", default=None,
                       help="folder of the noun-counting model (default models/ground-truth-<model>)")
    tune = verbs.add_parser(
        "finetune", help="fine-tune an (adjusted) model on STS-b and store its Table 1 row",
        description="Fine-tune on STS-b train (Möller et al. 2023, App. H). With --adjusted: shifted embeddings "
                    "e(x) - e(r_x) and the MSE of their dot product against gold/5 (an exact-attribution model); "
                    "without: the standard cosine objective. Saves a loadable model to --output, then stores the "
                    "Spearman of cosine and dot on --dataset (Table 1). Interrupt with Ctrl-C; the same command "
                    "resumes from the checkpoint.")
    tune.add_argument("--model", default=DEFAULT_MODEL, help=f"base model (default {DEFAULT_MODEL})")
    tune.add_argument("--output", required=True, help="folder to save the fine-tuned model to")
    tune.add_argument("--adjusted", action="store_true",
                      help="shifted embeddings + dot-product objective (exact attributions with ij)")
    _add_training_options(tune, epochs=5, lr=2e-5)
    tune.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    tune.add_argument("--limit", type=int, default=None, help="only the first N training pairs")
    tune.add_argument("--dataset", default="stsb:test", help="evaluation pairs for Table 1 (default stsb:test)")
    tune.add_argument("--eval-limit", type=int, default=None, help="only the first N evaluation pairs")
    tune.add_argument("--store", default=DEFAULT_STORE, help=f"store directory (default ./{DEFAULT_STORE})")
    tune.add_argument("--data-dir", default=None, help=f"folder laid out like shared/data (default: ${DATA_DIR_ENV})")
    tune.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    t1 = verbs.add_parser("table1", help="store a model's Table 1 row (Spearman of cosine and dot)",
                          description="Spearman x100 of the cosine and of the dot product of the model's embeddings "
                                      "(shifted for adjusted models) against gold (Möller et al. 2023, Table 1).")
    _add_eval_options(t1, batch_default=64)
    listing = verbs.add_parser("evaluations", help="list the stored evaluations",
                               description="Show the faithfulness evaluations in a store.")
    listing.add_argument("--store", default=DEFAULT_STORE)
    listing.add_argument("--kind", default=None, choices=evaluate.KINDS)


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
    verbs.add_parser("schema", help="print the store schema as markdown",
                     description="Print the store's layout and every table's columns as markdown (docs/STORE.md).")
    listing = verbs.add_parser("list", help="show what the store holds", description="Show the runs in a store.")
    listing.add_argument("--store", default=DEFAULT_STORE)
    merge = verbs.add_parser("merge", help="merge shard stores into one",
                             description="Copy the datasets, models, runs and chunks of SOURCE stores into DEST.")
    merge.add_argument("sources", nargs="+", help="store directories written by shards")
    merge.add_argument("--store", required=True, help="destination store")
    _add_evaluation_verbs(verbs)
    search_cli.add_verbs(verbs, DEFAULT_STORE)
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


def _evaluations(store: str, kind: str | None) -> int:
    found = Store(store).evaluation_list(kind)
    if found.empty:
        print(f"{store}: no evaluations yet (python -m precompute perturbation --limit 100 --store {store})")
        return 0
    cols = ["eval_id", "kind", "model_name", "dataset_key", "n_pairs", "n_rows", "created_at", "seconds"]
    print(found[cols].to_string(index=False, formatters={c: _fmt for c in cols}))
    return 0


def _finetune_config(args: argparse.Namespace, **overrides) -> FinetuneConfig:
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
                            seed=args.seed, **overrides)
    config.validate()
    return config


def _evaluate(args: argparse.Namespace) -> evaluate.EvaluationResult:
    common = dict(device=args.device, data_dir=args.data_dir)
    if args.verb == "finetune":
        config = _finetune_config(args, batch_size=args.batch_size)
        return evaluate.finetune_and_evaluate(args.model, args.output, args.store, args.adjusted, config,
                                              train_dataset=args.train_dataset, dataset=args.dataset, limit=args.limit,
                                              eval_limit=args.eval_limit, force=args.force, **common)
    dataset = None
    if args.verb != "pos-subsets" or args.run is None:
        dataset = load_dataset(args.dataset, data_dir=args.data_dir, columns=_mapping(args.columns), lang=args.lang,
                               gold_range=_range(args.gold_range))
    run_options = dict(limit=args.limit, **common)
    if args.verb == "table1":
        return evaluate.table1(args.model, dataset, args.store, batch_size=args.batch_size, **run_options)
    run_options["batch_size"] = args.batch_size
    if args.verb == "convergence":
        return evaluate.convergence(args.model, dataset, args.store, layers=args.layers, steps=args.steps,
                                    quadratures=args.quadratures, **run_options)
    if args.verb == "conservation":
        return evaluate.conservation(args.model, dataset, args.store, layer=args.layer, **run_options)
    if args.verb == "distributions":
        return evaluate.distributions(args.model, dataset, args.store, methods=args.methods, layers=args.layers,
                                      steps=args.steps, quadrature=args.quadrature, bins=args.bins, **run_options)
    methods = dict(methods=args.methods, layer=args.layer, steps=args.steps, quadrature=args.quadrature)
    if args.verb == "perturbation":
        return evaluate.perturbation(args.model, dataset, args.store, random_baseline=not args.no_random,
                                     seed=args.seed, step=args.step, **methods, **run_options)
    if args.verb == "pos-subsets":
        return evaluate.pos_subsets(None if args.run else args.model, dataset, args.store, run_id=args.run,
                                    top_n=args.top_n, **methods, **run_options)
    if args.verb == "agreement":
        return evaluate.agreement(args.model, dataset, args.store, **methods, **run_options)
    if args.verb == "ground-truth":
        config = _finetune_config(args, objective="dot", normalize=False, batch_size=args.train_batch_size)
        train = load_dataset(args.train_dataset, data_dir=args.data_dir)
        return evaluate.ground_truth(args.model, dataset, args.store, train_dataset=train,
                                     train_limit=args.train_limit, output=args.output, config=config,
                                     force=args.force, **methods, **run_options)
    raise ValueError(f"unknown verb {args.verb!r}")


def main(argv: list[str] | None = None) -> int:
    previous = warnings.showwarning
    warnings.showwarning = _print_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = previous


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb in evaluate.KINDS or args.verb == "finetune":
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was truncated.*")
                result = _evaluate(args)
        except TrainingInterrupted as exc:
            print(f"\ninterrupted: {exc}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("\ninterrupted: nothing was stored for this evaluation", file=sys.stderr)
            return 130
        except (ValueError, StoreError, DatasetError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for line in result.summary:
            print(line)
        print(f"stored evaluation {result.eval_id} ({result.kind}, {len(result.rows)} rows, {result.seconds:.0f}s) "
              f"in {args.store}")
        return 0
    try:
        if args.verb in search_cli.VERBS:
            return search_cli.main(args)
        if args.verb == "evaluations":
            return _evaluations(args.store, args.kind)
        if args.verb == "schema":
            print(schema_markdown() + "\n" + index_schema_markdown())
            return 0
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
                save_factors=getattr(args, "save_factors", False), device=args.device, pooling=args.pooling,
                prompt_a=_side(args, "prompt", "a"), prompt_b=_side(args, "prompt", "b"),
                tagger_a=_side(args, "tagger", "a"), tagger_b=_side(args, "tagger", "b"),
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
