"""Issue #9 on the store side: coverage as a first-class fact, comparisons on shared pairs, filters pushed
into the queries, aligned cross-lingual datasets, untagged sides, cross-tokenizer word matching, and the
CLI's list and warnings. Runs on the synthetic store of :mod:`corpus_store`."""

from __future__ import annotations

import pandas as pd
import pytest
from corpus_store import EN, EN_DE, SCORES_A, STSB, STSB_PAIRS, build_corpus_store

from core.metrics import score_metrics
from core.store import Store, StoreError, coverage_label
from precompute.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "store"
    ids = build_corpus_store(path)
    s = Store(path)
    yield s, ids, path
    s.close()


def test_coverage_label():
    assert coverage_label(100, 1379) == "100 of 1,379 pairs"
    assert coverage_label(1379, 1379) == "all 1,379 pairs"
    assert coverage_label(5, None) == "5 pairs"


def test_every_run_records_its_coverage(corpus):
    s, ids, _ = corpus
    runs = s.runs().set_index("run_id")
    assert runs.at[ids["subset"], "coverage"] == "3 of 8 pairs" and runs.at[ids["subset"], "partial"]
    assert runs.at[ids["full"], "coverage"] == "all 8 pairs" and not runs.at[ids["full"], "partial"]
    assert runs.at[ids["running"], "status"] == "running" and runs.at[ids["running"], "chunks_present"] == 0
    assert runs.at[ids["running"], "pairs_written"] == 0 and runs.at[ids["full"], "pairs_written"] == 8
    # a run still being written covers what it wrote so far (issue #21)
    assert runs.at[ids["running"], "coverage"] == "0 of 8 pairs" and runs.at[ids["running"], "partial"]
    assert (runs["dataset_pairs"].loc[[ids["en"], ids["en_de"]]] == 4).all()


def test_metrics_come_from_the_most_complete_finished_run(corpus):
    """Defect 1: the latest (3-pair) run was shown instead of the full one."""
    s, ids, _ = corpus
    mt = s.metrics_table().set_index(["model_id", "dataset_key"])
    row = mt.loc[("mA", STSB)]
    assert row["run_id"] == ids["full"] and row["coverage"] == "all 8 pairs" and row["method"] == "bilrp"
    ref = score_metrics(SCORES_A, STSB_PAIRS["gold"].to_numpy(), STSB_PAIRS["gold"].to_numpy() / 5)
    assert row["spearman"] == pytest.approx(ref["spearman"])
    per = s.metrics_table(per_method=True).set_index(["model_id", "dataset_key", "method"])
    assert per.loc[("mA", STSB, "hxp"), "coverage"] == "3 of 8 pairs" and per.loc[("mA", STSB, "hxp"), "partial"]
    assert ("mB", STSB, "ij") not in per.index  # still running


def test_compare_metrics_on_the_shared_pairs(corpus):
    """Defect 2: a full and a subset run of one model with identical scores showed a Spearman delta."""
    s, ids, _ = corpus
    c = s.comparability(ids["full"], ids["subset"])
    assert c.n_shared == 3 and c.same_dataset and not c.aligned and c.pairs_caption == "on the 3 shared pairs of A's 8 and B's 3"
    cm = s.compare_metrics(ids["full"], ids["subset"]).set_index("metric")
    assert cm.loc["n_shared", "run_a"] == 3
    for m in ("spearman", "pearson", "mse", "mean_model_score"):
        assert cm.loc[m, "diff"] == pytest.approx(0.0, abs=1e-9), m
    assert cm.loc["n_predictions", ["run_a", "run_b"]].tolist() == [8, 3]


def test_pos_and_token_comparisons_use_the_shared_pairs(corpus):
    s, ids, _ = corpus
    ha = s.pos_heatmap(ids["full"], pair_ids=[0, 1, 2])
    cp = s.compare_pos(ids["full"], ids["subset"]).set_index(["pos_a", "pos_b"])
    for rec in ha.to_dict("records"):
        assert cp.loc[(rec["pos_a"], rec["pos_b"]), "relevance_a"] == pytest.approx(rec["relevance"], abs=1e-5)
    assert int(cp["count_a"].sum()) == int(cp["count_b"].sum())  # same pairs, same tokens


def test_cell_list_follows_the_bands_and_shows_scores(corpus):
    """Defect 3: the cell's token-pair list ignored the gold band."""
    s, ids, _ = corpus
    rid = ids["full"]
    low = s.pos_cell_examples(rid, "NOUN", "NOUN", limit=100, gold_band=(0.0, 0.45))
    assert not low.empty and (low["gold_norm"] <= 0.45).all()
    assert {"gold", "model_score", "error"} <= set(low.columns)
    allp = s.pos_cell_examples(rid, "NOUN", "NOUN", limit=100)
    assert set(low["pair_id"]) < set(allp["pair_id"])
    heat = s.pos_heatmap(rid, gold_band=(0.0, 0.45)).set_index(["pos_a", "pos_b"])
    assert heat.loc[("NOUN", "NOUN"), "count"] == len(low)
    err = s.pos_cell_examples(rid, "NOUN", "NOUN", limit=100, error_band=(0.0, 1.0))
    assert (err["error"] >= 0).all() and set(err["pair_id"]) < set(allp["pair_id"])


def test_word_and_text_filters(corpus):
    s, ids, _ = corpus
    rid = ids["full"]
    guitar = s.predictions(rid, word="guitar")
    assert guitar["pair_id"].tolist() == [2]
    assert s.predictions(rid, word="gui").empty  # whole words only
    assert s.predictions(rid, text="gui")["pair_id"].tolist() == [2]
    assert set(s.predictions(rid, text="MAT")["pair_id"]) == {0, 6}
    fails = s.failures(rid, "over", word="dog", limit=10)
    assert set(fails["pair_id"]) <= {1, 4, 7} and not fails.empty
    assert set(s.pos_cell_examples(rid, "NOUN", "NOUN", word="cat", limit=100)["pair_id"]) <= {0, 3, 6, 7}
    heat = s.pos_heatmap(rid, word="guitar")
    assert heat["n_pairs"].max() == 1


def test_scores_only_run_is_refused_where_token_pairs_are_needed(corpus):
    """Defect 6: a scores-only B was drawn as −A."""
    s, ids, _ = corpus
    c = s.comparability(ids["full"], ids["scores"])
    assert not c.relevances_b and "scores-only" in c.token_pairs_reason
    with pytest.raises(StoreError, match="scores-only"):
        s.compare_pos(ids["full"], ids["scores"])
    with pytest.raises(StoreError, match="scores-only"):
        s.compare_token_pairs(ids["full"], ids["scores"])
    assert s.compare_metrics(ids["full"], ids["scores"]).set_index("metric").loc["n_shared", "run_a"] == 8


def test_aligned_cross_lingual_datasets_compare_per_pair(corpus):
    """Defect 7: mstsb:en against mstsb:en-de was refused per pair, ∅ unexplained, word matches all 0."""
    s, ids, _ = corpus
    c = s.comparability(ids["en"], ids["en_de"])
    assert c.aligned and not c.same_dataset and c.n_shared == 4 and not c.reason
    assert c.untagged == ["B side b"]
    sc = s.compare_scores(ids["en"], ids["en_de"])
    assert len(sc) == 4 and sc["delta"].abs().max() == pytest.approx(0.2)
    assert sc.set_index("pair_id").at[0, "sentence2_b"] == "der Mann in paris"
    tok = s.compare_token_pairs(ids["en"], ids["en_de"], level="word", limit=200)
    both = tok[tok["match"] == "both"]
    assert ("paris", "paris") in set(zip(both["token_a"].str.lower(), both["token_b"].str.lower(), strict=True))
    assert (both["count_a"] > 0).all() and (both["count_b"] > 0).all() and both["relevance_a"].abs().sum() > 0
    assert {"A only", "B only"} <= set(tok["match"])
    assert tok["match"].iloc[0] == "both"  # matched rows first
    # unrelated datasets are not compared per pair
    u = s.comparability(ids["full"], ids["en"])
    assert u.n_shared == 0 and "different datasets" in u.reason and s.compare_scores(ids["full"], ids["en"]).empty
    assert EN != EN_DE


def test_list_shows_coverage_and_status(corpus, capsys):
    """Defect 9: `precompute list` had no pairs column."""
    _, ids, path = corpus
    assert main(["list", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(ids["subset"]))
    assert "3 of 8 pairs" in line and "done" in line and "1/1" in line
    running = next(ln for ln in out.splitlines() if ln.startswith(ids["running"]))
    assert "running" in running and "0/3" in running


def test_a_language_without_a_tagger_warns_in_one_line(tmp_path, tiny_folders, capsys, monkeypatch):
    """Defect 9: a raw UserWarning with its source line landed inside the progress bar."""
    import core.pos

    monkeypatch.setattr(core.pos, "_WARNED", set())  # the warning is once per process and language
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tscore\nein Hund\tein Hund läuft\t4\nein Mann\teine Frau\t1\n",
                     encoding="utf-8")
    assert main(["attribute", "--dataset", str(pairs), "--lang", "zu", "--model", str(tiny_folders["bert"]),
                 "--method", "bilrp", "--store", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "tagger" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: no POS tagger for language 'zu': POS tags will be NULL")
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_charts_are_readable(corpus):
    """Defect 8: bars lost labels, the changed-most table was sorted by a column not shown first, the
    negative map was pale on the shared scale with a legend up to +1."""
    from core import charts, views

    s, ids, _ = corpus
    heat = s.pos_heatmap(ids["full"])
    bars = charts.pair_bar_chart(s.quartile_top_pairs(ids["full"], k=8), "relevance").to_dict()
    assert bars["encoding"]["y"]["axis"]["labelOverlap"] is False
    table = views.heatmap_table(s.compare_pos(ids["full"], ids["subset"]), "diff_norm")
    assert list(table.columns[:3]) == ["pos_a", "pos_b", "diff_norm"]
    assert table["diff_norm"].abs().is_monotonic_decreasing
    own, m = views.own_maximum(heat, "neg_sum")
    assert m == pytest.approx(heat["neg_sum"].abs().max()) and own["neg_sum_own"].min() == pytest.approx(-1.0)
    spec = charts.pos_heatmap_chart(own, "neg_sum_own", limit=1.0, half="neg").to_dict()
    assert spec["encoding"]["color"]["scale"]["domain"] == [-1.0, 0.0]


def test_views_name_coverage_and_say_why_a_page_is_empty(corpus):
    """Run labels, captions and empty states (pure presenters) over the corpus store's runs."""
    from core import views

    s, ids, _ = corpus
    runs = s.runs()
    info = runs.set_index("run_id")
    label = views.run_label(info.loc[ids["subset"]].to_dict() | {"run_id": ids["subset"]})
    assert label.split(" · ")[:3] == ["model-mA", "hxp L0", "3 of 8 pairs"]  # coverage before the dataset
    assert "pairs" not in views.run_label(info.loc[ids["full"]].to_dict() | {"run_id": ids["full"]})
    assert views.partial_note(runs, [ids["full"], ids["subset"]]) == \
        "Partial run: 3 of 8 pairs of stsb:test, model-mA hxp L0"
    assert views.partial_note(runs, [ids["full"]]) == ""
    assert views.empty_reason(runs, [ids["running"]]) == \
        "This run has not written any pairs yet (0 of 3 chunks); reload the store when it has."
    assert views.empty_reason(runs, [ids["full"]]).startswith("No token pairs in this band")
    table = views.runs_overview(runs).set_index("run_id")
    assert table.at[ids["subset"], "pairs"] == "3 of 8 pairs" and table.at[ids["full"], "pairs"] == "all 8 pairs"
    assert views.partial_metrics_text(s.metrics_table()) == (
        "Computed on part of the dataset only (no run covers all of it): model-mB on mstsb:en:test: 2 of 4 pairs "
        "(bilrp run).")


def test_compare_follows_the_gold_band(corpus):
    """Filters filter everything on Compare: metrics and per-pair scores use the shared pairs in the band."""
    s, ids, _ = corpus
    high = s.compare_scores(ids["full"], ids["subset"], gold_band=(0.85, 1.0))
    assert sorted(high["pair_id"]) == [0, 1] and (high["gold_norm"] >= 0.85).all()
    assert (high["delta"] == 0).all()  # same model, same scores
    cm = s.compare_metrics(ids["full"], ids["subset"], gold_band=(0.85, 1.0)).set_index("metric")
    assert cm.loc["n_shared", "run_a"] == 2
    none = s.compare_metrics(ids["full"], ids["subset"], gold_band=(0.0, 0.05)).set_index("metric")
    assert none.loc["n_shared", "run_a"] == 0 and none["run_a"].loc[["spearman", "mse"]].isna().all()


def test_runs_on_different_datasets_compare_on_the_pairs_they_share_by_content(corpus):
    """Issue #21: A on stsb:test, B on a dataset holding four of its pairs under other ids (plus a new pair and
    one pair's texts with another gold): compared on exactly those four, every number on them."""
    import numpy as np
    from corpus_store import PICKED_OF_STSB, PICKED_PAIRS, SCORES_PICKED

    from core import views

    s, ids, _ = corpus
    a, b = ids["full"], ids["picked"]
    c = s.comparability(a, b)
    assert c.matched_by == "content" and not c.same_dataset and not c.aligned and not c.reason
    assert c.pair_ids_a == sorted(PICKED_OF_STSB) and c.pair_ids_b == [PICKED_OF_STSB[p] for p in c.pair_ids_a]
    assert (c.n_a, c.n_b, c.n_shared) == (8, 6, 4)
    assert c.pairs_caption == "on the 4 shared pairs of A's 8 and B's 6"
    assert "matched by the same text pair and gold" in views.comparison_caption(c)
    # metrics: recomputed on the shared pairs of each side, with numpy as the reference
    ia, ib = c.pair_ids_a, c.pair_ids_b
    gold = STSB_PAIRS["gold"].to_numpy()[ia]
    assert np.array_equal(gold, PICKED_PAIRS["gold"].to_numpy()[ib])
    sa, sb = np.asarray(SCORES_A)[ia], np.asarray(SCORES_PICKED)[ib]
    cm = s.compare_metrics(a, b).set_index("metric")
    for side, scores in (("run_a", sa), ("run_b", sb)):
        ref = score_metrics(scores, gold, gold / 5)
        for m in ("spearman", "pearson", "mse"):
            assert cm.loc[m, side] == pytest.approx(ref[m]), (side, m)
        assert cm.loc["mean_model_score", side] == pytest.approx(scores.mean())
    assert cm.loc["n_shared", "run_a"] == 4 and cm.loc["n_predictions", ["run_a", "run_b"]].tolist() == [8, 6]
    assert cm.loc["score_pearson", "run_a"] == pytest.approx(100 * np.corrcoef(sa, sb)[0, 1])
    # per-pair scores: A's id, B's id of the same pair, the delta
    sc = s.compare_scores(a, b).set_index("pair_id")
    assert sorted(sc.index) == ia and sc["pair_id_b"].to_dict() == dict(zip(ia, ib, strict=True))
    for pa, pb in zip(ia, ib, strict=True):
        assert sc.at[pa, "delta"] == pytest.approx(SCORES_PICKED[pb] - SCORES_A[pa])
        assert sc.at[pa, "sentence1_b"] == sc.at[pa, "sentence1_a"]
    # POS maps and token pairs: each side on its own ids of the shared pairs
    cp = s.compare_pos(a, b).set_index(["pos_a", "pos_b"])
    hb = s.pos_heatmap(b, pair_ids=ib).set_index(["pos_a", "pos_b"])
    ha = s.pos_heatmap(a, pair_ids=ia).set_index(["pos_a", "pos_b"])
    for key in hb.index:
        assert cp.at[key, "relevance_b"] == pytest.approx(hb.at[key, "relevance"], abs=1e-5)
        assert cp.at[key, "relevance_a"] == pytest.approx(ha.at[key, "relevance"], abs=1e-5)
    tok = s.compare_token_pairs(a, b, limit=500)
    assert (tok["match"] == "both").all() and (tok["count_a"] == tok["count_b"]).all()  # the same texts
    assert tok["relevance_b"].sum() == pytest.approx(0.7 * tok["relevance_a"].sum(), rel=1e-5)  # B's scale
    band = s.compare_token_pairs(a, b, limit=500, gold_band=(0.0, 0.45))  # stsb 5, 7 (gold 1.5, 0.5)
    assert (band["count_a"] == band["count_b"]).all() and 0 < band["count_a"].sum() < tok["count_a"].sum()
    assert len(s.compare_scores(a, b, gold_band=(0.0, 0.45))) == 2


def test_a_pairs_runs_are_found_by_its_content(corpus):
    """Issue #21: the Example page's other runs of a pair include a run holding it under another id in another
    dataset, with that id, and its matrix is that run's matrix of its own pair."""
    from corpus_store import PICKED_OF_STSB

    s, ids, _ = corpus
    runs = s.pair_runs(STSB, 5).set_index("run_id")
    assert {ids["full"], ids["scores"], ids["picked"]} <= set(runs.index) and ids["subset"] not in runs.index
    assert runs.at[ids["picked"], "pair_id"] == PICKED_OF_STSB[5] and runs.at[ids["full"], "pair_id"] == 5
    assert runs.at[ids["picked"], "gold"] == runs.at[ids["full"], "gold"]
    assert ids["picked"] not in set(s.pair_runs(STSB, 0)["run_id"])  # its pair 5 has pair 0's texts, another gold
    mats = s.pair_matrices([ids["full"], ids["picked"]], {ids["full"]: 5, ids["picked"]: PICKED_OF_STSB[5]})
    own = s.pair_matrix(ids["picked"], PICKED_OF_STSB[5])
    assert not own.empty
    pd.testing.assert_frame_equal(mats[ids["picked"]], own)
    pd.testing.assert_frame_equal(mats[ids["full"]], s.pair_matrix(ids["full"], 5))
    assert mats[ids["picked"]]["relevance"].sum() == pytest.approx(0.7 * mats[ids["full"]]["relevance"].sum())
