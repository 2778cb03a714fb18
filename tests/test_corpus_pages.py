"""Issue #9 on the pages (AppTest) over the synthetic corpus store of :mod:`corpus_store`: partial runs named
in run pickers, comparisons on shared pairs, scores-only refusal, aligned datasets per pair, untagged note,
cell lists following the bands, run-dependent widgets resetting, empty states that say why."""

from __future__ import annotations

import json

import pytest
from corpus_store import STSB, build_corpus_store
from test_app import ok, open_app, texts

from core.store import Store


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus_pages") / "store"
    ids = build_corpus_store(path)
    with Store(path) as s:
        runs = s.runs().set_index("run_id")
    return {"path": path, "runs": ids, "table": runs}


def test_compare_states_the_shared_pairs_and_names_partial_runs(monkeypatch, corpus):
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "compare")
    at.selectbox(key="cmp_a").set_value(ids["full"])
    at.selectbox(key="cmp_b").set_value(ids["subset"])
    ok(at)
    shown = texts(at)
    assert "on the 3 shared pairs of A's 8 and B's 3" in shown
    assert "3 of 8 pairs" in at.selectbox(key="cmp_b").format_func(ids["subset"])
    delta = next(m for m in at.metric if m.label == "Spearman (B)")
    assert delta.proto.delta in ("", "0", "0.0")  # same model, same scores: no delta from the subset


def test_compare_refuses_a_scores_only_run(monkeypatch, corpus):
    """Defect 6."""
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "compare")
    at.selectbox(key="cmp_a").set_value(ids["full"])
    at.selectbox(key="cmp_b").set_value(ids["scores"])
    at.session_state["cmp_tab"] = "POS interactions"
    ok(at)
    assert "run B is scores-only" in texts(at)
    assert not [c for c in at.get("vega_lite_chart") if "Difference" in c.proto.spec]


def test_compare_aligned_datasets_per_pair_with_untagged_note(monkeypatch, corpus):
    """Defect 7."""
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "compare")
    at.selectbox(key="cmp_a").set_value(ids["en"])
    at.selectbox(key="cmp_b").set_value(ids["en_de"])
    at.session_state["cmp_tab"] = "Per-pair scores"
    ok(at)
    shown = texts(at)
    assert "aligned datasets" in shown and "untagged" in shown
    tables = [d.value for d in at.dataframe if "score_b" in d.value.columns]
    assert tables and len(tables[0]) == 4


def test_failures_pair_selector_follows_the_run(monkeypatch, corpus):
    """Defect 4: after switching the run the selector still showed the previous run's pair (a pair id that
    the new run lists too, so keeping only valid options did not help)."""
    ids = corpus["runs"]
    with Store(corpus["path"]) as s:
        def choices(run):
            over, under = s.failures(run, "over", limit=10), s.failures(run, "under", limit=10)
            return [int(p) for p in [*over.loc[over["error"] > 0, "pair_id"], *under.loc[under["error"] < 0, "pair_id"]]]
        full, en = choices(ids["full"]), choices(ids["en"])
    kept = next(p for p in full if p in en and p != en[0])  # valid in both runs, not the new run's first
    at = open_app(monkeypatch, corpus["path"], "failures")
    at.selectbox(key="fail_run").set_value(ids["full"])
    ok(at)
    at.selectbox(key="fail_pair").set_value(kept)
    ok(at)
    assert at.selectbox(key="fail_pair").value == kept
    at.selectbox(key="fail_run").set_value(ids["en"])
    ok(at)
    assert at.selectbox(key="fail_pair").value == en[0]  # the new run's worst over-estimate, not the old pick


def test_pos_page_empty_state_says_the_run_has_no_pairs_yet(monkeypatch, corpus):
    """Defect 5."""
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "pos")
    at.session_state["pos_runs"] = [ids["running"]]
    ok(at)
    assert "not written any pairs yet (0 of 3 chunks)" in texts(at)
    assert "gold or error band" not in texts(at)


def test_failures_and_pos_find_pairs_by_word(monkeypatch, corpus):
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "failures")
    at.selectbox(key="fail_run").set_value(ids["full"])
    at.text_input(key="fail_word").set_value("guitar")
    ok(at)
    tables = [d.value for d in at.dataframe if "top_pairs_text" in d.value.columns]
    assert tables and all(t["pair_id"].tolist() == [2] for t in tables)
    assert "1 pair(s) of this run match word “guitar”" in texts(at)
    at = open_app(monkeypatch, corpus["path"], "pos")
    at.session_state["pos_runs"] = [ids["full"]]
    at.text_input(key="pos_text").set_value("guitar")
    ok(at)
    with Store(corpus["path"]) as s:
        heat = s.pos_heatmap(ids["full"], text="guitar")
    assert heat["n_pairs"].max() == 1
    shown = [d.value for d in at.dataframe if "pos_a" in d.value.columns]
    assert not shown or shown[0]["n_pairs"].max() == 1


def test_overview_metrics_from_the_full_run_and_partial_cells_named(monkeypatch, corpus):
    """Defect 1: the models × datasets table showed the latest (subset) run's score and called it the best."""
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "overview")
    ok(at)
    pivot = next(d.value for d in at.dataframe if "model" in d.value.columns and STSB in d.value.columns)
    row = pivot.set_index("model").loc["model-mA"]
    assert row[STSB] == pytest.approx(corpus["table"].at[ids["full"], "spearman"])
    long = next(d.value for d in at.dataframe if "coverage" in d.value.columns and "method" in d.value.columns
                and "spearman" in d.value.columns)
    hxp = long[(long["model_id"] == "mA") & (long["method"] == "hxp")].iloc[0]
    assert hxp["coverage"] == "3 of 8 pairs" and hxp["run_id"] == ids["subset"]
    shown = texts(at)
    with Store(corpus["path"]) as s:
        best = s.metrics_table().sort_values("spearman", ascending=False).iloc[0]
    assert f"({best['method']} run, {best['coverage']})" in shown  # the best cell names its run and coverage
    assert "Computed on part of the dataset only (no run covers all of it): model-mB on mstsb:en:test: " \
           "2 of 4 pairs (bilrp run)." in shown
    runs_table = next(d.value for d in at.dataframe if "chunks" in d.value.columns)
    assert runs_table.set_index("run_id").at[ids["subset"], "pairs"] == "3 of 8 pairs"


def test_pos_page_cell_list_follows_the_bands_and_shows_scores(monkeypatch, corpus):
    """Defect 3: a gold band changed the map but not the cell's token-pair list (nor its CSV)."""
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "pos")
    at.session_state["pos_runs"] = [ids["full"]]
    ok(at)
    at.selectbox(key="pos_cell").set_value("NOUN × NOUN")
    at.slider(key="pos_limit").set_value(100)
    ok(at)
    every = next(d.value for d in at.dataframe if "token_a" in d.value.columns)
    assert list(every.columns[:9]) == ["open", "pair_id", "token_a", "token_b", "relevance", "gold", "gold_norm",
                                       "model_score", "error"]
    at.slider(key="pos_gold").set_value((0.0, 0.45))
    ok(at)
    low = next(d.value for d in at.dataframe if "token_a" in d.value.columns)
    assert len(low) < len(every) and (low["gold_norm"] <= 0.45).all()
    cell = next(d.value for d in at.dataframe if "n_pairs" in d.value.columns and "pos_a" in d.value.columns)
    noun = cell[(cell["pos_a"] == "NOUN") & (cell["pos_b"] == "NOUN")].iloc[0]
    assert int(noun["count"]) == len(low)  # the list is exactly the cell that is shown


def test_pos_page_names_a_partial_run_under_its_maps_and_resets_the_cell(monkeypatch, corpus):
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "pos")
    at.session_state["pos_runs"] = [ids["full"]]
    ok(at)
    cells = at.selectbox(key="pos_cell").options
    at.selectbox(key="pos_cell").set_value(cells[-1])
    ok(at)
    at.multiselect(key="pos_runs").set_value([ids["subset"]])
    ok(at)
    assert at.selectbox(key="pos_cell").value == at.selectbox(key="pos_cell").options[0]  # strongest of the new run
    subtitles = [json.loads(c.proto.spec).get("title", {}).get("subtitle") for c in at.get("vega_lite_chart")]
    assert len(subtitles) == 3 and all("3 of 8 pairs" in str(s) for s in subtitles)
    assert "Partial run: 3 of 8 pairs of stsb:test, model-mA hxp L0." in texts(at)
    assert "3 of 8 pairs" in at.multiselect(key="pos_runs").format_func(ids["subset"]).split(" · ")[2]


def test_failures_and_example_empty_states_say_why(monkeypatch, corpus):
    """Defect 5: a run without chunks read as "no gold scores" on Failures."""
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "failures")
    at.selectbox(key="fail_run").set_value(ids["running"])
    ok(at)
    shown = texts(at)
    assert "This run has not written any pairs yet (0 of 3 chunks)" in shown and "no gold scores" not in shown
    at = open_app(monkeypatch, corpus["path"], "example", run=ids["running"])
    assert "This run has not written any pairs yet (0 of 3 chunks)" in texts(ok(at))
    at = open_app(monkeypatch, corpus["path"], "pos")
    at.session_state["pos_runs"] = [ids["full"]]
    at.text_input(key="pos_word").set_value("elephant")
    ok(at)
    assert "No token pairs in this band" in texts(at)


def test_example_page_finds_pairs_by_word_and_text(monkeypatch, corpus):
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "example", run=ids["full"])
    at.text_input(key="ex_word").set_value("guitar")
    ok(at)
    assert at.selectbox(key="ex_pair").options == ["#2 · gold 4.00 · err -0.10 · a man plays guitar"]
    assert "1 pair(s) of this run match word “guitar”" in texts(at)
    at.text_input(key="ex_word").set_value("")
    at.text_input(key="ex_text").set_value("MAT")
    ok(at)
    assert [o.split(" ·")[0] for o in at.selectbox(key="ex_pair").options] == ["#0", "#6"]
    at.text_input(key="ex_text").set_value("no such text")
    ok(at)
    assert "No pair of this run matches text “no such text”" in texts(at)


def test_example_page_resets_the_pair_when_the_dataset_changes(monkeypatch, corpus):
    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "example", run=ids["full"], pair="3")
    assert at.selectbox(key="ex_pair").value == 3
    at.selectbox(key="ex_run").set_value(ids["subset"])  # same dataset: the pair stays if the run has it
    ok(at)
    assert at.selectbox(key="ex_pair").value == 0  # the subset covers pairs 0-2 only
    at.selectbox(key="ex_run").set_value(ids["full"])
    at.selectbox(key="ex_pair").set_value(2)
    ok(at)
    at.selectbox(key="ex_run").set_value(ids["en"])  # another dataset: pair 2 there is another pair
    ok(at)
    assert at.selectbox(key="ex_pair").value == 0


def test_compare_matches_pairs_by_content_across_datasets(monkeypatch, corpus):
    """Issue #21: runs on stsb:test and on a dataset holding four of its pairs under other ids are compared on
    those four; the per-pair links open B's own pair."""
    from corpus_store import PICKED_OF_STSB

    ids = corpus["runs"]
    at = open_app(monkeypatch, corpus["path"], "compare")
    at.selectbox(key="cmp_a").set_value(ids["full"])
    at.selectbox(key="cmp_b").set_value(ids["picked"])
    at.session_state["cmp_tab"] = "Per-pair scores"
    ok(at)
    shown = texts(at)
    assert "on the 4 shared pairs of A's 8 and B's 6 (matched by the same text pair and gold" in shown
    assert "Not compared" not in shown
    table = next(d.value for d in at.dataframe if "score_b" in d.value.columns)
    assert dict(zip(table["pair_id"], table["pair_id_b"], strict=True)) == PICKED_OF_STSB
    assert all(link.endswith(f"run={ids['picked']}&pair={b}") for link, b in
               zip(table["open"], table["pair_id_b"], strict=True))

