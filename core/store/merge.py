"""Merging stores built apart (e.g. shards written on machines without a shared catalog) into one.

Every source's data files are checked against their checksums and every conflict is found before anything is
written (a damaged or missing file is a StoreError naming it); then records, chunks (one transaction each, so a
killed merge leaves whole chunks only), run segments and search indexes (their chunks, then their records)
are copied. Merging again changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd

from core.store import integrity
from core.store.catalog import StoreLocation, attach, parse_location, transaction
from core.store.reader import StoreReader
from core.store.records import StoreError, quote, same_value, to_arrow
from core.store.schema import CHUNK_TABLES, INDEX_CHUNK_TABLES, SCHEMA, columns
from core.store.store import Store
from core.store.summaries import summarize_runs
from core.store.writer import RUN_IDENTITY, StoreWriter, insert, insert_checksums, new_write

# Index record fields that must agree between stores (the index id covers the corpus, model and settings).
_INDEX_IDENTITY = ("corpus_hash", "model_id", "similarity", "dim", "method", "layer", "n_passages", "chunk_size",
                   "n_chunks", "window_tokens", "window_overlap")

_DATASET_IDENTITY = ("dataset_hash", "name", "split", "lang_a", "lang_b", "gold_min", "gold_max")


def _rank(record: dict[str, Any], *time_fields: str) -> tuple:
    """How far a run segment or an index record got: done first, then the latest of its first present time."""
    t = next((record[f] for f in time_fields if record.get(f) is not None and not pd.isna(record[f])), None)
    return (record.get("status") == "done", pd.Timestamp(t) if t is not None else pd.Timestamp.min)


_SEGMENT_TIMES = ("finished_at", "started_at")
_INDEX_TIMES = ("heartbeat_at",)


def _supersedes(record: dict[str, Any], current: dict[str, Any] | None, table: str, times: tuple[str, ...]) -> bool:
    """Whether ``record`` should replace ``current`` (what the target or the plan holds already): it differs from
    it and got further (a merge never replaces a record with an equal or staler one, so merging twice is a no-op)."""
    if current is None:
        return True
    same = all(same_value(current.get(c), record.get(c)) for c in SCHEMA[table])
    return not same and _rank(record, *times) > _rank(current, *times)


def _records(reader: StoreReader, table: str, key: str) -> dict[Any, pd.DataFrame]:
    df = reader.table(table)
    return {k: g.reset_index(drop=True) for k, g in df.groupby(key, sort=True)} if len(df) else {}


def merge_stores(sources: Sequence[str | os.PathLike | StoreLocation], dest: str | os.PathLike | StoreLocation,
                 ) -> dict[str, int]:
    """Merge the datasets, models, evaluations, runs, chunks and search indexes of ``sources`` into ``dest``
    (created if needed).

    Idempotent: records and chunks already present with identical content are skipped. Conflicts raise
    StoreError before anything is copied: a dataset (content hash, name, split, languages, gold range) or
    model record that differs, a chunk whose content differs, run segments whose identity fields disagree, an
    index whose records disagree in :data:`_INDEX_IDENTITY` or an index chunk whose passage or window counts
    differ. The same evaluation in several stores resolves to the newest; the same (run, shard) segment to the
    finished one, then the later one; the same index's record to the finished one, then the later one. Only
    the winning (first committed) write of a run or index chunk is copied, and only when ``dest`` has none, so
    chunks stay exactly once. Complete runs get their summaries (:mod:`core.store.summaries`) computed in
    ``dest``. Safe while readers read ``dest``. Returns counts of copied/skipped/written items.
    """
    dest_loc = parse_location(dest)
    src_locs = [parse_location(s) for s in sources]
    for loc in src_locs:
        if loc.root is not None and not (loc.root / "catalog.sqlite").exists() and not loc.root.exists():
            raise StoreError(f"merge_stores: source {loc} does not exist")
    src_locs = [loc for loc in src_locs if not (loc.root is not None and dest_loc.root is not None
                                                and loc.root.resolve() == dest_loc.root.resolve())]
    writer = StoreWriter(dest_loc)
    readers = [Store(loc) for loc in src_locs]
    target = Store(dest_loc)
    try:
        for reader in readers:  # nothing is copied from a store with a damaged or missing file
            integrity.raise_damaged(reader.verify().problems, f"merge_stores: source {reader.location}")
        counts = _merge(writer, target, readers)
        # summaries are derived, not copied: computed for the merged runs (a run whose shards came from several
        # stores is complete only here); merging again finds them current and writes nothing
        counts["summaries_written"] = len(summarize_runs(dest_loc, writer=writer))
        return counts
    finally:
        for r in (*readers, target):
            r.close()
        writer.close()


def _merge(writer: StoreWriter, target: Store, readers: list[Store]) -> dict[str, int]:
    counts = dict.fromkeys(("meta_copied", "meta_skipped", "segments_copied", "segments_skipped", "chunks_copied",
                            "chunks_skipped", "indexes_copied", "indexes_skipped", "index_chunks_copied",
                            "index_chunks_skipped"), 0)
    # ---- plan (and detect every conflict) before touching dest ----
    have_ds = {r["dataset_key"]: r for r in target.datasets().to_dict("records")}
    have_hashes = set(target._df("SELECT dataset_hash FROM _datasets_rev")["dataset_hash"])
    have_models = {r["model_id"]: r for r in target.models().to_dict("records")}
    have_evals = {r["eval_id"]: r for r in target.evaluation_list().to_dict("records")}
    copy_ds: dict[str, tuple[StoreReader | None, dict]] = {}
    copy_pairs: dict[str, tuple[StoreReader, str]] = {}
    copy_models: dict[str, dict] = {}
    copy_evals: dict[str, tuple[StoreReader, dict]] = {}
    for reader in readers:
        for ds in reader.datasets().to_dict("records"):
            other = copy_ds.get(ds["dataset_key"], (None, have_ds.get(ds["dataset_key"])))[1]
            if other is not None:
                diff = [f for f in _DATASET_IDENTITY if not same_value(other.get(f), ds.get(f))]
                if diff:
                    raise StoreError(f"merge_stores: conflicting pairs record {ds['dataset_key']!r}: {reader.location} "
                                     f"differs in {', '.join(diff)}")
                counts["meta_skipped"] += 1
                continue
            copy_ds[ds["dataset_key"]] = (reader, ds)
        for h in reader._df("SELECT dataset_hash FROM _datasets_rev ORDER BY written_at")["dataset_hash"]:
            if h not in have_hashes and h not in copy_pairs:
                copy_pairs[h] = (reader, h)
        for m in reader.models().to_dict("records"):
            other = copy_models.get(m["model_id"]) or have_models.get(m["model_id"])
            if other is not None:
                if not all(same_value(other.get(c), m.get(c)) for c in SCHEMA["models"]):
                    raise StoreError(f"merge_stores: conflicting models record {m['model_id']!r} in {reader.location}")
                counts["meta_skipped"] += 1
                continue
            copy_models[m["model_id"]] = m
        for e in reader.evaluation_list().to_dict("records"):
            other = copy_evals.get(e["eval_id"], (None, have_evals.get(e["eval_id"])))[1]
            if other is not None and not pd.Timestamp(e["created_at"]) > pd.Timestamp(other["created_at"]):
                counts["meta_skipped"] += 1
                continue
            copy_evals[e["eval_id"]] = (reader, e)

    identity: dict[str, tuple[dict, str]] = {}
    seg_plan: dict[tuple[str, str], dict] = {}
    have_segs = {(s["run_id"], s["shard"]): s for s in target.table("runs").to_dict("records")}
    for where, reader in [(str(target.location), target)] + [(str(r.location), r) for r in readers]:
        for seg in reader.table("runs").to_dict("records"):
            rid = seg["run_id"]
            if rid in identity:
                ref, ref_where = identity[rid]
                diff = [f for f in RUN_IDENTITY if not same_value(ref.get(f), seg.get(f))]
                if diff:
                    raise StoreError(f"merge_stores: conflicting metadata for run {rid}: " + ", ".join(
                        f"{f}={ref.get(f)!r} in {ref_where} vs {seg.get(f)!r} in {where}" for f in diff))
            else:
                identity[rid] = (seg, where)
            if reader is target:
                continue
            key = (rid, seg["shard"])
            if not _supersedes(seg, seg_plan.get(key) or have_segs.get(key), "runs", _SEGMENT_TIMES):
                counts["segments_skipped"] += 1
                continue
            seg_plan[key] = seg

    chunk_plan = _plan_chunks(readers, ("chunks", "run_id", ("content_hash",)), target, counts)
    index_plan, index_chunk_plan = _plan_indexes(target, readers, counts)

    # ---- execute: records, then chunks, then run segments, then index chunks and index records ----
    for h, (reader, _h) in copy_pairs.items():
        ds = reader._df("SELECT * FROM _datasets_rev WHERE dataset_hash = $h", {"h": h})
        rows = reader._df("SELECT * EXCLUDE (write_id) FROM _pairs_all WHERE dataset_hash = $h", {"h": h})
        writer._write_records({"datasets": ds.drop(columns=["write_id", "written_at"]), "pairs": rows},
                              f"merge dataset {ds['dataset_key'].iloc[0]}", written_at=ds["written_at"].iloc[0])
        counts["meta_copied"] += 1
    for m in copy_models.values():
        writer._write_records({"models": pd.DataFrame([m])}, f"merge model {m['model_id']}")
        counts["meta_copied"] += 1
    for eid, (reader, _e) in copy_evals.items():
        writer._write_records({"evaluations": reader.evaluations(eval_id=eid)}, f"merge evaluation {eid}")
        counts["meta_copied"] += 1
    con = writer._con
    copies = [attach(con, loc, f"{writer._lake}_src{i}", read_only=True)  # (a read-only source: its catalog copy)
              for i, loc in enumerate(r.location for r in readers)]
    try:
        for (rid, k), (i, rec, src_wid) in sorted(chunk_plan.items()):
            _copy_chunk(con, writer._lake, f"{writer._lake}_src{i}", ("chunks", "run_id", CHUNK_TABLES),
                        rid, k, src_wid, rec)
            counts["chunks_copied"] += 1
        for seg in seg_plan.values():
            _copy_record(con, writer._lake, "runs", seg, f"merge run {seg['run_id']}")
            counts["segments_copied"] += 1
        for (iid, k), (i, rec, src_wid) in sorted(index_chunk_plan.items()):
            _copy_chunk(con, writer._lake, f"{writer._lake}_src{i}", ("index_chunks", "index_id", INDEX_CHUNK_TABLES),
                        iid, k, src_wid, rec)
            counts["index_chunks_copied"] += 1
        for rec in index_plan.values():  # after their chunks: a finished index is never seen without them
            _copy_record(con, writer._lake, "indexes", rec, f"merge index {rec['index_id']}")
            counts["indexes_copied"] += 1
    finally:
        for i in range(len(readers)):
            con.execute(f"DETACH {writer._lake}_src{i}")
        for copy in copies:
            if copy is not None:
                copy.cleanup()
    return counts


def _plan_indexes(target: Store, readers: list[Store], counts: dict[str, int],
                  ) -> tuple[dict[str, dict], dict[tuple[str, int], tuple[int, dict, int]]]:
    """The index records (index_id -> record) and index chunks (as :func:`_plan_chunks`) to copy; raises
    StoreError on a conflict."""
    have = {r["index_id"]: r for r in target.table("indexes").to_dict("records")}
    identity: dict[str, tuple[dict, str]] = {iid: (r, str(target.location)) for iid, r in have.items()}
    records: dict[str, dict] = {}
    for reader in readers:
        for rec in reader.table("indexes").to_dict("records"):
            iid = rec["index_id"]
            ref, ref_where = identity.setdefault(iid, (rec, str(reader.location)))
            diff = [f for f in _INDEX_IDENTITY if not same_value(ref.get(f), rec.get(f))]
            if diff:
                raise StoreError(f"merge_stores: conflicting records of index {iid}: " + ", ".join(
                    f"{f}={ref.get(f)!r} in {ref_where} vs {rec.get(f)!r} in {reader.location}" for f in diff))
            if not _supersedes(rec, records.get(iid) or have.get(iid), "indexes", _INDEX_TIMES):
                counts["indexes_skipped"] += 1
                continue
            records[iid] = rec
    return records, _plan_chunks(readers, ("index_chunks", "index_id", ("n_passages", "n_windows")), target, counts)


def _plan_chunks(readers: list[Store], ledger: tuple[str, str, tuple[str, ...]], target: Store,
                 counts: dict[str, int]) -> dict[tuple[str, int], tuple[int, dict, int]]:
    """The chunks to copy: (owner id, chunk) -> (source, its ledger row, its winning write id), for chunks
    ``target`` lacks. ``ledger``: (ledger table, owner column, the fields that must agree where a chunk is in
    several stores); a disagreement is a StoreError."""
    table, owner, same = ledger
    kind, wins = ("run", "_chunk_wins") if table == "chunks" else ("index", f"_{table}_wins")  # the readers' views
    have = {(c[owner], int(c["chunk_index"])): c for c in target.table(table).to_dict("records")}
    plan: dict[tuple[str, int], tuple[int, dict, int]] = {}
    for i, reader in enumerate(readers):
        for c in reader._df(f"SELECT * FROM {wins}").to_dict("records"):
            key = (c[owner], int(c["chunk_index"]))
            other = plan[key][1] if key in plan else have.get(key)
            if other is not None:
                diff = [f for f in same if not same_value(other.get(f), c.get(f))]
                if diff:
                    raise StoreError(f"merge_stores: conflicting chunk {kind}={key[0]}/chunk={key[1]:06d}: its "
                                     f"{', '.join(diff)} in {reader.location} differs")
                if key not in plan:
                    counts[f"{'' if kind == 'run' else 'index_'}chunks_skipped"] += 1
                continue
            plan[key] = (i, c, int(c["write_id"]))
    return plan


def _copy_record(con: duckdb.DuckDBPyConnection, lake: str, table: str, record: dict, what: str) -> None:
    """One record row as it is in its source (its own times), as a new write of ``dest``."""
    wid, at = new_write()
    rows = to_arrow(table, pd.DataFrame([{c: record.get(c) for c in SCHEMA[table]}]), "merge")
    transaction(con, lambda c: insert(c, lake, table, rows, wid, at), what)


def _copy_chunk(con: duckdb.DuckDBPyConnection, lake: str, src: str, ledger: tuple[str, str, tuple[str, ...]],
                owner_id: str, k: int, src_wid: int, record: dict) -> None:
    """Copy the rows of source write ``src_wid`` of chunk ``k`` of ``owner_id`` with its ledger row, in one
    transaction, unless ``dest`` has the chunk. ``ledger``: (ledger table, owner column, the chunk's tables):
    ("chunks", "run_id", CHUNK_TABLES) for runs, ("index_chunks", "index_id", INDEX_CHUNK_TABLES) for indexes."""
    table, owner, tables = ledger
    params = {"o": owner_id, "k": k, "w": src_wid}

    def body(c: duckdb.DuckDBPyConnection) -> None:
        if c.execute(f"SELECT count(*) FROM {lake}.{table} WHERE {owner} = $o AND chunk_index = $k",
                     {"o": owner_id, "k": k}).fetchone()[0]:
            return  # appeared concurrently; its content is checked on the next merge
        wid, at = new_write()
        for t in tables:
            sel = ", ".join(quote(col) for col in columns(t))
            n = c.execute(f"INSERT INTO {lake}.{quote(t)} ({sel}, write_id, written_at) SELECT {sel}, $wid, $at "
                          f"FROM {src}.{quote(t)} WHERE {owner} = $o AND chunk_index = $k AND write_id = $w",
                          {**params, "wid": wid, "at": at}).fetchone()[0]
            if integrity.writes_file(c, lake, int(n)):
                insert_checksums(c, lake, t, wid, at)
        rec = {c_: record.get(c_) for c_ in SCHEMA[table]}
        insert(c, lake, table, to_arrow(table, pd.DataFrame([rec]), "merge"), wid, at)

    transaction(con, body, f"merge chunk {owner_id}/{k}")
