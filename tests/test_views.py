"""Unit tests of the dashboard's pure functions (core/views/, core/charts.py): chart specs (diverging scale
centred at zero, red = positive, tooltips, token labels), normalisation, export bytes, filter helpers, store
state; the presenters import without Streamlit."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from PIL import Image

from core import charts, views
from core.store import Store, StoreWriter, make_run_id

DS = "stsb:test"


# --------------------------------------------------------------------------------------------------
# a hand-made store: 2 models, 3 runs on 3 pairs (one interrupted), a second dataset
# --------------------------------------------------------------------------------------------------


def tokens_of(pair_id: int, a: list[tuple], b: list[tuple]) -> list[dict]:
    rows = []
    for side, toks in (("a", a), ("b", b)):
        for k, (tok, word, pos) in enumerate(toks):
            special = word is None
            rows.append({"pair_id": pair_id, "side": side, "token_index": k, "token": tok, "start": None, "end": None,
                         "is_special": special, "word_index": word, "word": None if special else tok.strip("#"),
                         "pos": tok if special else pos})
    return rows


TOKENS = pd.DataFrame(
    tokens_of(0, [("[CLS]", None, None), ("the", 0, "DET"), ("cat", 1, "NOUN"), ("the", 2, "DET")],
              [("[CLS]", None, None), ("a", 0, "DET"), ("cat", 1, "NOUN")])
    + tokens_of(1, [("[CLS]", None, None), ("dogs", 0, "NOUN"), ("run", 1, "VERB")],
                [("[CLS]", None, None), ("dog", 0, "NOUN"), ("##s", 0, "NOUN"), ("sleep", 1, "VERB")])
    + tokens_of(2, [("[CLS]", None, None), ("rain", 0, "NOUN")], [("[CLS]", None, None), ("sun", 0, "NOUN")])
)
TOKENS.loc[TOKENS["token"].isin(["dog", "##s"]), "word"] = "dogs"


def token_pairs(scale: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pid, g in TOKENS.groupby("pair_id"):
        na, nb = (g["side"] == "a").sum(), (g["side"] == "b").sum()
        for i in range(na):
            for j in range(nb):
                rows.append({"pair_id": pid, "i": i, "j": j, "relevance": scale * float(rng.normal())})
    return pd.DataFrame(rows)


def write_run(w: StoreWriter, model_id: str, method: str, layer: int, scores: list[float], scale: float = 1.0,
              finish: bool = True, spearman: float = 50.0) -> str:
    w.start_run({"model_id": model_id, "dataset_key": DS, "method": method, "layer": layer, "chunk_size": 2,
                 "code_version": "test", "device": "cpu"})
    rid = make_run_id(model_id, DS, method, layer)
    tp = token_pairs(scale, seed=len(model_id) + layer)
    for k in w.pending_chunks(rid) if finish else [0]:
        ids = w.chunk_pair_ids(rid, k)
        w.write_chunk(rid, k, {
            "predictions": pd.DataFrame({"pair_id": ids, "model_score": [scores[i] for i in ids],
                                         "explained_score": [scores[i] for i in ids]}),
            "tokens": TOKENS[TOKENS["pair_id"].isin(ids)],
            "token_pairs": tp[tp["pair_id"].isin(ids)],
        })
    if finish:
        w.finish_run(rid, {"spearman": spearman, "pearson": spearman - 5, "mse": 0.1})
    return rid


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    path = tmp_path_factory.mktemp("views") / "store"
    w = StoreWriter(path)
    w.put_dataset({"dataset_key": DS, "name": "stsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "gold_min": 0.0, "gold_max": 5.0},
                  pd.DataFrame({"sentence1": ["the cat the", "dogs run", "rain"], "sentence2": ["a cat", "dogs sleep",
                                                                                          "sun"], "gold": [4.0, 2.5, 0.5]}))
    w.put_dataset({"dataset_key": "mstsb:en-de:test", "name": "mstsb", "split": "test", "lang_a": "en",
                   "lang_b": "de", "gold_min": 0.0, "gold_max": 5.0},
                  pd.DataFrame({"sentence1": ["a"], "sentence2": ["b"], "gold": [1.0]}))
    for mid in ("mA", "mB"):
        w.put_model({"model_id": mid, "name": f"/models/model-{mid}", "pooling": "mean", "similarity": "cosine"})
    ra = write_run(w, "mA", "bilrp", 0, [0.9, 0.6, 0.2])
    rb = write_run(w, "mB", "bilrp", 0, [0.7, 0.8, 0.1], scale=2.0, spearman=70.0)
    rc = write_run(w, "mA", "ij", 3, [0.9, 0.6, 0.2], finish=False)
    return {"path": path, "store": Store(path), "a": ra, "b": rb, "running": rc}


# --------------------------------------------------------------------------------------------------
# charts
# --------------------------------------------------------------------------------------------------


def color_scale(spec: dict) -> dict:
    enc = spec["encoding"] if "encoding" in spec else spec["layer"][0]["encoding"]
    return enc["color"]["scale"]


def test_signed_scale_is_diverging_centred_at_zero_and_symmetric():
    scale = charts.signed_scale(0.25).to_dict()
    assert scale == {"scheme": "redblue", "domain": [-0.25, 0.25], "domainMid": 0, "reverse": True}
    assert charts.signed_scale(0).to_dict()["domain"] == [-1.0, 1.0]
    assert charts.max_abs([0.1, -0.7, np.nan, 0.3]) == 0.7 and charts.max_abs([]) == 1.0


def test_red_is_positive_and_blue_negative_in_the_rendered_chart():
    df = pd.DataFrame({"i": [0, 0], "j": [0, 1], "token_a": ["a", "a"], "token_b": ["x", "y"],
                       "relevance": [0.5, -0.5]})
    svg = charts.chart_svg(charts.token_heatmap_chart(df, show_values=False)).decode()
    fills = {}
    for label, fill in re.findall(r'aria-label="[^"]*?sentence 2 token: (\d:\w)[^"]*" [^>]*fill="rgb\(([\d, ]+)\)"',
                                  svg):
        fills[label] = tuple(int(x) for x in fill.split(","))
    red, blue = fills["0:x"], fills["1:y"]
    assert red[0] > 120 and red[0] > 2 * red[2], red  # +0.5: red
    assert blue[2] > 100 and blue[2] > 2 * blue[0], blue  # -0.5: blue


def test_pos_heatmap_chart_spec(hand):
    heat = hand["store"].pos_heatmap([hand["a"]])
    heat.loc[0, "pos_b"] = None  # a language without tagger
    chart = charts.pos_heatmap_chart(heat, "relevance_norm", title="t")
    spec = chart.to_dict()
    assert color_scale(spec) == {"scheme": "redblue", "domain": [-1.0, 1.0], "domainMid": 0, "reverse": True}
    tips = [t["field"] for t in spec["encoding"]["tooltip"]]
    assert tips[:3] == ["pos_a", "pos_b", "relevance_norm"] and {"count", "n_pairs", "pos_sum", "neg_sum"} <= set(tips)
    assert spec["params"][0]["name"] == "cell" and spec["params"][0]["select"]["fields"] == ["pos_a", "pos_b"]
    data = next(iter(spec["datasets"].values()))
    assert charts.NULL_POS in {d["pos_b"] for d in data}
    assert spec["encoding"]["x"]["sort"][-1] == charts.NULL_POS
    # raw values get a symmetric domain over their largest |value|; no selection when not clickable
    spec = charts.pos_heatmap_chart(heat, "relevance", selection=None).to_dict()
    m = float(heat["relevance"].abs().max())
    assert color_scale(spec)["domain"] == pytest.approx([-m, m]) and "params" not in spec


def test_pos_order():
    assert charts.pos_order(["VERB", None, "[CLS]", "NOUN", "ADJ", "XYZ", "NOUN"]) == [
        "NOUN", "VERB", "ADJ", "[CLS]", "XYZ", charts.NULL_POS]


def test_token_heatmap_keeps_order_and_duplicate_tokens_distinct(hand):
    long = hand["store"].pair_matrix(hand["a"], 0)
    spec = charts.token_heatmap_chart(long, show_values=False).to_dict()
    assert spec["encoding"]["y"]["sort"] == ["0:[CLS]", "1:the", "2:cat", "3:the"]
    assert spec["encoding"]["x"]["sort"] == ["0:[CLS]", "1:a", "2:cat"]
    assert spec["encoding"]["x"]["axis"]["labelOverlap"] is False
    m = float(long["relevance"].abs().max())
    assert color_scale(spec) == {"scheme": "redblue", "domain": pytest.approx([-m, m]), "domainMid": 0,
                                 "reverse": True}
    tips = {t["field"] for t in spec["encoding"]["tooltip"]}
    assert {"label_a", "label_b", "relevance", "relevance_norm", "pos_a", "pos_b"} <= tips
    # values in the cells: a text layer; a shared limit for comparisons
    spec = charts.token_heatmap_chart(long, show_values=True, limit=5.0).to_dict()
    assert spec["layer"][1]["mark"]["type"] == "text" and color_scale(spec)["domain"] == [-5.0, 5.0]
    # word level: pieces summed into words
    words = hand["store"].pair_matrix(hand["a"], 1, level="word")
    spec = charts.token_heatmap_chart(words, show_values=False).to_dict()
    assert spec["encoding"]["x"]["sort"] == ["0:[CLS]", "1:dogs", "2:sleep"]


def test_matrix_normalisation():
    long = pd.DataFrame({"i": [0, 1], "j": [0, 0], "token_a": ["a", "b"], "token_b": ["x", "x"],
                         "relevance": [0.2, -0.4]})
    d = charts.matrix_frame(long)
    assert d["relevance_norm"].tolist() == pytest.approx([0.5, -1.0])
    assert d["label_a"].tolist() == ["0:a", "1:b"]
    assert charts.matrix_frame(long.head(0)).empty


def test_store_heatmaps_are_normalised_by_the_largest_absolute_value(hand):
    for agg in ("sum", "mean"):
        heat = hand["store"].pos_heatmap([hand["a"], hand["b"]], agg=agg)
        assert heat["relevance_norm"].abs().max() == pytest.approx(1.0)
        assert max(heat["pos_norm"].abs().max(), heat["neg_norm"].abs().max()) == pytest.approx(1.0)
        assert (heat["pos_norm"] >= 0).all() and (heat["neg_norm"] <= 0).all()


def test_bar_and_scatter_charts(hand):
    top = hand["store"].quartile_top_pairs(hand["a"], "high", k=5, include_special=True)
    spec = charts.pair_bar_chart(top, "relevance", extra_tooltips=("count",)).to_dict()
    assert color_scale(spec)["domainMid"] == 0
    labels = [d["pair"] for d in next(iter(spec["datasets"].values()))]
    assert len(set(labels)) == len(labels) and all(" ↔ " in x for x in labels)
    pred = hand["store"].predictions(hand["a"])
    spec = charts.score_scatter_chart(pred, highlight=[0]).to_dict()
    assert spec["layer"][1]["encoding"]["color"]["scale"]["domainMid"] == 0
    changes = hand["store"].compare_scores(hand["a"], hand["b"])
    spec = charts.score_compare_chart(changes).to_dict()
    assert spec["layer"][1]["encoding"]["color"]["field"] == "delta"


def test_export_bytes_are_valid(hand):
    long = hand["store"].pair_matrix(hand["a"], 0)
    chart = charts.token_heatmap_chart(long)
    png = charts.chart_png(chart)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.size[0] > 100 and img.size[1] > 100
    svg = charts.chart_svg(chart)
    assert svg.lstrip().startswith(b"<svg") and b"1:the" in svg and b"3:the" in svg
    csv = charts.table_csv(long)
    back = pd.read_csv(io.BytesIO(csv))
    assert back["relevance"].tolist() == pytest.approx(long["relevance"].tolist())
    assert back["token_a"].tolist() == long["token_a"].tolist()
    pq_bytes = charts.table_parquet(long)
    assert pq_bytes[:4] == b"PAR1"
    back = pq.read_table(io.BytesIO(pq_bytes)).to_pandas()
    assert back["relevance"].tolist() == pytest.approx(long["relevance"].tolist())
    # a failures table has a list-of-dicts column; mixed objects fall back to text
    fails = hand["store"].failures(hand["a"], "over", limit=2)
    back = pq.read_table(io.BytesIO(charts.table_parquet(fails))).to_pandas()
    assert back["pair_id"].tolist() == fails["pair_id"].tolist()
    mixed = pd.DataFrame({"x": [1, "a", {"b": 2}]})
    assert pq.read_table(io.BytesIO(charts.table_parquet(mixed))).to_pandas()["x"].tolist() == ["1", "a", "{'b': 2}"]


# --------------------------------------------------------------------------------------------------
# store location, state, fingerprint
# --------------------------------------------------------------------------------------------------


def test_store_location():
    assert views.store_location({}) == (Path("store"), False)
    assert views.store_location({"SIMLENS_STORE": " /data/s "}) == (Path("/data/s"), True)
    assert views.store_location({"SIMLENS_STORE": ""}) == (Path("store"), False)


def test_store_state(tmp_path, hand):
    assert views.store_state(tmp_path / "nope").state == "missing"
    (tmp_path / "empty").mkdir()
    assert views.store_state(tmp_path / "empty").state == "missing"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    st = views.store_state(tmp_path / "other")
    assert st.state == "invalid" and "not a SimLens store" in st.message
    (tmp_path / "file").write_text("x")
    assert views.store_state(tmp_path / "file").state == "invalid"
    StoreWriter(tmp_path / "fresh")
    assert views.store_state(tmp_path / "fresh").state == "empty"
    st = views.store_state(hand["path"])
    assert st.state == "ok" and st.n_runs == 3
    md = views.store_help(tmp_path / "nope", views.store_state(tmp_path / "nope")).markdown
    assert "python -m precompute attribute --dataset stsb:test --store " + str(tmp_path / "nope") in md
    assert "No audit results yet" in md
    md = views.store_help("store", views.StoreState("invalid", "broken")).markdown
    assert "cannot be read" in md and f"--dataset stsb:test --store {Path('store').absolute()}\n" in md


@pytest.mark.parametrize("state,explicit,env,expected", [
    ("missing", False, {}, True),
    ("empty", False, {}, True),
    ("missing", True, {}, False),
    ("missing", True, {"SIMLENS_AUTO_DEMO": "1"}, True),
    ("empty", False, {"SIMLENS_AUTO_DEMO": "0"}, False),
    ("invalid", False, {"SIMLENS_AUTO_DEMO": "1"}, False),
    ("ok", False, {}, False),
])
def test_should_autobuild(state, explicit, env, expected):
    assert views.should_autobuild(views.StoreState(state, ""), explicit, env) is expected


def test_store_fingerprint_changes_when_a_writer_writes(tmp_path):
    path = tmp_path / "s"
    before = views.store_fingerprint(path)
    w = StoreWriter(path)
    w.put_dataset({"dataset_key": DS, "name": "stsb", "split": "test"},
                  pd.DataFrame({"sentence1": ["the cat the", "dogs run", "rain"], "sentence2": ["a cat", "dogs sleep",
                                                                                          "sun"], "gold": [4.0, 2.5, 0.5]}))
    w.put_model({"model_id": "mA", "name": "m"})
    f1 = views.store_fingerprint(path)
    assert f1 != before and f1 == views.store_fingerprint(path)
    rid = write_run(w, "mA", "bilrp", 0, [0.9, 0.6, 0.2], finish=False)
    f2 = views.store_fingerprint(path)
    assert f2 != f1
    w.finish_run(rid, {"spearman": 1.0})
    assert views.store_fingerprint(path) != f2


# --------------------------------------------------------------------------------------------------
# runs, filters, cells
# --------------------------------------------------------------------------------------------------


def test_run_labels_status_and_tables(hand):
    runs = hand["store"].runs()
    labels = views.run_labels(runs)
    assert labels[hand["a"]].startswith("model-mA · bilrp L0 · stsb:test · ")
    assert "running" in labels[hand["running"]] and "ij L3" in labels[hand["running"]]
    assert views.display_status({"status": "done", "complete": False}) == "partial"
    assert views.display_status({"status": "done", "complete": True}) == "done"
    assert views.setting_text({"method": "ij", "layer": 3, "steps": 16, "quadrature": "uniform"}) == \
        "ij L3 · 16 steps (uniform)"
    assert views.setting_text({"method": "predict", "layer": 6}) == "predict"
    table = views.runs_overview(runs).set_index("run_id")
    assert table.at[hand["running"], "status"] == "running" and table.at[hand["running"], "chunks"] == "1 / 2"
    assert table.at[hand["running"], "progress"] == 0.5 and table.at[hand["a"], "progress"] == 1.0
    assert views.status_counts(runs) == {"done": 2, "partial": 0, "running": 1, "interrupted": 0, "failed": 0}
    assert views.short_model("/models/model-mA") == "model-mA" and views.short_model("all-MiniLM-L6-v2") == \
        "all-MiniLM-L6-v2"
    pivot = views.metrics_pivot(hand["store"].metrics_table(), "spearman")
    assert pivot.loc["model-mB", DS] == 70.0 and pivot.loc["model-mA", DS] == 50.0
    assert views.fmt_metric(70.0) == "70.00" and views.fmt_metric(0.1, "mse") == "0.1000"
    assert views.fmt_metric(None) == "–"


def test_dataset_filters(hand):
    datasets = hand["store"].datasets()
    opts = views.filter_options(datasets)
    assert opts == {"name": ["All", "mstsb", "stsb"], "split": ["All", "test"], "languages": ["All", "en", "en-de"]}
    assert views.filter_datasets(datasets) == ["mstsb:en-de:test", DS]
    assert views.filter_datasets(datasets, langs="en-de") == ["mstsb:en-de:test"]
    assert views.filter_datasets(datasets, name="stsb", split="test", langs="en") == [DS]
    assert views.filter_datasets(datasets, name="stsb", langs="en-de") == []
    runs = hand["store"].runs()
    assert set(views.filter_runs(runs, [DS])["run_id"]) == {hand["a"], hand["b"], hand["running"]}
    assert views.filter_runs(runs, ["mstsb:en-de:test"]).empty
    assert set(views.filter_runs(runs, methods=["ij"])["run_id"]) == {hand["running"]}
    assert views.dataset_table(datasets)["label"].tolist()[1] == "stsb:test (en, test, 3 pairs)"


def test_bands():
    assert views.band_arg((0.0, 1.0)) is None and views.band_arg(None) is None
    assert views.band_arg((0.2, 0.6)) == (0.2, 0.6)
    assert views.band_arg((0.6, 1.0)) == (0.6, views.OPEN_END)
    assert views.band_arg((-1.0, 0.0), (-1.0, 1.0)) == (-views.OPEN_END, 0.0)
    assert views.gold_band_text((0.6, 1.0), 0.0, 5.0) == "gold 0.60–1.00 (0–1) = 3.00–5.00 on the 0–5 scale"


def test_cells(hand):
    heat = hand["store"].pos_heatmap([hand["a"]])
    labels = views.cell_options(heat)
    assert len(labels) == len(heat)
    first = views.parse_cell(labels[0])
    assert abs(views.cell_row(heat, first)["relevance_norm"]) == pytest.approx(1.0)
    assert views.parse_cell("NOUN × untagged") == ("NOUN", None) and views.parse_cell("junk") is None
    assert views.cell_label(None, "VERB") == "untagged × VERB"
    assert views.cell_row(heat, ("NOPE", "NOPE")) is None
    # the selection state of st.altair_chart(on_select="rerun"), as dict or attribute access
    assert views.selected_cell({"selection": {"cell": [{"pos_a": "DET", "pos_b": "untagged"}]}}) == ("DET", None)
    assert views.selected_cell({"selection": {"cell": {}}}) is None
    assert views.selected_cell({"selection": {"cell": []}}) is None
    assert views.selected_cell(None) is None

    class State:
        selection = {"cell": [{"pos_a": "NOUN", "pos_b": "VERB"}]}

    assert views.selected_cell(State()) == ("NOUN", "VERB")
    table = views.heatmap_table(heat)
    assert table["relevance_norm"].abs().is_monotonic_decreasing


# --------------------------------------------------------------------------------------------------
# matrices, pairs, comparisons
# --------------------------------------------------------------------------------------------------


def test_links_and_pairs(hand):
    assert views.example_url("abc", 3) == "Example?run=abc&pair=3"
    assert views.example_url("abc") == "Example?run=abc"
    pred = hand["store"].predictions(hand["a"])
    linked = views.with_links(pred, run_id=hand["a"])
    assert linked.columns[0] == "open" and linked["open"].iloc[1] == views.example_url(hand["a"], 1)
    assert views.pair_options(pred) == [0, 1, 2]
    errors = pred.set_index("pair_id")["error"]
    assert views.pair_options(pred, "over")[0] == int(errors.idxmax())
    assert views.pair_options(pred, "under")[0] == int(errors.idxmin())
    assert views.pair_options(pred, "abs")[0] == int(errors.abs().idxmax())
    assert views.pair_option_labels(pred)[0].startswith("#0 · gold 4.00 · err ")


def test_top_pairs_and_special_tokens(hand):
    long = hand["store"].pair_matrix(hand["a"], 0)
    top = views.top_token_pairs(long, k=3)
    assert len(top) == 3 and top["relevance"].abs().is_monotonic_decreasing
    assert top["share"].abs().sum() <= 1.0
    no_special = views.top_token_pairs(long, k=50, include_special=False)
    assert "[CLS]" not in set(no_special["token_a"]) | set(no_special["token_b"])
    assert len(views.drop_special(long)) == 3 * 2


def test_explanation_frame():
    class Exp:
        matrix = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])
        tokens_a = ["[CLS]", "the", "the"]
        tokens_b = ["[CLS]", "cat"]
        special_a = [True, False, False]
        special_b = [True, False]

    long = views.explanation_frame(Exp())
    assert len(long) == 6 and long.loc[(long.i == 2) & (long.j == 1), "relevance"].item() == 3.0
    assert charts.matrix_frame(long)["label_a"].unique().tolist() == ["0:[CLS]", "1:the", "2:the"]
    assert len(views.drop_special(long)) == 2


def test_comparisons(hand):
    runs = hand["store"].runs()
    info = runs.set_index("run_id")
    a, b = info.loc[hand["a"]].to_dict(), info.loc[hand["b"]].to_dict()
    assert views.run_difference(a, b) == ["model: model-mA → model-mB"]
    c = info.loc[hand["running"]].to_dict()
    assert views.run_difference(a, c) == ["method: bilrp → ij", "layer: 0 → 3"]
    assert views.comparison_level(a, b) == "word" and views.comparison_level(a, c) == "token"
    pair = views.default_comparison(runs)
    assert set(pair) == {hand["a"], hand["running"]}  # same dataset and model first
    assert views.default_comparison(runs.head(1)) is None
    changes = hand["store"].compare_scores(hand["a"], hand["b"])
    assert changes["pair_id"].tolist() == [0, 1, 2]  # largest |B - A| first, ties by pair id
    assert changes["delta"].tolist() == pytest.approx([-0.2, 0.2, -0.1])
    deltas = views.metric_deltas(hand["store"].compare_metrics(hand["a"], hand["b"])).set_index("metric")
    sp = deltas.loc["spearman"]  # recomputed on the shared pairs (not the run records' 50 / 70)
    assert sp["rel_change"] == pytest.approx((sp["run_b"] - sp["run_a"]) / abs(sp["run_a"]))
    q = views.quartile_runs(runs, DS, "bilrp")
    assert set(q["run_id"]) == {hand["a"], hand["b"]}
    assert views.quartile_runs(runs, DS, "ij", prefer_layer=3)["run_id"].tolist() == [hand["running"]]
    fails = pd.DataFrame({"pair_id": [1, 2, 3], "error": [0.3, 0.0, -0.2]})
    assert views.signed_failures(fails, "over")["pair_id"].tolist() == [1]
    assert views.signed_failures(fails, "under")["pair_id"].tolist() == [3]
    assert views.failures_table(hand["store"].failures(hand["a"], "over", limit=2)).columns.tolist() == [
        "pair_id", "gold", "gold_norm", "model_score", "error", "top_pairs_text", "sentence1", "sentence2"]


def test_presenters_and_charts_import_without_streamlit():
    code = ("import sys; import core.views, core.charts; "
            "import core.views.location, core.views.runs, core.views.cells, core.views.pairs; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


# --------------------------------------------------------------------------------------------------
# faithfulness evidence (core/views/evidence.py, the evaluation charts)
# --------------------------------------------------------------------------------------------------


def evidence_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "eval_id": "e1", "model_name": "/m/mini", "dataset_key": DS, "n_pairs": 3, "seconds": 1.5,
        "code_version": "abc", "params": '{"methods": ["bilrp", "ij"], "limit": 3}',
        "metric": ["spearman", "spearman", "p_value", "share", "share"],
        "method": ["bilrp", "bilrp", "bilrp", "ij", "ij"], "layer": [0, 0, 0, 3, 5],
        "series": ["all tokens", "no special", None, "ij", "ij"], "label": ["bilrp vs ij"] * 3 + ["a", "b"],
        "y": [0.5, -0.25, 0.01, 0.2, 0.3], "y_sd": [0.1, None, None, 0.05, 0.05], "n": [3, 3, 3, 3, 3],
        "extra": ['{"other": "ij"}', '{"other": "ij"}', '{"p_less": 0.005, "median": 2}', None, "not json"],
    })


def test_evidence_tables_parse_extras_and_settings():
    from core.views import evidence as ev

    rows = evidence_rows()
    other = ev.extra_values(rows, "other")
    assert other.iloc[:2].tolist() == ["ij", "ij"] and other.iloc[2:].isna().all()  # no key, no JSON, bad JSON
    tests = ev.evidence_table(rows, ev.Table(("p_value",), "t", columns=("label", "y", "p_less"), rename={"y": "p"}))
    assert tests.columns.tolist() == ["label", "p", "p_less"] and tests.iloc[0].tolist() == ["bilrp vs ij", 0.01, 0.005]
    summary = ev.evidence_table(rows, ev.Table(("spearman", "p_value"), "s"))
    assert summary.columns.tolist() == ["series", "label", "method", "layer", "metric", "value", "sd", "median", "n"]
    assert summary["median"].tolist()[2] == 2
    settings = ev.evaluation_settings(rows)
    assert settings["params"] == {"methods": ["bilrp", "ij"], "limit": 3} and settings["pairs"] == 3
    assert settings["seconds"] == "1.5" and ev.fmt_number(float("nan")) == "–"
    listing = pd.DataFrame({"kind": ["toy", "table1", "agreement"]})
    assert ev.ordered_kinds(listing, ["agreement", "conservation", "table1"]) == ["agreement", "table1", "toy"]


def test_evidence_pair_matrix_is_symmetric_on_the_signed_scale():
    from core.views import evidence as ev

    both = ev.pair_matrix_rows(evidence_rows(), ev.PairMatrix("spearman", "m"), "all tokens")
    assert sorted(zip(both["method"], both["other"], both["y"], strict=True)) == [("bilrp", "ij", 0.5), ("ij", "bilrp", 0.5)]
    spec = charts.pair_matrix_chart(both, "Spearman").to_dict()
    scale = spec["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domain"] == [-1.0, 1.0] and scale["domainMid"] == 0 and scale["reverse"] is True
    assert scale["scheme"] == charts.SCHEME
    bars = ev.bar_rows(evidence_rows(), ev.Bars(("share",), "layer", "y", "b", color="metric", prefix="layer ",
                                                 metric_labels={"share": "the share"}))
    assert bars["category"].tolist() == ["layer 3", "layer 5"] and set(bars["metric_label"]) == {"the share"}
    spec = charts.evidence_bars_chart(ev.with_band(bars), "share", color="metric_label").to_dict()
    assert spec["layer"][0]["encoding"]["xOffset"]["field"] == "metric_label"


@pytest.mark.slow
def test_empty_store_help_commands_work_from_another_folder(tmp_path):
    """Issue #21: the help's commands named .venv/bin/python and data/ relative to the server's folder. They
    now carry the project folder, this Python and the store's absolute path: run from elsewhere, the demo
    command (on 2 pairs instead of 10) fills the store."""
    store = tmp_path / "empty"
    store.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    howto = views.store_help(store, views.store_state(store))
    lines = howto.commands.splitlines()
    assert lines[0].startswith("cd ") and all(sys.executable in line for line in lines[1:])
    demo = next(line for line in lines if "demo_pairs.tsv" in line).replace("--limit 10", "--limit 2")
    done = subprocess.run(["bash", "-c", f"{lines[0]} && {demo}"], cwd=elsewhere, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert views.store_state(store).state == "ok"
    assert not any(elsewhere.iterdir())


def test_pages_open_on_a_run_with_pairs(hand):
    """Issue #21: the POS page opened on a run with 0 pairs while others had data."""
    runs = views.order_runs(hand["store"].runs())
    empty = runs.assign(pairs_written=[0] + [5] * (len(runs) - 1))
    assert views.default_run(empty) == [empty["run_id"].iloc[1]]
    assert views.default_run(runs.assign(pairs_written=0)) == [runs["run_id"].iloc[0]]
    assert views.default_run(runs.head(0)) == []
