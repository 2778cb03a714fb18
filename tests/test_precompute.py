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
from core.store.summaries import runs_to_summarize
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


def cli(argv: list[str]) -> int:
    """``main``'s exit code, also when argparse rejects an option (SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


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
    # the finished run's summary is stored and current: the quartiles read it, equal to computing them
    assert runs_to_summarize(reader) == [] and set(reader.table("quartile_pairs")["run_id"]) == {run_id}
    for level in ("token", "word"):
        stored = reader.stored_quartile_top_pairs(run_id, "high", 5, False, level)
        pd.testing.assert_frame_equal(stored, reader.live_quartile_top_pairs(run_id, "high", 5, False, level))
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
    deadline = time.time() + 600
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
    finished = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
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
    (["attribute", "--dataset", "PAIRS", "--method", "ij", "--steps", "0"], "--steps: expected a positive integer"),
    (["attribute", "--dataset", "PAIRS", "--layer", "9"], "layer must be an integer from 0"),
    (["attribute", "--dataset", "PAIRS", "--shard", "3/2"], "--shard: expected K/N with 1 <= K <= N"),
    (["attribute", "--dataset", "PAIRS", "--chunk-size", "0"], "--chunk-size: expected a positive integer"),
    (["attribute", "--dataset", "missing.tsv"], "missing.tsv"),
    (["attribute", "--dataset", "PAIRS", "--model", "/no/such/model"], "unknown model '/no/such/model'"),
])
def test_bad_input_is_a_clear_message_not_a_trace(tmp_path, tiny_folders, pairs_file, capsys, argv, message):
    argv = [str(pairs_file) if a == "PAIRS" else a for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_folders["bert"])]
    assert cli([*argv, "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------------------
# hostile and careless input (issue 14): checked before the model loads, before the store is touched
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if a model is loaded."""
    import core.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(core.loading, "load_model", refuse)  # every path loads models through core.loading


@pytest.mark.parametrize("option,value", [
    ("--batch-size", "0"), ("--batch-size", "١٢"), ("--shard", "3/2"), ("--shard", "١/٢"), ("--chunk-size", "0"),
    ("--limit", "0"), ("--limit", "-3"), ("--steps", "0"), ("--layer", "-1"),
])
@pytest.mark.parametrize("verb", ["attribute", "predict"])
def test_bad_arguments_stop_before_the_model_and_the_store(tmp_path, pairs_file, capsys, no_model_load, verb, option,
                                                           value):
    if verb == "predict" and option in ("--steps", "--layer"):
        pytest.skip("predict has no --steps/--layer")
    store = tmp_path / "s"
    assert cli([verb, "--dataset", str(pairs_file), "--store", str(store), option, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "range()" not in err and "Traceback" not in err, err
    assert not store.exists()


def test_predict_batch_size_zero_from_python_is_a_clear_error(tmp_path, tiny_folders, pairs_file):
    from precompute.runner import run

    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        run(str(tiny_folders["bert"]), str(pairs_file), tmp_path / "s", method="predict", batch_size=0)
    assert not (tmp_path / "s").exists()


def test_header_only_file_is_an_error_not_an_empty_done_run(tmp_path, capsys, no_model_load):
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence1\tsentence2\tscore\n", encoding="utf-8")
    assert main(["predict", "--dataset", str(empty), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(empty) in err and "no data rows" in err, err
    assert not (tmp_path / "s").exists()


def test_invisible_sentence_names_file_and_row(tmp_path, capsys, no_model_load):
    path = tmp_path / "zw.tsv"
    path.write_text("sentence1\tsentence2\tscore\nA man.\tA woman.\t1\n\u200b\u200d\u2060\tA dog.\t2\n",
                    encoding="utf-8")
    assert main(["predict", "--dataset", str(path), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(path) in err and "empty sentence: 1 row(s), e.g. 1" in err and "--on-bad skip" in err, err


def test_directory_as_dataset_says_it_is_a_directory(tmp_path, capsys, no_model_load):
    folder = tmp_path / "pairs.tsv"
    folder.mkdir()
    for spec in (folder, tmp_path):
        assert main(["predict", "--dataset", str(spec), "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err == f"error: {spec} is a directory: pass a .csv/.tsv/.parquet/.jsonl/.json file or a built-in " \
                      "spec such as stsb:test", err


def test_unwritable_store_is_one_line_naming_the_path(tmp_path, pairs_file, capsys, no_model_load):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for store in (blocker, blocker / "store"):
        assert main(["predict", "--dataset", str(pairs_file), "--store", str(store)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"error: {store}: ") and "Traceback" not in "".join(err), err
        assert all(line.startswith(("warning: ", "dataset ", "error: ")) for line in err), err


def test_store_oserror_while_writing_is_one_line(tmp_path, tiny_folders, pairs_file, capsys, monkeypatch):
    import precompute.runner

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "s" / "catalog"))

    monkeypatch.setattr(precompute.runner, "StoreWriter", denied)
    assert main(["predict", "--dataset", str(pairs_file), "--store", str(tmp_path / "s"),
                 "--model", str(tiny_folders["bert"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {tmp_path / 's' / 'catalog'}: Permission denied", err


def test_on_bad_skip_and_duplicates_keep_from_the_cli(tmp_path, tiny_folders, capsys):
    path = tmp_path / "mixed.tsv"
    rows = [["A man plays.", "A woman sings.", "1"], ["A dog runs.", "A cat sleeps.", "0_5"],
            ["A dog runs.", "A cat sleeps.", "٣"], ["A man plays.", "A woman sings.", "1"],
            ["Two kids.", "\u200b", "2"], ["A bird flies.", "A plane lands.", "4"]]
    path.write_text("sentence1\tsentence2\tscore\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    store = tmp_path / "s"
    base = ["predict", "--dataset", str(path), "--store", str(store), "--model", str(tiny_folders["bert"]),
            "--gold-range", "0,5"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "non-numeric gold: 2 row(s), e.g. 1, 2" in err and "empty sentence: 1 row(s), e.g. 4" in err, err
    assert "duplicate pair: 1 row(s), e.g. 3" in err and "--on-bad skip" in err and "--duplicates" in err, err
    assert main([*base, "--on-bad", "skip", "--duplicates", "keep"]) == 0
    err = capsys.readouterr().err
    assert "3 rows skipped (2 non-numeric gold, 1 empty sentence)" in err and "1 duplicate pairs kept" in err, err
    predictions = Store(store).predictions(Store(store).runs().loc[0, "run_id"])
    assert sorted(predictions["pair_id"]) == [0, 3, 5]


def test_limit_is_applied_before_the_store_records_the_pairs(tmp_path, tiny_folders, capsys):
    big = write_pairs(tmp_path / "big.tsv", 300)
    store = tmp_path / "s"
    assert main(["predict", "--dataset", str(big), "--store", str(store), "--model", str(tiny_folders["bert"]),
                 "--limit", "5"]) == 0
    assert "dataset file:big:all:first5: 5 pairs (the first of 300)" in capsys.readouterr().err
    reader = Store(store)
    datasets = reader.datasets()
    assert datasets["dataset_key"].tolist() == ["file:big:all:first5"] and datasets["n_pairs"].tolist() == [5]
    assert len(reader.table("pairs")) == 5
    assert reader.runs().loc[0, "status"] == "done"
