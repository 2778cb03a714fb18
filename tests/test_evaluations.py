"""The evaluation registry (precompute/evaluations/) and its verbs of ``python -m precompute`` end to end on tiny
models: every evaluation round-trips
through the store with the numbers a direct computation gives; fine-tuning saves loadable (shifted) models,
resumes from a checkpoint to the same weights and stores its Table 1 row; the evaluations table validates,
revises and merges; the Faithfulness page renders; bad input is a clear error with exit code 2."""

from __future__ import annotations

import json
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from test_precompute import write_pairs

from core import compute_factors, explain, explain_pairs, load_model, pos
from core import faithfulness as fm
from core.finetune import FINETUNE_FILE, FinetuneConfig, TrainingInterrupted, finetune
from core.store import Store, StoreError, StoreWriter, make_eval_id, merge_stores, schema_markdown
from precompute import evaluations
from precompute.cli import main
from precompute.evaluations.conservation import without_biases
from precompute.evaluations.ground_truth import truth_matrix

LIMIT = 4
METHODS = ["bilrp", "hxp", "ij", "embedding"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.tsv", 10)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_folders, pairs_file) -> dict:
    """A store with one evaluation of every kind, written by the CLI on the tiny BERT model."""
    store = tmp_path_factory.mktemp("eval") / "store"
    common = ["--model", str(tiny_folders["bert"]), "--dataset", str(pairs_file), "--lang", "en", "--gold-range",
              "0,5", "--store", str(store), "--limit", str(LIMIT)]
    argvs = {
        "convergence": ["convergence", *common, "--layers", "0,2", "--steps", "1,2,8", "--quadratures",
                        "uniform,gauss-legendre"],
        "conservation": ["conservation", *common],
        "perturbation": ["perturbation", *common, "--steps", "8", "--seed", "3"],
        "distributions": ["distributions", *common, "--layers", "0,3", "--steps", "16", "--bins", "20"],
        "pos-subsets": ["pos-subsets", *common, "--methods", "bilrp"],
        "agreement": ["agreement", *common, "--steps", "8"],
        "table1": ["table1", *common],
    }
    for verb, argv in argvs.items():
        assert main(argv) == 0, verb
    return {"store": store, "argv": argvs, "common": common}


def rows_of(store: Path, kind: str) -> pd.DataFrame:
    found = Store(store).evaluations(kind=kind)
    assert not found.empty, kind
    return found


def pairs_of(pairs_file: Path) -> list[tuple[str, str]]:
    frame = pd.read_csv(pairs_file, sep="\t")
    return list(zip(frame["sentence1"], frame["sentence2"], strict=True))[:LIMIT]


# ------------------------------------------------------------------------------------------------
# each verb against a direct computation
# ------------------------------------------------------------------------------------------------


def test_convergence_round_trip(evaluated, tiny_folders, pairs_file):
    rows = rows_of(evaluated["store"], "convergence")
    # per layer: 2 rules x 3 step counts x 2 metrics, and steps=auto's steps and its 2 residual metrics
    assert len(rows) == 2 * (2 * 3 * 2 + 3) and set(rows["metric"]) == {"abs_residual", "rel_residual", "auto_steps"}
    assert rows["eval_id"].nunique() == 1 and (rows["n_pairs"] == LIMIT).all()
    params = json.loads(rows["params"].iloc[0])
    assert params["steps"] == [1, 2, 8] and (params["tol"], params["max_steps"]) == (1e-3, 512)
    model = load_model(tiny_folders["bert"], device="cpu")
    exps = explain_pairs(model, pairs_of(pairs_file), method="ij", layer=2, steps=8, quadrature="uniform")
    row = rows[(rows["metric"] == "abs_residual") & (rows["layer"] == 2) & (rows["steps"] == 8)
               & (rows["quadrature"] == "uniform")].iloc[0]
    assert row["y"] == pytest.approx(np.mean([abs(e.residual) for e in exps]), rel=1e-3)
    auto = explain_pairs(model, pairs_of(pairs_file), method="ij", layer=2)  # the default: auto to 1e-3
    at_layer = rows[(rows["layer"] == 2) & rows["steps"].isna()].set_index("metric")
    assert at_layer.loc["abs_residual", "y"] == pytest.approx(np.mean([abs(e.residual) for e in auto]), rel=1e-3)
    assert at_layer.loc["abs_residual", "y"] <= 1e-3 and at_layer.loc["abs_residual", "series"] == "layer 2 · auto 0.001"
    taken = {text: s for e in auto for text, s in ((e.text_a, e.steps_a), (e.text_b, e.steps_b))}  # per text
    assert at_layer.loc["auto_steps", "y"] == pytest.approx(np.mean(list(taken.values())))
    assert at_layer.loc["abs_residual", "x"] == at_layer.loc["auto_steps", "y"]  # auto sits at its mean steps
    assert json.loads(at_layer.loc["auto_steps", "extra"])["pairs_capped"] == 0
    fixed = rows[rows["steps"].notna()]
    assert (fixed["n"] == LIMIT).all()
    for (_layer, rule), group in fixed[fixed["metric"] == "abs_residual"].groupby(["layer", "quadrature"]):
        ys = group.sort_values("steps")["y"].to_numpy()
        assert ys[-1] < ys[0], (rule, ys)  # more steps, smaller error


def test_conservation_round_trip(evaluated, tiny_folders, pairs_file):
    rows = rows_of(evaluated["store"], "conservation")
    points = rows[rows["metric"] == "relevance_sum"]
    assert points.groupby("series").size().to_dict() == {"bilrp": LIMIT, "bilrp (no biases)": LIMIT, "hxp": LIMIT}
    rel = rows[rows["metric"] == "rel_residual"].set_index("series")["y"]
    assert rel["bilrp (no biases)"] < 1e-4 < rel["bilrp"]  # float32 weights: exact up to rounding
    slope = rows[rows["metric"] == "slope"].set_index("series")["y"]
    assert slope["bilrp (no biases)"] == pytest.approx(1.0, abs=1e-4)
    model = load_model(tiny_folders["bert"], device="cpu")
    exps = explain_pairs(model, pairs_of(pairs_file), method="bilrp")
    mine = points[points["series"] == "bilrp"].sort_values("row_index")
    np.testing.assert_allclose(mine["y"], [e.matrix.sum() for e in exps], rtol=1e-5)
    np.testing.assert_allclose(mine["x"], [e.score for e in exps], rtol=1e-6)
    assert [json.loads(e)["pair_id"] for e in mine["extra"]] == list(range(LIMIT))


def test_perturbation_round_trip(evaluated):
    store = evaluated["store"]
    rows = rows_of(store, "perturbation")
    methods = [*METHODS, "random"]
    curves = rows[rows["metric"] == "distance"]
    assert sorted(set(curves["series"])) == sorted(methods)
    assert curves.groupby("series").size().eq(26).all()
    start = curves[curves["x"] == 0.0]["y"]
    assert np.ptp(start.to_numpy()) < 1e-9  # everything masked: the same for every ranking
    assert np.allclose(curves[curves["x"] == 1.0]["y"], 0.0, atol=1e-6)  # everything restored
    aupc = rows[rows["metric"] == "aupc"].set_index("series")
    assert set(aupc.index) == set(methods) and (aupc["y"] > 0).all() and (aupc["n"] == LIMIT).all()
    for m in methods:  # AUPC of the mean curve = mean of the AUPCs (the trapezoid rule is linear)
        mean_curve = curves[curves["series"] == m].sort_values("x")
        assert fm.aupc(mean_curve["x"], mean_curve["y"]) == pytest.approx(aupc.loc[m, "y"], rel=1e-9)
    tests = rows[rows["metric"] == "p_value"]
    assert sorted(tests["label"]) == sorted(f"{a} vs {b}" for a, b in combinations(methods, 2))
    assert ((tests["y"] >= 0) & (tests["y"] <= 1)).all()
    # the same command again: the same evaluation (seeded random ranking), a new revision
    before = rows.sort_values("row_index")["y"].to_numpy()
    assert main(evaluated["argv"]["perturbation"]) == 0
    again = rows_of(store, "perturbation")
    assert again["eval_id"].nunique() == 1 and len(again) == len(rows)
    np.testing.assert_allclose(again.sort_values("row_index")["y"].to_numpy(), before, rtol=1e-9, equal_nan=True)
    assert (again["created_at"] > rows["created_at"].max()).all()  # the re-run's rows replaced the first run's


def test_distributions_round_trip(evaluated):
    rows = rows_of(evaluated["store"], "distributions")
    hist = rows[rows["metric"] == "density"]
    assert set(hist["series"]) == {"ij · layer 0", "ij · layer 3"}
    for _, group in hist.groupby("series"):
        width = json.loads(group["extra"].iloc[0])["width"]
        assert len(group) == 20 and (group["y"] * width).sum() == pytest.approx(1.0)
    neg = rows[rows["metric"] == "negative_share"]
    assert sorted(neg["layer"]) == [0, 3] and ((neg["y"] >= 0) & (neg["y"] <= 1)).all()
    topk = rows[rows["metric"] == "topk_share"]
    assert topk.groupby("series").size().eq(101).all()
    full = topk[topk["x"] == 1.0].set_index("layer")["y"]
    assert full.loc[3] == pytest.approx(1.0, abs=1e-3)  # ij is exact: all pairs sum to the score
    assert (topk[topk["x"] == 0.0]["y"] == 0).all()
    assert set(rows[rows["metric"] == "top5_share"]["layer"]) == {0, 3}


def test_pos_subsets_from_model_and_from_a_stored_run(evaluated, tiny_folders, pairs_file):
    store = evaluated["store"]
    computed = rows_of(store, "pos-subsets")
    shares = computed[computed["metric"] == "share"].set_index("label")
    assert {"NOUN/VERB relations", "top 10 relations"} <= set(shares.index)
    top = json.loads(shares.loc["top 10 relations", "extra"])["relations"]
    assert 0 < len(top) <= 10 and all("[" not in r for r in top)  # special tokens are not ranked
    curve = computed[computed["metric"] == "share_top_n_relations"].sort_values("x")
    assert curve["x"].tolist() == list(range(1, len(curve) + 1))
    assert curve["y"].iloc[min(len(top), len(curve)) - 1] == pytest.approx(shares.loc["top 10 relations", "y"])
    # the same numbers from a stored bilrp run (relevances and POS read from the store)
    common = evaluated["common"]
    assert main(["attribute", *[a for a in common if a != "--limit" and a != str(LIMIT)], "--limit", str(LIMIT),
                 "--method", "bilrp"]) == 0
    run_id = Store(store).runs().loc[0, "run_id"]
    assert main(["pos-subsets", "--run", run_id, "--store", str(store)]) == 0
    from_run = Store(store).evaluations(kind="pos-subsets")
    from_run = from_run[from_run["run_id"] == run_id]
    assert len(from_run) == len(computed) and from_run["dataset_key"].iloc[0] == computed["dataset_key"].iloc[0]
    np.testing.assert_allclose(from_run.sort_values("row_index")["y"], computed.sort_values("row_index")["y"],
                               rtol=1e-4, atol=1e-6)


def test_agreement_round_trip(evaluated, tiny_folders, pairs_file):
    rows = rows_of(evaluated["store"], "agreement")
    assert sorted(set(rows["label"])) == sorted(f"{a} vs {b}" for a, b in combinations(METHODS, 2))
    assert set(rows["series"]) == {"all tokens", "without special tokens"}
    assert ((rows["y"] >= -1) & (rows["y"] <= 1)).all()
    model = load_model(tiny_folders["bert"], device="cpu")
    pairs = pairs_of(pairs_file)
    a = explain_pairs(model, pairs, method="bilrp")
    b = explain_pairs(model, pairs, method="embedding")
    row = rows[(rows["label"] == "bilrp vs embedding") & (rows["series"] == "all tokens")].iloc[0]
    assert row["y"] == pytest.approx(np.mean([fm.matrix_rank_agreement(x.matrix, y.matrix)
                                              for x, y in zip(a, b, strict=True)]), abs=1e-6)


# ------------------------------------------------------------------------------------------------
# conservation and convergence on tiny models
# ------------------------------------------------------------------------------------------------

A, B = "A man is playing a guitar.", "Two dogs run through the snow."


@pytest.mark.parametrize("kind", ["bert", "mpnet", "roberta"])
def test_bilrp_conserves_exactly_without_biases(tiny_models, kind):
    model = tiny_models[kind]
    before = {n: p.clone() for n, p in model.encoder.named_parameters() if n.endswith("bias")}
    nobias = without_biases(model)
    exact = explain(nobias, A, B, method="bilrp")
    assert exact.relative_residual < 1e-6, exact.relative_residual
    assert fm.conservation_error(exact.matrix, exact.score)[1] < 1e-6
    biased = explain(model, A, B, method="bilrp")
    assert biased.relative_residual > 1e-4  # biases absorb relevance
    after = dict(model.encoder.named_parameters())  # the original keeps its biases
    assert all(after[name].equal(value) for name, value in before.items())
    assert sum(float(value.abs().sum()) for value in before.values()) > 0


def factor_totals(model, texts, layer, steps, rule):
    """What the convergence evaluation computes per sentence: the ij factor's target and its row sum."""
    found = compute_factors(model, texts, "ij", layer, steps, rule)
    return (np.stack([f.target.astype(np.float64) for f in found]),
            np.stack([f.factor.astype(np.float64).sum(axis=0) for f in found]), [f.scale for f in found])


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_ij_factor_sums_equal_the_matrix_sum(tiny_models, kind):
    model = tiny_models[kind]
    for layer, steps, rule in ((0, 3, "uniform"), (2, 5, "gauss-legendre")):
        exps = explain_pairs(model, [(A, B), (B, "The cat sat.")], method="ij", layer=layer, steps=steps,
                             quadrature=rule)
        targets, sums, scales = factor_totals(model, [A, B, B, "The cat sat."], layer, steps, rule)
        for k, e in enumerate(exps):
            scale = scales[2 * k] * scales[2 * k + 1]
            assert targets[2 * k] @ targets[2 * k + 1] * scale == pytest.approx(e.score, rel=1e-6)
            assert sums[2 * k] @ sums[2 * k + 1] * scale == pytest.approx(e.matrix.sum(), rel=1e-5, abs=1e-9)


def test_ij_residual_decreases_with_steps(tiny_models):
    model = tiny_models["bert"]
    errors = {}
    for rule in ("uniform", "gauss-legendre"):
        for steps in (1, 4, 16, 64):
            targets, sums, _ = factor_totals(model, [A, B], 0, steps, rule)
            errors[rule, steps] = abs(targets[0] @ targets[1] - sums[0] @ sums[1])
    uniform = [errors["uniform", s] for s in (1, 4, 16, 64)]
    assert all(later < earlier for earlier, later in zip(uniform, uniform[1:], strict=False)), uniform
    assert uniform[-1] < uniform[0] / 10
    assert errors["gauss-legendre", 16] < errors["uniform", 16] / 10
    assert errors["gauss-legendre", 64] < 1e-8


# ------------------------------------------------------------------------------------------------
# fine-tuning, Table 1, ground truth
# ------------------------------------------------------------------------------------------------


def test_finetune_adjusted_and_standard_store_table1(tmp_path, tiny_folders, pairs_file, evaluated):
    store = tmp_path / "store"
    base = ["--model", str(tiny_folders["bert"]), "--train-dataset", str(pairs_file), "--dataset", str(pairs_file),
            "--epochs", "1", "--batch-size", "4", "--limit", "8", "--store", str(store)]
    assert main(["finetune", *base, "--adjusted", "--output", str(tmp_path / "adj")]) == 0
    assert main(["finetune", *base, "--output", str(tmp_path / "std")]) == 0
    adjusted, standard = load_model(tmp_path / "adj", device="cpu"), load_model(tmp_path / "std", device="cpu")
    assert adjusted.shifted and adjusted.similarity == "dot" and adjusted.normalize  # the base normalises
    assert not standard.shifted and standard.similarity == "cosine"
    info = json.loads((tmp_path / "adj" / FINETUNE_FILE).read_text())
    assert info["adjusted"] and info["train_pairs"] == 8 and info["steps"] == 2 and not (tmp_path / "adj" / ".checkpoint").exists()
    # an adjusted model's score is exactly what ij decomposes
    exp = explain_pairs(adjusted, pairs_of(pairs_file)[:1], method="ij", steps=32)[0]
    assert exp.model_score == pytest.approx(exp.score, rel=1e-5)
    table = Store(store).model_table1()
    assert len(table) == 2 and table["adjusted"].tolist() == [False, True]
    assert table["base_model"].tolist() == [str(tiny_folders["bert"])] * 2 and (table["epochs"] == 1).all()
    from core.finetune import table1_scores

    frame = pd.read_csv(pairs_file, sep="\t")
    direct = table1_scores(adjusted, list(zip(frame["sentence1"], frame["sentence2"], strict=True)), frame["score"])
    row = table[table["adjusted"]].iloc[0]
    assert row["cosine"] == pytest.approx(direct["cosine"]) and row["dot"] == pytest.approx(direct["dot"])
    # again: the finished model is kept (skipped), its row re-stored
    assert main(["finetune", *base, "--adjusted", "--output", str(tmp_path / "adj")]) == 0
    assert len(Store(store).model_table1()) == 2
    # other settings into the same folder: an error unless --force
    assert main(["finetune", *base, "--adjusted", "--lr", "1e-4", "--output", str(tmp_path / "adj")]) == 2


def test_finetune_resumes_to_the_same_weights(tmp_path, tiny_folders):
    pairs = [(f"A man plays guitar number {k}.", f"Someone plays an instrument {k % 3}.") for k in range(12)]
    targets = np.linspace(0, 1, 12)
    config = FinetuneConfig(objective="shifted-dot", epochs=2, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = finetune(tiny_folders["bert"], pairs, targets, tmp_path / "whole", config, progress=False)
        with pytest.raises(TrainingInterrupted, match="run the same command again"):
            finetune(tiny_folders["bert"], pairs, targets, tmp_path / "cut", config, progress=False, max_steps=4)
        assert (tmp_path / "cut" / ".checkpoint" / "state.pt").is_file() and not (tmp_path / "cut" / FINETUNE_FILE).exists()
        resumed = finetune(tiny_folders["bert"], pairs, targets, tmp_path / "cut", config, progress=False)
        assert whole.status == "trained" and resumed.status == "resumed" and resumed.steps == whole.steps == 6
        np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-6)
        a, b = load_model(tmp_path / "whole", device="cpu"), load_model(tmp_path / "cut", device="cpu")
        for (name, pa), (_, pb) in zip(a.encoder.named_parameters(), b.encoder.named_parameters(), strict=True):
            if not name.startswith("pooler."):  # unused by sentence embeddings (random where a folder lacks it)
                assert torch.allclose(pa, pb, atol=1e-6), name
        assert finetune(tiny_folders["bert"], pairs, targets, tmp_path / "cut", config, progress=False).status == "skipped"
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "notes.txt").write_text("mine")
        with pytest.raises(ValueError, match="not empty"):
            finetune(tiny_folders["bert"], pairs, targets, tmp_path / "foreign", config, progress=False)


def test_ground_truth_round_trip(tmp_path, tiny_folders, pairs_file):
    store, output = tmp_path / "store", tmp_path / "gt"
    assert main(["ground-truth", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs_file),
                 "--train-dataset", str(pairs_file), "--train-limit", "8", "--limit", str(LIMIT), "--epochs", "1",
                 "--methods", "bilrp,embedding", "--output", str(output), "--store", str(store)]) == 0
    model = load_model(output, device="cpu")
    assert model.similarity == "dot" and not model.normalize and not model.shifted and model.pooling == "mean"
    rows = rows_of(store, "ground-truth")
    acs = rows[rows["metric"] == "acs"].set_index("series")
    assert set(acs.index) == {"bilrp", "embedding"} and ((acs["y"] >= -1) & (acs["y"] <= 1)).all()
    assert set(rows[rows["metric"] == "spearman"]["label"]) == {"train", "test"}
    assert rows["model_id"].iloc[0] == model.model_id  # the evaluated model is the noun-counting one
    # ACS recomputed directly (pairs without a shared noun are left out)
    pairs = pairs_of(pairs_file)
    texts = [t for p in pairs for t in p]
    words = dict(zip(texts, pos.tag_words(texts, "en"), strict=True))
    values = []
    for e, (a, b) in zip(explain_pairs(model, pairs, method="bilrp"), pairs, strict=True):
        truth = truth_matrix(e, words[a], words[b])
        if truth.any():
            ka, kb = ~np.array(e.special_a), ~np.array(e.special_b)
            values.append(fm.cosine_similarity(e.matrix[np.ix_(ka, kb)], truth[np.ix_(ka, kb)]))
    assert acs.loc["bilrp", "n"] == len(values) and acs.loc["bilrp", "y"] == pytest.approx(np.mean(values), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# the evaluations table
# ------------------------------------------------------------------------------------------------


def test_evaluations_table_validates_revises_and_merges(tmp_path, evaluated):
    assert "### `evaluations`" in schema_markdown()
    src = Store(evaluated["store"])
    models = src.models()
    writer = StoreWriter(tmp_path / "a")
    model = models.iloc[0].to_dict()
    writer.put_model({k: v for k, v in model.items() if pd.notna(v)})
    meta = {"kind": "demo", "model_id": model["model_id"], "params": {"x": 1}}
    rows = pd.DataFrame({"metric": ["m", "m"], "y": [1.0, 2.0], "x": [0.0, 1.0], "layer": [0, None],
                         "extra": [{"a": 1}, None]})
    eval_id = writer.put_evaluation(meta, rows)
    assert eval_id == make_eval_id("demo", model["model_id"], None, {"x": 1})
    got = Store(tmp_path / "a").evaluations(kind="demo")
    assert got["row_index"].tolist() == [0, 1] and got["y"].tolist() == [1.0, 2.0]
    assert got["layer"].iloc[0] == 0 and pd.isna(got["layer"].iloc[1]) and json.loads(got["extra"].iloc[0]) == {"a": 1}
    assert got["model_name"].iloc[0] == model["name"]
    for bad_meta, bad_rows, message in [
        ({**meta, "model_id": "nope"}, rows, "not in the store"),
        ({**meta, "kind": "Bad Kind"}, rows, "invalid kind"),
        ({**meta, "dataset_key": "nope:test"}, rows, "dataset 'nope:test' is not in the store"),
        ({**meta, "colour": 1}, rows, "unknown evaluation field"),
        (meta, rows.drop(columns="metric"), "missing required column"),
        (meta, rows.assign(wrong=1), "unknown column"),
        (meta, rows.iloc[:0], "at least one row"),
        (meta, rows.assign(layer=[0.5, 1]), "integers"),
    ]:
        with pytest.raises(StoreError, match=message):
            writer.put_evaluation(bad_meta, bad_rows)
    # a re-run is a new revision of the same record; readers see the newest only
    writer.put_evaluation(meta, rows.assign(y=[3.0, 4.0]))
    assert Store(tmp_path / "a").evaluations(eval_id=eval_id)["y"].tolist() == [3.0, 4.0]
    # merging: the newer measurement wins instead of conflicting
    other = StoreWriter(tmp_path / "b")
    other.put_model({k: v for k, v in model.items() if pd.notna(v)})
    other.put_evaluation(meta, rows.assign(y=[5.0, 6.0]))
    merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    assert Store(tmp_path / "merged").evaluations(eval_id=eval_id)["y"].tolist() == [5.0, 6.0]
    merge_stores([tmp_path / "a"], tmp_path / "merged")  # older: kept out
    assert Store(tmp_path / "merged").evaluations(eval_id=eval_id)["y"].tolist() == [5.0, 6.0]
    listing = Store(tmp_path / "merged").evaluation_list()
    assert listing["eval_id"].tolist() == [eval_id] and listing["n_rows"].tolist() == [2]
    assert Store(tmp_path / "merged").evaluations(kind="nothing").empty
    assert Store(tmp_path / "merged").model_table1().empty


# ------------------------------------------------------------------------------------------------
# the page and bad input
# ------------------------------------------------------------------------------------------------


def test_faithfulness_page(monkeypatch, tmp_path, evaluated):
    from streamlit.testing.v1 import AppTest

    page = str(ROOT / "pages" / "9_Faithfulness.py")
    for store in (tmp_path / "missing", evaluated["store"]):
        monkeypatch.setenv("SIMLENS_STORE", str(store))
        at = AppTest.from_file(page, default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        if store == evaluated["store"]:
            labels = [t.label for t in at.tabs]
            assert {"Perturbation (AUPC)", "Conservation", "ij convergence", "Distributions", "POS subsets",
                    "Method agreement", "Table 1"} <= set(labels)
            assert len(at.get("vega_lite_chart")) >= 10
        else:
            assert "No faithfulness evaluations" in at.info[0].value and "precompute perturbation" in at.markdown[0].value


@pytest.mark.parametrize("argv,message", [
    (["perturbation", "--steps", "0"], "argument --steps: expected a positive integer"),
    (["agreement", "--methods", "bilrp,nope"], "unknown method(s) nope"),
    (["agreement", "--methods", "bilrp"], "at least two methods"),
    (["convergence", "--layers", "9"], "layer must be an integer from 0"),
    (["distributions", "--limit", "0"], "argument --limit: expected a positive integer"),
    (["conservation", "--dataset", "nope:test"], "unknown dataset"),
    (["finetune", "--epochs", "0", "--output", "OUT"], "argument --epochs: expected a positive integer"),
    (["finetune", "--warmup", "1.5", "--output", "OUT"], "warmup must be a fraction"),
    (["pos-subsets", "--run", "abc"], "does not exist"),
    (["evaluations"], "does not exist"),
])
def test_bad_input_is_a_clear_message(tmp_path, tiny_folders, pairs_file, capsys, argv, message):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    if argv[0] not in ("evaluations", "pos-subsets") and "--dataset" not in argv:
        argv += ["--dataset", str(pairs_file)]
    if argv[0] not in ("evaluations", "pos-subsets"):
        argv += ["--model", str(tiny_folders["bert"])]
    store = tmp_path / "missing-store" if argv[0] in ("evaluations", "pos-subsets") else tmp_path / "s"
    try:
        code = main([*argv, "--store", str(store)])
    except SystemExit as exc:  # an option's value rejected by argparse
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err, err


@pytest.mark.parametrize("argv", [["perturbation", "--colour", "red"], ["convergence", "--steps", "0"],
                                  ["convergence", "--steps", "a,b"], ["finetune"], ["evaluations", "--kind", "x"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_help_of_every_verb(capsys):
    assert {"convergence", "conservation", "perturbation", "distributions", "pos-subsets", "agreement",
            "ground-truth", "finetune", "table1"} <= set(evaluations.verbs())
    for verb in [*evaluations.verbs(), "evaluations"]:
        with pytest.raises(SystemExit) as exc:
            main([verb, "--help"])
        assert exc.value.code == 0 and "--store" in capsys.readouterr().out
