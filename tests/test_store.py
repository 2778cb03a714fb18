"""Tests for core/store.py: schema, round trips, queries on hand-made stores, resume after a
killed writer, a reader in another process while a writer writes, merging shards, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import store_writer_proc as proc

from core.metrics import score_metrics
from core.store import (
    SCHEMA,
    ChunkExistsError,
    Store,
    StoreError,
    StoreWriter,
    chunk_pair_range,
    completed_chunks,
    decode_factor,
    encode_factor,
    make_run_id,
    merge_stores,
    parse_shard,
    pos_pair_aggregate,
    schema_markdown,
    shard_chunks,
)
from core.store.schema import CHUNK_TABLES, TABLES, arrow_schema

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

PROC = str(TESTS / "store_writer_proc.py")
APPROX = dict(abs=1e-6)

# --------------------------------------------------------------------------------------------------
# hand-made store
#
# pair 0:  a = [CLS] play ##ing dogs        b = dog runs fast
#          R =        dog   runs   fast
#          [CLS]     0.10  -0.20   0.05
#          play      0.30  -0.10   0.00
#          ##ing    -0.40   0.20   0.10
#          dogs      0.50   0.25  -0.05
# pair 1:  a = [CLS] cats                    b = cats
#          R = [CLS]-cats 0.05, cats-cats 0.80
# run A (model mA): R as above; run B (model mB): 2 * R; run C: other dataset.
# --------------------------------------------------------------------------------------------------

DS = "stsb:test"
R0 = np.array([[0.10, -0.20, 0.05], [0.30, -0.10, 0.00], [-0.40, 0.20, 0.10], [0.50, 0.25, -0.05]])


def hand_tokens() -> pd.DataFrame:
    rows = [
        (0, "a", 0, "[CLS]", None, None, True, None, None, None),
        (0, "a", 1, "play", 0, 4, False, 0, "playing", "VERB"),
        (0, "a", 2, "##ing", 4, 7, False, 0, "playing", "VERB"),
        (0, "a", 3, "dogs", 8, 12, False, 1, "dogs", "NOUN"),
        (0, "b", 0, "dog", 0, 3, False, 0, "dog", "NOUN"),
        (0, "b", 1, "runs", 4, 8, False, 1, "runs", "VERB"),
        (0, "b", 2, "fast", 9, 13, False, 2, "fast", None),
        (1, "a", 0, "[CLS]", None, None, True, None, None, None),
        (1, "a", 1, "cats", 0, 4, False, 0, "cats", "NOUN"),
        (1, "b", 0, "cats", 0, 4, False, 0, "cats", "NOUN"),
    ]
    return pd.DataFrame(rows, columns=["pair_id", "side", "token_index", "token", "start", "end", "is_special",
                                       "word_index", "word", "pos"])


def hand_token_pairs(scale: float = 1.0) -> pd.DataFrame:
    rows = [(0, i, j, scale * R0[i, j]) for i in range(4) for j in range(3)]
    rows += [(1, 0, 0, scale * 0.05), (1, 1, 0, scale * 0.80)]
    return pd.DataFrame(rows, columns=["pair_id", "i", "j", "relevance"])


def put_meta(w: StoreWriter) -> None:
    pairs = pd.DataFrame({"sentence1": ["playing dogs", "cats"], "sentence2": ["dog runs fast", "cats"],
                          "gold": [4.0, 1.0]})
    w.put_dataset({"dataset_key": DS, "name": "stsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "source": "hand", "gold_min": 0.0, "gold_max": 5.0, "skipped": {"empty": 2}}, pairs)
    w.put_dataset({"dataset_key": "sick:test", "name": "sick", "split": "test", "lang_a": "en", "lang_b": "en",
                   "gold_min": 1.0, "gold_max": 5.0}, pairs.assign(gold=[5.0, 3.0]))
    for mid in ("mA", "mB"):
        w.put_model({"model_id": mid, "name": f"model-{mid}", "path": f"/m/{mid}", "revision": "r1",
                     "architecture": "BertModel", "pooling": "mean", "similarity": "cosine", "dim": 4,
                     "num_layers": 6})


def write_run(w: StoreWriter, model_id: str, scores: list[float], scale: float = 1.0, dataset: str = DS,
              metrics: dict | None = None) -> str:
    w.start_run({"model_id": model_id, "dataset_key": dataset, "method": "bilrp", "layer": 0, "chunk_size": 2,
                 "code_version": "v1", "device": "cpu"})
    rid = make_run_id(model_id, dataset, "bilrp", 0)
    tp = hand_token_pairs(scale)
    explained = [float(tp[tp.pair_id == p].relevance.sum()) + 0.01 for p in (0, 1)]
    w.write_chunk(rid, 0, {
        "predictions": pd.DataFrame({"pair_id": [0, 1], "model_score": scores, "explained_score": explained}),
        "tokens": hand_tokens(),
        "token_pairs": tp,
    })
    w.finish_run(rid, metrics or {"spearman": 50.0, "pearson": 40.0, "mse": 0.1})
    return rid


@pytest.fixture()
def hand_store(tmp_path):
    w = StoreWriter(tmp_path / "store")
    put_meta(w)
    ra = write_run(w, "mA", [0.9, 0.7])
    rb = write_run(w, "mB", [0.6, 0.1], scale=2.0, metrics={"spearman": 70.0, "pearson": 65.0, "mse": 0.05})
    rc = write_run(w, "mA", [0.5, 0.5], dataset="sick:test")
    s = Store(tmp_path / "store")
    yield s, ra, rb, rc, w
    s.close()


def cell(df: pd.DataFrame, a, b) -> pd.Series:
    ma = df["pos_a"].isna() if a is None else df["pos_a"] == a
    mb = df["pos_b"].isna() if b is None else df["pos_b"] == b
    sel = df[ma & mb]
    assert len(sel) == 1, (a, b, df)
    return sel.iloc[0]


# --------------------------------------------------------------------------------------------------
# schema / helpers
# --------------------------------------------------------------------------------------------------


def test_schema_is_documented_and_typed():
    md = schema_markdown()
    for table, cols in SCHEMA.items():
        assert f"### `{table}`" in md
        for col, (typ, desc) in cols.items():
            assert f"| `{col}` | {typ} |" in md
            assert desc.strip()
    assert arrow_schema("token_pairs").field("relevance").type == pa.float32()
    assert arrow_schema("token_pairs").field("i").type == pa.int16()
    assert arrow_schema("predictions").names[:2] == ["run_id", "chunk_index"]
    assert arrow_schema("runs").field("started_at").type == pa.timestamp("us")
    for t, info in TABLES.items():
        assert set(info.key) <= set(SCHEMA[t]) and set(info.required) <= set(SCHEMA[t])


def test_ids_shards_ranges_factors():
    rid = make_run_id("m", "stsb:test", "bilrp", 3, 16, "gauss")
    assert rid == make_run_id("m", "stsb:test", "bilrp", 3, 16, "gauss") and len(rid) == 16
    assert rid != make_run_id("m", "stsb:test", "bilrp", 3, 16, None)
    assert rid != make_run_id("m", "stsb:test", "bilrp", 4, 16, "gauss")
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) == (1, 1)
    with pytest.raises(StoreError):
        parse_shard("4/3")
    assert shard_chunks(7, "1/3") == [0, 3, 6] and shard_chunks(7, "3/3") == [2, 5]
    assert sorted(shard_chunks(10, "1/2") + shard_chunks(10, "2/2")) == list(range(10))
    assert list(chunk_pair_range(2, 100, 250)) == list(range(200, 250))
    v = np.array([0.5, -1.25, 3.0, 1e-3], dtype=np.float32)
    blob = encode_factor(v)
    assert len(blob) == 8 and blob == v.astype("<f2").tobytes()
    np.testing.assert_allclose(decode_factor(blob, 4), v, rtol=1e-3)
    m = score_metrics(np.array([0.1, 0.2, 0.3, 0.9]), np.array([1.0, 2, 3, 4]), np.array([0.0, 0.25, 0.5, 1.0]))
    assert m["spearman"] == pytest.approx(100.0)
    assert m["mse"] == pytest.approx(np.mean(np.square([0.1, -0.05, -0.2, -0.1])))


# --------------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------------


def test_roundtrip_meta_tables(hand_store):
    s, *_ = hand_store
    d = s.datasets()
    assert d["dataset_key"].tolist() == ["sick:test", DS]
    row = d[d.dataset_key == DS].iloc[0]
    assert (row["name"], row["split"], row["lang_a"], row["lang_b"], row["source"]) == ("stsb", "test", "en", "en", "hand")
    assert row["n_pairs"] == 2 and row["gold_min"] == 0.0 and row["gold_max"] == 5.0
    assert json.loads(row["skipped"]) == {"empty": 2}
    p = s.table("pairs", dataset_key=DS)
    assert p["pair_id"].tolist() == [0, 1] and p["pair_id"].dtype == np.int32
    assert p["sentence1"].tolist() == ["playing dogs", "cats"]
    assert p["gold"].tolist() == [4.0, 1.0] and p["gold_norm"].tolist() == pytest.approx([0.8, 0.2])
    sick = s.table("pairs", dataset_key="sick:test")
    assert sick["gold_norm"].tolist() == pytest.approx([1.0, 0.5])  # (gold - 1) / 4
    m = s.models()
    assert m["model_id"].tolist() == ["mA", "mB"]
    assert m.iloc[0][["name", "pooling", "similarity", "dim", "num_layers"]].tolist() == ["model-mA", "mean",
                                                                                         "cosine", 4, 6]
    assert m["dim"].dtype == np.int32
    info = s.pair_info(DS, 1)
    assert info.iloc[0][["sentence1", "sentence2", "gold", "name", "lang_b"]].tolist() == ["cats", "cats", 1.0,
                                                                                         "stsb", "en"]
    assert s.pair_info(DS, 99).empty and s.pair_info("nope", 0).empty


def test_roundtrip_chunk_tables_exact(tmp_path):
    w = StoreWriter(tmp_path / "s")
    put_meta(w)
    w.start_run({"model_id": "mA", "dataset_key": DS, "method": "ij", "layer": 2, "steps": 8,
                 "quadrature": "gauss-legendre", "chunk_size": 2})
    rid = make_run_id("mA", DS, "ij", 2, 8, "gauss-legendre")
    toks = hand_tokens()
    tp = hand_token_pairs()
    tp_full = tp.merge(toks[toks.side == "a"].rename(columns={"token_index": "i", "token": "token_a", "pos": "pos_a",
                                                              "word_index": "word_a", "is_special": "special_a"})
                       [["pair_id", "i", "token_a", "pos_a", "word_a", "special_a"]], on=["pair_id", "i"])
    tp_full = tp_full.merge(toks[toks.side == "b"].rename(columns={"token_index": "j", "token": "token_b",
                                                                   "pos": "pos_b", "word_index": "word_b",
                                                                   "is_special": "special_b"})
                            [["pair_id", "j", "token_b", "pos_b", "word_b", "special_b"]], on=["pair_id", "j"])
    preds = pd.DataFrame({"pair_id": [0, 1], "model_score": [0.9, 0.7], "explained_score": [0.7, 0.86],
                          "matrix_sum": [0.75, 0.85], "residual": [-0.05, 0.01], "gold": [4.0, 1.0],
                          "gold_norm": [0.8, 0.2], "error": [0.1, 0.5], "n_tokens_a": [4, 2], "n_tokens_b": [3, 1],
                          "truncated": [False, True]})
    fac = pd.DataFrame({"pair_id": [0, 0], "side": ["b", "b"], "token_index": [1, 0],
                        "factor": [encode_factor([1, 2]), encode_factor([3.5, -4])], "dim": [2, 2],
                        "embedding_norm": [2.5, 2.5]})
    pos = pos_pair_aggregate(tp_full)
    w.write_chunk(rid, 0, {"predictions": preds, "tokens": toks, "token_pairs": tp_full, "factors": fac,
                           "pos_pairs": pos.drop(columns="pair_count")})  # pair_count is derived
    s = Store(tmp_path / "s")
    got = s.table("pos_pairs", run_id=rid).drop(columns=["run_id", "chunk_index"])
    pd.testing.assert_frame_equal(got, pos, check_dtype=False)
    assert got["pair_count"].dtype == np.int8 and got["n_token_pairs"].dtype == np.int32

    got = s.table("predictions", run_id=rid)
    assert list(got.columns) == list(SCHEMA["predictions"])
    assert (got["run_id"] == rid).all() and (got["chunk_index"] == 0).all()
    pd.testing.assert_frame_equal(got[list(preds.columns)], preds, check_dtype=False)
    rest = [c for c in got.columns if c not in {*preds.columns, "run_id", "chunk_index"}]
    assert rest == ["steps_a", "steps_b", "capped"] and got[rest].isna().all().all()  # not given: unknown
    assert got["pair_id"].dtype == np.int32 and got["n_tokens_a"].dtype == np.int16
    assert got["truncated"].dtype == bool and got["model_score"].dtype == np.float64

    got = s.table("tokens", run_id=rid)
    exp = toks.sort_values(["pair_id", "side", "token_index"]).reset_index(drop=True)
    assert got["token"].tolist() == exp["token"].tolist()
    assert got["word_index"].dtype == "Int16" and got["word_index"].isna().sum() == 2
    assert got["start"].tolist()[:3] == [None, 0, 4] or got["start"].isna().tolist()[:3] == [True, False, False]
    assert got["end"].dropna().astype(int).tolist() == exp["end"].dropna().astype(int).tolist()
    assert got["pos"].isna().tolist() == exp["pos"].isna().tolist()
    assert got["is_special"].tolist() == exp["is_special"].tolist()

    got = s.table("token_pairs", run_id=rid)
    exp = tp_full.sort_values(["pair_id", "i", "j"]).reset_index(drop=True)
    assert got["relevance"].dtype == np.float32 and got["i"].dtype == np.int16
    np.testing.assert_array_equal(got["relevance"].to_numpy(), exp["relevance"].astype(np.float32).to_numpy())
    for c in ("pair_id", "i", "j", "token_a", "token_b", "special_a", "special_b"):
        assert got[c].tolist() == exp[c].tolist(), c
    assert got["pos_b"].isna().tolist() == exp["pos_b"].isna().tolist()
    assert got["word_a"].astype("Int64").tolist() == exp["word_a"].astype("Int64").tolist()

    got = s.table("factors", run_id=rid)
    assert got["token_index"].tolist() == [0, 1]  # sorted by key
    f = s.load_factors(rid, 0, "b")
    np.testing.assert_array_equal(f, np.array([[3.5, -4.0], [1.0, 2.0]], dtype=np.float32))
    f2, norm = s.load_factors(rid, 0, "b", return_norm=True)
    assert norm == 2.5 and f2.shape == (2, 2)
    with pytest.raises(StoreError, match="no factors"):
        s.load_factors(rid, 0, "a")

    runs = s.runs()
    r = runs.iloc[0]
    assert (r["run_id"], r["method"], r["layer"], r["steps"], r["quadrature"]) == (rid, "ij", 2, 8, "gauss-legendre")
    assert (r["status"], r["n_chunks"], r["chunks_present"], r["complete"], r["pooling"]) == ("running", 1, 1, True,
                                                                                            "mean")
    s.close()


def test_derived_columns(hand_store):
    s, ra, rb, *_ = hand_store
    p = s.predictions(ra)
    assert p["pair_id"].tolist() == [0, 1]
    assert p["gold"].tolist() == [4.0, 1.0] and p["gold_norm"].tolist() == pytest.approx([0.8, 0.2])
    assert p["error"].tolist() == pytest.approx([0.9 - 0.8, 0.7 - 0.2])
    assert p["matrix_sum"].tolist() == pytest.approx([R0.sum(), 0.85], **APPROX)
    assert p["residual"].tolist() == pytest.approx([0.01, 0.01], **APPROX)
    assert p["n_tokens_a"].tolist() == [4, 2] and p["n_tokens_b"].tolist() == [3, 1]
    assert p["truncated"].tolist() == [False, False]
    assert p["sentence2"].tolist() == ["dog runs fast", "cats"]
    tp = s.table("token_pairs", run_id=ra, pair_id=0)
    r = tp[(tp.i == 2) & (tp.j == 1)].iloc[0]
    assert (r["token_a"], r["token_b"], r["pos_a"], r["pos_b"], r["word_a"], r["word_b"]) == ("##ing", "runs",
                                                                                            "VERB", "VERB", 0, 1)
    assert r["relevance"] == pytest.approx(0.2)
    assert tp[tp.i == 0]["special_a"].all() and not tp[tp.i > 0]["special_a"].any()
    assert tp[tp.j == 2]["pos_b"].isna().all()


# --------------------------------------------------------------------------------------------------
# aggregates and queries on the hand-made store
# --------------------------------------------------------------------------------------------------

# (pos_a, pos_b, special_a, special_b) -> pos_sum, neg_sum, n_token_pairs, word_pos_sum, word_neg_sum, n_word_pairs
PAIR0_CELLS = {
    (None, "NOUN", True, False): (0.10, 0.0, 1, 0.10, 0.0, 1),
    (None, "VERB", True, False): (0.0, -0.20, 1, 0.0, -0.20, 1),
    (None, None, True, False): (0.05, 0.0, 1, 0.05, 0.0, 1),
    ("VERB", "NOUN", False, False): (0.30, -0.40, 2, 0.0, -0.10, 1),
    ("VERB", "VERB", False, False): (0.20, -0.10, 2, 0.10, 0.0, 1),
    ("VERB", None, False, False): (0.10, 0.0, 2, 0.10, 0.0, 1),
    ("NOUN", "NOUN", False, False): (0.50, 0.0, 1, 0.50, 0.0, 1),
    ("NOUN", "VERB", False, False): (0.25, 0.0, 1, 0.25, 0.0, 1),
    ("NOUN", None, False, False): (0.0, -0.05, 1, 0.0, -0.05, 1),
}


def _denorm(tp: pd.DataFrame) -> pd.DataFrame:
    toks = hand_tokens()
    for side, idx in (("a", "i"), ("b", "j")):
        t = toks[toks.side == side][["pair_id", "token_index", "pos", "word_index", "is_special"]]
        t = t.rename(columns={"token_index": idx, "pos": f"pos_{side}", "word_index": f"word_{side}",
                              "is_special": f"special_{side}"})
        tp = tp.merge(t, on=["pair_id", idx])
    return tp


def test_pos_pair_aggregate_hand_example():
    agg = pos_pair_aggregate(_denorm(hand_token_pairs()))
    assert list(agg.columns) == ["pair_id", "pos_a", "pos_b", "special_a", "special_b", "pos_sum", "neg_sum",
                                 "n_token_pairs", "word_pos_sum", "word_neg_sum", "n_word_pairs", "pair_count"]
    assert (agg["pair_count"] == 1).all()  # every (pair, pos_a, pos_b) occurs once here
    p0 = agg[agg.pair_id == 0]
    assert len(p0) == len(PAIR0_CELLS)
    for rec in p0.to_dict("records"):
        key = (None if pd.isna(rec["pos_a"]) else rec["pos_a"], None if pd.isna(rec["pos_b"]) else rec["pos_b"],
               bool(rec["special_a"]), bool(rec["special_b"]))
        exp = PAIR0_CELLS[key]
        got = (rec["pos_sum"], rec["neg_sum"], rec["n_token_pairs"], rec["word_pos_sum"], rec["word_neg_sum"],
               rec["n_word_pairs"])
        assert got == pytest.approx(exp, **APPROX), key
    # NULL POS stays NULL (not the string "None"), and totals are conserved
    assert not (agg["pos_a"].astype(str) == "None").any()
    total = agg["pos_sum"].sum() + agg["neg_sum"].sum()
    assert total == pytest.approx(R0.sum() + 0.85, **APPROX)
    assert agg["word_pos_sum"].sum() + agg["word_neg_sum"].sum() == pytest.approx(total, **APPROX)
    p1 = agg[agg.pair_id == 1]
    assert len(p1) == 2 and p1[p1.pos_a == "NOUN"]["pos_sum"].tolist() == pytest.approx([0.8])
    # minimal input: only pair_id, i, j, relevance (POS NULL, no specials, each token its own word)
    mini = pos_pair_aggregate(pd.DataFrame({"pair_id": [5, 5], "i": [0, 1], "j": [0, 0], "relevance": [0.5, -0.25]}))
    assert len(mini) == 1 and mini.iloc[0][["pos_sum", "neg_sum", "n_token_pairs", "n_word_pairs"]].tolist() == [
        0.5, -0.25, 2, 2]
    # a NULL-POS special token and a NULL-POS (untagged) word share the cell (NULL, NULL): pair_count
    # marks the non-special row, so the pair is counted once with or without special tokens
    both = pos_pair_aggregate(pd.DataFrame({"pair_id": [0, 0], "i": [0, 1], "j": [0, 0], "relevance": [0.5, 0.25],
                                            "special_a": [True, False]}))
    assert both[["special_a", "pair_count"]].values.tolist() == [[False, 1], [True, 0]]
    with pytest.raises(StoreError, match="relevance"):
        pos_pair_aggregate(pd.DataFrame({"pair_id": [0], "i": [0], "j": [0]}))


def test_pos_heatmap_sums_and_normalisation(hand_store):
    s, ra, rb, rc, _ = hand_store
    h = s.pos_heatmap(ra)
    assert len(h) == 9
    nn = cell(h, "NOUN", "NOUN")
    assert (nn["relevance"], nn["pos_sum"], nn["neg_sum"], nn["count"], nn["n_pairs"]) == pytest.approx(
        (1.3, 1.3, 0.0, 2, 2), **APPROX)
    vn = cell(h, "VERB", "NOUN")
    assert (vn["relevance"], vn["pos_sum"], vn["neg_sum"], vn["count"]) == pytest.approx((-0.1, 0.3, -0.4, 2), **APPROX)
    xn = cell(h, None, "NOUN")  # [CLS]-dog (pair 0) + [CLS]-cats (pair 1)
    assert (xn["relevance"], xn["count"], xn["n_pairs"]) == pytest.approx((0.15, 2, 2), **APPROX)
    # normalised by the largest |value| (1.3); pos/neg share one scale
    assert nn["relevance_norm"] == pytest.approx(1.0)
    assert vn["relevance_norm"] == pytest.approx(-0.1 / 1.3, **APPROX)
    assert vn["neg_norm"] == pytest.approx(-0.4 / 1.3, **APPROX) and vn["pos_norm"] == pytest.approx(0.3 / 1.3, **APPROX)
    assert h["relevance_norm"].abs().max() == pytest.approx(1.0)
    assert h["relevance"].sum() == pytest.approx(R0.sum() + 0.85, **APPROX)

    # filters: gold band keeps pair 0 (gold_norm 0.8), error band keeps pair 1 (error 0.5)
    g = s.pos_heatmap(ra, gold_band=(0.5, 1.0))
    assert cell(g, "NOUN", "NOUN")["relevance"] == pytest.approx(0.5) and g["n_pairs"].max() == 1
    e = s.pos_heatmap(ra, error_band=(0.3, 1.0))
    assert len(e) == 2 and cell(e, "NOUN", "NOUN")["relevance"] == pytest.approx(0.8)
    assert s.pos_heatmap(ra, gold_band=(0.5, 1.0), error_band=(0.3, 1.0)).empty
    # no specials: the [CLS] cells go, the untagged-but-not-special 'fast' stays as NULL pos_b
    ns = s.pos_heatmap(ra, include_special=False)
    assert ns["pos_a"].notna().all() and len(ns) == 6
    assert cell(ns, "VERB", None)["relevance"] == pytest.approx(0.1)
    # word level: play+##ing summed before splitting into +/-
    wl = s.pos_heatmap(ra, level="word")
    vn = cell(wl, "VERB", "NOUN")
    assert (vn["relevance"], vn["pos_sum"], vn["neg_sum"], vn["count"]) == pytest.approx((-0.1, 0.0, -0.1, 1), **APPROX)
    # mean per token pair
    mean = s.pos_heatmap(ra, agg="mean")
    vn = cell(mean, "VERB", "NOUN")
    assert (vn["relevance"], vn["pos_sum"], vn["neg_sum"]) == pytest.approx((-0.05, 0.15, -0.2), **APPROX)
    assert cell(mean, "NOUN", "NOUN")["relevance"] == pytest.approx(0.65)
    # several runs add up (B = 2 * A); dataset filter drops run C (sick:test)
    both = s.pos_heatmap([ra, rb])
    assert cell(both, "NOUN", "NOUN")["relevance"] == pytest.approx(3 * 1.3, **APPROX)
    assert cell(both, "NOUN", "NOUN")["n_pairs"] == 4
    allstsb = s.pos_heatmap(dataset_key=DS)
    pd.testing.assert_frame_equal(allstsb, both)
    everything = s.pos_heatmap()
    assert cell(everything, "NOUN", "NOUN")["relevance"] == pytest.approx(4 * 1.3, **APPROX)
    # unknown run -> empty frame with the documented columns
    unk = s.pos_heatmap("nope")
    assert unk.empty and list(unk.columns) == list(h.columns)
    with pytest.raises(StoreError):
        s.pos_heatmap(ra, level="sentence")


def test_pos_cell_examples(hand_store):
    s, ra, *_ = hand_store
    ex = s.pos_cell_examples(ra, "VERB", "NOUN", limit=5)
    assert ex[["token_a", "token_b"]].values.tolist() == [["##ing", "dog"], ["play", "dog"]]
    assert ex["relevance"].tolist() == pytest.approx([-0.4, 0.3], **APPROX)
    assert ex["sentence1"].tolist() == ["playing dogs"] * 2
    pos = s.pos_cell_examples(ra, "VERB", "NOUN", order="pos")
    assert pos["token_a"].tolist() == ["play", "##ing"]
    nul = s.pos_cell_examples(ra, None, "NOUN")
    assert sorted(nul["pair_id"].tolist()) == [0, 1] and set(nul["token_a"]) == {"[CLS]"}
    assert s.pos_cell_examples(ra, None, "NOUN", include_special=False).empty
    assert len(s.pos_cell_examples(ra, "VERB", "NOUN", limit=1)) == 1
    assert s.pos_cell_examples("nope", "VERB", "NOUN").empty


def test_pair_matrix_token_and_word(hand_store):
    s, ra, *_ = hand_store
    tm = s.pair_matrix(ra, 0)
    assert len(tm) == 12 and tm[["i", "j"]].values.tolist() == [[i, j] for i in range(4) for j in range(3)]
    np.testing.assert_allclose(tm["relevance"].to_numpy().reshape(4, 3), R0, atol=1e-6)
    wm = s.pair_matrix(ra, 0, level="word")
    assert len(wm) == 9
    mat = wm.pivot(index="i", columns="j", values="relevance").to_numpy()
    exp = np.vstack([R0[0], R0[1] + R0[2], R0[3]])
    np.testing.assert_allclose(mat, exp, atol=1e-6)
    labels_a = wm.drop_duplicates("i").sort_values("i")["token_a"].tolist()
    assert labels_a == ["[CLS]", "playing", "dogs"]
    assert wm.drop_duplicates("j").sort_values("j")["token_b"].tolist() == ["dog", "runs", "fast"]
    r = wm[(wm.i == 1) & (wm.j == 0)].iloc[0]
    assert (r["n_token_pairs"], r["pos_a"], r["word_a"], r["special_a"]) == (2, "VERB", 0, False)
    assert pd.isna(wm[wm.i == 0]["word_a"]).all() and wm[wm.i == 0]["special_a"].all()
    assert wm["relevance"].sum() == pytest.approx(R0.sum(), **APPROX)
    ns = s.pair_matrix(ra, 0, level="word", include_special=False)
    assert len(ns) == 6 and ns["special_a"].sum() == 0
    assert s.pair_matrix(ra, 1)["relevance"].tolist() == pytest.approx([0.05, 0.8], **APPROX)
    assert s.pair_matrix("nope", 0).empty and s.pair_matrix(ra, 77, level="word").empty
    toks = s.tokens(ra, 0)
    assert toks["token"].tolist() == ["[CLS]", "play", "##ing", "dogs", "dog", "runs", "fast"]
    # several runs at once: each run's own matrix, and an empty frame for a run without the pair
    runs = s.runs()["run_id"].tolist()
    for level in ("token", "word"):
        many = s.pair_matrices([*runs, "nope"], 0, level=level, include_special=False)
        assert list(many) == [*runs, "nope"] and many["nope"].empty
        for rid in runs:
            pd.testing.assert_frame_equal(many[rid], s.pair_matrix(rid, 0, level=level, include_special=False))


def test_failures_and_quartiles(hand_store):
    s, ra, rb, *_ = hand_store
    over = s.failures(ra, "over")
    assert over["pair_id"].tolist() == [1, 0] and over["error"].tolist() == pytest.approx([0.5, 0.1])
    assert over.iloc[0]["top_pairs"] == [{"token_a": "cats", "token_b": "cats", "i": 1, "j": 0,
                                          "relevance": pytest.approx(0.8)}]
    top0 = over.iloc[1]["top_pairs"]
    assert [(d["token_a"], d["token_b"]) for d in top0] == [("dogs", "dog"), ("##ing", "dog"), ("play", "dog")]
    assert over.iloc[1]["top_pairs_text"].startswith("dogs↔dog (+0.500)")
    under = s.failures(ra, "under", limit=1, top_k=1)
    assert under["pair_id"].tolist() == [0] and len(under.iloc[0]["top_pairs"]) == 1
    with_special = s.failures(ra, "over", include_special=True, top_k=5)
    assert ("[CLS]", "runs") in [(d["token_a"], d["token_b"]) for d in with_special.iloc[1]["top_pairs"]]
    assert s.failures("nope").empty
    hi = s.quartile_top_pairs(ra, "high", k=2)  # top quartile = pair 0 (0.9)
    assert hi[["token_a", "token_b"]].values.tolist() == [["dogs", "dog"], ["play", "dog"]]
    assert hi["relevance"].tolist() == pytest.approx([0.5, 0.3], **APPROX) and hi["n_pairs"].tolist() == [1, 1]
    lo = s.quartile_top_pairs(ra, "low", k=5)  # pair 1 only
    assert lo[["token_a", "token_b"]].values.tolist() == [["cats", "cats"]]
    lo_sp = s.quartile_top_pairs(ra, "low", k=5, include_special=True)
    assert lo_sp["token_a"].tolist() == ["cats", "[CLS]"]
    wl = s.quartile_top_pairs(ra, "high", k=1, level="word")
    assert wl[["token_a", "token_b", "count"]].values.tolist() == [["dogs", "dog", 1]]
    wneg = s.quartile_top_pairs(ra, "high", k=10, level="word")
    assert ["playing", "dog"] in wneg[["token_a", "token_b"]].values.tolist()
    assert cell_value(wneg, "playing", "dog") == pytest.approx(-0.1, **APPROX)


def cell_value(df, a, b):
    return float(df[(df.token_a == a) & (df.token_b == b)]["relevance"].iloc[0])


def _assert_quartiles_match_pandas(s, rid, t):
    """Both quartiles of run ``rid`` (its tables ``t``) against pandas."""
    tp = t["token_pairs"].merge(t["tokens"][t["tokens"].side == "a"].rename(
        columns={"token_index": "i", "token": "token_a", "is_special": "sa"})[["pair_id", "i", "token_a", "sa"]])
    tp = tp.merge(t["tokens"][t["tokens"].side == "b"].rename(
        columns={"token_index": "j", "token": "token_b", "is_special": "sb"})[["pair_id", "j", "token_b", "sb"]])
    tp = tp[~tp.sa & ~tp.sb]
    pr = t["predictions"]
    for q, asc in (("high", False), ("low", True)):
        sel = pr.sort_values(["model_score", "pair_id"], ascending=[asc, True]).head(4)["pair_id"]  # ceil(13/4)
        ref = tp[tp.pair_id.isin(sel)].groupby(["token_a", "token_b"])["relevance"].sum().astype(float)
        ref = ref.sort_values(ascending=False).head(5)
        got = s.quartile_top_pairs(rid, q, k=5)
        assert list(zip(got.token_a, got.token_b, strict=True)) == list(ref.index)
        np.testing.assert_allclose(got["relevance"], ref.to_numpy(), atol=1e-5)


def test_quartiles_match_pandas_reference(tmp_path):
    w = StoreWriter(tmp_path / "s")
    rid = proc.write_run(w, 13, 5)
    rid2 = proc.write_run(w, 13, 5, layer=1, scale=-2.0)  # other relevances: queries over both must not mix them
    ids = proc.pair_ids(13)
    assert ids[:4] == [1, 2, 4, 7] and w.chunk_pair_ids(rid, 1) == ids[5:10] and w.chunk_pair_ids(rid, 2) == ids[10:]
    s = Store(tmp_path / "s")
    pairs = s.table("pairs")
    assert pairs["pair_id"].tolist() == ids and pairs["pair_index"].tolist() == list(range(13))
    assert "genre" not in pairs.columns  # source columns outside the schema are not stored
    # per-pair lookups find pairs of later chunks by pair_index, not by pair_id value
    t8 = proc.expected_tables([ids[8]])
    pm = s.pair_matrix(rid, ids[8])
    np.testing.assert_array_equal(pm["relevance"].to_numpy(), t8["token_pairs"]["relevance"].to_numpy())
    assert s.tokens(rid, ids[8])["token"].tolist() == t8["tokens"].sort_values(["side", "token_index"])["token"].tolist()
    assert s.load_factors(rid, ids[8], "b")[:, 0].tolist() == [ids[8]] * int((t8["tokens"].side == "b").sum())
    assert s.pair_matrix(rid, 3).empty  # 3 is not a pair id of this dataset
    for run, scale in ((rid, 1.0), (rid2, -2.0)):
        _assert_quartiles_match_pandas(s, run, proc.expected_tables(ids, scale=scale))
    # pos_heatmap equals aggregating the raw token pairs
    h = s.pos_heatmap(rid)
    tpa = s.table("token_pairs", run_id=rid)
    ref = tpa.groupby(["pos_a", "pos_b"], dropna=False)["relevance"].sum()
    assert len(h) == len(ref)
    for (a, b), v in ref.items():
        assert cell(h, None if pd.isna(a) else a, None if pd.isna(b) else b)["relevance"] == pytest.approx(v, abs=1e-5)
    s.close()


def test_word_matrix_equals_the_sql_word_units(tmp_path):
    """The Example page's word matrices (numpy) and the corpus queries' word units (SQL) are one rule: on every
    pair (split words, special tokens, a word without POS), with and without specials, the same labelled cells
    with the same sums (cells of one label pair, e.g. a repeated word, summed on both sides)."""
    from core.store.queries.corpus import unit_pairs_sql

    w = StoreWriter(tmp_path / "s")
    rid = proc.write_run(w, 13, 5)
    s = Store(tmp_path / "s")
    for include_special in (True, False):
        sql = s._df(f"SELECT pair_id, label_a, label_b, sum(relevance) AS relevance, count(*) AS n "
                    f"FROM ({unit_pairs_sql('word', include_special)}) GROUP BY ALL", {"runs": [rid]})
        for pid in proc.pair_ids(13):
            wm = s.pair_matrix(rid, pid, level="word", include_special=include_special)
            got = wm.groupby(["token_a", "token_b"]).agg(relevance=("relevance", "sum"), n=("relevance", "size"))
            ref = sql[sql.pair_id == pid].set_index(["label_a", "label_b"])[["relevance", "n"]].sort_index()
            assert got.index.tolist() == ref.index.tolist() and len(got) > 0
            np.testing.assert_allclose(got["relevance"], ref["relevance"], rtol=1e-9, atol=1e-12)
            assert got["n"].tolist() == ref["n"].tolist()
            assert wm[["i", "j"]].duplicated().sum() == 0 and wm.equals(wm.sort_values(["i", "j"]))
    s.close()


def test_compare_functions(hand_store):
    s, ra, rb, rc, _ = hand_store
    cp = s.compare_pos(ra, rb)
    assert len(cp) == 9
    nn = cell(cp, "NOUN", "NOUN")
    assert (nn["relevance_a"], nn["relevance_b"], nn["diff"]) == pytest.approx((1.3, 2.6, 1.3), **APPROX)
    assert cp["diff_norm"].abs().max() == pytest.approx(0.0, abs=1e-6)  # B = 2A: same shape
    assert (nn["count_a"], nn["count_b"]) == (2, 2)
    # one-sided cells count as 0
    cp2 = s.compare_pos(ra, rb, error_band=(0.3, 1.0))  # A: pair 1 only (error 0.5); B: errors 0.6-0.8<0, 0.1-0.2<0
    assert cell(cp2, "NOUN", "NOUN")["relevance_b"] == 0.0 and cell(cp2, "NOUN", "NOUN")["diff"] == pytest.approx(-0.8)
    ct = s.compare_token_pairs(ra, rb, limit=3)
    assert ct[["token_a", "token_b"]].values.tolist() == [["cats", "cats"], ["dogs", "dog"], ["##ing", "dog"]]
    assert ct["relevance_a"].tolist() == pytest.approx([0.8, 0.5, -0.4], **APPROX)
    assert ct["diff"].tolist() == pytest.approx([0.8, 0.5, -0.4], **APPROX)
    assert ct["count_a"].tolist() == [1, 1, 1]
    cw = s.compare_token_pairs(ra, rb, limit=20, level="word")
    assert cell_value(cw.rename(columns={"diff": "d"}).assign(relevance=cw["diff"]), "playing", "dog") == \
        pytest.approx(-0.1, **APPROX)
    assert "##ing" not in set(cw["token_a"])
    cm = s.compare_metrics(ra, rb).set_index("metric")
    # metrics recomputed on the shared pairs (not the run records' 50 / 70)
    for rid, col in ((ra, "run_a"), (rb, "run_b")):
        p = s.predictions(rid)
        ref = score_metrics(p["model_score"].to_numpy(float), p["gold"].to_numpy(float), p["gold_norm"].to_numpy(float))
        assert cm.loc["mse", col] == pytest.approx(ref["mse"]) and cm.loc["spearman", col] == pytest.approx(ref["spearman"])
    assert cm.loc["n_shared", "run_a"] == 2
    assert cm.loc["mean_model_score", ["run_a", "run_b"]].tolist() == pytest.approx([0.8, 0.35])
    assert cm.loc["mean_abs_error", "run_a"] == pytest.approx((0.1 + 0.5) / 2)
    assert cm.loc["score_pearson", "run_a"] == pytest.approx(100.0)  # two points -> perfect correlation
    assert cm.loc["n_predictions", "run_b"] == 2
    assert s.compare_metrics(ra, "nope").empty


def test_catalogue_queries(hand_store):
    s, ra, rb, rc, _ = hand_store
    runs = s.runs()
    assert set(runs["run_id"]) == {ra, rb, rc} and (runs["status"] == "done").all()
    assert runs.set_index("run_id").loc[rb, "model_name"] == "model-mB"
    assert runs["complete"].all() and (runs["chunks_present"] == 1).all()
    assert runs["seconds"].notna().all() and (runs["pairs_done"] == 2).all()
    assert s.runs(status="running").empty
    mt = s.metrics_table()
    assert mt[["model_id", "dataset_key"]].values.tolist() == [["mA", "sick:test"], ["mA", DS], ["mB", DS]]
    assert mt.set_index(["model_id", "dataset_key"]).loc[("mB", DS), "spearman"] == 70.0
    pr = s.pair_runs(DS, 1)
    assert pr["run_id"].tolist() == [ra, rb] and pr["model_score"].tolist() == [0.7, 0.1]
    assert pr["model_name"].tolist() == ["model-mA", "model-mB"]
    assert s.pair_runs(DS, 5).empty and s.pair_runs("nope", 0).empty
    summ = s.summary().set_index("table")
    assert summ.loc["predictions", "rows"] == 6 and summ.loc["token_pairs", "rows"] == 3 * 14
    assert summ.loc["runs", "rows"] == 3 and summ.loc["datasets", "rows"] == 2
    assert summ.loc["pos_pairs", "files"] == 3 and summ.loc["token_pairs", "bytes"] > 0
    assert s.run_info(ra)["dataset_key"] == DS and s.run_info("nope") is None


def test_empty_store_has_typed_empty_views(tmp_path):
    StoreWriter(tmp_path / "s")
    s = Store(tmp_path / "s")
    for t, cols in SCHEMA.items():
        df = s.table(t)
        assert df.empty and list(df.columns) == list(cols), t
    assert s.runs().empty and "run_id" in s.runs().columns
    assert s.models().empty and s.datasets().empty and s.metrics_table().empty
    assert s.pos_heatmap().empty and s.predictions("x").empty and s.failures("x").empty
    assert s.quartile_top_pairs("x").empty and s.compare_token_pairs("x", "y").empty
    assert s.summary()["rows"].sum() == 0
    # files appear later -> the same Store sees them (re-glob on every query)
    w = StoreWriter(tmp_path / "s")
    put_meta(w)
    ra = write_run(w, "mA", [0.9, 0.7])
    assert len(s.models()) == 2 and len(s.predictions(ra)) == 2 and len(s.pos_heatmap()) == 9
    s.close()


# --------------------------------------------------------------------------------------------------
# writer semantics
# --------------------------------------------------------------------------------------------------


def test_run_records_are_events_read_latest_wins(tmp_path):
    w = StoreWriter(tmp_path / "s")
    put_meta(w)
    rid = write_run(w, "mA", [0.9, 0.7])
    s = Store(tmp_path / "s")
    events = w._con.execute(f"SELECT status FROM {w._lake}.runs WHERE run_id = ?", [rid]).fetchall()
    assert [e[0] for e in events] == ["running", "running", "done"]  # start, chunk heartbeat, finish
    assert s.runs().iloc[0]["status"] == "done" and len(s.runs()) == 1  # the latest event only
    for k in range(5):
        w.finish_run(rid, {"spearman": float(k)})
    assert s.runs().iloc[0]["spearman"] == 4.0 and len(s.runs()) == 1
    # a replaced model: the latest write wins, the old row stays until compact
    w.put_model({"model_id": "mB", "name": "renamed"}, replace=True)
    assert s.models().set_index("model_id").loc["mB", "name"] == "renamed" and len(s.models()) == 2
    # an older snapshot still reads the old record
    old = s.at(s.snapshot_id() - 1)
    assert old.models().set_index("model_id").loc["mB", "name"] == "model-mB"
    s.close()


def test_start_run_idempotent_resume_force(tmp_path):
    w = StoreWriter(tmp_path / "s")
    put_meta(w)
    spec = {"model_id": "mA", "dataset_key": DS, "method": "bilrp", "layer": 0, "chunk_size": 1}
    rid = make_run_id("mA", DS, "bilrp", 0)
    assert w.start_run(spec) is None
    tables = {"predictions": pd.DataFrame({"pair_id": [0], "model_score": [0.5]})}
    w.write_chunk(rid, 0, tables)
    with pytest.raises(ChunkExistsError):
        w.write_chunk(rid, 0, tables)
    # a new writer (restart) resumes: status running, chunk 0 complete, chunk 1 pending
    w2 = StoreWriter(tmp_path / "s")
    assert w2.start_run(spec) == "running"
    assert w2.completed_chunks(rid) == {0} and w2.pending_chunks(rid) == [1]
    w2.write_chunk(rid, 1, {"predictions": pd.DataFrame({"pair_id": [1], "model_score": [0.25]})})
    w2.finish_run(rid, {"spearman": 1.0})
    assert w2.start_run(spec) == "done"  # caller skips
    s = Store(tmp_path / "s")
    assert s.runs().iloc[0]["status"] == "done" and len(s.predictions(rid)) == 2
    # overwrite replaces a chunk atomically
    w2.start_run(spec, force=True)  # --force: deletes everything of the run and starts afresh
    assert w2.completed_chunks(rid) == set() and s.predictions(rid).empty
    assert s.runs().iloc[0]["status"] == "running"
    w2.write_chunk(rid, 0, tables)
    w2.write_chunk(rid, 0, {"predictions": pd.DataFrame({"pair_id": [0], "model_score": [0.75]})}, overwrite=True)
    assert s.predictions(rid)["model_score"].tolist() == [0.75]
    w2.fail_run(rid, "CUDA out of memory")
    r = s.runs().iloc[0]
    assert r["status"] == "failed" and r["error_message"] == "CUDA out of memory"
    assert w2.start_run(spec) == "failed"
    # identity conflicts (different chunk_size for the same run id) are refused
    with pytest.raises(StoreError, match="chunk_size"):
        StoreWriter(tmp_path / "s").start_run({**spec, "chunk_size": 2})
    w2.delete_run(rid)
    assert s.runs().empty and s.predictions(rid).empty
    s.close()


def test_bad_inputs(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(StoreError, match=str(missing)):
        Store(missing)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hi")
    with pytest.raises(StoreError, match="not a SimLens store"):
        Store(tmp_path / "plain")
    with pytest.raises(StoreError, match="not a SimLens store"):
        StoreWriter(tmp_path / "plain")
    w = StoreWriter(tmp_path / "s")
    put_meta(w)
    with pytest.raises(StoreError, match="not started"):
        w.write_chunk(make_run_id("mA", DS, "bilrp", 0), 0, {})
    with pytest.raises(StoreError, match="model 'zz' is not in the store"):
        w.start_run({"model_id": "zz", "dataset_key": DS, "method": "bilrp", "layer": 0, "chunk_size": 1})
    with pytest.raises(StoreError, match="unknown method"):
        w.start_run({"model_id": "mA", "dataset_key": DS, "method": "magic", "layer": 0, "chunk_size": 1})
    with pytest.raises(StoreError, match="does not match"):
        w.start_run({"model_id": "mA", "dataset_key": DS, "method": "bilrp", "layer": 0, "chunk_size": 1,
                     "run_id": "deadbeef"})
    w.start_run({"model_id": "mA", "dataset_key": DS, "method": "bilrp", "layer": 0, "chunk_size": 1})
    rid = make_run_id("mA", DS, "bilrp", 0)
    with pytest.raises(StoreError, match=r"'token_pairs' is missing required column\(s\) \['j', 'relevance'\]"):
        w.write_chunk(rid, 0, {"token_pairs": pd.DataFrame({"pair_id": [0], "i": [0]})})
    with pytest.raises(StoreError, match=r"'predictions' is missing required column\(s\) \['model_score'\]"):
        w.write_chunk(rid, 0, {"predictions": pd.DataFrame({"pair_id": [0]})})
    with pytest.raises(StoreError, match=r"'predictions' has unknown column\(s\) \['modelscore'\]"):
        w.write_chunk(rid, 0, {"predictions": pd.DataFrame({"pair_id": [0], "modelscore": [1.0]})})
    with pytest.raises(StoreError, match="unknown table"):
        w.write_chunk(rid, 0, {"preds": pd.DataFrame()})
    with pytest.raises(StoreError, match=r"pair_id\(s\) \[1\] that are not in this chunk"):
        w.write_chunk(rid, 0, {"predictions": pd.DataFrame({"pair_id": [1], "model_score": [1.0]})})
    with pytest.raises(StoreError, match="duplicate"):
        w.write_chunk(rid, 0, {"predictions": pd.DataFrame({"pair_id": [0, 0], "model_score": [1.0, 2.0]})})
    with pytest.raises(StoreError, match="chunk index outside"):
        w.write_chunk(rid, 2, {})
    with pytest.raises(StoreError, match="cannot be stored as SMALLINT"):
        w.write_chunk(rid, 0, {"token_pairs": pd.DataFrame({"pair_id": [0], "i": [70000], "j": [0],
                                                            "relevance": [1.0], "token_a": ["x"], "token_b": ["y"]})})
    with pytest.raises(StoreError, match=r"token_a"):
        w.write_chunk(rid, 0, {"token_pairs": pd.DataFrame({"pair_id": [0], "i": [0], "j": [0], "relevance": [1.0]})})
    with pytest.raises(StoreError, match="side-b tokens not in 'tokens'"):
        w.write_chunk(rid, 0, {"tokens": pd.DataFrame({"pair_id": [0], "side": ["a"], "token_index": [0],
                                                       "token": ["x"]}),
                               "token_pairs": pd.DataFrame({"pair_id": [0], "i": [0], "j": [0], "relevance": [1.0]})})
    with pytest.raises(StoreError, match="side must be"):
        w.write_chunk(rid, 0, {"tokens": pd.DataFrame({"pair_id": [0], "side": ["c"], "token_index": [0],
                                                       "token": ["x"]})})
    assert completed_chunks(tmp_path / "s", rid) == set()  # nothing half-written
    with pytest.raises(StoreError, match="different content"):
        w.put_model({"model_id": "mB", "name": "renamed"})
    assert w.put_model({"model_id": "mB", "name": "renamed"}, replace=True) == "written"
    with pytest.raises(StoreError, match="unknown model field"):
        w.put_model({"model_id": "mC", "name": "x", "colour": "red"})
    with pytest.raises(StoreError, match="unique non-negative"):
        w.put_dataset({"dataset_key": "x:y", "name": "x", "split": "y", "lang_a": "en", "lang_b": "en"},
                      pd.DataFrame({"pair_id": [3, 3], "sentence1": ["a", "b"], "sentence2": ["a", "b"],
                                    "gold": [1, 2]}))
    with pytest.raises(StoreError, match=r"'pairs' is missing required column\(s\) \['gold'\]"):
        w.put_dataset({"dataset_key": "x:y", "name": "x", "split": "y"},
                      pd.DataFrame({"sentence1": ["a"], "sentence2": ["b"]}))
    with pytest.raises(StoreError, match="invalid run_id"):
        completed_chunks(tmp_path / "s", "../etc")
    ws = StoreWriter(tmp_path / "s", shard="2/2")
    with pytest.raises(StoreError, match="differs from the writer's shard"):
        ws.start_run({"model_id": "mA", "dataset_key": DS, "method": "bilrp", "layer": 0, "chunk_size": 1,
                      "shard": "1/2"})
    ws.start_run({"model_id": "mA", "dataset_key": DS, "method": "bilrp", "layer": 0, "chunk_size": 1})
    with pytest.raises(StoreError, match="belongs to shard 1/2"):
        ws.write_chunk(rid, 0, {})
    s = Store(tmp_path / "s")
    with pytest.raises(StoreError, match="unknown table"):
        s.table("nope")
    with pytest.raises(StoreError):
        s.failures(rid, kind="sideways")
    # unknown ids: empty frames, never errors
    assert s.predictions("0000").empty and s.compare_pos("a", "b").empty and s.tokens("x", 0).empty
    s.close()


def test_merge_shards(tmp_path):
    n, c = 10, 2  # 5 chunks: shard 1/2 -> 0, 2, 4; shard 2/2 -> 1, 3
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
    for k, shard in ((1, "1/2"), (2, "2/2")):
        w = StoreWriter(tmp_path / f"s{k}", shard=shard)
        meta, pairs = proc.dataset_frames(n)
        w.put_dataset(meta, pairs)
        w.put_model(proc.MODEL)
        w.start_run(proc.run_spec(n, c))
        for ch in w.pending_chunks(rid):
            w.write_chunk(rid, ch, proc.expected_tables(w.chunk_pair_ids(rid, ch)))
        w.finish_run(rid, {"spearman": -1.0 * k, "pearson": 0.0, "mse": 9.0, "seconds": 10.0 * k, "device": f"gpu{k}"})
    assert completed_chunks(tmp_path / "s1", rid) == {0, 2, 4}
    s1 = Store(tmp_path / "s1")
    r1 = s1.runs().iloc[0]
    assert (r1["complete"], r1["chunks_present"], r1["spearman"]) == (False, 3, -1.0)
    dest = tmp_path / "merged"
    counts = merge_stores([tmp_path / "s1", tmp_path / "s2"], dest)
    assert counts["chunks_copied"] == 5 and counts["segments_copied"] == 2
    assert counts["summaries_written"] == 1  # the run is complete only in dest: its summary is computed there
    s = Store(dest)
    r = s.runs()
    assert len(r) == 1
    r = r.iloc[0]
    assert (r["status"], r["complete"], r["chunks_present"], r["n_segments"], r["shards"]) == ("done", True, 5, 2,
                                                                                              "1/2,2/2")
    assert r["seconds"] == pytest.approx(30.0) and r["device"] == "gpu1, gpu2" and r["pairs_done"] == n
    preds = s.predictions(rid)
    assert preds["pair_id"].tolist() == proc.pair_ids(n)
    exp = score_metrics(preds["model_score"].to_numpy(float), preds["gold"].to_numpy(float), preds["gold_norm"].to_numpy(float))
    assert r["spearman"] == pytest.approx(exp["spearman"]) and r["mse"] == pytest.approx(exp["mse"])
    before = s.summary()
    # idempotent: merging again copies nothing and changes nothing
    again = merge_stores([tmp_path / "s1", tmp_path / "s2"], dest)
    assert again["chunks_copied"] == 0 and again["segments_copied"] == 0 and again["meta_copied"] == 0
    assert again["summaries_written"] == 0
    pd.testing.assert_frame_equal(s.summary(), before)
    # the whole content equals a single unsharded writer's output
    single = tmp_path / "single"
    proc.main([str(single), "--n-pairs", str(n), "--chunk-size", str(c), "--sleep", "0"])
    ss = Store(single)
    for t in CHUNK_TABLES:
        a = s.table(t, run_id=rid)
        b = ss.table(t, run_id=rid)
        pd.testing.assert_frame_equal(a, b)
    ss.close()
    # a chunk with different content -> conflict, nothing copied
    w = StoreWriter(tmp_path / "s3")
    meta, pairs = proc.dataset_frames(n)
    w.put_dataset(meta, pairs)
    w.put_model(proc.MODEL)
    w.start_run(proc.run_spec(n, c))
    w.write_chunk(rid, 1, proc.expected_tables(w.chunk_pair_ids(rid, 1), scale=2.0))
    w.write_chunk(rid, 0, proc.expected_tables(w.chunk_pair_ids(rid, 0)))
    with pytest.raises(StoreError, match="conflicting chunk run=.*/chunk=000001"):
        merge_stores([tmp_path / "s3"], dest)
    # conflicting run metadata (same run id, different chunk size) -> error
    w4 = StoreWriter(tmp_path / "s4")
    w4.put_dataset(meta, pairs)
    w4.put_model(proc.MODEL)
    w4.start_run(proc.run_spec(n, 5))
    with pytest.raises(StoreError, match="conflicting metadata for run .*chunk_size"):
        merge_stores([tmp_path / "s4"], dest)
    # conflicting dataset content -> error
    w5 = StoreWriter(tmp_path / "s5")
    w5.put_dataset(meta, pairs.assign(sentence1="changed"))
    with pytest.raises(StoreError, match="conflicting pairs record"):
        merge_stores([tmp_path / "s5"], dest)
    pd.testing.assert_frame_equal(s.summary(), before)
    s.close()
    s1.close()


def test_shard_writers_share_one_store(tmp_path):
    """Several GPUs on one machine: one writer per shard, same store directory."""
    n, c = 10, 2
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
    meta, pairs = proc.dataset_frames(n)
    writers = [StoreWriter(tmp_path / "s", shard=f"{k}/2") for k in (1, 2)]
    writers[0].put_dataset(meta, pairs)
    writers[0].put_model(proc.MODEL)
    for w in writers:
        assert w.start_run(proc.run_spec(n, c)) is None
    assert writers[0].pending_chunks(rid) == [0, 2, 4] and writers[1].pending_chunks(rid) == [1, 3]
    for ch in (0, 1, 2, 3, 4):  # interleaved, as two processes would
        w = writers[ch % 2]
        w.write_chunk(rid, ch, proc.expected_tables(w.chunk_pair_ids(rid, ch)))
    writers[0].finish_run(rid, {"seconds": 4.0})
    s = Store(tmp_path / "s")
    assert s.runs().iloc[0]["status"] == "running"  # shard 2 not finished yet
    writers[1].finish_run(rid, {"seconds": 6.0})
    r = s.runs().iloc[0]
    assert (r["status"], r["complete"], r["n_segments"], r["seconds"], r["pairs_done"]) == ("done", True, 2, 10.0, n)
    # --force on shard 2 deletes only shard 2's chunks and segment
    assert writers[1].start_run(proc.run_spec(n, c), force=True) == "done"
    assert completed_chunks(tmp_path / "s", rid) == {0, 2, 4}
    r = s.runs().iloc[0]
    assert (r["status"], r["chunks_present"], r["n_segments"]) == ("running", 3, 2)
    # an unsharded --force deletes the whole run, all shards' segments included
    single = StoreWriter(tmp_path / "s")
    assert single.start_run(proc.run_spec(n, c), force=True) is None
    assert completed_chunks(tmp_path / "s", rid) == set()
    r = s.runs().iloc[0]
    assert (r["n_segments"], r["shards"], r["chunks_present"]) == (1, "1/1", 0)
    s.close()


# --------------------------------------------------------------------------------------------------
# processes: killed writer + resume, reader in another process
# --------------------------------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, PROC, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(ROOT))


def _read_until(p: subprocess.Popen, pred, timeout: float = 30.0) -> list[str]:
    lines: list[str] = []
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        for line in p.stdout:
            lines.append(line.strip())
            if pred(lines):
                return lines
    finally:
        timer.cancel()
    raise AssertionError(f"process ended before the condition; output {lines}, stderr {p.stderr.read()}")


def _check_full_run(store: Path, n: int, c: int) -> None:
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
    assert completed_chunks(store, rid) == set(range(-(-n // c)))
    s = Store(store)
    exp = proc.expected_tables(proc.pair_ids(n))
    preds = s.table("predictions", run_id=rid)
    assert preds["pair_id"].tolist() == proc.pair_ids(n)  # each pair exactly once, none lost
    np.testing.assert_allclose(preds["model_score"], exp["predictions"]["model_score"])
    tp = s.table("token_pairs", run_id=rid)
    assert len(tp) == len(exp["token_pairs"])
    assert not tp.duplicated(["pair_id", "i", "j"]).any()
    ref = exp["token_pairs"].sort_values(["pair_id", "i", "j"]).reset_index(drop=True)
    np.testing.assert_array_equal(tp["relevance"].to_numpy(), ref["relevance"].to_numpy())
    assert len(s.table("tokens", run_id=rid)) == len(exp["tokens"])
    assert len(s.table("factors", run_id=rid)) == len(exp["factors"])
    assert s.table("pos_pairs", run_id=rid)["n_token_pairs"].sum() == len(exp["token_pairs"])
    r = s.runs().iloc[0]
    assert (r["status"], r["complete"]) == ("done", True)
    s.close()


@pytest.mark.slow
def test_killed_writer_resumes_without_duplicates(tmp_path):
    store, n, c = tmp_path / "s", 20, 2
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
    p = _spawn([str(store), "--n-pairs", str(n), "--chunk-size", str(c), "--sleep", "0.02", "--commit-wait", "0.5"])
    try:
        # kill it inside the transaction of its 3rd chunk (rows inserted, not committed)
        _read_until(p, lambda ls: sum(x.startswith("wrote") for x in ls) >= 2 and ls[-1].startswith("commit-wait"))
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL
    done = completed_chunks(store, rid)
    assert done == {0, 1}  # the chunk killed inside its transaction left nothing a reader sees
    s = Store(store)
    assert len(s.table("predictions", run_id=rid)) == 2 * c and len(s.table("token_pairs", run_id=rid)) > 0
    assert s.runs().iloc[0]["status"] == "interrupted"  # its writer's pid is gone
    s.close()
    # restart: resumes and skips the committed chunks
    p2 = _spawn([str(store), "--n-pairs", str(n), "--chunk-size", str(c), "--sleep", "0"])
    out, err = p2.communicate(timeout=60)
    assert p2.returncode == 0, err
    lines = out.split()
    assert "running" in out.splitlines()[0]  # resumed
    wrote = [int(lines[i + 1]) for i, x in enumerate(lines) if x == "wrote"]
    assert wrote == list(range(2, n // c))
    _check_full_run(store, n, c)
    # a third start is a no-op (done)
    p3 = _spawn([str(store), "--n-pairs", str(n), "--chunk-size", str(c)])
    out3, _ = p3.communicate(timeout=60)
    assert out3.splitlines()[0] == "start done"


READER = r"""
import pathlib, sys, time
sys.path.insert(0, sys.argv[1])
from core.store import Store
s = Store(sys.argv[2])
s.summary()
pathlib.Path(sys.argv[4]).touch()  # tell the writer the reader is up
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline:
    snap = s.at(s.snapshot_id())  # one snapshot per round, as the dashboard reads one per page run
    summ = snap.summary().set_index("table")["rows"]
    h = snap.pos_heatmap()
    runs = snap.runs()
    st = runs["status"].iloc[0] if len(runs) else "-"
    print(int(summ["predictions"]), int(summ["token_pairs"]), int(summ["pos_pairs"]), round(float(h["count"].sum()) if len(h) else 0), st, flush=True)
    if st == "done":
        break
"""


@pytest.mark.slow
def test_reader_in_other_process_while_writer_writes(tmp_path):
    store, n, c = tmp_path / "s", 24, 2
    signal_file = tmp_path / "reader-ready"
    writer = _spawn([str(store), "--n-pairs", str(n), "--chunk-size", str(c), "--sleep", "0.1",
                     "--wait-file", str(signal_file)])
    try:
        _read_until(writer, lambda ls: any(x.startswith("start") for x in ls))
        reader = subprocess.Popen([sys.executable, "-c", READER, str(ROOT), str(store), "40", str(signal_file)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rout, rerr = reader.communicate(timeout=90)
        wout, werr = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert reader.returncode == 0, rerr
    assert writer.returncode == 0, werr
    rows = [line.split() for line in rout.splitlines()]
    assert len(rows) >= 3
    counts = [tuple(int(x) for x in r[:4]) for r in rows]
    for prev, cur in zip(counts, counts[1:], strict=False):
        assert all(b >= a for a, b in zip(prev, cur, strict=True)), (prev, cur)
    # the reader saw the run grow (not only the finished state) and ended with everything
    assert len({cnt[0] for cnt in counts}) >= 3
    exp = proc.expected_tables(proc.pair_ids(n))
    assert counts[-1][0] == n and counts[-1][1] == len(exp["token_pairs"])
    assert counts[-1][3] == len(exp["token_pairs"])  # heat-map counts every token pair once
    for cnt in counts:
        assert cnt[0] % c == 0  # whole chunks only
        assert cnt[3] == cnt[1]  # the heat map counts exactly the token pairs of the same snapshot
    _check_full_run(store, n, c)


CHURN_READER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from core.store import Store
s = Store(sys.argv[2])
s.runs()
open(sys.argv[4], "w").close()  # tell the writer the reader is up
deadline, n, statuses = time.time() + float(sys.argv[3]), 0, set()
while time.time() < deadline:
    runs = s.runs()
    statuses.add(runs["status"].iloc[0] if len(runs) else "-")
    assert len(runs) <= 1 and (len(runs) == 0 or runs["n_segments"].iloc[0] == 1), runs
    s.pos_heatmap()
    n += 1
    if n > 5 and {"done", "running"} <= statuses:
        break
print(n, ",".join(sorted(statuses)))
"""


@pytest.mark.slow
def test_reader_survives_run_record_updates(tmp_path):
    """Run records change (status, metrics) while readers glob them; they must never see a torn or
    duplicated record (regression: replacing a Parquet file in place broke concurrent DuckDB reads)."""
    store, signal_file = tmp_path / "s", tmp_path / "reader-ready"
    writer = _spawn([str(store), "--n-pairs", "4", "--chunk-size", "2", "--sleep", "0", "--churn", "6",
                     "--wait-file", str(signal_file)])
    try:
        _read_until(writer, lambda ls: any(x.startswith("start") for x in ls))
        reader = subprocess.run([sys.executable, "-c", CHURN_READER, str(ROOT), str(store), "30", str(signal_file)],
                                capture_output=True, text=True, timeout=60)
        wout, werr = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert reader.returncode == 0, reader.stderr
    n, statuses = reader.stdout.split()
    assert int(n) > 5 and statuses == "done,running"  # it really read while the record changed
    assert writer.returncode == 0, werr
    churned = int(wout.split("churned")[1].split()[0])
    assert churned > 5
