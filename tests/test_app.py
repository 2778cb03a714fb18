"""The dashboard pages under Streamlit's AppTest against a fixture store built with tiny random models:
every page renders without an exception, reacts to its widgets, and shows the numbers the store holds.
A missing, empty or unreadable store shows what to run instead (and the first launch builds a demo)."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from core import views
from core.safe_text import unliteral
from core.store import Store
from precompute import demo

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

DEMO = ROOT / "data" / "demo_pairs.tsv"
PAGES = {
    "overview": "pages/1_Overview.py",
    "pos": "pages/2_POS_interactions.py",
    "compare": "pages/3_Compare.py",
    "failures": "pages/4_Failures.py",
    "example": "pages/5_Example.py",
    "explain": "pages/6_Explain.py",
}
HELP = "python -m precompute attribute --dataset stsb:test"


# --------------------------------------------------------------------------------------------------
# the fixture store (shared with test_browser.py: built once per session under the same folder)
# --------------------------------------------------------------------------------------------------


def build_app_store(root: Path, folders: dict[str, Path]) -> dict:
    """A store with two tiny models (BERT and RoBERTa tokenizers) on the 30 demo pairs: bilrp, ij (4 steps),
    bilrp at layer 2 and scores-only runs, a second dataset, and a run interrupted after its first chunk
    (status running). Returns {"path": store, "runs": {name: run_id}}; reuses a finished build."""
    from core import load_model
    from core.datasets import load_dataset
    from precompute.runner import run

    store = root / "store"
    marker = root / "runs.json"
    if marker.exists():
        return {"path": store, "runs": json.loads(marker.read_text())}
    root.mkdir(parents=True, exist_ok=True)
    small_file = root / "demo_small.tsv"
    pd.read_csv(DEMO, sep="\t").head(12).to_csv(small_file, sep="\t", index=False)
    ids: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo = load_dataset(str(DEMO), lang="en", gold_range=(0, 5))
        small = load_dataset(str(small_file), lang="en", gold_range=(0, 5))
        bert = load_model(folders["bert"], device="cpu")
        roberta = load_model(folders["roberta"], device="cpu")
        plan = [("bert_bilrp", bert, demo, dict(method="bilrp")),
                ("bert_ij", bert, demo, dict(method="ij", steps=4)),
                ("bert_bilrp_l2", bert, demo, dict(method="bilrp", layer=2)),
                ("bert_predict", bert, demo, dict(method="predict")),
                ("roberta_bilrp", roberta, demo, dict(method="bilrp")),
                ("roberta_predict", roberta, demo, dict(method="predict")),
                ("bert_small", bert, small, dict(method="bilrp"))]
        for name, model, ds, kw in plan:
            ids[name] = run(model, ds, store, chunk_size=8, progress=False, **kw).run_id

        def interrupt(done: int, total: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run(bert, demo, store, method="hxp", chunk_size=8, progress=interrupt)
    runs = Store(store).runs()
    ids["bert_hxp_running"] = runs.loc[runs["method"] == "hxp", "run_id"].iloc[0]
    marker.write_text(json.dumps(ids))
    return {"path": store, "runs": ids}


@pytest.fixture(scope="session")
def app_store(tmp_path_factory, tiny_folders) -> dict:
    return build_app_store(tmp_path_factory.getbasetemp() / "app_store", tiny_folders)


@pytest.fixture(scope="session")
def reader(app_store) -> Store:
    return Store(app_store["path"])


def open_app(monkeypatch, store: Path | str, page: str | None = None, **query) -> AppTest:
    """Run app.py on ``store`` (optionally switched to ``page`` with query parameters)."""
    monkeypatch.setenv(views.STORE_ENV, str(store))
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(PAGES[page])
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def charts_of(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def encoding(spec: dict) -> dict:
    """The encoding of a chart spec (of its first layer for layered charts)."""
    return spec["encoding"] if "encoding" in spec else spec["layer"][0]["encoding"]


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return found[0]


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    for d in at.dataframe:
        if column in d.value.columns:
            return d.value
    raise AssertionError(f"no table with column {column!r}")


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "code", "caption", "info", "warning", "title", "header", "subheader")
             for e in getattr(at, kind)]
    return "\n".join(unliteral(str(p)) for p in parts)  # untrusted values are escaped Markdown


# --------------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------------


def test_overview_shows_the_catalogue_and_metrics(monkeypatch, app_store, reader):
    at = open_app(monkeypatch, app_store["path"])
    runs = reader.runs()
    assert at.title[0].value == "SimLens audit overview"
    assert metric(at, "Runs") == str(len(runs)) and metric(at, "Models") == "2" and metric(at, "Datasets") == "2"
    assert "hxp" in metric(at, "Methods") and metric(at, "Layers") == "0, 2"
    assert "1 run(s) still running" in texts(at)
    # models x datasets: the Spearman of the preferred run of each (model, dataset)
    pivot = table_with(at, "file:demo_pairs:all").set_index("model")
    metrics = reader.metrics_table()
    for rec in metrics.to_dict("records"):
        model = views.short_model(rec["model_name"])
        assert pivot.at[model, rec["dataset_key"]] == pytest.approx(rec["spearman"])
        spearman_of_run = runs.set_index("run_id").at[rec["run_id"], "spearman"]
        assert rec["spearman"] == pytest.approx(spearman_of_run)
    best = metrics.sort_values("spearman", ascending=False).iloc[0]
    assert f"Best spearman: **{views.fmt_metric(best['spearman'])}**" in texts(at)
    # runs table: every run with its display status and chunk progress
    table = table_with(at, "chunks")
    assert set(table["run_id"]) == set(runs["run_id"])
    running = table[table["run_id"] == app_store["runs"]["bert_hxp_running"]].iloc[0]
    assert running["status"] == "running" and running["chunks"] == "1 / 4" and running["progress"] == 0.25
    assert table["open"].str.startswith("Example?run=").all()
    # other metric, status filter, storage details
    at.button_group(key="ov_metric").set_value("mse")
    ok(at)
    pivot = table_with(at, "file:demo_pairs:all").set_index("model")
    for rec in metrics.to_dict("records"):
        assert pivot.at[views.short_model(rec["model_name"]), rec["dataset_key"]] == pytest.approx(rec["mse"])
    at.button_group(key="ov_status").set_value(["running"])
    ok(at)
    assert table_with(at, "chunks")["status"].tolist() == ["running"]
    at.toggle(key="ov_storage").set_value(True)
    ok(at)
    summary = table_with(at, "bytes").set_index("table")
    assert summary.at["token_pairs", "rows"] == len(reader.table("token_pairs"))


def test_pos_page_filters_and_cell_examples(monkeypatch, app_store, reader):
    ids = app_store["runs"]
    at = open_app(monkeypatch, app_store["path"], "pos")
    specs = charts_of(at)
    assert len(specs) == 3  # relevance, positive, negative
    # centred at zero; the one-signed maps (each on its own maximum) end at zero
    assert all(s["encoding"]["color"]["scale"].get("domainMid") == 0 or 0.0 in s["encoding"]["color"]["scale"]["domain"]
               for s in specs)
    assert specs[0]["params"][0]["name"] == "cell"
    run_id = at.multiselect(key="pos_runs").value[0]
    heat = reader.pos_heatmap([run_id], include_special=False)  # special tokens are off by default
    strongest = heat.iloc[heat["relevance_norm"].abs().argmax()]
    assert at.selectbox(key="pos_cell").value == views.cell_label(strongest["pos_a"], strongest["pos_b"])
    assert metric(at, "relevance ÷ max") == f"{strongest['relevance_norm']:+.3f}"
    examples = table_with(at, "sentence1")
    expected = reader.pos_cell_examples(run_id, strongest["pos_a"], strongest["pos_b"], limit=20,
                                        include_special=False)
    assert examples["pair_id"].tolist() == expected["pair_id"].tolist()
    assert examples["open"].iloc[0] == views.example_url(run_id, int(expected["pair_id"].iloc[0]))
    # pick a NOUN x NOUN cell, most negative first
    at.selectbox(key="pos_cell").set_value("NOUN × NOUN")
    at.button_group(key="pos_order").set_value("neg")
    ok(at)
    expected = reader.pos_cell_examples(run_id, "NOUN", "NOUN", limit=20, order="neg", include_special=False)
    assert table_with(at, "sentence1")["relevance"].tolist() == pytest.approx(expected["relevance"].tolist())
    # word level, mean, no special tokens, bands, two runs summed
    at.radio(key="pos_level").set_value("word")
    at.radio(key="pos_agg").set_value("mean")
    at.toggle(key="pos_special").set_value(True)
    at.slider(key="pos_gold").set_value((0.5, 1.0))
    at.slider(key="pos_err").set_value((-1.0, 0.5))
    at.multiselect(key="pos_runs").set_value([ids["bert_bilrp"], ids["bert_ij"]])
    ok(at)
    heat = reader.pos_heatmap([ids["bert_bilrp"], ids["bert_ij"]], gold_band=(0.5, views.OPEN_END),
                              error_band=(-views.OPEN_END, 0.5), include_special=True, level="word", agg="mean")
    cell = views.parse_cell(at.selectbox(key="pos_cell").value)
    row = views.cell_row(heat, cell)
    assert metric(at, "relevance ÷ max") == f"{row['relevance_norm']:+.3f}"
    assert "[CLS] × [CLS]" in at.selectbox(key="pos_cell").options
    assert at.selectbox(key="pos_example_run").value == ids["bert_bilrp"]
    # dataset filters narrow the runs; a filter matching nothing says so
    at.selectbox(key="pos_name").set_value("demo_small")
    ok(at)
    assert at.multiselect(key="pos_runs").value == [ids["bert_small"]]
    at.slider(key="pos_gold").set_value((0.99, 1.0))
    at.slider(key="pos_err").set_value((0.95, 1.0))
    ok(at)
    assert "No token pairs in this band" in texts(at)


def test_pos_page_chart_click_selects_the_cell(monkeypatch, app_store):
    at = open_app(monkeypatch, app_store["path"], "pos")
    # what st.altair_chart(on_select=...) stores for a click, then the page's callback
    at.session_state["pos_cell"] = "VERB × NOUN"
    ok(at)
    assert at.selectbox(key="pos_cell").value == "VERB × NOUN"
    assert views.selected_cell({"selection": {"cell": [{"pos_a": "VERB", "pos_b": "NOUN"}]}}) == ("VERB", "NOUN")


def test_compare_page(monkeypatch, app_store, reader):
    ids = app_store["runs"]
    at = open_app(monkeypatch, app_store["path"], "compare")
    assert {at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value} <= set(reader.runs()["run_id"])
    at.selectbox(key="cmp_a").set_value(ids["bert_bilrp"])
    at.selectbox(key="cmp_b").set_value(ids["roberta_bilrp"])
    ok(at)
    runs = reader.runs().set_index("run_id")
    assert metric(at, "Spearman (B)") == views.fmt_metric(runs.at[ids["roberta_bilrp"], "spearman"])
    assert "model: bert → roberta" in texts(at)
    cmp = table_with(at, "rel_change").set_index("metric")
    assert cmp.at["pearson", "diff"] == pytest.approx(runs.at[ids["roberta_bilrp"], "pearson"]
                                                      - runs.at[ids["bert_bilrp"], "pearson"])
    specs = charts_of(at)
    assert len(specs) == 3 and specs[2]["encoding"]["color"]["field"] == "diff_norm"
    pos = table_with(at, "diff_norm")
    expected = reader.compare_pos(ids["bert_bilrp"], ids["roberta_bilrp"])
    assert pos["diff_norm"].abs().tolist() == pytest.approx(expected["diff_norm"].abs().head(15).tolist())
    # token pairs across tokenizers are matched by word text
    at.session_state["cmp_tab"] = "Token pairs"
    ok(at)
    assert at.radio(key="cmp_tok_level_word").value == "word"
    tok = table_with(at, "count_b")
    expected = reader.compare_token_pairs(ids["bert_bilrp"], ids["roberta_bilrp"], limit=15, level="word",
                                          include_special=True)
    assert tok["diff"].tolist() == pytest.approx(expected["diff"].tolist())
    # per-pair scores, then swap, then two layers of one model
    at.session_state["cmp_tab"] = "Per-pair scores"
    ok(at)
    changes = table_with(at, "delta")
    assert len(changes) == 30 and changes["delta"].abs().is_monotonic_decreasing
    at.button(key="cmp_swap").click()
    ok(at)
    assert at.selectbox(key="cmp_a").value == ids["roberta_bilrp"]
    at.selectbox(key="cmp_a").set_value(ids["bert_bilrp"])
    at.selectbox(key="cmp_b").set_value(ids["bert_bilrp_l2"])
    at.radio(key="cmp_level").set_value("word")
    at.session_state["cmp_tab"] = "POS interactions"
    ok(at)
    assert "layer: 0 → 2" in texts(at)


def test_failures_page(monkeypatch, app_store, reader):
    ids = app_store["runs"]
    at = open_app(monkeypatch, app_store["path"], "failures")
    at.selectbox(key="fail_run").set_value(ids["bert_bilrp"])
    at.slider(key="fail_limit").set_value(5)
    ok(at)
    over = reader.failures(ids["bert_bilrp"], "over", limit=5, top_k=3)
    under = reader.failures(ids["bert_bilrp"], "under", limit=5, top_k=3)
    tables = [d.value for d in at.dataframe if "top_pairs_text" in d.value.columns]
    assert tables[0]["pair_id"].tolist() == over.loc[over["error"] > 0, "pair_id"].tolist()
    assert tables[0]["top_pairs_text"].tolist() == over.loc[over["error"] > 0, "top_pairs_text"].tolist()
    # only real under-estimates are listed (the tiny model scores every pair near 1)
    real_under = under[under["error"] < 0]
    if len(real_under):
        assert tables[1]["pair_id"].tolist() == real_under["pair_id"].tolist()
    else:
        assert len(tables) == 1 and "No pair in this run is scored below its gold" in texts(at)
    assert at.selectbox(key="fail_pair").value == int(over["pair_id"].iloc[0])
    at.toggle(key="fail_special").set_value(True)
    at.slider(key="fail_topk").set_value(5)
    ok(at)
    # the quartiles tab: one row of charts per model, high and low
    at.session_state["fail_tab"] = "Similarity quartiles (per model)"
    ok(at)
    assert [s.value for s in at.subheader] == ["bert · bilrp L0", "roberta · bilrp L0"]
    high = table_with(at, "mean_relevance")
    expected = reader.quartile_top_pairs(ids["bert_bilrp"], "high", k=8, include_special=True)
    assert high["relevance"].tolist() == pytest.approx(expected["relevance"].tolist())
    at.radio(key="fail_q_level").set_value("word")
    at.selectbox(key="fail_q_method").set_value("ij")
    ok(at)
    assert [s.value for s in at.subheader] == ["bert · ij L0 · 4 steps"]


def test_example_page_from_query_params(monkeypatch, app_store, reader):
    ids = app_store["runs"]
    run_id, pair_id = ids["bert_bilrp"], 3
    at = open_app(monkeypatch, app_store["path"], "example", run=run_id, pair="3")
    pred = reader.predictions(run_id).set_index("pair_id").loc[pair_id]
    assert at.selectbox(key="ex_run").value == run_id and at.selectbox(key="ex_pair").value == pair_id
    assert metric(at, "model score") == f"{pred['model_score']:.4f}"
    assert metric(at, "residual") == f"{pred['residual']:+.4f}"
    assert metric(at, "gold on 0–5") == f"{pred['gold']:.2f}"
    assert pred["sentence1"] in texts(at)
    spec = charts_of(at)[0]
    matrix = reader.pair_matrix(run_id, pair_id)
    labels = [f"{i}:{t}" for i, t in matrix.drop_duplicates("i")[["i", "token_a"]].itertuples(index=False)]
    assert encoding(spec)["y"]["sort"] == labels and len(set(labels)) == len(labels)
    # every stored attribution of the pair side by side (bert bilrp, ij, bilrp L2, hxp if written, roberta)
    others = reader.pair_runs("file:demo_pairs:all", pair_id)
    assert set(table_with(at, "explained_score")["run_id"]) == set(others["run_id"])
    assert len(charts_of(at)) == 1 + min(len(views.token_runs(others)), 6)
    # word level, no special tokens, values in cells
    at.radio(key="ex_level").set_value("word")
    at.toggle(key="ex_special").set_value(False)
    at.toggle(key="ex_values").set_value(True)
    at.toggle(key="ex_shared").set_value(True)
    ok(at)
    words = reader.pair_matrix(run_id, pair_id, level="word", include_special=False)
    assert encoding(charts_of(at)[0])["y"]["sort"][0] == f"0:{words['token_a'].iloc[0]}"
    # another pair, ordered by error; the URL follows
    at.selectbox(key="ex_sort").set_value("over")
    ok(at)
    first = views.pair_options(reader.predictions(run_id), "over")[0]
    at.selectbox(key="ex_pair").set_value(first)
    ok(at)
    assert at.query_params["pair"] == [str(first)] or at.query_params["pair"] == str(first)


def test_example_page_bad_links_and_predict_runs(monkeypatch, app_store, reader):
    ids = app_store["runs"]
    at = open_app(monkeypatch, app_store["path"], "example", run="nosuchrun", pair="999")
    assert not at.exception and "not in this store" in texts(at)
    at = open_app(monkeypatch, app_store["path"], "example", run=ids["roberta_predict"], pair="2")
    assert "scores-only run stores no matrix" in texts(at)
    pred = reader.predictions(ids["roberta_predict"]).set_index("pair_id").loc[2]
    assert metric(at, "model score") == f"{pred['model_score']:.4f}"
    at = open_app(monkeypatch, app_store["path"], "example", run=ids["bert_small"], pair="25")
    assert "Pair 25 is not in this run" in texts(at)


def test_explain_page_with_a_model_folder(monkeypatch, app_store, tiny_folders):
    from core import explain, load_model

    at = open_app(monkeypatch, app_store["path"], "explain")
    assert "Press **Explain**" in texts(at)
    choice = at.selectbox(key="xp_model_choice")
    assert choice.value == "all-MiniLM-L6-v2"
    # the store's local model folders are offered, any other folder can be typed
    assert str(tiny_folders["bert"]) in choice.options
    choice.set_value("Other (folder path or hub id)…")
    ok(at)
    at.text_input(key="xp_model_path").input(str(tiny_folders["bert"]))
    at.text_area(key="xp_text_a").input("A dog runs in the park.")
    at.text_area(key="xp_text_b").input("A puppy plays outside.")
    at.button(key="xp_go").click()
    ok(at)
    exp = explain(load_model(tiny_folders["bert"], device="cpu"), "A dog runs in the park.", "A puppy plays outside.")
    assert metric(at, "model score") == f"{exp.model_score:.4f}"
    assert metric(at, "residual") == f"{exp.residual:+.4f}"
    assert encoding(charts_of(at)[0])["x"]["sort"] == [f"{j}:{t}" for j, t in enumerate(exp.tokens_b)]
    at.radio(key="xp_level").set_value("word")
    ok(at)
    assert encoding(charts_of(at)[0])["x"]["sort"] == [f"{j}:{t}" for j, t in enumerate(exp.to_words().tokens_b)]
    assert metric(at, "dims") == "32" and metric(at, "weights") == "float32"
    # the embedding cut to its first 8 dimensions: the score and the matrix are the cut embedding's
    at.number_input(key="xp_truncate_dim").set_value(8)
    at.button(key="xp_go").click()
    ok(at)
    cut = explain(load_model(tiny_folders["bert"], device="cpu", truncate_dim=8), "A dog runs in the park.",
                  "A puppy plays outside.")
    assert metric(at, "dims") == "8" and metric(at, "model score") == f"{cut.model_score:.4f}" != f"{exp.model_score:.4f}"
    assert metric(at, "residual") == f"{cut.residual:+.4f}"
    at.number_input(key="xp_truncate_dim").set_value(0)
    # integrated Jacobians with 3 steps at layer 1
    at.selectbox(key="xp_method").set_value("ij")
    at.checkbox(key="xp_default_layer").uncheck()
    ok(at)
    at.number_input(key="xp_layer").set_value(1)
    assert at.radio(key="xp_steps_mode").value == "auto"  # ij's default: to a tolerance
    at.radio(key="xp_steps_mode").set_value("fixed")
    ok(at)
    at.number_input(key="xp_steps").set_value(3)
    at.button(key="xp_go").click()
    ok(at)
    assert metric(at, "layer") == "1" and metric(at, "steps") == "3 · 3"
    # a bad layer is an error message, not a trace
    at.number_input(key="xp_layer").set_value(9)
    at.button(key="xp_go").click()
    at.run()
    assert not at.exception and "layer must be an integer" in " ".join(e.value for e in at.error)


# --------------------------------------------------------------------------------------------------
# no store, empty store, unreadable store, first launch
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "empty_store", "not_a_store"])
def test_pages_without_results_say_what_to_run(monkeypatch, tmp_path, kind):
    from core.store import StoreWriter

    store = tmp_path / "s"
    if kind == "empty_dir":
        store.mkdir()
    elif kind == "empty_store":
        StoreWriter(store)
    elif kind == "not_a_store":
        store.mkdir()
        (store / "notes.txt").write_text("hello")
    at = open_app(monkeypatch, store)
    for page in ("overview", "pos", "compare", "failures", "example"):
        at.switch_page(PAGES[page])
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        body = texts(at)
        assert HELP in body and str(store) in body, (page, body)
        assert ("cannot be read" in body) == (kind == "not_a_store")
        demo_button = [b for b in at.button if b.key == "_build_demo"]
        assert bool(demo_button) == (kind != "not_a_store")
    # the live page needs no store
    at.switch_page(PAGES["explain"])
    at.run()
    assert not at.exception and at.title[0].value == "Explain your own pair"


def test_first_launch_builds_the_demo_store(monkeypatch, tmp_path, tiny_folders):
    store = tmp_path / "first"
    small = (demo.DemoStep("predict"), demo.DemoStep("bilrp", layer=0))
    monkeypatch.setattr(demo, "build_demo_store",
                        functools.partial(demo.build_demo_store, model=str(tiny_folders["bert"]), plan=small, limit=6))
    monkeypatch.setenv(views.STORE_ENV, str(store))
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    runs = Store(store).runs()
    assert sorted(runs["method"]) == ["bilrp", "predict"] and (runs["status"] == "done").all()
    assert at.title[0].value == "SimLens audit overview" and metric(at, "Runs") == "2"


def test_build_demo_button_on_an_empty_store(monkeypatch, tmp_path, tiny_folders):
    store = tmp_path / "button"
    monkeypatch.setattr(demo, "build_demo_store",
                        functools.partial(demo.build_demo_store, model=str(tiny_folders["bert"]),
                                          plan=(demo.DemoStep("predict"),), limit=4))
    at = open_app(monkeypatch, store)
    assert HELP in texts(at)
    at.button(key="_build_demo").click()
    ok(at)
    assert metric(at, "Runs") == "1"


def test_an_interrupted_run_is_counted_and_filterable(monkeypatch, tmp_path):
    """A writer SIGKILLed after its first chunk: the sidebar, the Runs metric's help, the notice and the Runs
    table's Status filter all know the run as interrupted, and its coverage is what it wrote (2 of 6 pairs)."""
    import signal
    import subprocess
    import sys

    store = tmp_path / "store"
    cmd = [sys.executable, str(ROOT / "tests" / "store_writer_proc.py"), str(store), "--n-pairs", "6",
           "--chunk-size", "2", "--sleep", "120"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            lines = [proc.stdout.readline().strip() for _ in range(2)]
            assert lines[1] == "wrote 0", lines
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    at = open_app(monkeypatch, store)
    assert views.status_counts(Store(store).runs())["interrupted"] == 1
    assert "0 run(s) still running, 1 interrupted" in texts(at)
    assert "1 interrupted" in " ".join(c.value for c in at.sidebar.caption)
    status = at.button_group(key="ov_status")
    assert "interrupted" in status.options and status.value == ["interrupted"]
    table = table_with(at, "chunks")
    assert table["status"].tolist() == ["interrupted"] and table["pairs"].tolist() == ["2 of 6 pairs"]
    runs = Store(store).runs()
    assert "· 2 of 6 pairs ·" in views.run_label(runs.iloc[0].to_dict())  # every picker says what it covers
    assert views.partial_note(runs, runs["run_id"]).startswith("Interrupted run, so far: 2 of 6 pairs of synth:test")
