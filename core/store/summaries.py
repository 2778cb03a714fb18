"""Run summaries: small aggregates of a complete run's chunks, written once, so that pages read a few rows
instead of aggregating millions of token pairs. Today one: the score quartiles' top text pairs
(``quartile_pairs``, read by ``Store.quartile_top_pairs``). A summary names the chunks it was computed from
(``content_key``); readers ignore one that no longer matches, so a re-run, a merge or a repair can never show
stale numbers, only slower ones until :func:`summarize_runs` runs again."""

from __future__ import annotations

import os
from collections.abc import Iterable

from core.store.catalog import StoreLocation
from core.store.kinds import kind_of_method
from core.store.store import Store
from core.store.writer import StoreWriter


def runs_to_summarize(reader: Store, run_ids: Iterable[str] | None = None) -> list[str]:
    """The complete attribution runs (of ``run_ids``, default all) whose stored summary does not match their
    chunks (or that have none)."""
    runs = reader.runs()
    if run_ids is not None:
        runs = runs[runs["run_id"].isin([str(r) for r in run_ids])]
    stored = reader.table("quartile_pairs").drop_duplicates("run_id").set_index("run_id")["content_key"]
    return [r.run_id for r in runs.itertuples()
            if bool(r.complete) and kind_of_method(r.method).relevances
            and stored.get(r.run_id) != reader.run_content_key(r.run_id)]


def summarize_runs(store: str | os.PathLike | StoreLocation, run_ids: Iterable[str] | None = None, *,
                   writer: StoreWriter | None = None) -> list[str]:
    """Compute and store the summaries of :func:`runs_to_summarize` (one write per run, through ``writer`` or
    a writer of its own); returns the run ids summarized."""
    with Store(store) as reader:
        todo = runs_to_summarize(reader, run_ids)
        summaries = {run_id: reader.quartile_summary(run_id) for run_id in todo}
    if not summaries:
        return []
    own = writer is None
    writer = StoreWriter(store) if own else writer
    try:
        for run_id, rows in summaries.items():
            writer.put_run_summary(run_id, rows)
    finally:
        if own:
            writer.close()
    return todo
