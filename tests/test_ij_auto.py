"""Integrated Jacobians to a tolerance (``steps="auto"``): the adaptive rule's parts, the tolerance met on tiny
models of several architectures and on MiniLM, the cap flagged, fixed steps untouched."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from reference import reference_factor
from test_engine import assert_close
from tiny_models import save_sentence_transformer

import core
from core import compute_factors, explain, explain_pairs
from core.attribution import resolve_settings
from core.quadrature import (
    AUTO,
    DEFAULT_MAX_STEPS,
    DEFAULT_TOL,
    PANEL_POINTS,
    AutoSteps,
    panel_rule,
    panels_to_bisect,
)

PAIRS = [("A man is playing a guitar.", "Two dogs run through the snow!"), ("The cat sat.", "I love pizza 🍕!")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny(kind): a loaded tiny random model of ``kind`` in float64, made once per module."""
    base, cache = tmp_path_factory.mktemp("ij-auto"), {}

    def get(kind: str):
        if kind not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = core.load_model(save_sentence_transformer(base / kind, kind), device="cpu")
            model.encoder.double()
            cache[kind] = model
        return cache[kind]

    return get


def test_panel_rule_integrates_polynomials_of_degree_2m_minus_1():
    nodes, weights = panel_rule(0.25, 0.75)
    assert nodes.min() > 0.25 and nodes.max() < 0.75 and weights.sum() == pytest.approx(0.5)
    degree = 2 * PANEL_POINTS - 1
    assert weights @ nodes**degree == pytest.approx((0.75 ** (degree + 1) - 0.25 ** (degree + 1)) / (degree + 1))


def test_bisection_takes_the_worst_panels_first_within_the_cap():
    widths, errors = [0.5, 0.25, 0.25], [1.0, 1.0, 0.1]  # errors per width: 2, 4, 0.4
    assert panels_to_bisect(widths, errors, steps=24, max_steps=1000) == [1, 0, 2]
    assert panels_to_bisect(widths, errors, steps=24, max_steps=24 + PANEL_POINTS) == [1]
    assert panels_to_bisect(widths, errors, steps=24, max_steps=24 + PANEL_POINTS - 1) == []


def test_sentence_tolerance_bounds_every_pair_by_tol():
    auto = AutoSteps(1e-3)
    eps = auto.sentence_tolerance(1.5)
    assert 4 * eps + eps**2 == pytest.approx(1e-3)  # |t| <= 2 on both sides: the Cauchy-Schwarz bound is tol
    assert auto.sentence_tolerance(6.0) == pytest.approx(3 * eps)  # longer targets scale it
    rng = np.random.default_rng(0)
    for _ in range(200):  # the worst case of t_a . r_b + r_a . t_b + r_a . r_b over random directions
        t_a, t_b, r_a, r_b = (v / np.linalg.norm(v) for v in rng.normal(size=(4, 16)))
        assert abs((2 * t_a) @ (eps * r_b) + (eps * r_a) @ (2 * t_b) + eps**2 * r_a @ r_b) <= 1e-3 + 1e-15


@pytest.mark.parametrize("bad,message", [
    (dict(tol=0.0), "tol must be a positive number"), (dict(tol=math.nan), "tol must be a positive number"),
    (dict(tol="1e-3"), "tol must be a positive number"), (dict(max_steps=4), "max_steps must be an integer"),
    (dict(max_steps=True), "max_steps must be an integer"),
])
def test_auto_steps_refuses_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        AutoSteps(**bad)


def test_auto_is_ijs_default_and_refuses_what_it_cannot_honour(tiny):
    model = tiny("bert")
    settings = resolve_settings(model, "ij", None, None, None)
    assert (settings.steps, settings.quadrature, settings.tol, settings.max_steps) == (
        AUTO, "gauss-legendre", DEFAULT_TOL, DEFAULT_MAX_STEPS)
    assert resolve_settings(model, "ij", None, "auto", None, tol=1e-5, max_steps=64).integration == AutoSteps(1e-5, 64)
    fixed = resolve_settings(model, "ij", None, 16, "uniform")
    assert (fixed.steps, fixed.tol, fixed.max_steps, fixed.integration) == (16, None, None, 16)
    assert resolve_settings(model, "bilrp", None, None, None).tol is None
    with pytest.raises(ValueError, match="tol apply to steps='auto' only"):
        resolve_settings(model, "ij", None, 16, None, tol=1e-3)
    with pytest.raises(ValueError, match="quadrature 'uniform' needs a fixed number of steps"):
        resolve_settings(model, "ij", None, "auto", "uniform")
    with pytest.raises(ValueError, match="steps must be a positive integer or 'auto'"):
        resolve_settings(model, "ij", None, "many", None)


@pytest.mark.parametrize("kind", ["bert", "t5", "llama"])
def test_auto_meets_the_tolerance_on_tiny_models(tiny, kind):
    model = tiny(kind)
    exps = explain_pairs(model, PAIRS[:1], method="ij", layer=0, steps="auto", tol=1e-6)
    for exp in exps:
        assert (exp.steps, exp.tol, exp.max_steps, exp.capped) == ("auto", 1e-6, DEFAULT_MAX_STEPS, False)
        assert exp.steps_a % PANEL_POINTS == 0 and PANEL_POINTS <= exp.steps_a <= DEFAULT_MAX_STEPS
        assert abs(exp.residual) <= 1e-6, (kind, exp.residual)
    if kind == "t5":  # its integrand needs more than one panel: the refinement itself is what met the tolerance
        assert max(exp.steps_used for exp in exps) > PANEL_POINTS


def test_auto_factors_converge_to_the_slow_reference(tiny):
    """Every row, not only their sum: the auto factor, bisected to a tolerance near float64 rounding, equals the
    reference's 64-point Gauss-Legendre factor of a smooth tiny model (converged there to rounding)."""
    model = tiny("bert")
    (got,) = compute_factors(model, [PAIRS[0][0]], method="ij", layer=1, steps="auto", tol=1e-12)
    assert got.steps > PANEL_POINTS and not got.capped
    assert_close(got.factor, reference_factor(model, PAIRS[0][0], "ij", 1, 64), rtol=1e-6)  # float32 factors


def test_a_sentences_integral_does_not_depend_on_its_batch(tiny):
    model = tiny("bert")
    alone = compute_factors(model, [PAIRS[1][0]], method="ij", steps="auto", tol=1e-12)[0]
    together = compute_factors(model, [PAIRS[0][0], PAIRS[1][0], PAIRS[1][1]], method="ij", steps="auto",
                               tol=1e-12)
    assert alone.steps == together[1].steps > PANEL_POINTS  # refined, the same way alone and in a batch
    together = together[1]
    assert_close(together.factor, alone.factor, rtol=1e-6)


def test_a_pair_that_cannot_meet_the_tolerance_within_the_cap_is_flagged(tiny):
    model = tiny("t5")
    capped = explain(model, *PAIRS[0], method="ij", layer=0, steps="auto", tol=1e-14, max_steps=PANEL_POINTS * 2)
    assert capped.capped and capped.steps_a <= PANEL_POINTS * 2 and capped.steps_b <= PANEL_POINTS * 2
    assert capped.max_steps == PANEL_POINTS * 2 and abs(capped.residual) > 1e-14


def test_fixed_steps_are_untouched(tiny):
    model = tiny("bert")
    exp = explain(model, *PAIRS[0], method="ij", layer=1, steps=5, quadrature="uniform")
    assert (exp.steps, exp.steps_a, exp.steps_b, exp.capped, exp.tol) == (5, 5, 5, False, None)
    (factor,) = compute_factors(model, [PAIRS[0][0]], method="ij", layer=1, steps=5, quadrature="uniform")
    assert_close(factor.factor, reference_factor(model, PAIRS[0][0], "ij", 1, 5, "uniform"), rtol=1e-6)
    assert explain(model, *PAIRS[0], method="bilrp").steps_used is None


@pytest.mark.slow
@pytest.mark.realmodel
@pytest.mark.parametrize("layer", [3, 5])
def test_auto_meets_the_tolerance_on_minilm(minilm, layer):
    exp = explain(minilm, "A cat sleeps.", "A dog barks.", method="ij", layer=layer)  # the default: auto, 1e-3
    assert exp.steps == "auto" and not exp.capped and abs(exp.residual) <= 1e-3
    assert exp.steps_used <= DEFAULT_MAX_STEPS


def test_the_memory_bound_changes_the_plan_not_the_auto_factors(tiny):
    model = tiny("bert")
    texts = ["A man is playing a guitar on the stage.", "A woman slices an onion.", "Two dogs run."]
    roomy = compute_factors(model, texts, method="ij", layer=0, steps="auto", tol=1e-12)
    tight = compute_factors(model, texts, method="ij", layer=0, steps="auto", tol=1e-12, max_memory="64MiB",
                            max_rows=3)
    for a, b in zip(roomy, tight, strict=True):
        assert a.steps == b.steps
        np.testing.assert_allclose(a.factor, b.factor, rtol=1e-6, atol=1e-9)


def test_cli_steps_auto_stores_the_steps_and_error_of_every_pair(tmp_path, tiny_folders, capsys):
    from test_precompute import cli, write_pairs

    from core import views
    from core.store import Store, make_run_id
    from precompute.cli import main

    pairs, store = write_pairs(tmp_path / "pairs.tsv", 6), tmp_path / "store"
    base = ["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs), "--store", str(store),
            "--method", "ij", "--chunk-size", "4", "--lang", "en"]
    assert main([*base, "--steps", "auto", "--tol", "1e-4", "--max-steps", "64"]) == 0, capsys.readouterr().err
    assert main([*base, "--steps", "auto", "--tol", "1e-12", "--max-steps", "8"]) == 0, capsys.readouterr().err
    reader = Store(store)
    runs = reader.runs().set_index("max_steps", drop=False)
    model = core.load_model(tiny_folders["bert"], device="cpu")
    assert runs["steps"].isna().all() and runs.loc[64, "tol"] == 1e-4 and runs.loc[8, "tol"] == 1e-12
    assert runs.loc[64, "run_id"] == make_run_id(model.model_id, runs.loc[64, "dataset_key"], "ij", 0, None,
                                                 "gauss-legendre", 1e-4, 64)
    assert views.setting_text(runs.loc[64].to_dict()) == "ij L0 · auto to 0.0001"
    met = reader.predictions(runs.loc[64, "run_id"]).set_index("pair_id")
    source = pd.read_csv(pairs, sep="\t")
    for pid in (0, 5):
        exp = explain(model, source.loc[pid, "sentence1"], source.loc[pid, "sentence2"], method="ij", steps="auto",
                      tol=1e-4, max_steps=64)
        row = met.loc[pid]
        assert (row["steps_a"], row["steps_b"], bool(row["capped"])) == (exp.steps_a, exp.steps_b, False)
        assert abs(row["residual"]) <= 1e-4 and row["residual"] == pytest.approx(exp.residual, abs=1e-6)
        assert views.integration_notes(runs.loc[64].to_dict(), row.to_dict())[1] is None
    capped = reader.predictions(runs.loc[8, "run_id"])
    assert capped["capped"].all() and (capped[["steps_a", "steps_b"]] == 8).all().all()
    note, warning = views.integration_notes(runs.loc[8].to_dict(), capped.iloc[0].to_dict())
    assert "Integration steps 8 and 8 (auto: tolerance 1e-12, cap 8)" in note and "Hit the step cap" in warning
    assert cli([*base, "--steps", "8", "--tol", "1e-3"]) == 2
    assert "tol apply to steps='auto' only" in capsys.readouterr().err
    assert cli([*base, "--steps", "some"]) == 2
    assert "--steps: expected a positive integer or auto" in capsys.readouterr().err
