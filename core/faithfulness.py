"""Faithfulness metrics for token-pair explanations, as plain functions (no store, no CLI).

The evaluations of Möller et al. (2023, integrated Jacobians) and Vasileiou & Eberle (2024, BiLRP):

- conservation / convergence: how far the matrix sum is from the score it explains (:func:`conservation_error`);
- perturbation (BiLRP §4.3, App. B): tokens ranked by pooled relevance are added back to a fully masked
  sentence in steps of 4 %; the distance of the embedding to the unperturbed one traces a curve whose area
  (AUPC) is lower for better rankings (:func:`relevance_ranking`, :func:`perturbation_inputs`,
  :func:`perturbation_curve`, :func:`aupc`, :func:`paired_test`);
- distributions (IJ Figs. 3 and 5): :func:`negative_share`, :func:`topk_share`;
- POS relations (IJ §3.4): :func:`pos_relation`, :func:`pos_subset_share`, :func:`relation_counts`;
- agreement between methods: :func:`matrix_rank_agreement`;
- ground truth (BiLRP §4.3, Fig. 1): :func:`shared_noun_count`, :func:`noun_keys`, :func:`shared_noun_matrix`,
  :func:`average_cosine_similarity` (words and their lemmas come from :func:`core.pos.tag_words`, tokens are
  aligned to words by :func:`core.pos.align_tokens`).

All matrices are (tokens of a) x (tokens of b) arrays as in ``Explanation.matrix``. Numpy only: the models,
taggers and integrated Jacobians these metrics are computed on live in ``core.attribution`` and ``core.pos``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from core.pos import Word

#: Fraction of a sentence's tokens added back per perturbation step (BiLRP App. B).
PERTURBATION_STEP = 0.04
#: POS tags whose shared lemmas the ground-truth task counts (BiLRP §4.3).
NOUN_TAGS = ("NOUN", "PROPN")


# ------------------------------------------------------------------------------------------------
# summaries
# ------------------------------------------------------------------------------------------------


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, standard deviation (ddof 0), count) of the finite values; NaN mean/sd when there are none."""
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    return float(arr.mean()), float(arr.std()), int(arr.size)


def conservation_error(matrix: np.ndarray, score: float) -> tuple[float, float]:
    """(|score - sum(matrix)|, that divided by |score|); the relative error is inf for a zero score with a
    non-zero sum, 0 when both are zero."""
    residual = abs(float(score) - float(np.asarray(matrix, dtype=np.float64).sum()))
    if score == 0:
        return residual, 0.0 if residual == 0 else float("inf")
    return residual, residual / abs(float(score))


# ------------------------------------------------------------------------------------------------
# perturbation (BiLRP §4.3, App. B)
# ------------------------------------------------------------------------------------------------


def pooled_relevance(matrix: np.ndarray, side: str) -> np.ndarray:
    """Relevance of each token of ``side`` ("a" = rows, "b" = columns) summed over the other sentence."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {matrix.shape}")
    if side == "a":
        return matrix.sum(axis=1)
    if side == "b":
        return matrix.sum(axis=0)
    raise ValueError(f"side must be 'a' or 'b', got {side!r}")


def relevance_ranking(relevance: Sequence[float] | None, special: Sequence[bool],
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions of the non-special tokens, most relevant first (ties: earlier position first).

    With ``rng`` (and ``relevance`` ignored, may be None) the order is a random permutation: the baseline.
    """
    special = np.asarray(special, dtype=bool)
    candidates = np.flatnonzero(~special)
    if rng is not None:
        return rng.permutation(candidates)
    if relevance is None:
        raise ValueError("relevance is needed unless a random generator is given")
    relevance = np.asarray(relevance, dtype=np.float64)
    if relevance.shape != special.shape:
        raise ValueError(f"relevance {relevance.shape} and special {special.shape} differ in shape")
    order = np.argsort(-relevance[candidates], kind="stable")
    return candidates[order]


def perturbation_fractions(step: float = PERTURBATION_STEP) -> np.ndarray:
    """Fractions 0, step, 2*step, ..., 1 of the tokens restored at each point of a perturbation curve."""
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step!r}")
    n = math.ceil(1.0 / step - 1e-9)
    return np.minimum(np.arange(n + 1, dtype=np.float64) * step, 1.0)


def restored_counts(n_tokens: int, fractions: np.ndarray) -> np.ndarray:
    """How many of ``n_tokens`` ranked tokens are restored at each fraction: ceil(fraction * n)."""
    return np.minimum(np.ceil(np.asarray(fractions) * n_tokens - 1e-9).astype(int), n_tokens).clip(min=0)


def perturbation_inputs(input_ids: Sequence[int], special: Sequence[bool], ranking: Sequence[int], mask_id: int,
                        fractions: np.ndarray) -> np.ndarray:
    """(len(fractions), T) token ids: every non-special token masked, except the first ceil(f * n) of
    ``ranking`` (n = number of non-special tokens); special tokens are always kept."""
    ids = np.asarray(input_ids, dtype=np.int64)
    special = np.asarray(special, dtype=bool)
    ranking = np.asarray(ranking, dtype=np.int64)
    if ids.shape != special.shape:
        raise ValueError(f"input_ids {ids.shape} and special {special.shape} differ in shape")
    if sorted(ranking.tolist()) != np.flatnonzero(~special).tolist():
        raise ValueError("ranking must order exactly the non-special positions")
    counts = restored_counts(len(ranking), fractions)
    out = np.repeat(ids[None], len(counts), axis=0)
    for row, k in enumerate(counts):
        masked = ranking[k:]
        out[row, masked] = mask_id
    return out


def perturbation_curve(embed: Callable[[np.ndarray], np.ndarray], input_ids: Sequence[int], special: Sequence[bool],
                       ranking: Sequence[int], mask_id: int,
                       step: float = PERTURBATION_STEP) -> tuple[np.ndarray, np.ndarray]:
    """(fractions, distances): Euclidean distance between the embedding of the sentence with only the
    top-ranked tokens restored and the embedding of the unperturbed sentence, at each fraction.

    ``embed`` maps a (K, T) array of token ids (all rows the length of ``input_ids``) to (K, D) embeddings.
    """
    fractions = perturbation_fractions(step)
    rows = perturbation_inputs(input_ids, special, ranking, mask_id, fractions)
    ids = np.asarray(input_ids, dtype=np.int64)[None]
    embeddings = np.asarray(embed(np.concatenate([ids, rows])), dtype=np.float64)
    return fractions, np.linalg.norm(embeddings[1:] - embeddings[0], axis=1)


def aupc(fractions: Sequence[float], distances: Sequence[float]) -> float:
    """Area under a perturbation curve (trapezoid rule over the fractions, x in [0, 1]). Lower is better."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(distances, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("fractions and distances must be 1-D arrays of the same length >= 2")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Wilcoxon signed-rank test of paired samples ``a`` and ``b`` (e.g. per-pair AUPC of two methods).

    Returns n, statistic, p (two-sided), p_less (one-sided: a tends to be lower than b) and the median of
    a - b. All differences zero: p = p_less = 1; fewer than one pair: NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {"n": float(a.size), "statistic": float("nan"), "p": float("nan"), "p_less": float("nan"),
           "median_diff": float(np.median(a - b)) if a.size else float("nan")}
    if a.size == 0:
        return out
    if np.all(a == b):
        out.update(statistic=0.0, p=1.0, p_less=1.0)
        return out
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = stats.wilcoxon(a, b)
        less = stats.wilcoxon(a, b, alternative="less")
    out.update(statistic=float(two.statistic), p=float(two.pvalue), p_less=float(less.pvalue))
    return out


# ------------------------------------------------------------------------------------------------
# distributions (IJ §3.3, Figs. 3 and 5)
# ------------------------------------------------------------------------------------------------


def negative_share(matrix: np.ndarray) -> float:
    """Fraction of the token pairs whose attribution is negative (NaN for an empty matrix)."""
    values = np.asarray(matrix, dtype=np.float64)
    return float((values < 0).mean()) if values.size else float("nan")


def topk_share(matrix: np.ndarray, fractions: Sequence[float], total: float | None = None) -> np.ndarray:
    """Share of ``total`` (default: the matrix sum) explained by the top ceil(f * N) of the N attributions
    sorted by |value|, for each fraction f (signed sums: a share can be negative or exceed 1). NaN when the
    total is 0."""
    values = np.asarray(matrix, dtype=np.float64).ravel()
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any((fractions < 0) | (fractions > 1)):
        raise ValueError("fractions must lie in [0, 1]")
    total = float(values.sum()) if total is None else float(total)
    if total == 0 or values.size == 0:
        return np.full(fractions.shape, np.nan)
    order = np.argsort(-np.abs(values), kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(values[order])])
    k = np.minimum(np.ceil(fractions * values.size - 1e-9).astype(int), values.size)
    return cumulative[k] / total


# ------------------------------------------------------------------------------------------------
# POS relations (IJ §3.4)
# ------------------------------------------------------------------------------------------------


def pos_relation(pos_a: str | None, pos_b: str | None) -> str:
    """Unordered relation label of two POS tags, e.g. ``NOUN-VERB`` for (VERB, NOUN); None shows as ``?``."""
    return "-".join(sorted((pos_a or "?", pos_b or "?")))


def relations_within(tags: Iterable[str]) -> set[str]:
    """All relations between tags of ``tags`` (with themselves), e.g. NOUN-NOUN, NOUN-VERB, VERB-VERB."""
    tags = list(tags)
    return {pos_relation(a, b) for a in tags for b in tags}


def relation_labels(pos_a: Sequence[str | None], pos_b: Sequence[str | None]) -> np.ndarray:
    """(len(pos_a), len(pos_b)) array of relation labels."""
    return np.array([[pos_relation(a, b) for b in pos_b] for a in pos_a], dtype=object).reshape(len(pos_a), len(pos_b))


def pos_subset_share(matrix: np.ndarray, pos_a: Sequence[str | None], pos_b: Sequence[str | None],
                     relations: Iterable[str], total: float | None = None) -> float:
    """Share of ``total`` (default: the matrix sum) explained by the token pairs whose POS relation is in
    ``relations`` (labels as :func:`pos_relation` makes them). NaN when the total is 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(pos_a), len(pos_b)):
        raise ValueError(f"matrix {matrix.shape} does not match {len(pos_a)} x {len(pos_b)} POS tags")
    total = float(matrix.sum()) if total is None else float(total)
    if total == 0:
        return float("nan")
    wanted = set(relations)
    mask = np.vectorize(lambda r: r in wanted, otypes=[bool])(relation_labels(pos_a, pos_b)) if matrix.size else \
        np.zeros(matrix.shape, dtype=bool)
    return float(matrix[mask].sum() / total)


def relation_counts(matrix: np.ndarray, pos_a: Sequence[str | None], pos_b: Sequence[str | None], fraction: float,
                    exclude: Sequence[bool] | None = None, exclude_b: Sequence[bool] | None = None) -> Counter:
    """How often each POS relation occurs among the top ceil(fraction * N) attributions by |value|.

    ``exclude`` / ``exclude_b`` flag tokens of a / b (e.g. special tokens) whose pairs are left out before
    ranking.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    labels = relation_labels(pos_a, pos_b)
    keep = np.ones(matrix.shape, dtype=bool)
    if exclude is not None:
        keep &= ~np.asarray(exclude, dtype=bool)[:, None]
    if exclude_b is not None:
        keep &= ~np.asarray(exclude_b, dtype=bool)[None, :]
    values, kept = matrix[keep], labels[keep]
    k = min(math.ceil(fraction * values.size - 1e-9), values.size)
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return Counter(kept[order].tolist())


# ------------------------------------------------------------------------------------------------
# agreement between methods, ground truth
# ------------------------------------------------------------------------------------------------


def matrix_rank_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two matrices' entries (NaN when either is constant)."""
    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"matrices differ in size: {np.shape(first)} vs {np.shape(second)}")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy import stats

    return float(stats.spearmanr(a, b).statistic)


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Cosine similarity of two matrices as flat vectors (NaN when either is all zero)."""
    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"matrices differ in size: {np.shape(first)} vs {np.shape(second)}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(a @ b / (na * nb))


def average_cosine_similarity(explanations: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> tuple[float, float, int]:
    """ACS (BiLRP §4.3): mean, sd and count of the cosine similarity between each explanation and its true
    interaction matrix, over the pairs where both are non-zero."""
    if len(explanations) != len(truths):
        raise ValueError(f"{len(explanations)} explanations but {len(truths)} truths")
    return mean_sd(cosine_similarity(e, t) for e, t in zip(explanations, truths, strict=True))


def noun_lemmas(words: Sequence[Word], tags: Sequence[str] = NOUN_TAGS) -> set[str]:
    """Lower-cased lemmas of the words tagged with one of ``tags``."""
    return {w.lemma.lower() for w in words if w.pos in tags}


def shared_noun_count(words_a: Sequence[Word], words_b: Sequence[Word], tags: Sequence[str] = NOUN_TAGS) -> int:
    """Number of distinct NOUN/PROPN lemmas (lower-cased) that occur in both sentences: the ground-truth
    similarity of BiLRP §4.3."""
    return len(noun_lemmas(words_a, tags) & noun_lemmas(words_b, tags))


def noun_keys(token_words: Sequence[int | None], words: Sequence[Word], tags: Sequence[str] = NOUN_TAGS) -> list[str | None]:
    """Per token, the lower-cased lemma of its word (``token_words``: each token's word index, None for special
    tokens, as :func:`core.pos.align_tokens` gives them) when that word is a NOUN/PROPN, else None."""
    return [None if w is None or words[w].pos not in tags else words[w].lemma.lower() for w in token_words]


def shared_noun_matrix(keys_a: Sequence[str | None], keys_b: Sequence[str | None]) -> np.ndarray:
    """True interaction matrix of the ground-truth task at token level: 1 where token i of a and token j of b
    belong to words with the same NOUN/PROPN lemma (every subword piece of such a word takes part), else 0.
    ``keys_*`` come from :func:`noun_keys`."""
    a = np.array([k is not None for k in keys_a])
    out = np.zeros((len(keys_a), len(keys_b)))
    for i, ka in enumerate(keys_a):
        if a[i]:
            out[i] = [1.0 if kb == ka else 0.0 for kb in keys_b]
    return out
