"""Perturbation (BiLRP §4.3, App. B): do the tokens an explanation ranks highest matter most? AUPC per method."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
from tqdm.auto import tqdm

from core import faithfulness as fm
from core.views.evidence import Bars, Lines, Table
from precompute import options as opt
from precompute.evaluations.base import (
    DEFAULT_METHODS,
    RANDOM,
    Context,
    Evaluation,
    Output,
    fmt,
    mean_row,
    register,
    row,
)


def mask_token_id(model) -> int:
    """The id that replaces removed tokens: the tokenizer's mask token, else its unknown token, else padding."""
    tok = model.tokenizer
    for name in ("mask_token_id", "unk_token_id", "pad_token_id"):
        value = getattr(tok, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"model {model.name}: the tokenizer has no mask, unknown or padding token")


def sentence_embedder(model, text: str, chunk: int = 256) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray,
                                                                     np.ndarray]:
    """(embed(ids) -> embeddings, input ids, special flags) of one sentence, for perturbed copies of it."""
    import torch

    from core.models import TokenBatch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        base = model.tokenize([text])
    n = base.lengths[0]
    ids = base.input_ids[0, :n].cpu().numpy()
    special = base.special[0, :n].cpu().numpy()

    def embed(rows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            rep = base.repeat(len(part))
            batch = TokenBatch(**{**rep.__dict__, "input_ids": torch.as_tensor(part, device=model.device)})
            out.append(model.sentence_embeddings(batch).double().cpu().numpy())
        return np.concatenate(out)

    return embed, ids, special


@register
class Perturbation(Evaluation):
    kind = "perturbation"
    title = "Perturbation (AUPC)"
    order = 10
    help = "AUPC per method and a random ranking, Wilcoxon tests (BiLRP §4.3)"
    description = ("Tokens ranked by pooled pair relevance are added back, 4%% of a sentence per step, to a fully "
                   "masked sentence; the distance to the unperturbed embedding traces a curve whose area (AUPC) "
                   "is lower for better rankings.")
    caption = ("Tokens ranked by pooled pair relevance are added back, 4 % of the sentence per step, to a fully "
               "masked sentence; the curve is the Euclidean distance to the unperturbed embedding (mean over both "
               "sides of every pair). Lower area (AUPC) = the ranking finds the tokens that matter sooner.")
    figures = (
        Lines("distance", "fraction of tokens restored", "distance to original", "simlens_perturbation_curves"),
        Bars(("aupc",), "series", "AUPC (mean ± sd)", "simlens_aupc"),
        Table(("p_value",), "simlens_aupc_tests", columns=("label", "y", "p_less", "median_diff", "n"),
              rename={"y": "p (two-sided)"},
              heading="**Paired Wilcoxon signed-rank tests** of the per-pair AUPC (`p_less`: the first is lower)"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        opt.add_methods(parser, ",".join(DEFAULT_METHODS), "layer for every method (default: each method's)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the random ranking (default 0)")
        parser.add_argument("--step", type=opt.fraction, default=0.04,
                            help="fraction of tokens added per step (default 0.04)")
        parser.add_argument("--no-random", dest="random_baseline", action="store_false",
                            help="leave out the random baseline")

    def compute(self, ctx: Context, methods: Sequence[str] | str | None = None, layer: int | None = None,
                steps: int | None = None, quadrature: str | None = None, random_baseline: bool = True,
                seed: int = 0, step: float = fm.PERTURBATION_STEP) -> Output:
        """AUPC of each method's token ranking (pooled pair relevance) and of a random ranking: the mean
        perturbation curve, mean ± sd AUPC (mean of the two sides of a pair) and paired Wilcoxon tests."""
        model = ctx.model
        methods = ctx.methods(methods, DEFAULT_METHODS, allow_random=True)
        real = [m for m in methods if m != RANDOM]
        if random_baseline and RANDOM not in methods:
            methods.append(RANDOM)
        settings = {m: ctx.settings(m, layer, steps, quadrature) for m in real}
        pairs = ctx.pairs
        mask_id = mask_token_id(model)
        fractions = fm.perturbation_fractions(step)
        rankings: dict[tuple[str, int, str], np.ndarray] = {}
        for m in real:
            s = settings[m]
            for p, exp in enumerate(ctx.explain(pairs, m, s.layer, s.steps, s.quadrature)):
                for side, special in (("a", exp.special_a), ("b", exp.special_b)):
                    rankings[(m, p, side)] = fm.relevance_ranking(fm.pooled_relevance(exp.matrix, side), special)
        curves = self._curves(model, pairs, methods, rankings, mask_id, fractions, seed, ctx.progress)
        out, summary = [], []
        per_pair: dict[str, np.ndarray] = {}
        for m in methods:
            s = settings.get(m)
            common = dict(method=m, layer=s.layer if s else None, steps=s.stored_steps if s else None,
                          quadrature=s.quadrature if s else None, series=m)
            stack = np.stack([curves[(m, p, side)] for p in range(len(pairs)) for side in ("a", "b")])
            for k, f in enumerate(fractions):
                out.append(mean_row("distance", stack[:, k], x=float(f), **common))
            areas = np.array([[fm.aupc(fractions, curves[(m, p, side)]) for side in ("a", "b")]
                              for p in range(len(pairs))]).mean(axis=1)
            per_pair[m] = areas
            out.append(mean_row("aupc", areas, **common))
            summary.append(f"{m:>10}: AUPC {fmt(areas.mean())} ± {fmt(areas.std())}")
        for first, second in combinations(methods, 2):
            test = fm.paired_test(per_pair[first], per_pair[second])
            out.append(row("p_value", test["p"], method=first, label=f"{first} vs {second}", n=int(test["n"]),
                           extra={"other": second, "statistic": test["statistic"], "p_less": test["p_less"],
                                  "median_diff": test["median_diff"], "test": "wilcoxon signed-rank, two-sided"}))
            summary.append(f"{first} vs {second}: Wilcoxon p = {fmt(test['p'], 3)} "
                           f"(one-sided {first} lower: {fmt(test['p_less'], 3)})")
        params = {"methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "seed": seed,
                  "step": step, "mask_token_id": mask_id, "limit": ctx.limit}
        return Output(out, params, summary, extra={"aupc": per_pair})

    @staticmethod
    def _curves(model, pairs: list[tuple[str, str]], methods: list[str], rankings: dict, mask_id: int,
                fractions: np.ndarray, seed: int, progress: bool) -> dict[tuple[str, int, str], np.ndarray]:
        """Each (method, pair, side)'s perturbation curve; each distinct perturbed input is embedded once."""
        rng = np.random.default_rng(seed)
        sentences: dict[str, list[tuple[str, int, str]]] = {}
        for p, (a, b) in enumerate(pairs):
            for side, text in (("a", a), ("b", b)):
                sentences.setdefault(text, []).append((RANDOM, p, side))
        curves: dict[tuple[str, int, str], np.ndarray] = {}
        for text, users in tqdm(sentences.items(), desc="perturbation curves", unit="sentence", disable=not progress):
            embed, ids, special = sentence_embedder(model, text)
            if RANDOM in methods:
                for key in users:
                    rankings[key] = fm.relevance_ranking(None, special, rng=rng)
            keys = [(m, p, side) for (_, p, side) in users for m in methods]
            inputs = {key: fm.perturbation_inputs(ids, special, rankings[key], mask_id, fractions) for key in keys}
            unique: dict[bytes, int] = {ids.tobytes(): 0}
            table = [ids]
            for arr in inputs.values():
                for r in arr:
                    if r.tobytes() not in unique:
                        unique[r.tobytes()] = len(table)
                        table.append(r)
            emb = embed(np.stack(table))
            for key, arr in inputs.items():
                idx = [unique[r.tobytes()] for r in arr]
                curves[key] = np.linalg.norm(emb[idx] - emb[0], axis=1)
        return curves
