"""Ground truth (BiLRP §4.3, Fig. 1): a model trained to count shared nouns, and how well each method recovers
the noun-noun interactions that are, by construction, what it computes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core import faithfulness as fm
from core import pos
from core.views.evidence import Bars, Table
from precompute import options as opt
from precompute.evaluations.base import (
    DEFAULT_METHODS,
    Context,
    Evaluation,
    Output,
    check_limit,
    fmt,
    mean_row,
    pairs_of,
    register,
    row,
    training_config,
)


def english_words(texts: Sequence[str]) -> dict[str, list[pos.Word]]:
    """Each distinct text's spaCy words with lemmas (the task needs an English tagger: clear error without one)."""
    if pos.get_tagger("en") is None:
        raise ValueError("the ground-truth task needs an English spaCy pipeline "
                         f"(install {' or '.join(pos.TAGGER_PACKAGES['en'])})")
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, pos.tag_words(unique, "en"), strict=True))


def noun_count_targets(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Per pair, the number of distinct NOUN/PROPN lemmas both sentences share (spaCy)."""
    words = english_words([t for p in pairs for t in p])
    return np.array([fm.shared_noun_count(words[a], words[b]) for a, b in pairs], dtype=np.float64)


def truth_matrix(exp, words_a: Sequence[pos.Word], words_b: Sequence[pos.Word]) -> np.ndarray:
    """The token-level true interaction matrix of an explanation's pair (see ``fm.shared_noun_matrix``)."""
    keys = []
    for words, tokens, offsets, special in ((words_a, exp.tokens_a, exp.offsets_a, exp.special_a),
                                            (words_b, exp.tokens_b, exp.offsets_b, exp.special_b)):
        tags = pos.align_tokens(words, tokens, offsets, special)
        keys.append(fm.noun_keys([t.word_index for t in tags], words))
    return fm.shared_noun_matrix(*keys)


def default_output(model) -> Path:
    """models/ground-truth-<model name>: where the noun-counting model goes unless --output says otherwise."""
    from core.loading import model_name

    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_name(model)).name) or "model"
    return Path("models") / f"ground-truth-{slug}"


@register
class GroundTruth(Evaluation):
    kind = "ground-truth"
    title = "Ground truth"
    order = 70
    help = "noun-counting model and ACS of each method with true interactions (BiLRP Fig. 1)"
    description = ("Fine-tune a small encoder so that the dot product of mean-pooled embeddings predicts the number "
                   "of shared nouns/proper nouns (spaCy lemmas), then measure the average cosine similarity (ACS) "
                   "of each method's matrix with the true noun-noun interaction matrix on test pairs.")
    example = "--train-limit 2000 --limit 200"
    caption = ("A model fine-tuned so that the dot product of its mean-pooled embeddings counts the nouns/proper "
               "nouns two sentences share. ACS = mean cosine similarity between each method's matrix and the true "
               "interaction matrix (1 where tokens of the same shared noun meet), over test pairs sharing a noun.")
    figures = (
        Bars(("acs", "acs_all_tokens"), "series", "ACS (mean ± sd)", "simlens_ground_truth_acs", color="metric",
             metric_labels={"acs": "without special tokens", "acs_all_tokens": "all tokens"}),
        Table(("spearman", "mse", "acs", "acs_all_tokens"), "simlens_ground_truth"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        opt.add_methods(parser, ",".join(DEFAULT_METHODS), "layer for every method (default: each method's)")
        opt.add_training(parser, epochs=3, lr=5e-5)
        parser.add_argument("--train-limit", type=opt.positive_int, default=None, help="only the first N training pairs")
        parser.add_argument("--train-batch-size", type=opt.positive_int, default=16, help="training batch size (default 16)")
        parser.add_argument("--output", default=None,
                            help="folder of the noun-counting model (default models/ground-truth-<model>)")

    @classmethod
    def arguments(cls, args, own) -> dict:
        out = super().arguments(args, [d for d in own if d in ("methods", "layer", "steps", "quadrature",
                                                              "train_dataset", "train_limit", "output", "force")])
        out["config"] = training_config(args, objective="dot", normalize=False, batch_size=args.train_batch_size)
        return out

    def compute(self, ctx: Context, train_dataset="stsb:train", train_limit: int | None = None,
                output: str | Path | None = None, methods: Sequence[str] | str | None = None,
                layer: int | None = None, steps: int | None = None, quadrature: str | None = None,
                config=None, force: bool = False) -> Output:
        """Fine-tune the context's model (as given: a name is loaded by the trainer) so that the dot product of
        its mean-pooled, unnormalised embeddings predicts the number of shared nouns/proper nouns (lemma match),
        save it to ``output``, then report its Spearman/MSE against the true counts and, per method, the
        average cosine similarity (ACS) between the explanation and the true token-level interaction matrix over
        test pairs sharing at least one noun (special tokens left out; ``acs_all_tokens`` keeps them)."""
        from core.finetune import FinetuneConfig, finetune
        from core.loading import as_model

        check_limit(train_limit, "train_limit")
        config = config or FinetuneConfig(objective="dot", normalize=False, epochs=3, lr=5e-5)
        if config.objective != "dot" or config.normalize is not False:
            raise ValueError("the ground-truth model is trained with objective 'dot' and normalize=False")
        methods = ctx.methods(methods, DEFAULT_METHODS)
        train = ctx.load_dataset(train_dataset)
        for d in (ctx.dataset, train):
            if (d.lang_a or "en") != "en" or (d.lang_b or "en") != "en":
                raise ValueError(f"the ground-truth task tags English nouns; {d.key} is {d.lang_a}-{d.lang_b}")
        train_pairs = pairs_of(train.frame if train_limit is None else train.frame.iloc[:train_limit])
        test_pairs = ctx.pairs
        words = english_words([t for p in train_pairs + test_pairs for t in p])
        train_targets = np.array([fm.shared_noun_count(words[a], words[b]) for a, b in train_pairs])
        test_targets = np.array([fm.shared_noun_count(words[a], words[b]) for a, b in test_pairs])
        output = Path(output) if output is not None else default_output(ctx.model_spec)
        result = finetune(ctx.model_spec, train_pairs, train_targets, output, config, force=force,
                          progress=ctx.progress, device=ctx.device)
        gt_model = as_model(output, device=ctx.device, quiet=True)
        out, summary = [], []
        for label, pairs, target in (("train", train_pairs[:500], train_targets[:500]),
                                     ("test", test_pairs, test_targets)):
            rho, mse = _fit(gt_model, pairs, target)
            out.append(row("spearman", rho, series="noun count", label=label, n=len(pairs)))
            out.append(row("mse", mse, series="noun count", label=label, n=len(pairs)))
            summary.append(f"noun-count model on {label}: Spearman {fmt(rho, 3)}, MSE {fmt(mse, 3)} ({len(pairs)} pairs)")
        for m in methods:
            s = ctx.settings(m, layer, steps, quadrature, model=gt_model)
            inner, full = [], []
            for e, (a, b) in zip(ctx.explain(test_pairs, m, s.layer, s.steps, s.quadrature, model=gt_model),
                                 test_pairs, strict=True):
                truth = truth_matrix(e, words[a], words[b])
                if not truth.any():
                    continue
                ka, kb = ~np.asarray(e.special_a, bool), ~np.asarray(e.special_b, bool)
                inner.append(fm.cosine_similarity(e.matrix[np.ix_(ka, kb)], truth[np.ix_(ka, kb)]))
                full.append(fm.cosine_similarity(e.matrix, truth))
            common = dict(method=m, layer=s.layer, steps=s.stored_steps, quadrature=s.quadrature, series=m)
            out.append(mean_row("acs", inner, **common))
            out.append(mean_row("acs_all_tokens", full, **common))
            summary.append(f"{m:>10}: ACS {fmt(np.nanmean(inner) if inner else float('nan'), 3)} ± "
                           f"{fmt(np.nanstd(inner) if inner else float('nan'), 3)} over {len(inner)} pairs with "
                           f"shared nouns")
        params = {"base_model": result.info.get("base_model"), "train_dataset": train.key, "train_limit": train_limit,
                  "methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "limit": ctx.limit,
                  "epochs": config.epochs, "lr": config.lr, "output": str(output)}
        return Output(out, params, summary, extra={"finetune": result}, model=gt_model)


def _fit(model, pairs: list[tuple[str, str]], target: np.ndarray) -> tuple[float, float]:
    """Spearman x100 and MSE of the model's similarity against ``target``."""
    import warnings

    from scipy import stats

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        ea = model.embed([a for a, _ in pairs])
        eb = model.embed([b for _, b in pairs])
    pred = model.similarity_of(ea, eb)
    rho = float(stats.spearmanr(pred, target).statistic * 100) if np.ptp(target) > 0 and np.ptp(pred) > 0 \
        else float("nan")
    return rho, float(np.mean((pred - target) ** 2))
