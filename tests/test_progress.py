"""A run's progress and its workers (#12): every process that commits chunks of a run started elsewhere (a Ray
actor) carries the run's seconds forward and keeps the owner's liveness; the store lists the run's workers and
its commit timeline; the Overview shows them."""

from __future__ import annotations

import os
import time

import pytest
import store_writer_proc as proc
from test_app import ok, open_app, texts

from core.store import Store, StoreWriter, make_run_id

N, C = 8, 2
RID = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
FAKE_PID = 4242


def started_store(path) -> StoreWriter:
    driver = StoreWriter(path)
    meta, pairs = proc.dataset_frames(N)
    driver.put_dataset(meta, pairs)
    driver.put_model(proc.MODEL)
    driver.start_run(proc.run_spec(N, C))
    return driver


def commit_as_worker(path, chunks, monkeypatch, compute_seconds: float = 0.5) -> None:
    """Commit ``chunks`` from a writer that did not start the run, as another process (pid FAKE_PID) would."""
    actor = StoreWriter(path)
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: FAKE_PID)
        for k in chunks:
            actor.write_chunk(RID, k, proc.expected_tables(actor.chunk_pair_ids(RID, k)),
                              compute_seconds=compute_seconds)
    actor.close()


@pytest.fixture()
def two_worker_store(tmp_path, monkeypatch):
    path = tmp_path / "s"
    t0 = time.monotonic()
    driver = started_store(path)
    time.sleep(0.3)
    commit_as_worker(path, [0, 1], monkeypatch)
    with Store(path) as s:
        mid = s.run_info(RID)
    for k in (2, 3):
        driver.write_chunk(RID, k, proc.expected_tables(driver.chunk_pair_ids(RID, k)))
    return path, driver, mid, t0


def test_a_worker_carries_the_runs_seconds_forward_and_keeps_the_owners_liveness(two_worker_store):
    path, driver, mid, t0 = two_worker_store
    # the worker's heartbeats: seconds since the run started (not None), the run still the driver's (alive)
    assert mid["seconds"] is not None and mid["seconds"] >= 0.3
    assert mid["status"] == "running"
    with Store(path) as s:
        segment = s.table("runs").sort_values("heartbeat_at").iloc[-1]
    assert int(segment["pid"]) == os.getpid()
    driver.finish_run(RID)
    wall = time.monotonic() - t0
    driver.close()
    with Store(path) as s:
        run = s.run_info(RID)
    assert mid["seconds"] <= run["seconds"] <= wall + 0.5
    assert run["pairs_per_s"] == pytest.approx(N / run["seconds"])


def test_the_store_lists_a_runs_workers_and_its_commit_timeline(two_worker_store):
    path, driver, _, _ = two_worker_store
    driver.close()
    with Store(path) as s:
        workers = s.run_workers(RID)
        timeline = s.chunk_timeline(RID)
    assert workers["pid"].tolist() == [FAKE_PID, os.getpid()]
    assert workers["chunks"].tolist() == [2, 2] and workers["pairs"].tolist() == [4, 4]
    # the worker's seconds include the compute time it reported with each chunk
    assert workers["seconds"].iloc[0] >= 2 * 0.5
    assert workers["pairs_per_s"].iloc[0] == pytest.approx(4 / workers["seconds"].iloc[0])
    assert timeline["pairs_done"].tolist() == [2, 4, 6, 8]
    assert timeline["pid"].tolist() == [FAKE_PID, FAKE_PID, os.getpid(), os.getpid()]
    assert timeline["committed_at"].is_monotonic_increasing


def test_a_run_without_chunks_has_no_workers(tmp_path):
    started_store(tmp_path / "s").close()
    with Store(tmp_path / "s") as s:
        assert s.run_workers(RID).empty and s.chunk_timeline(RID).empty
        assert list(s.run_workers("nope").columns)[:3] == ["host", "pid", "chunks"]


def test_overview_shows_a_running_runs_workers_and_follows_it(monkeypatch, two_worker_store):
    path, driver, _, _ = two_worker_store
    at = open_app(monkeypatch, path)
    shown = texts(at)
    assert "Run progress and workers" in shown
    assert "running: 4 of 4 chunks (8 of 8 pairs) by 2 workers" in shown
    table = next(df.value for df in at.dataframe if "worker" in df.value.columns)
    assert table["worker"].tolist() == [f"{os.uname().nodename} · pid {FAKE_PID}",
                                        f"{os.uname().nodename} · pid {os.getpid()}"]
    assert table["share"].tolist() == [0.5, 0.5]
    follow = at.toggle(key="ov_follow")
    follow.set_value(True)
    ok(at)  # the page runs with its timed fragment, armed to reload the store on its next tick
    assert at.session_state["_ov_follow_armed"] is True
    driver.finish_run(RID)
    driver.close()


def test_overview_says_a_run_has_written_nothing_yet(monkeypatch, tmp_path):
    started_store(tmp_path / "s").close()
    at = open_app(monkeypatch, tmp_path / "s")
    assert "This run has not written any pairs yet (0 of 4 chunks)." in [i.value for i in at.info]
