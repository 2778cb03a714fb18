"""Issue 19, integrity: every data file carries a SHA-256 written with it; bytes flipped inside any table's file are
a StoreError on read (naming table, file, run and chunk, never rows) and a failure of ``python -m precompute
verify``; merge, compact and migrate refuse a damaged file; stores written before checksums get them from
compact; a compacted store still verifies."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import store_writer_proc as proc
from test_store_lake import LEGACY, check_run
from test_store_remote import postgres, s3  # noqa: F401  (fixtures)

from core.store import Store, StoreError, StoreWriter, compact, integrity, merge_stores, migrate_store
from core.store.integrity import DEFAULT_INLINING_ROW_LIMIT
from core.store.schema import CHUNK_TABLES
from core.store.summaries import summarize_runs
from precompute.cli import main

N, C = 24, 12  # two chunks of 12 pairs: every chunk table (predictions too) gets a data file per chunk
assert C > DEFAULT_INLINING_ROW_LIMIT


def write_store(path: Path | str) -> str:
    """The synthetic run (finished and summarized), its dataset and model, and an evaluation of 12 rows."""
    with StoreWriter(path) as w:
        rid = proc.write_run(w, N, C)
        w.finish_run(rid, {"spearman": 1.0})
        w.put_evaluation({"kind": "conservation", "model_id": proc.MODEL_ID, "dataset_key": proc.DATASET_KEY},
                         pd.DataFrame({"metric": "abs_residual", "x": range(12), "y": 0.5}))
        summarize_runs(w.location, writer=w)
    return rid


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("integrity") / "base"
    return path, write_store(path)


def files_of(store: Path | str) -> pd.DataFrame:
    """table, path of every data file at the newest snapshot."""
    with Store(store) as s:
        tables = [t for t in s._columns_at(s.snapshot_id()) if t != "file_checksums"]  # its own are not checked
        return pd.concat([s._df(f"SELECT '{t}' AS tbl, data_file AS path FROM ducklake_list_files('{s._lake}', '{t}')")
                          for t in tables])


def flip(path: str | Path, n: int = 64) -> None:
    """XOR ``n`` bytes in the middle of a Parquet file's data pages (between the magic and the footer): the file
    keeps its size and still decodes, to other values."""
    data = bytearray(Path(path).read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    start = 4 + (len(data) - footer - 12) // 2 - n // 2
    assert start > 4 and start + n < len(data) - footer - 8
    for i in range(start, start + n):
        data[i] ^= 0x5A
    Path(path).write_bytes(bytes(data))


def copy(base: tuple[Path, str], tmp_path: Path, name: str = "s") -> Path:
    dest = tmp_path / name
    shutil.copytree(base[0], dest)
    return dest


def verify_cli(store: Path | str, capsys, *extra: str) -> tuple[int, str]:
    code = main(["verify", "--store", str(store), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_clean_store_verifies_and_every_data_file_has_a_checksum(base, capsys):
    store, rid = base
    files = files_of(store)
    # every chunk table of the run has data files (the flipped-bytes test below covers each one)
    assert set(CHUNK_TABLES) <= set(files["tbl"])
    with Store(store) as s:
        checks = s.table("file_checksums")
        report = s.verify()
        listed = integrity.data_files(s._con, s._lake, integrity.checked_tables(), s.snapshot_id())
    assert sorted(f.path for f in listed) == sorted(files["path"])  # the catalog query resolves as DuckLake does
    assert report.ok and report.files == len(files) and report.bytes > 0
    assert set(checks["file"]) == {os.path.basename(p) for p in files["path"]}  # none missed (inlining rule)
    chunked = checks[checks["table_name"].isin(CHUNK_TABLES)]
    assert set(zip(chunked["run_id"], chunked["chunk_index"], strict=True)) == {(rid, 0), (rid, 1)}
    code, out = verify_cli(store, capsys)
    assert code == 0 and "all match their checksums" in out, out
    code, out = verify_cli(store, capsys, "--run", rid)
    assert code == 0 and f"holding rows of run {rid}" in out, out
    code, out = verify_cli(store, capsys, "--run", "nope")
    assert code == 2 and "no run 'nope'" in out and rid in out, out


def test_flipped_bytes_in_every_tables_file_are_caught_by_a_read_and_by_verify(base, tmp_path, capsys):
    rid = base[1]
    tables = sorted(set(files_of(base[0])["tbl"]))
    assert {"pairs", "evaluations", "quartile_pairs", *CHUNK_TABLES} <= set(tables), tables
    for table in tables:
        store = copy(base, tmp_path, table)
        files = files_of(store)
        path = files.loc[files["tbl"] == table, "path"].iloc[-1]
        with Store(store) as s:
            clean = s.table(table)
        flip(path)
        with Store(store) as s:
            with pytest.raises(StoreError) as err:
                s.table(table)  # the rows are never returned
            msg = str(err.value)
            assert f"table {table!r}" in msg and os.path.basename(path) in msg and "damaged" in msg, msg
            if table in CHUNK_TABLES:
                assert re.search(rf"run {rid} chunk [01]\b", msg), msg
                assert len(s.runs()) == 1  # what does not read the damaged file still reads
        code, out = verify_cli(store, capsys)
        assert code == 1, out
        bad = [line for line in out.splitlines() if line.startswith("damaged")]
        assert len(bad) == 1 and table in bad[0] and os.path.basename(path) in bad[0], out
        assert "1 damaged, 0 missing, 0 unchecked" in out, out
        # restoring the file's bytes restores the store (the check is by content, not by a remembered verdict)
        shutil.copyfile(base[0] / Path(path).relative_to(store), path)
        with Store(store) as s:
            pd.testing.assert_frame_equal(s.table(table), clean)
        shutil.rmtree(store)


def test_the_issue_case_a_token_pairs_file_reads_as_an_error_not_as_changed_relevances(base, tmp_path, capsys):
    store = copy(base, tmp_path)
    rid = base[1]
    files = files_of(store)
    path = files.loc[files["tbl"] == "token_pairs", "path"].iloc[0]
    flip(path)
    with Store(store) as s, pytest.raises(StoreError, match=r"table 'token_pairs' at .*\.parquet is missing or damaged"):
        s.pair_matrix(rid, proc.pair_ids(N)[0])
    code, out = verify_cli(store, capsys, "--run", rid)
    assert code == 1 and "token_pairs" in out and f"run {rid} chunk 0" in out, out
    os.remove(path)
    code, out = verify_cli(store, capsys)
    assert code == 1 and re.search(r"^missing\s+token_pairs", out, re.M), out


def test_merge_refuses_a_damaged_source_and_copies_checksums_of_a_clean_one(base, tmp_path):
    store = copy(base, tmp_path)
    files = files_of(store)
    path = files.loc[files["tbl"] == "tokens", "path"].iloc[0]
    flip(path)
    with pytest.raises(StoreError, match=rf"merge_stores: source .*table 'tokens' at .*{os.path.basename(path)}"):
        merge_stores([store], tmp_path / "dest")
    with Store(tmp_path / "dest") as s:
        assert s.runs().empty and s.table("chunks").empty  # nothing was copied
    merge_stores([base[0]], tmp_path / "dest")
    check_run(tmp_path / "dest", N, C)
    with Store(tmp_path / "dest") as s:
        report = s.verify()
    assert report.ok and report.files >= len(files), report.lines()


def test_compact_refuses_a_damaged_file_and_a_compacted_store_verifies(base, tmp_path):
    store = copy(base, tmp_path)
    rid = base[1]
    files = files_of(store)
    path = files.loc[files["tbl"] == "pos_pairs", "path"].iloc[0]
    flip(path)
    for dry_run in (True, False):
        with pytest.raises(StoreError, match=rf"compact .* refused.*table 'pos_pairs' at .*{os.path.basename(path)}"):
            compact(store, dry_run=dry_run)
    shutil.copyfile(base[0] / Path(path).relative_to(store), path)
    report = compact(store, keep=timedelta(0))
    assert report.checksummed and "recorded the checksums of" in report.lines()[-1]
    after = files_of(store)
    assert len(after) < len(files)  # merged
    with Store(store) as s:
        assert s.verify().ok
    check_run(store, N, C)
    # a merged file holds both chunks: its damage names them
    merged = after.loc[after["tbl"] == "token_pairs", "path"]
    assert len(merged) == 1
    flip(merged.iloc[0])
    with Store(store) as s, pytest.raises(StoreError, match=rf"run {rid} chunks 0, 1"):
        s.table("token_pairs")


def test_a_store_written_before_checksums_is_read_unchecked_until_compact_adds_them(base, tmp_path, capsys):
    store = copy(base, tmp_path)
    with StoreWriter(store) as w:  # as written before checksums existed
        w._con.execute(f"DELETE FROM {w._lake}.file_checksums")
    code, out = verify_cli(store, capsys)
    assert code == 1 and "0 damaged, 0 missing" in out and re.search(r"^unchecked\s+token_pairs", out, re.M), out
    assert "compact" in out
    check_run(store, N, C)  # read unchecked
    report = compact(store)
    assert len(report.checksummed) == len(files_of(store))
    code, out = verify_cli(store, capsys)
    assert code == 0, out


def test_migrate_refuses_a_damaged_old_layout_file_and_its_new_store_verifies(tmp_path):
    counts = migrate_store(LEGACY, tmp_path / "new")
    assert counts["chunks"] == 5
    with Store(tmp_path / "new") as s:
        report = s.verify()
    assert report.ok and report.files > 0
    old = tmp_path / "old"
    shutil.copytree(LEGACY, old)
    bad = sorted(old.glob("chunks/run=*/chunk=000001/token_pairs.*.parquet"))[0]
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(StoreError, match=rf"migrate: cannot read {re.escape(str(bad))}"):
        migrate_store(old, tmp_path / "other")


@pytest.mark.slow
def test_checksums_on_a_postgres_catalog_with_s3_data(postgres, s3):  # noqa: F811
    import boto3

    store = f"ducklake:postgres:dbname=postgres host=127.0.0.1 port={postgres} user=postgres data_path=s3://simlens/lake/"
    rid = write_store(store)
    with Store(store) as s:
        assert s.verify().ok and len(s.table("file_checksums")) > 0
    client = boto3.client("s3", endpoint_url=s3)
    key = next(o["Key"] for o in client.list_objects_v2(Bucket="simlens")["Contents"]
               if "/token_pairs/" in o["Key"])
    local = Path(os.environ.get("TMPDIR", "/tmp")) / os.path.basename(key)
    client.download_file("simlens", key, str(local))
    flip(local)
    client.upload_file(str(local), "simlens", key)
    with Store(store) as s:
        with pytest.raises(StoreError, match=rf"table 'token_pairs' at s3://.*{os.path.basename(key)}.*run {rid}"):
            s.table("token_pairs")
        report = s.verify()
    assert [p.status for p in report.problems] == ["damaged"]


def test_flipped_bytes_in_a_search_indexs_files_are_caught_by_a_read_and_by_verify(tmp_path, capsys):
    import numpy as np
    from test_search_store import _vector_index, _write_chunks

    from core.store.index_search import IndexStore
    from core.store.index_writer import IndexWriter

    x = np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32)
    record = _vector_index("ixflip", 24, 4, 12)  # 12 passages and windows a chunk: files, not inlined rows
    store = tmp_path / "ix"
    with IndexWriter(store) as w:
        w.put_model({"model_id": "toy", "name": "toy"})
        w.start_index(record)
        _write_chunks(w, record, x, [0, 1])
    files = files_of(store)
    reads = {"index_passages": lambda r: r.passages("ixflip"), "index_windows": lambda r: r.all_embeddings("ixflip")}
    for table, read in reads.items():
        path = files.loc[files["tbl"] == table, "path"].iloc[-1]
        saved = Path(path).read_bytes()
        flip(path)
        with IndexStore(store) as r, pytest.raises(StoreError, match=rf"table '{table}' at .*index ixflip chunk [01]"):
            read(r)
        code, out = verify_cli(store, capsys)
        assert code == 1 and "1 damaged" in out and os.path.basename(path) in out, out
        Path(path).write_bytes(saved)
        with IndexStore(store) as r:
            assert len(read(r)) == 24
