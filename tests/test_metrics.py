"""Score metrics against hand-computed values."""

import numpy as np
import pytest

from core.metrics import score_metrics


def test_known_values():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    gold = np.array([0.0, 2.0, 3.0, 5.0])
    m = score_metrics(scores, gold, gold / 5)
    assert m["spearman"] == pytest.approx(80.0)  # one swapped pair among four: 1 - 6*2/(4*15)
    expected_r = np.corrcoef(scores, gold)[0, 1] * 100
    assert m["pearson"] == pytest.approx(expected_r)
    assert m["mse"] == pytest.approx(np.mean((scores - gold / 5) ** 2))


def test_perfect_and_reversed():
    x = np.linspace(0, 1, 10)
    assert score_metrics(x, x * 5, x)["spearman"] == pytest.approx(100)
    assert score_metrics(-x, x * 5, x)["pearson"] == pytest.approx(-100)


def test_undefined_correlations_are_nan_and_bad_input_raises():
    m = score_metrics(np.array([0.5]), np.array([3.0]), np.array([0.6]))
    assert np.isnan(m["spearman"]) and m["mse"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="differ in shape"):
        score_metrics(np.zeros(3), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        score_metrics(np.array([np.nan, 1]), np.zeros(2), np.zeros(2))
