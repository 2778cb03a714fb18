"""Stores opened and closed explicitly (#19): a store that is closed or deleted never affects another store of
the process (writers, readers, bench_predict's repeats), every wait for another writer is bounded and says
what it waited for, a read-only store opens for reading (Store, ``list``, every dashboard page) while writing
to it is a clear error, and a half-created store is a one-line message."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import store_writer_proc as proc
import test_store_remote
from conftest import ROOT

from core.safe_text import unliteral
from core.store import Store, StoreError, StoreWriter, merge_stores
from core.store.catalog import WAIT_ENV
from precompute.cli import main

postgres = test_store_remote.postgres  # a PostgreSQL server of its own (skipped where none is installed)
PAIRS = pd.DataFrame({"sentence1": ["A man plays.", "A dog runs."], "sentence2": ["A woman sings.", "A cat sleeps."],
                      "gold": [1.0, 2.0]})


def _small_store(path: Path, key: str = "x") -> None:
    with StoreWriter(path) as w:
        w.put_dataset({"dataset_key": key, "name": key, "split": "test"}, PAIRS)


# --------------------------------------------------------------------------------------------------
# a closed or deleted store never affects another
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("close", [True, False], ids=["closed", "left-open"])
def test_a_deleted_store_never_affects_the_next(tmp_path, close):
    """Write and read a store, delete its folder (its writer and reader closed, or left open as a notebook
    would), then write and read another: the second store works as if the first had never existed."""
    for _ in range(3):
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        writer = StoreWriter(folder / "store")
        rid = proc.write_run(writer, 4, 2)
        writer.finish_run(rid, {"spearman": 1.0})
        reader = Store(folder / "store")
        assert len(reader.predictions(rid)) == 4 and reader.is_current()
        if close:
            writer.close()
            reader.close()
            assert not reader.is_current()
        shutil.rmtree(folder)
        assert not reader.is_current()  # (the dashboard's cached Store reopens on this)


def test_a_rebuilt_store_is_a_new_store(tmp_path):
    """A reader of a store that was deleted and built again at the same path says it is no longer current
    (the dashboard's cached Store then opens the new one), and a new reader sees the new content."""
    _small_store(tmp_path / "s", "first")
    old = Store(tmp_path / "s")
    assert old.datasets()["dataset_key"].tolist() == ["first"]
    shutil.rmtree(tmp_path / "s")
    _small_store(tmp_path / "s", "second")
    assert not old.is_current()
    with Store(tmp_path / "s") as new:
        assert new.is_current() and new.datasets()["dataset_key"].tolist() == ["second"]
    old.close()
    old.close()  # closing twice does nothing


def test_bench_predict_repeats_in_one_process(tmp_path, tiny_folders):
    """bench/bench_predict.py's pattern: a predict run into a fresh temporary store, read back by a Store that is
    never closed, the folder removed; twice in one process (the second repeat used to fail with "Unable to open
    database <the first store>/catalog.sqlite")."""
    from core import load_model
    from core.datasets import load_dataset
    from precompute.runner import run

    pairs = tmp_path / "pairs.tsv"
    PAIRS.rename(columns={"gold": "score"}).to_csv(pairs, sep="\t", index=False)
    dataset = load_dataset(str(pairs), gold_range=(0, 5))
    model = load_model(tiny_folders["bert"], device="cpu")
    scores = []
    for _ in range(2):
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
            result = run(model, dataset, Path(tmp) / "store", method="predict", progress=False)
            scores.append(Store(Path(tmp) / "store").predictions(result.run_id)["model_score"].tolist())
    assert len(scores[0]) == 2 and scores[0] == scores[1]


def test_store_and_writer_are_context_managers(tmp_path):
    with StoreWriter(tmp_path / "s") as w:
        w.put_dataset({"dataset_key": "x", "name": "x", "split": "test"}, PAIRS)
    with pytest.raises(Exception, match="closed"):
        w.put_model(proc.MODEL)
    with Store(tmp_path / "s") as s:
        assert s.is_current()
    assert not s.is_current()


# --------------------------------------------------------------------------------------------------
# bounded waits
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _catalog_locked(catalog: Path):
    """Another process holding the write lock of a SQLite catalog (as a writer in a long commit would)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "db.execute('PRAGMA journal_mode=WAL'); db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
         "time.sleep(120)\n", str(catalog)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_write_waits_for_a_locked_catalog_a_bounded_time_and_says_so(tmp_path, monkeypatch):
    _small_store(tmp_path / "s")
    writer = StoreWriter(tmp_path / "s")
    monkeypatch.setenv(WAIT_ENV, "1.5")
    with _catalog_locked(tmp_path / "s" / "catalog.sqlite"):
        start = time.monotonic()
        with pytest.raises(StoreError) as caught:
            writer.put_model(proc.MODEL)
        waited = time.monotonic() - start
    message = str(caught.value)
    assert message.startswith(f"put_model({proc.MODEL_ID}): gave up after waiting "), message
    assert "for the store's catalog, which another writer held" in message and "locked" in message, message
    assert f"${WAIT_ENV} sets the wait (now 1.5 s)" in message, message
    assert 1.5 <= waited < 60, waited  # a bound, not a speed: the wait ends
    writer.put_model(proc.MODEL)  # the lock is gone: the same writer writes
    writer.close()


def test_creating_a_store_whose_catalog_another_process_locks_gives_up_with_a_message(tmp_path, monkeypatch):
    store = tmp_path / "s"
    store.mkdir()
    monkeypatch.setenv(WAIT_ENV, "1")
    with _catalog_locked(store / "catalog.sqlite"), pytest.raises(StoreError) as caught:
        StoreWriter(store)
    message = str(caught.value)
    assert "gave up after waiting" in message and str(store) in message and WAIT_ENV in message, message


def test_a_bad_wait_setting_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(WAIT_ENV, "soon")
    with pytest.raises(StoreError, match=f"\\${WAIT_ENV} must be a number of seconds, got 'soon'"):
        StoreWriter(tmp_path / "s")


# --------------------------------------------------------------------------------------------------
# a half-created store
# --------------------------------------------------------------------------------------------------


def test_list_on_a_half_created_store_is_one_line(tmp_path, capsys):
    store = tmp_path / "s"
    store.mkdir()
    with contextlib.closing(sqlite3.connect(store / "catalog.sqlite")) as db:  # what a killed first writer leaves
        db.execute("PRAGMA journal_mode=WAL")
    assert main(["list", "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot open the store {store}: its catalog holds no "
                                               "DuckLake metadata yet"), err
    assert "explicitly disabled" not in err[0]
    _small_store(store)  # a writer finishes creating it
    assert main(["list", "--store", str(store)]) == 0


# --------------------------------------------------------------------------------------------------
# read-only stores
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path, mount_point: Path):
    """``folder`` seen read-only at ``mount_point``: a read-only bind mount (as root, where mounting is
    allowed: root ignores file permissions), else (not root) the same files without write permission."""
    if os.geteuid() != 0:
        shutil.copytree(folder, mount_point)
        modes = {p: p.stat().st_mode for p in [mount_point, *mount_point.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield mount_point
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    mount_point.mkdir()
    bind = subprocess.run(["mount", "--bind", str(folder), str(mount_point)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"running as root without permission to bind-mount (root ignores file permissions): "
                    f"{bind.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(mount_point)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount the bind mount read-only: {ro.stderr.strip()}")
        with pytest.raises(OSError):
            (mount_point / "probe").write_text("x")
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.fixture()
def read_only_store(tmp_path, tiny_folders):
    """The Search test's store (a bilrp run and a search index of 12 demo pairs) on a read-only location."""
    from test_search import build_search_store

    info = build_search_store(tmp_path.parent / "lifecycle_search_store", tiny_folders)
    source = tmp_path / "published"
    shutil.copytree(info["store"], source / "store")
    with read_only(source, tmp_path / "ro") as mounted:
        yield {**info, "store": str(mounted / "store")}


def test_a_read_only_store_opens_for_reading_and_refuses_writes(read_only_store, capsys):
    store = read_only_store["store"]
    files = sorted(p.name for p in Path(store).iterdir())
    with Store(store) as s:
        runs = s.runs()
        assert runs["run_id"].tolist() == [read_only_store["run_id"]] and runs["status"].tolist() == ["done"]
        assert len(s.predictions(read_only_store["run_id"])) == 12
    assert main(["list", "--store", store]) == 0
    out, err = capsys.readouterr()
    assert read_only_store["run_id"] in out and "done" in out, (out, err)
    assert main(["compact", "--store", store]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and store in err[0] and "cannot be written" in err[0], err
    with pytest.raises(StoreError, match="readers can open it, writers need write access"):
        StoreWriter(store)
    counts = merge_stores([store], Path(store).parents[2] / "merged")  # a read-only source merges
    assert counts["chunks_copied"] == 2 and counts["segments_copied"] == 1, counts
    assert sorted(p.name for p in Path(store).iterdir()) == files  # nothing was written (no -shm, no -wal)


def test_every_dashboard_page_reads_a_read_only_store(read_only_store, monkeypatch):
    pytest.importorskip("streamlit.testing.v1")
    from streamlit.testing.v1 import AppTest

    from core import views

    monkeypatch.setenv(views.STORE_ENV, read_only_store["store"])
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    pages = sorted(p.name for p in (ROOT / "pages").glob("*.py"))
    assert len(pages) >= 8
    for page in pages:
        at.switch_page(f"pages/{page}")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    at.switch_page("pages/7_Search.py")
    at.run()
    at.text_input(key="sr_query").set_value("A man is playing a guitar.")
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    assert len([unliteral(e.label) for e in at.expander if unliteral(e.label).startswith("#")]) == 5


# --------------------------------------------------------------------------------------------------
# bad input that used to reach the store
# --------------------------------------------------------------------------------------------------


def test_control_characters_in_a_text_are_bad_input_naming_the_row(tmp_path, tiny_folders, capsys):
    """NUL, escape and other control characters are refused (row named) or dropped with --on-bad skip; tab
    inside a quoted field and line breaks are text."""
    path = tmp_path / "controls.tsv"
    rows = ['A man plays.\tA woman sings.\t1', 'A dog\x00 runs.\tA cat sleeps.\t2', 'Two kids.\tA bird \x1b[31m.\t3',
            '"A tab\there."\t"Two\nlines."\t4', 'Nothing odd.\tDEL \x7f here.\t5']
    path.write_text("sentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n", encoding="utf-8")
    store = tmp_path / "s"
    base = ["predict", "--dataset", str(path), "--store", str(store), "--model", str(tiny_folders["bert"]),
            "--gold-range", "0,5"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(path) in err and "control character in a sentence: 3 row(s), e.g. 1, 2, 4" in err, err
    assert "--on-bad skip" in err and not store.exists(), err
    assert main([*base, "--on-bad", "skip"]) == 0
    assert "3 rows skipped (3 control character in a sentence)" in capsys.readouterr().err
    with Store(store) as s:
        pairs = s.table("pairs")
    assert pairs["pair_id"].tolist() == [0, 3]
    assert pairs["sentence1"].tolist() == ["A man plays.", "A tab\there."]
    assert pairs["sentence2"].tolist() == ["A woman sings.", "Two\nlines."]


def test_the_python_api_refuses_a_control_character(tiny_models):
    from core import explain

    model = tiny_models["bert"]
    with pytest.raises(ValueError, match=r"text_a holds the control character U\+0000"):
        explain(model, "A dog\x00 runs.", "A cat sleeps.")
    assert explain(model, "A dog\truns.", "A cat\nsleeps.").matrix.size > 0


def test_a_postgres_catalog_opens_for_a_read_only_role(tmp_path, postgres):
    """A PostgreSQL catalog read by a role that may only SELECT (a team's published store): Store reads it, and
    a writer's first write is a StoreError naming what it tried."""
    owner = f"ducklake:postgres:dbname=postgres host=127.0.0.1 port={postgres} user=postgres"
    writer = StoreWriter(f"{owner} data_path={tmp_path / 'data'}/")
    rid = proc.write_run(writer, 4, 2)
    writer.finish_run(rid, {"spearman": 1.0})
    writer.close()
    grants = ("CREATE ROLE reader LOGIN; GRANT USAGE ON SCHEMA public TO reader; "
              "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader;")
    psql = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    if not psql:
        pytest.skip("psql is not installed")
    subprocess.run([str(psql[-1]), "-h", "127.0.0.1", "-p", str(postgres), "-U", "postgres", "-d", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-c", grants], check=True, capture_output=True)
    reader_spec = f"ducklake:postgres:dbname=postgres host=127.0.0.1 port={postgres} user=reader"
    with Store(reader_spec) as s:
        assert s.runs()["run_id"].tolist() == [rid] and len(s.predictions(rid)) == 4
    start = time.monotonic()
    with pytest.raises(StoreError, match="(?s)put_model\\(another\\): .*permission denied"), StoreWriter(reader_spec) as w:
        w.put_model({**proc.MODEL, "model_id": "another"})
    assert time.monotonic() - start < 60  # refused, not retried as if another writer held the catalog


def test_a_benchmark_split_with_a_control_character_keeps_it_loudly():
    """STS-b train row 2918 holds U+0012 (a mangled apostrophe) in the published split: kept with a warning
    naming the row (as the split's repeated pairs are), dropped with on_bad='skip'."""
    from conftest import SHARED_DATA

    from core.datasets import load_dataset

    if not (SHARED_DATA / "stsb" / "train.tsv").is_file():
        pytest.skip(f"the STS-b data is not in {SHARED_DATA}")
    with pytest.warns(UserWarning, match=r"kept 1 row\(s\) whose text holds a control character.*e\.g\. 2918"):
        kept = load_dataset("stsb:train", data_dir=SHARED_DATA)
    assert "\x12" in kept.frame.loc[kept.frame["pair_id"] == 2918, "sentence1"].item()
    with pytest.warns(UserWarning, match="skipped 1 of"):
        skipped = load_dataset("stsb:train", data_dir=SHARED_DATA, on_bad="skip")
    assert len(skipped) == len(kept) - 1 and 2918 not in set(skipped.frame["pair_id"])
    assert skipped.skipped == {"control character in a sentence": 1}
