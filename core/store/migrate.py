"""Converting a store of the Parquet-directory layout (format 1, ``SIMLENS_STORE.json``) into a DuckLake store
(``python -m precompute migrate OLD NEW``), and recording the models of stores written before model ids were
content hashes under their content ids (``python -m precompute migrate STORE``; ``docs/model-identity.md``).

Only this module knows the old layout, and only to read it: the latest revision ``<stem>@<rev>.parquet`` of
every record under ``meta/<table>/`` and ``runs/<run_id>/``, and the complete chunk directories
``chunks/run=<id>/chunk=<k>/<table>.<tag>.parquet`` (``.tmp-*`` leftovers are ignored). Records go first, then
each chunk in one transaction, then the run segments; a killed migration resumes where it stopped, and
migrating again changes nothing. The old layout has no checksums: a file that is not valid Parquet is refused,
naming it; every file of the new store gets its checksum as it is written (and files of ``new`` written before
checksums existed get theirs at the end).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from core.model_files import content_revision, legacy_model_id, local_model_path, model_id_of
from core.store.catalog import LEGACY_MARKER, StoreLocation, is_legacy, parse_location, transaction
from core.store.kinds import kind_of_method
from core.store.prepare import content_hash
from core.store.records import StoreError, to_arrow
from core.store.schema import CHUNK_TABLES, SCHEMA
from core.store.summaries import summarize_runs
from core.store.writer import StoreWriter, insert, new_write

_REV = re.compile(r"^(?P<stem>[^.@][^@]*)@(?P<rev>\d+)\.parquet$")
_CHUNK_DIR = re.compile(r"^chunk=(\d+)$")
_CHUNK_FILE = re.compile(r"^(?P<table>[a-z_]+)\.[0-9a-f]{8}\.parquet$")


def _latest(directory: Path) -> list[Path]:
    """The highest revision of every record in ``directory``."""
    best: dict[str, tuple[int, Path]] = {}
    for p in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
        m = _REV.match(p.name)
        if m and int(m.group("rev")) >= best.get(m.group("stem"), (-1, p))[0]:
            best[m.group("stem")] = (int(m.group("rev")), p)
    return [p for _, p in sorted(best.values(), key=lambda x: str(x[1]))]


def _read(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:
        raise StoreError(f"migrate: cannot read {path}: {exc}") from None


def migrate_store(old: str | os.PathLike, new: str | os.PathLike | StoreLocation) -> dict[str, int]:
    """Copy the old-layout store at ``old`` into the DuckLake store ``new`` (created if needed); returns counts."""
    src = Path(old)
    if not is_legacy(parse_location(src)):
        raise StoreError(f"migrate: {str(src)!r} is not a store of the old Parquet-directory layout "
                         f"(no {LEGACY_MARKER})")
    counts = dict.fromkeys(("datasets", "models", "evaluations", "chunks", "chunks_skipped", "segments"), 0)
    with StoreWriter(new) as w:
        hashes = _datasets(src, w, counts)
        for path in _latest(src / "meta" / "models"):
            for row in _read(path).to_dict("records"):
                counts["models"] += w.put_model(row, replace=True) == "written"
        have = {r[0]: r[1] for r in w._con.execute(
            f"SELECT eval_id, max(created_at) FROM {w._lake}.evaluations GROUP BY eval_id").fetchall()}
        for path in _latest(src / "meta" / "evaluations"):
            df = _read(path)
            if len(df) and have.get(df["eval_id"].iloc[0]) != df["created_at"].iloc[0]:
                w._write_records({"evaluations": df}, f"migrate {path}")
                counts["evaluations"] += 1
        segments = [row for d in sorted((src / "runs").iterdir()) if d.is_dir() and not d.name.startswith(".")
                    for path in _latest(d) for row in _read(path).to_dict("records")]
        for run_dir in sorted((src / "chunks").glob("run=*")):
            run_id = run_dir.name[len("run="):]
            done = w.completed_chunks(run_id)
            for chunk_dir in sorted(run_dir.iterdir()):
                m = _CHUNK_DIR.match(chunk_dir.name)
                if not m or not chunk_dir.is_dir():
                    continue
                if int(m.group(1)) in done:
                    counts["chunks_skipped"] += 1
                    continue
                _chunk(w, run_id, int(m.group(1)), chunk_dir)
                counts["chunks"] += 1
        latest = {(s["run_id"], s["shard"]) for s in w._con.execute(
            f"SELECT run_id, shard FROM {w._lake}.runs").df().to_dict("records")}
        for seg in segments:
            if (seg["run_id"], seg["shard"]) in latest:
                continue
            seg.update(kind=kind_of_method(seg["method"]).name, dataset_hash=hashes.get(seg["dataset_key"]),
                       heartbeat_at=seg.get("finished_at") or seg.get("started_at"))
            row = to_arrow("runs", pd.DataFrame([seg]), f"migrate run {seg['run_id']}")
            wid, at = new_write()
            transaction(w._con, lambda c, row=row, wid=wid, at=at: insert(c, w._lake, "runs", row, wid, at),
                        f"migrate run {seg['run_id']}")
            counts["segments"] += 1
        counts["summaries"] = len(summarize_runs(new, writer=w))
        counts["model_ids"] = len(_map_model_ids(w))
        counts["checksums_added"] = len(w.add_missing_checksums())  # files of ``new`` written before checksums
    return counts


# --------------------------------------------------------------------------------------------------
# model ids by content
# --------------------------------------------------------------------------------------------------


def _name_variants(name: str) -> list[tuple[str, str]]:
    """(name, variant) readings of a stored display name ``name`` or ``name [variant]``."""
    found = [(name, "")]
    cut = name.rfind(" [")
    if name.endswith("]") and cut > 0:
        found.append((name[:cut], name[cut + 2 : -1]))
    return found


def _hub_cache(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not in this machine's hub cache (or not a hub id): nothing to compare
        return None


def _folders(row: dict[str, Any], name: str) -> Iterator[Path]:
    """Where the model of a models record may be on this machine: its recorded folder, the folder or packaged
    model its name gives, or the hub cache (offline)."""
    for source in (row.get("path"), name):
        folder = local_model_path(source) if source else None
        if folder is not None:
            yield folder
    folder = _hub_cache(name)
    if folder is not None:
        yield folder


def content_identity(row: dict[str, Any]) -> tuple[str, str] | None:
    """(content id, content revision) of a models record written under the name-based id of older SimLens, or
    None when the record's id is not such an id or its model is not on this machine with the same weights
    (the recorded revision: :func:`core.model_files.legacy_model_id` of that folder matches)."""
    for name, variant in _name_variants(str(row["name"])):
        for folder in _folders(row, name):
            if legacy_model_id(name, folder, variant) == row["model_id"]:
                revision = content_revision(folder)
                return model_id_of(revision, variant), revision
    return None


def _map_model_ids(w: StoreWriter) -> dict[str, str]:
    """Rewrite every name-based model id of the store to its content id (:func:`content_identity`), one model per
    transaction: its models record moves to the new id and the runs, evaluations and indexes of the old id
    follow (their own ids stay). Returns old -> new id; records whose model is not here stay as they were."""
    models = w._con.execute(f"SELECT * EXCLUDE (written_at) FROM {w._lake}.models QUALIFY row_number() OVER ("
                            f"PARTITION BY model_id ORDER BY written_at DESC, write_id DESC) = 1").df()
    referencing = [t for t, cols in SCHEMA.items() if "model_id" in cols and t != "models"]
    mapped = {}
    for row in models.to_dict("records"):
        found = content_identity(row)
        if found is None or found[0] == row["model_id"]:
            continue
        ids = {"old": row["model_id"], "new": found[0]}
        record = {**{c: row.get(c) for c in SCHEMA["models"]}, "model_id": found[0], "revision": found[1]}
        rows = None if w._latest("models", "model_id", found[0]) else \
            to_arrow("models", pd.DataFrame([record]), f"migrate model {ids['old']}")

        def body(c: Any, ids: dict[str, str] = ids, rows: Any = rows) -> None:
            if rows is not None:
                insert(c, w._lake, "models", rows, *new_write())
            for table in referencing:
                c.execute(f"UPDATE {w._lake}.{table} SET model_id = $new WHERE model_id = $old", ids)
            c.execute(f"DELETE FROM {w._lake}.models WHERE model_id = $old", {"old": ids["old"]})

        transaction(w._con, body, f"migrate model id {ids['old']} -> {ids['new']}")
        mapped[ids["old"]] = ids["new"]
    return mapped


def migrate_model_ids(store: str | os.PathLike | StoreLocation) -> dict[str, str]:
    """Record the models of a store written before model ids were content hashes under their content ids, so
    that their runs, evaluations and indexes meet those of the same model written now; returns old -> new id.
    Running it again changes nothing; a model that is not on this machine keeps its old id (run it again where
    it is)."""
    with StoreWriter(store, create=False) as w:
        return _map_model_ids(w)


def _datasets(src: Path, w: StoreWriter, counts: dict[str, int]) -> dict[str, str]:
    """Put every dataset; returns dataset_key -> dataset_hash."""
    pairs = {}
    for path in _latest(src / "meta" / "pairs"):
        df = _read(path)
        if len(df):
            pairs[df["dataset_key"].iloc[0]] = df
    hashes = {}
    for path in _latest(src / "meta" / "datasets"):
        for meta in _read(path).to_dict("records"):
            key = meta["dataset_key"]
            if key not in pairs:
                raise StoreError(f"migrate: dataset {key!r} has no pairs file under {src / 'meta' / 'pairs'}")
            meta = {k: v for k, v in meta.items() if k in SCHEMA["datasets"] and not pd.isna(v)}
            if isinstance(meta.get("skipped"), str):
                meta["skipped"] = json.loads(meta["skipped"] or "{}")
            counts["datasets"] += w.put_dataset(meta, pairs[key].sort_values("pair_index")) == "written"
            hashes[key] = w._latest("datasets", "dataset_key", key)["dataset_hash"]
    return hashes


def _chunk(w: StoreWriter, run_id: str, k: int, chunk_dir: Path) -> None:
    files = {m.group("table"): p for p in chunk_dir.iterdir() if (m := _CHUNK_FILE.match(p.name))}
    tables = {}
    for t in CHUNK_TABLES:
        df = _read(files[t]) if t in files else pd.DataFrame()
        df = df.assign(run_id=run_id, chunk_index=k) if len(df) else df
        tables[t] = to_arrow(t, df, f"migrate {chunk_dir}")
    n_pairs = tables["predictions"].num_rows
    record = {"run_id": run_id, "chunk_index": k, "n_pairs": n_pairs, "content_hash": content_hash(tables)}

    def body(c: Any) -> None:
        if c.execute(f"SELECT count(*) FROM {w._lake}.chunks WHERE run_id = $r AND chunk_index = $k",
                     {"r": run_id, "k": k}).fetchone()[0]:
            return
        wid, at = new_write()
        for t, rows in tables.items():
            insert(c, w._lake, t, rows, wid, at)
        insert(c, w._lake, "chunks", to_arrow("chunks", pd.DataFrame([{**record, "committed_at": at}]), "migrate"),
               wid, at)

    transaction(w._con, body, f"migrate chunk {chunk_dir}")
