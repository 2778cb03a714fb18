"""The DuckLake store under concurrency and failure: writer processes of different runs and of the same run at
once, racing writes of one chunk, SIGKILLs during merge, compact and migrate, damaged data files, the old
layout's migration, and #14's dataset identity by content and run liveness/timings across resumes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import store_writer_proc as proc

from core.store import (
    Store,
    StoreError,
    StoreWriter,
    compact,
    make_run_id,
    merge_stores,
    migrate_store,
)
from core.store.schema import CHUNK_TABLES

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

PROC = str(TESTS / "store_writer_proc.py")
LEGACY = TESTS / "data" / "legacy_store"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, PROC, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(ROOT))


def check_run(store: Path | str, n: int, c: int, layer: int = 0) -> None:
    """Every pair of the synthetic run exactly once, with exactly the content the writer computes."""
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", layer)
    exp = proc.expected_tables(proc.pair_ids(n))
    with Store(store) as s:
        assert set(s.table("chunks", run_id=rid)["chunk_index"]) == set(range(-(-n // c)))
        preds = s.table("predictions", run_id=rid)
        assert preds["pair_id"].tolist() == proc.pair_ids(n)
        np.testing.assert_allclose(preds["model_score"], exp["predictions"]["model_score"])
        tp = s.table("token_pairs", run_id=rid)
        assert len(tp) == len(exp["token_pairs"]) and not tp.duplicated(["pair_id", "i", "j"]).any()
        ref = exp["token_pairs"].sort_values(["pair_id", "i", "j"]).reset_index(drop=True)
        np.testing.assert_array_equal(tp["relevance"].to_numpy(), ref["relevance"].to_numpy())
        assert len(s.table("tokens", run_id=rid)) == len(exp["tokens"])
        assert len(s.table("factors", run_id=rid)) == len(exp["factors"])
        assert s.table("pos_pairs", run_id=rid)["n_token_pairs"].sum() == len(exp["token_pairs"])
        run = s.run_info(rid)
        assert (run["status"], run["complete"], run["pairs_done"]) == ("done", True, n)


def contents(store: Path | str) -> dict[str, pd.DataFrame]:
    with Store(store) as s:
        return {t: s.table(t) for t in ("datasets", "pairs", "models", "evaluations", *CHUNK_TABLES)}


def assert_same_contents(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for t in a:
        pd.testing.assert_frame_equal(a[t].reset_index(drop=True), b[t].reset_index(drop=True), check_dtype=False,
                                      obj=t)


def synth_store(path: Path, n: int = 8, c: int = 2, shard: str | None = None, layer: int = 0) -> str:
    w = StoreWriter(path, shard=shard)
    rid = proc.write_run(w, n, c, layer)
    w.finish_run(rid, {"spearman": 1.0})
    w.close()
    return rid


# --------------------------------------------------------------------------------------------------
# concurrent writers
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_writer_processes_of_different_runs_at_once(tmp_path):
    store, n, c = tmp_path / "s", 12, 2
    procs = [_spawn(str(store), "--n-pairs", str(n), "--chunk-size", str(c), "--sleep", "0", "--layer", str(layer))
             for layer in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    for layer in (0, 1):
        check_run(store, n, c, layer)


@pytest.mark.slow
def test_writer_processes_of_the_same_run_at_once(tmp_path):
    """Two processes race through the same run's chunks: each chunk is read exactly once, none is lost."""
    store, n, c = tmp_path / "s", 16, 2
    procs = [_spawn(str(store), "--n-pairs", str(n), "--chunk-size", str(c), "--sleep", "0") for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        outs.append(out)
    check_run(store, n, c)
    wrote = sum(line.startswith("wrote") for out in outs for line in out.splitlines())
    assert wrote >= n // c  # every chunk committed at least once (races may commit one twice)


def test_a_chunk_committed_by_two_racing_writers_is_read_once(tmp_path):
    """Writer A checks that chunk 0 is free and, inside A's transaction, writer B commits chunk 0: A's commit is
    refused or retried into ChunkExistsError (nothing doubled). When two commits of one chunk do land (a check
    that raced on another catalog), readers see the first one's rows only, and compact drops the other's."""
    from core.store import ChunkExistsError
    from core.store.catalog import transaction

    n, c = 4, 2
    store = tmp_path / "s"
    rid = synth_store(store, n, c)
    a, b = StoreWriter(store), StoreWriter(store)
    a.start_run(proc.run_spec(n, c), force=True)  # the run afresh: chunk 0 is free again
    b.start_run(proc.run_spec(n, c))
    ids = a.chunk_pair_ids(rid, 0)
    a._before_commit = lambda k: (setattr(a, "_before_commit", None), b.write_chunk(rid, 0, proc.expected_tables(
        ids, scale=2.0)))
    with contextlib.suppress(ChunkExistsError):  # A's retry finds B's commit
        a.write_chunk(rid, 0, proc.expected_tables(ids))
    first = proc.expected_tables(ids, scale=2.0)["token_pairs"]  # B committed first
    # a second commit of the same chunk (what two writers whose checks raced would leave)
    def again(con):
        for t in (*CHUNK_TABLES, "chunks"):
            con.execute(f"INSERT INTO {a._lake}.{t} SELECT * REPLACE (write_id + 1 AS write_id) FROM {a._lake}.{t} "
                        f"WHERE run_id = ? AND chunk_index = 0", [rid])
    transaction(a._con, again, "duplicate")
    raw = a._con.execute(f"SELECT count(*) FROM {a._lake}.chunks WHERE run_id = ? AND chunk_index = 0",
                         [rid]).fetchone()[0]
    assert raw == 2
    with Store(store) as s:
        tp = s.table("token_pairs", run_id=rid)
        assert not tp.duplicated(["pair_id", "i", "j"]).any() and len(s.table("chunks", run_id=rid)) == 1
        np.testing.assert_allclose(np.sort(tp["relevance"]), np.sort(first["relevance"]), rtol=1e-6)
        assert len(s.predictions(rid)) == len(ids) and s.pos_heatmap(rid)["count"].sum() == len(first)
    before = contents(store)
    report = compact(store, dry_run=True)
    assert report.hidden_rows["token_pairs"] == len(first) and report.hidden_rows["chunks"] == 1
    compact(store, keep=timedelta(0))
    assert_same_contents(before, contents(store))
    assert a._con.execute(f"SELECT count(*) FROM {a._lake}.chunks").fetchone()[0] == 1
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------------
# SIGKILL during merge, compact and migrate
# --------------------------------------------------------------------------------------------------


def _kill_midway(cmd: list[str], started: callable, timeout: float = 120.0) -> bool:
    """Start ``cmd``, SIGKILL it once ``started()`` holds (True), or let it finish (False)."""
    p = subprocess.Popen(cmd, cwd=str(ROOT), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    killed = False
    while p.poll() is None and time.time() < deadline:
        try:
            if started():
                p.send_signal(signal.SIGKILL)
                killed = True
                break
        except StoreError:
            pass
        time.sleep(0.05)
    p.wait(timeout=60)
    assert killed or p.returncode == 0, p.stderr.read()
    return killed


@pytest.mark.slow
def test_sigkill_during_merge_migrate_and_compact(tmp_path):
    n, c = 12, 2
    for k in (1, 2):
        synth_store(tmp_path / f"s{k}", n, c, shard=f"{k}/2")
    dest = tmp_path / "merged"
    cli = [sys.executable, "-m", "precompute"]

    def chunks_in(store: Path) -> int:
        with Store(store) as s:
            return len(s.table("chunks"))

    _kill_midway([*cli, "merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--store", str(dest)],
                 lambda: (dest / "catalog.sqlite").exists() and chunks_in(dest) >= 1)
    merge_stores([tmp_path / "s1", tmp_path / "s2"], dest)  # completes what the killed merge left
    check_run(dest, n, c)
    # migrate: killed midway, then again to the end: the same as one uninterrupted migration
    new, ref = tmp_path / "migrated", tmp_path / "reference"
    _kill_midway([*cli, "migrate", str(LEGACY), str(new)],
                 lambda: (new / "catalog.sqlite").exists() and chunks_in(new) >= 1)
    migrate_store(LEGACY, new)
    migrate_store(LEGACY, ref)
    assert_same_contents(contents(ref), contents(new))
    with Store(new) as s, Store(ref) as r:
        pd.testing.assert_frame_equal(s.runs().drop(columns="heartbeat_at"), r.runs().drop(columns="heartbeat_at"))
    # compact: killed midway; the store reads the same, and compact runs to the end afterwards
    before = contents(dest)
    _kill_midway([*cli, "compact", "--store", str(dest), "--keep-hours", "0"], lambda: True)
    assert_same_contents(before, contents(dest))
    compact(dest, keep=timedelta(0))
    assert_same_contents(before, contents(dest))
    check_run(dest, n, c)


# --------------------------------------------------------------------------------------------------
# migrate, compact, damaged files
# --------------------------------------------------------------------------------------------------


def test_migrate_an_old_layout_store(tmp_path):
    with pytest.raises(StoreError, match="old Parquet-directory layout.*migrate"):
        Store(LEGACY)
    counts = migrate_store(LEGACY, tmp_path / "new")
    assert (counts["datasets"], counts["models"], counts["evaluations"], counts["chunks"], counts["segments"]) == \
        (1, 1, 1, 5, 2)
    assert counts["summaries"] == 1  # the complete attribution run (the predict run has no relevances)
    check_run(tmp_path / "new", 6, 2)  # the old writer's content, exactly
    with Store(tmp_path / "new") as s:
        runs = s.runs().set_index("kind")
        assert runs.loc["predict", "method"] == "predict" and runs.loc["predict", "spearman"] == 11.0
        assert runs.loc["attribute", "seconds"] == 3.0
        ev = s.evaluations()
        assert ev["kind"].tolist() == ["conservation"] * 2 and ev["y"].tolist() == [0.01, 0.2]
        before = s.summary()
    again = migrate_store(LEGACY, tmp_path / "new")
    assert again["chunks"] == again["segments"] == again["datasets"] == again["summaries"] == 0
    assert again["chunks_skipped"] == 5
    with Store(tmp_path / "new") as s:
        pd.testing.assert_frame_equal(s.summary()[["table", "rows"]], before[["table", "rows"]])
    with pytest.raises(StoreError, match="not a store of the old"):
        migrate_store(tmp_path / "new", tmp_path / "other")


def test_compact_dry_run_changes_nothing_and_compact_keeps_what_readers_see(tmp_path):
    store = tmp_path / "s"
    rid = synth_store(store, 8, 2)  # written without precompute's run end: no summary yet
    w = StoreWriter(store)
    w.put_model({**proc.MODEL, "name": "renamed"}, replace=True)
    w.close()
    before = contents(store)
    with Store(store) as s:
        files, snap = s.summary()["files"].sum(), s.snapshot_id()
    report = compact(store, dry_run=True)
    assert report.hidden_rows["models"] == 1 and any("would" in line for line in report.lines())
    assert report.summarized == [rid] and "would summarize 1 complete runs without a current summary" in report.lines()
    with Store(store) as s:
        assert s.snapshot_id() == snap and s.summary()["files"].sum() == files  # a dry run changes nothing
    report = compact(store, keep=timedelta(0))
    assert report.hidden_rows["models"] == 1 and sum(report.files_after.values()) < files and report.expired
    assert_same_contents(before, contents(store))
    assert report.summarized == [rid] and compact(store).summarized == []  # summarized once, then current
    with Store(store) as s:
        assert s.stored_quartile_top_pairs(rid, "high", 5, False, "token") is not None


def test_compact_keeps_the_snapshots_younger_than_keep_and_merging_changes_nothing_read(tmp_path):
    # DuckLake's own older_than expires every snapshot of the cutoff's day on a SQLite catalog: compact
    # picks the snapshots itself, so a reader pinned one second ago keeps reading after a compact
    store = tmp_path / "s"
    rid = synth_store(store, 8, 2)
    before = contents(store)
    with Store(store) as s:
        snap, runs = s.snapshot_id(), s.runs()[["run_id", "status", "pairs_written"]]
        files = s.summary().set_index("table")["files"]
    assert files["token_pairs"] == 4  # one file per committed chunk
    with StoreWriter(store) as w:
        w.merge_small_files()
    with Store(store) as s:
        assert s.summary().set_index("table").at["token_pairs", "files"] == 1
    assert_same_contents(before, contents(store))
    report = compact(store)  # keep: one hour
    assert report.expired == []
    with Store(store) as s:
        pd.testing.assert_frame_equal(s.at(snap).runs()[["run_id", "status", "pairs_written"]], runs)
        pid = int(s.at(snap).predictions(rid)["pair_id"].iloc[0])
        assert len(s.at(snap).pair_matrix(rid, pid)) > 0
    assert compact(store, keep=timedelta(0)).expired  # older than no time at all: all but the newest


def test_a_reader_following_the_newest_snapshot_sees_new_runs_and_chunks(tmp_path):
    # the catalogue views are copied into memory per snapshot: a reader that moves on must copy them again
    store = tmp_path / "s"
    synth_store(store, 8, 2)
    with Store(store) as s:
        pinned = s.at(s.snapshot_id())
        assert len(s.runs()) == 1
        rid = synth_store(store, 8, 4, layer=1)
        assert len(s.runs()) == 2 and s.run_info(rid)["chunks_present"] == 2
        assert len(pinned.runs()) == 1 and pinned.run_info(rid) is None  # the pinned one still reads its own
        assert len(s.runs()) == 2


def test_a_moved_store_folder_reads_and_writes_its_own_files(tmp_path):
    """The catalog records the folder a store was created in; a moved or copied store must use its own data/."""
    original = tmp_path / "original"
    rid = synth_store(original, n=8, c=2)
    before = contents(original)
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # reading the original's files would now fail loudly
    assert_same_contents(before, contents(moved))
    check_run(moved, 8, 2)
    synth_store(moved, n=8, c=2, layer=1)  # a second run written into the moved store lands in its own folder
    assert not original.exists()
    with Store(moved) as s:
        assert {rid, make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 1)} <= set(s.runs()["run_id"])
    shutil.rmtree(moved)  # the copy never read the moved folder's files either
    assert_same_contents(before, contents(copy))


def test_a_damaged_data_file_is_a_clear_error(tmp_path, monkeypatch):
    store = tmp_path / "s"
    rid = synth_store(store, 8, 2)
    with Store(store) as s:
        files = s._df(f"FROM ducklake_list_files('{s._lake}', 'token_pairs')")["data_file"].tolist()
    Path(files[0]).write_bytes(Path(files[0]).read_bytes()[:100])  # truncated
    with Store(store) as s, pytest.raises(StoreError, match=r"table 'token_pairs' at .*\.parquet is missing or damaged"):
        s.table("token_pairs", run_id=rid)
    Path(files[0]).unlink()  # deleted
    with Store(store) as s, pytest.raises(StoreError, match=r"table 'token_pairs' at .*\.parquet is missing or damaged"):
        s.pos_cell_examples(rid, "NOUN", "NOUN")
    # the dashboard says so instead of showing a trace
    from streamlit.testing.v1 import AppTest

    from core import views

    monkeypatch.setenv(views.STORE_ENV, str(store))
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/4_Failures.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("missing or damaged" in e.value for e in at.error), [e.value for e in at.error]


# --------------------------------------------------------------------------------------------------
# issue 14, items 7 and 8
# --------------------------------------------------------------------------------------------------


def test_dataset_identity_is_its_content_and_force_registers_a_new_revision(tmp_path):
    meta, pairs = proc.dataset_frames(6)
    w = StoreWriter(tmp_path / "s")
    assert w.put_dataset({**meta, "source": "data/x.tsv"}, pairs) == "written"
    # the same content by another path (relative/absolute, another data folder) is the same dataset
    assert w.put_dataset({**meta, "source": "/abs/elsewhere/x.tsv"}, pairs) == "unchanged"
    w.put_model(proc.MODEL)
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
    w.start_run(proc.run_spec(6, 2))
    w.write_chunk(rid, 0, proc.expected_tables(w.chunk_pair_ids(rid, 0)))
    edited = pairs.assign(sentence1=pairs["sentence1"] + " (edited)")
    with pytest.raises(StoreError, match="different content.*--force"):
        w.put_dataset(meta, edited)
    assert w.put_dataset(meta, edited, replace=True) == "written"
    with Store(tmp_path / "s") as s:
        ds = s.datasets().iloc[0]
        assert ds["revision"] == 2
        assert s.table("pairs")["sentence1"].str.endswith("(edited)").all()
        # the old run still reads its own revision's sentences
        assert not s.predictions(rid)["sentence1"].str.endswith("(edited)").any()
    with pytest.raises(StoreError, match="dataset_hash.*--force"):
        w.start_run(proc.run_spec(6, 2))
    w.start_run(proc.run_spec(6, 2), force=True)
    w.write_chunk(rid, 0, proc.expected_tables(w.chunk_pair_ids(rid, 0)))
    with Store(tmp_path / "s") as s:
        assert s.predictions(rid)["sentence1"].str.endswith("(edited)").all()
    w.close()
    # shards built from identical data under two data folders merge
    for k, source in ((1, "/machine1/data/x.tsv"), (2, "/machine2/data/x.tsv")):
        ws = StoreWriter(tmp_path / f"shard{k}", shard=f"{k}/2")
        ws.put_dataset({**meta, "source": source}, pairs)
        ws.put_model(proc.MODEL)
        ws.start_run(proc.run_spec(6, 2))
        for ch in ws.pending_chunks(rid):
            ws.write_chunk(rid, ch, proc.expected_tables(ws.chunk_pair_ids(rid, ch)))
        ws.finish_run(rid)
        ws.close()
    merge_stores([tmp_path / "shard1", tmp_path / "shard2"], tmp_path / "merged")
    check_run(tmp_path / "merged", 6, 2)


def test_seconds_add_up_across_resumes_and_a_dead_writer_is_interrupted(tmp_path):
    n, c = 6, 2
    rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
    w1 = StoreWriter(tmp_path / "s")
    meta, pairs = proc.dataset_frames(n)
    w1.put_dataset(meta, pairs)
    w1.put_model(proc.MODEL)
    w1.start_run(proc.run_spec(n, c))
    time.sleep(0.3)
    w1.write_chunk(rid, 0, proc.expected_tables(w1.chunk_pair_ids(rid, 0)))
    w1.close()  # the process "dies" here (no finish)
    with Store(tmp_path / "s") as s:
        first = s.run_info(rid)["seconds"]
        assert first >= 0.3 and s.run_info(rid)["status"] == "running"  # this process (its pid) lives
        seg = s.table("runs")
    # the same record written by a pid that is gone: interrupted
    dead = seg.assign(pid=2**22 + 12345)
    with Store(tmp_path / "s") as s:
        assert s.live_status(dead).tolist() == ["interrupted"]
        assert s.live_status(seg.assign(host="elsewhere", heartbeat_at=pd.Timestamp("2000-01-01"))).tolist() == \
            ["interrupted"]
    w2 = StoreWriter(tmp_path / "s")
    t0 = time.monotonic()
    assert w2.start_run(proc.run_spec(n, c)) == "running"
    time.sleep(0.3)
    for k in w2.pending_chunks(rid):
        w2.write_chunk(rid, k, proc.expected_tables(w2.chunk_pair_ids(rid, k)))
    w2.finish_run(rid)
    second = time.monotonic() - t0
    w2.close()
    with Store(tmp_path / "s") as s:
        run = s.run_info(rid)
    assert first + 0.3 <= run["seconds"] <= first + second + 1.0  # both processes' seconds
    assert run["pairs_done"] == n and run["pairs_per_s"] == pytest.approx(n / run["seconds"])
