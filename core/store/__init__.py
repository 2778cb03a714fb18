"""SimLens result store: a DuckLake (catalog + Parquet files) written by precompute, read by the dashboard.

Entry points: :class:`Store` (read-only; every query of :mod:`core.store.queries`), :class:`StoreWriter`
(precompute), :func:`merge_stores` (stores built apart), :func:`compact` (maintenance), :func:`migrate_store`
(stores of the old Parquet-directory layout). The schema is declared once in :mod:`core.store.schema`; this
package is the only place in SimLens that writes SQL.

Unknown ids: reader query functions return an *empty* DataFrame (with the documented columns) for unknown
run ids, dataset keys or pair ids, so a dashboard never crashes on a stale selection; use
:meth:`Store.run_info` to test for existence. Only :meth:`Store.load_factors` raises (it returns an array).
"""

from __future__ import annotations

import os

from core.store.catalog import StoreLocation, is_legacy, parse_location
from core.store.kinds import ATTRIBUTE, PREDICT, RUN_KINDS, RunKind, kind_of_method, register_run_kind
from core.store.maintenance import CompactReport, compact
from core.store.merge import merge_stores  # noqa: I001  (needs the writer)
from core.store.migrate import migrate_store
from core.store.queries.catalogue import coverage_label
from core.store.reader import STALE_AFTER_S
from core.store.records import (
    ChunkExistsError,
    StoreError,
    chunk_pair_range,
    dataset_hash,
    decode_factor,
    encode_factor,
    make_eval_id,
    make_run_id,
    parse_shard,
    shard_chunks,
)
from core.store.schema import SCHEMA, TABLES, schema_markdown
from core.store.store import Store
from core.store.summaries import summarize_runs
from core.store.units import WORD_UNIT, pos_pair_aggregate
from core.store.writer import StoreWriter

__all__ = [
    "ATTRIBUTE", "CompactReport", "PREDICT", "compact", "migrate_store", "RUN_KINDS", "SCHEMA", "STALE_AFTER_S", "TABLES", "WORD_UNIT", "ChunkExistsError",
    "RunKind", "Store", "StoreError", "StoreLocation", "StoreWriter", "chunk_pair_range", "completed_chunks",
    "coverage_label",
    "dataset_hash", "decode_factor", "encode_factor", "is_legacy", "kind_of_method", "latest_snapshot", "make_eval_id",
    "make_run_id",
    "merge_stores", "parse_location", "parse_shard", "pos_pair_aggregate", "register_run_kind", "schema_markdown",
    "shard_chunks", "summarize_runs",
]


def completed_chunks(store: str | os.PathLike | StoreLocation, run_id: str) -> set[int]:
    """Indices of the committed chunks of ``run_id`` in the store at ``store``."""
    with Store(store) as s:
        from core.store.records import check_id

        check_id(run_id, "run_id")
        return {int(c) for c in s.table("chunks", run_id=run_id)["chunk_index"]}


def latest_snapshot(store: str | os.PathLike | StoreLocation) -> int | None:
    """The newest snapshot id of the store (changes with every commit), or None when it cannot be read."""
    try:
        with Store(store) as s:
            return s.snapshot_id()
    except StoreError:
        return None
