"""The precompute CLI end to end on a tiny model: store round trip, resume after SIGKILL, sharding and merge,
scores-only runs, and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from core import explain, load_model
from core.store import Store, StoreError, completed_chunks
from precompute.cli import main

SUBJECTS = ["A man", "A woman", "The child", "Two dogs", "An old cat", "The pilot", "A chef", "My neighbour"]
ACTIONS = ["plays the guitar.", "is cooking pasta.", "runs in the park.", "reads a book.", "sleeps on the sofa."]


def write_pairs(path: Path, n: int) -> Path:
    rows = []
    for k in range(n):
        s1 = f"{SUBJECTS[k % len(SUBJECTS)]} {ACTIONS[k % len(ACTIONS)]}"
        s2 = f"{SUBJECTS[(k + 1) % len(SUBJECTS)]} {ACTIONS[(k * 3) % len(ACTIONS)]} Pair {k}."
        rows.append({"sentence1": s1, "sentence2": s2, "score": round(5 * ((k * 7) % 11) / 10, 2)})
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture()
def pairs_file(tmp_path):
    return write_pairs(tmp_path / "pairs.tsv", 12)


def test_attribute_round_trip(tmp_path, tiny_folders, pairs_file, capsys):
    store = tmp_path / "store"
    code = main(["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs_file), "--store", str(store),
                 "--chunk-size", "5", "--method", "bilrp", "--save-factors", "--lang", "en", "--gold-range", "0,5"])
    assert code == 0, capsys.readouterr().err
    reader = Store(store)
    runs = reader.runs()
    assert len(runs) == 1 and runs.loc[0, "status"] == "done" and runs.loc[0, "chunks_present"] == 3
    run_id = runs.loc[0, "run_id"]
    predictions = reader.predictions(run_id).sort_values("pair_id")
    assert predictions["pair_id"].tolist() == list(range(12))
    source = pd.read_csv(pairs_file, sep="\t")
    np.testing.assert_allclose(predictions["gold"], source["score"])
    np.testing.assert_allclose(predictions["gold_norm"], (source["score"] - source["score"].min())
                               / (source["score"].max() - source["score"].min()))
    model = load_model(tiny_folders["bert"], device="cpu")
    for pid in (0, 7):
        exp = explain(model, source.loc[pid, "sentence1"], source.loc[pid, "sentence2"], method="bilrp")
        matrix = reader.pair_matrix(run_id, pid)
        stored = matrix.pivot(index="i", columns="j", values="relevance").to_numpy()
        np.testing.assert_allclose(stored, exp.matrix, rtol=1e-5, atol=1e-7)
        row = predictions.set_index("pair_id").loc[pid]
        assert row["model_score"] == pytest.approx(exp.model_score, rel=1e-6)
        assert row["explained_score"] == pytest.approx(exp.score, rel=1e-6)
        assert row["residual"] == pytest.approx(exp.residual, rel=1e-3, abs=1e-6)
        tokens = reader.tokens(run_id, pid)
        assert tokens[tokens["side"] == "a"].sort_values("token_index")["token"].tolist() == exp.tokens_a
        assert set(tokens["pos"].dropna()) >= {"[CLS]", "[SEP]", "NOUN"}
        fa, fb = reader.load_factors(run_id, pid, "a"), reader.load_factors(run_id, pid, "b")
        norms = reader.table("factors", run_id=run_id, pair_id=pid).groupby("side")["embedding_norm"].first()
        from_factors = fa.astype(np.float64) @ fb.astype(np.float64).T / (norms["a"] * norms["b"])
        np.testing.assert_allclose(from_factors, exp.matrix, rtol=2e-2, atol=2e-3 * np.abs(exp.matrix).max())
    assert reader.runs().loc[0, "spearman"] == pytest.approx(
        100 * pd.Series(predictions["model_score"].to_numpy()).corr(pd.Series(predictions["gold"].to_numpy()), method="spearman"))
    # a finished run is skipped, --force recomputes it
    assert main(["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs_file), "--store", str(store),
                 "--chunk-size", "5", "--lang", "en", "--gold-range", "0,5"]) == 0
    assert "already done" in capsys.readouterr().out


def test_predict_and_list(tmp_path, tiny_folders, pairs_file, capsys):
    store = tmp_path / "store"
    assert main(["predict", "--model", str(tiny_folders["mpnet"]), "--dataset", str(pairs_file), "--store", str(store)]) == 0
    assert main(["list", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "predict" in out and "done" in out
    run_id = Store(store).runs().loc[0, "run_id"]
    preds = Store(store).predictions(run_id)
    model = load_model(tiny_folders["mpnet"], device="cpu")
    source = pd.read_csv(pairs_file, sep="\t")
    emb = model.embed(source["sentence1"].tolist()), model.embed(source["sentence2"].tolist())
    np.testing.assert_allclose(preds.sort_values("pair_id")["model_score"], model.similarity_of(*emb), rtol=1e-5)


def test_shards_merge_into_the_same_result(tmp_path, tiny_folders, pairs_file):
    common = ["--model", str(tiny_folders["roberta"]), "--dataset", str(pairs_file), "--chunk-size", "3",
              "--method", "ij", "--steps", "4"]
    assert main(["attribute", *common, "--store", str(tmp_path / "one")]) == 0
    for k in (1, 2):
        assert main(["attribute", *common, "--store", str(tmp_path / f"s{k}"), "--shard", f"{k}/2"]) == 0
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--store", str(tmp_path / "merged")]) == 0
    one, merged = Store(tmp_path / "one"), Store(tmp_path / "merged")
    run_id = one.runs().loc[0, "run_id"]
    assert merged.runs().loc[0, "run_id"] == run_id and bool(merged.runs().loc[0, "complete"])
    key = ["pair_id", "i", "j"]
    a = one.table("token_pairs", run_id=run_id).sort_values(key).reset_index(drop=True)
    b = merged.table("token_pairs", run_id=run_id).sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a["relevance"], b["relevance"])
    assert merged.runs().loc[0, "spearman"] == pytest.approx(one.runs().loc[0, "spearman"])


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, tiny_folders):
    pairs = write_pairs(tmp_path / "many.tsv", 40)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "precompute", "attribute", "--model", str(tiny_folders["bert"]), "--dataset",
           str(pairs), "--store", str(store), "--chunk-size", "2", "--method", "ij", "--steps", "48"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if len(Store(store).table("chunks")) >= 3:
                break
        except StoreError:  # not created yet
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = Store(store).runs().loc[0, "run_id"]
    before = completed_chunks(store, run_id)
    assert 3 <= len(before) < 20, "the writer should have been killed mid-run"
    assert Store(store).runs().loc[0, "status"] == "interrupted"  # its writer is gone
    finished = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    reader = Store(store)
    assert completed_chunks(store, run_id) == set(range(20))
    preds = reader.predictions(run_id)
    assert sorted(preds["pair_id"]) == list(range(40))
    tp = reader.table("token_pairs", run_id=run_id)
    assert not tp.duplicated(["pair_id", "i", "j"]).any()
    assert len(tp) == int((preds["n_tokens_a"] * preds["n_tokens_b"]).sum())
    assert reader.runs().loc[0, "status"] == "done"


@pytest.mark.parametrize("argv,message", [
    (["attribute", "--dataset", "nope:test"], "unknown dataset"),
    (["attribute", "--dataset", "PAIRS", "--method", "ij", "--steps", "0"], "steps must be a positive integer"),
    (["attribute", "--dataset", "PAIRS", "--layer", "9"], "layer must be an integer from 0"),
    (["attribute", "--dataset", "PAIRS", "--shard", "3/2"], "shard"),
    (["attribute", "--dataset", "PAIRS", "--chunk-size", "0"], "chunk_size must be a positive integer"),
    (["attribute", "--dataset", "missing.tsv"], "missing.tsv"),
    (["attribute", "--dataset", "PAIRS", "--model", "/no/such/model"], "unknown model '/no/such/model'"),
])
def test_bad_input_is_a_clear_message_not_a_trace(tmp_path, tiny_folders, pairs_file, capsys, argv, message):
    argv = [str(pairs_file) if a == "PAIRS" else a for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_folders["bert"])]
    assert main([*argv, "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err, err
