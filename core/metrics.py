"""Agreement of a model's similarity scores with gold labels, as the STS literature reports it."""

from __future__ import annotations

import numpy as np
from scipy import stats


def score_metrics(model_scores: np.ndarray, gold: np.ndarray, gold_norm: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlation (x100) of model scores against gold, and the mean squared error of the
    model score against gold rescaled to 0-1. NaN where fewer than two pairs (or constant scores) make a
    correlation undefined."""
    scores = np.asarray(model_scores, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    gold_norm = np.asarray(gold_norm, dtype=np.float64)
    if not scores.shape == gold.shape == gold_norm.shape:
        raise ValueError(f"scores {scores.shape}, gold {gold.shape} and gold_norm {gold_norm.shape} differ in shape")
    if not (np.isfinite(scores).all() and np.isfinite(gold).all() and np.isfinite(gold_norm).all()):
        raise ValueError("scores and gold must be finite")
    result = {"spearman": float("nan"), "pearson": float("nan"),
              "mse": float(np.mean((scores - gold_norm) ** 2)) if scores.size else float("nan")}
    if scores.size >= 2 and np.ptp(scores) > 0 and np.ptp(gold) > 0:
        result["spearman"] = float(stats.spearmanr(scores, gold).statistic * 100)
        result["pearson"] = float(stats.pearsonr(scores, gold).statistic * 100)
    return result
