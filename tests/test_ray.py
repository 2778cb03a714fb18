"""Precompute on Ray: a local two-worker cluster (CPU) writes the same store a single process writes, a worker
SIGKILLed mid-run has its chunks retried (nothing lost, nothing twice), a SIGKILLed driver (the real CLI) resumes
with only the missing chunks, and an actor out of GPU memory halves its batch. Marked ``ray``: a quick local loop
skips them with ``-m "not ray"``; the README's test command and CI run them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from test_precompute import write_pairs

from core import load_model
from core.store import Store, StoreError, completed_chunks
from precompute import distributed
from precompute.cli import main
from precompute.distributed import ChunkWorker, RayOptions, run_on_ray
from precompute.runner import RunSettings, run, start_run

KEY = ["pair_id", "i", "j"]
METHOD = dict(method="ij", steps=24, chunk_size=2)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module, shut down at its end (also after a failure)."""
    import ray  # a requirement: a missing install must fail here, not skip the module quietly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning",
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture()
def pairs_file(tmp_path):
    return write_pairs(tmp_path / "pairs.tsv", 6)


def chunk_batch(started, chunks) -> pd.DataFrame:
    """The Ray dataset batch of these chunks, as the driver builds it."""
    return pd.DataFrame([{"chunk_index": k, **{c: started.rows(k)[c].tolist() for c in
                                               ("pair_id", "sentence1", "sentence2")}} for k in chunks])


def settled_chunks(store, run_id: str) -> set[int]:
    """The run's chunks once no orphaned worker of a killed driver commits any more."""
    seen, stable_since = completed_chunks(store, run_id), time.time()
    while time.time() - stable_since < 3:
        time.sleep(0.2)
        now = completed_chunks(store, run_id)
        if now != seen:
            seen, stable_since = now, time.time()
    return seen


def committed(store) -> int:
    """Chunks committed so far in a store that a running process writes (0 before it exists)."""
    if not (store / "catalog.sqlite").exists():
        return 0
    with contextlib.suppress(StoreError), Store(store) as reader:
        return int(reader.runs()["chunks_present"].sum())
    return 0


def assert_exactly_once(store, run_id: str, n_pairs: int, n_chunks: int) -> pd.DataFrame:
    """Every chunk and pair present once, token pairs without duplicates and complete; the run is done."""
    assert completed_chunks(store, run_id) == set(range(n_chunks))
    with Store(store) as reader:
        preds = reader.predictions(run_id)
        tp = reader.table("token_pairs", run_id=run_id)
        assert reader.run_info(run_id)["status"] == "done"
    assert sorted(preds["pair_id"]) == list(range(n_pairs))
    assert not tp.duplicated(KEY).any()
    assert len(tp) == int((preds["n_tokens_a"] * preds["n_tokens_b"]).sum())
    return tp


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_and_rerun_resumes_with_missing_chunks_only(tmp_path, tiny_folders):
    pairs = write_pairs(tmp_path / "pairs.tsv", 24)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "precompute", "attribute", "--model", str(tiny_folders["bert"]), "--dataset",
           str(pairs), "--store", str(store), "--chunk-size", "2", "--method", "ij", "--steps", "96",
           "--ray", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and committed(store) < 2:
            assert driver.poll() is None, "the driver ended before it was killed"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    with Store(store) as reader:
        run_id = reader.runs().loc[0, "run_id"]
    before = settled_chunks(store, run_id)
    assert 2 <= len(before) < 12, "the driver should have been killed mid-run"
    with Store(store) as reader:
        assert reader.runs().loc[0, "status"] == "interrupted", "its writers are gone: shown as interrupted"
        seconds_before = reader.runs().loc[0, "seconds"]
    assert seconds_before > 0, "the actors' commits carry the run's seconds forward"
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    missing = 2 * (12 - len(before))
    assert re.search(rf"run {run_id}: done, {missing} pairs", rerun.stdout), rerun.stdout
    assert_exactly_once(store, run_id, 24, 12)
    with Store(store) as reader:
        assert reader.runs().loc[0, "seconds"] > seconds_before, "the resumed run's seconds add to the first's"


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_write_the_store_one_process_writes(tmp_path, tiny_folders, ray_cluster):
    pairs = write_pairs(tmp_path / "pairs.tsv", 14)
    model = str(tiny_folders["roberta"])
    single = run(model, str(pairs), tmp_path / "single", progress=False, device="cpu", **METHOD)
    reports = []
    ray_run = run_on_ray(model, str(pairs), tmp_path / "ray", RayOptions(workers=2), progress=False,
                         on_chunk=reports.append, **METHOD)
    assert ray_run.run_id == single.run_id and ray_run.status == "done" and ray_run.pairs_written == 14
    assert sorted(r.chunk_index for r in reports) == list(range(7)) and all(r.written for r in reports)
    two = assert_exactly_once(tmp_path / "ray", ray_run.run_id, 14, 7).sort_values(KEY)
    with Store(tmp_path / "single") as one_store, Store(tmp_path / "ray") as ray_store:
        one = one_store.table("token_pairs", run_id=single.run_id).sort_values(KEY)
        p1 = one_store.predictions(single.run_id).sort_values("pair_id")
        p2 = ray_store.predictions(ray_run.run_id).sort_values("pair_id")
        info = ray_store.run_info(ray_run.run_id)
    np.testing.assert_array_equal(one[KEY].to_numpy(), two[KEY].to_numpy())
    np.testing.assert_allclose(two["relevance"], one["relevance"], rtol=1e-5, atol=1e-6)
    for col in ("model_score", "explained_score", "residual", "gold"):
        np.testing.assert_allclose(p2[col], p1[col], rtol=1e-5, atol=1e-6)
    assert info["spearman"] == pytest.approx(single.metrics["spearman"])
    assert info["pairs_per_s"] > 0 and info["device"] == "ray: 2 workers (cpu)"
    with Store(tmp_path / "ray") as ray_store:
        workers = ray_store.run_workers(ray_run.run_id)
    assert set(workers["pid"]) == {r.pid for r in reports} and workers["pairs"].sum() == 14
    assert set(workers["pid"]).isdisjoint({os.getpid()}), "the actors, not the driver, committed the chunks"


@pytest.mark.ray
@pytest.mark.slow
def test_worker_sigkilled_mid_run_is_retried_exactly_once(tmp_path, tiny_folders, ray_cluster):
    pairs = write_pairs(tmp_path / "pairs.tsv", 20)
    killed: list[int] = []
    after: list[int] = []

    def kill_first_worker(report) -> None:
        if not killed:
            os.kill(report.pid, signal.SIGKILL)  # it is busy with its next chunk: that one is lost mid-compute
            killed.append(report.pid)
        else:
            after.append(report.chunk_index)

    result = run_on_ray(str(tiny_folders["bert"]), str(pairs), tmp_path / "store", RayOptions(workers=2),
                        progress=False, on_chunk=kill_first_worker, method="ij", steps=64, chunk_size=2)
    assert killed and len(after) == 9, "every other chunk is reported once, the killed worker's retried ones too"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    assert result.status == "done" and result.pairs_written == 20
    assert_exactly_once(tmp_path / "store", result.run_id, 20, 10)


@pytest.mark.ray
@pytest.mark.slow
def test_worker_with_other_weights_fails_the_run_with_its_error(tmp_path, tiny_folders, pairs_file, ray_cluster):
    """A node whose copy of the model differs: every actor refuses to start, the run fails loudly and is marked so."""
    driver_model = load_model(tiny_folders["bert"], device="cpu")
    driver_model.path = tiny_folders["roberta"]  # what the actors find at the model's path: other weights
    with pytest.raises(distributed.RayRunError, match="with other weights .* install the same model on every node"):
        run_on_ray(driver_model, str(pairs_file), tmp_path / "store", RayOptions(workers=2), progress=False,
                   method="bilrp", chunk_size=2)
    with Store(tmp_path / "store") as reader:
        info = reader.runs().iloc[0]
    assert info["status"] == "failed" and "install the same model" in info["error_message"]
    assert info["chunks_present"] == 0


@pytest.mark.ray
def test_pool_that_does_not_fit_the_local_cluster_is_a_clear_error(tmp_path, tiny_folders, pairs_file, capsys,
                                                                   ray_cluster):
    argv = ["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs_file), "--store",
            str(tmp_path / "s"), "--ray", "--workers", "3", "--cpus-per-worker", "1"]
    assert main(argv) == 2
    assert "3 workers x (1 CPU, 0 GPU) need 3 CPUs" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--workers", "2"], "--workers only apply with --ray"),
    (["--ray", "--shard", "1/2"], "--shard and --ray are alternatives"),
    (["--ray", "--workers", "0"], "expected a positive integer"),
    (["--ray", "--cpus-per-worker", "0"], "expected a number > 0"),
    (["--ray", "--gpus-per-worker", "1.5"], "gpus_per_worker must be 0, a fraction"),
])
def test_bad_ray_options_are_clear_messages(tmp_path, tiny_folders, pairs_file, capsys, argv, message):
    base = ["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs_file), "--store",
            str(tmp_path / "s")]
    with pytest.raises(SystemExit) if "expected" in message else contextlib.nullcontext():
        assert main([*base, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists(), "nothing is written before the options are checked"


def test_worker_out_of_gpu_memory_halves_its_batch_and_commits(tmp_path, tiny_folders, monkeypatch):
    """The actor class outside Ray: CUDA OOM is injected for batches above 2 sentences."""
    pairs = write_pairs(tmp_path / "pairs.tsv", 6)
    model = load_model(tiny_folders["bert"], device="cpu")
    from core.datasets import load_dataset

    started = start_run(model, load_dataset(str(pairs)), tmp_path / "store", RunSettings(method="bilrp", chunk_size=3))
    calls = []
    real = distributed.process_chunk

    def oom_above_two(writer, model, job, k, rows, batch_size, max_rows):
        calls.append((batch_size, max_rows))
        if batch_size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(writer, model, job, k, rows, batch_size, max_rows)

    monkeypatch.setattr(distributed, "process_chunk", oom_above_two)
    worker = ChunkWorker(model.name, str(model.path), model.model_id, str(tmp_path / "store"), started.job, "cpu")
    out = worker(chunk_batch(started, [0, 1]))
    assert out["written"].tolist() == [True, True] and out["batch_size"].tolist() == [2, 2]
    assert calls == [(16, 2048), (8, 1024), (4, 512), (2, 256), (2, 256)]
    assert completed_chunks(tmp_path / "store", started.job.run_id) == {0, 1}
    again = worker(chunk_batch(started, [0]))
    assert again["written"].tolist() == [False] and len(calls) == 5, "a committed chunk is not computed again"

    def always_oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(distributed, "process_chunk", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        worker(chunk_batch(started, [2]))
    assert worker.batch_size == 1 and worker.max_rows == 1
