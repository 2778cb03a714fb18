"""Table 1 of Möller et al. (2023): Spearman of the cosine and the dot product of a model's embeddings; and
``finetune``, which trains an (adjusted) model on STS-b and ends by storing its Table 1 row."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.views.evidence import ModelTable1
from precompute import options as opt
from precompute.evaluations.base import (
    Context,
    Evaluation,
    Output,
    check_limit,
    fmt,
    pairs_of,
    register,
    row,
    training_config,
)


def table1_output(ctx: Context, model) -> Output:
    """``model``'s Table 1 row on the context's pairs (shifted embeddings for adjusted models)."""
    from core.finetune import read_finetune_info, table1_scores

    rows = ctx.rows
    scores = table1_scores(model, pairs_of(rows), rows["gold"].to_numpy(float), batch_size=ctx.batch_size)
    info = read_finetune_info(model.path) or {}
    out = [row("spearman", scores["cosine"], series="table1", label="cosine", n=len(rows)),
           row("spearman", scores["dot"], series="table1", label="dot", n=len(rows))]
    params = {"limit": ctx.limit, "adjusted": bool(model.shifted), "base_model": info.get("base_model"),
              "epochs": info.get("epochs"), "train_pairs": info.get("train_pairs"), "objective": info.get("objective")}
    summary = [f"{model.name} ({'adjusted' if model.shifted else 'not adjusted'}) on {ctx.dataset.key}: Spearman "
               f"x100 cosine {fmt(scores['cosine'], 3)}, dot {fmt(scores['dot'], 3)}"]
    return Output(out, params, summary, model=model)


@register
class Table1(Evaluation):
    kind = "table1"
    title = "Table 1"
    order = 80
    batch_size = 64
    newest_only = True
    help = "store a model's Table 1 row (Spearman of cosine and dot)"
    description = ("Spearman x100 of the cosine and of the dot product of the model's embeddings (shifted for "
                   "adjusted models) against gold (Möller et al. 2023, Table 1).")
    example = ""
    caption = ("Möller et al. (2023) Table 1: Spearman ×100 between gold and the cosine / dot product of each "
               "model's embeddings (shifted embeddings for adjusted models), newest evaluation per model.")
    figures = (ModelTable1(),)

    def compute(self, ctx: Context) -> Output:
        """Spearman x100 of the cosine and of the dot product of the model's embeddings against gold."""
        return table1_output(ctx, ctx.model)


@register
class Finetune(Table1):
    example = "--adjusted --output models/minilm-adjusted"
    order = 90
    help = "fine-tune an (adjusted) model on STS-b and store its Table 1 row"
    description = ("Fine-tune on STS-b train (Möller et al. 2023, App. H). With --adjusted: shifted embeddings "
                   "e(x) - e(r_x) and the MSE of their dot product against gold/5 (an exact-attribution model); "
                   "without: the standard cosine objective. Saves a loadable model to --output, then stores the "
                   "Spearman of cosine and dot on --dataset (Table 1). Interrupt with Ctrl-C; the same command "
                   "resumes from the checkpoint.")

    @classmethod
    def verb(cls) -> str:
        return "finetune"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        opt.add_model(parser, "base model")
        parser.add_argument("--output", required=True, help="folder to save the fine-tuned model to")
        parser.add_argument("--adjusted", action="store_true",
                            help="shifted embeddings + dot-product objective (exact attributions with ij)")
        opt.add_training(parser, epochs=5, lr=2e-5)
        parser.add_argument("--batch-size", type=opt.positive_int, default=16, help="training batch size (default 16)")
        parser.add_argument("--limit", type=opt.positive_int, default=None, help="only the first N training pairs")
        parser.add_argument("--dataset", default="stsb:test", help="evaluation pairs for Table 1 (default stsb:test)")
        parser.add_argument("--eval-limit", type=opt.positive_int, default=None, help="only the first N evaluation pairs")
        opt.add_store(parser)
        opt.add_data_dir(parser)
        opt.add_device(parser)

    @classmethod
    def arguments(cls, args: argparse.Namespace, own) -> dict:
        return dict(model=args.model, dataset=args.dataset, store=args.store, limit=args.eval_limit,
                    data_dir=args.data_dir, device=args.device, output=args.output, adjusted=args.adjusted,
                    config=training_config(args, batch_size=args.batch_size), train_dataset=args.train_dataset,
                    train_limit=args.limit, force=args.force)

    def compute(self, ctx: Context, output: str | Path, adjusted: bool = False, config=None,
                train_dataset="stsb:train", train_limit: int | None = None, force: bool = False) -> Output:
        """Fine-tune on ``train_dataset`` (gold/5 targets) with the adjusted objective (shifted embeddings, dot
        product) or the standard cosine one, save the model to ``output``, and return its Table 1 row on the
        context's pairs (the evaluation pairs load before training, so a bad dataset fails first)."""
        from core.finetune import FinetuneConfig, finetune
        from core.loading import as_model

        check_limit(train_limit, "train_limit")
        config = config or FinetuneConfig()
        config.objective = "shifted-dot" if adjusted else "cosine"
        train = ctx.load_dataset(train_dataset)
        ctx.rows  # noqa: B018  (load the evaluation pairs before training)
        rows = train.frame if train_limit is None else train.frame.iloc[:train_limit]
        result = finetune(ctx.model_spec, pairs_of(rows), rows["gold_norm"].to_numpy(float), output, config,
                          force=force, progress=ctx.progress, device=ctx.device)
        out = table1_output(ctx, as_model(output, device=ctx.device, quiet=True))
        losses = ", ".join(f"{v:.4f}" for v in result.losses)
        out.summary.insert(0, f"fine-tuning {result.status}: {result.steps} steps, {result.seconds:.0f}s, "
                              f"loss per epoch [{losses}] -> {output}")
        out.extra["finetune"] = result
        return out
