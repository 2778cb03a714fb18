"""Run summaries (``quartile_pairs``): what a complete run stores for the Failures page equals computing it from
token_pairs, and a summary that no longer matches the run's chunks is never read."""

from __future__ import annotations

import pandas as pd
import pytest
import store_writer_proc as proc

from core.store import Store, StoreWriter, make_run_id, summarize_runs
from core.store.queries.corpus import LEVEL_COLS
from core.store.queries.quartiles import QUARTILE_TOP_MAX, QUARTILES
from core.store.summaries import runs_to_summarize

N_PAIRS, CHUNK = 13, 5
RUN = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
VARIANTS = [(level, special, quartile) for level in LEVEL_COLS for special in (False, True) for quartile in QUARTILES]


def write_run(store, scale: float = 1.0, chunks: list[int] | None = None, force: bool = False) -> None:
    """The test run (13 pairs, chunks of 5) with relevances times ``scale``; only ``chunks`` when given."""
    with StoreWriter(store) as w:
        assert proc.write_run(w, N_PAIRS, CHUNK, scale=scale, chunks=chunks, force=force) == RUN


def assert_reads_equal_live(s: Store, stored_expected: bool) -> None:
    for level, special, quartile in VARIANTS:
        for k in (8, QUARTILE_TOP_MAX, QUARTILE_TOP_MAX + 1):
            live = s.live_quartile_top_pairs(RUN, quartile, k, special, level)
            stored = s.stored_quartile_top_pairs(RUN, quartile, k, special, level)
            assert (stored is not None) == (stored_expected and k <= QUARTILE_TOP_MAX)
            pd.testing.assert_frame_equal(s.quartile_top_pairs(RUN, quartile, k, special, level), live)
            if stored is not None:
                pd.testing.assert_frame_equal(stored, live)


def test_summary_equals_computing_it_and_is_written_once(tmp_path):
    store = tmp_path / "s"
    write_run(store, chunks=[0, 1])
    assert summarize_runs(store) == []  # incomplete: nothing to summarize yet
    write_run(store)
    with Store(store) as s:
        assert runs_to_summarize(s) == [RUN]
        assert_reads_equal_live(s, stored_expected=False)
    assert summarize_runs(store) == [RUN]
    assert summarize_runs(store) == []  # current: not written again
    with Store(store) as s:
        rows = s.table("quartile_pairs")
        assert set(rows["run_id"]) == {RUN} and rows["rank"].max() <= QUARTILE_TOP_MAX
        assert len(rows.drop_duplicates(["level", "include_special", "quartile"])) == len(VARIANTS)
        assert_reads_equal_live(s, stored_expected=True)


def test_a_summary_of_other_chunks_is_never_read(tmp_path):
    """A forced re-run with other relevances: the old summary no longer matches the chunks, so the quartiles
    are computed from the new rows (never the stale ones) until the run is summarized again."""
    store = tmp_path / "s"
    write_run(store)
    summarize_runs(store)
    with Store(store) as s:
        old = s.quartile_top_pairs(RUN, "high", 5)
    write_run(store, scale=-2.0, force=True)
    with Store(store) as s:
        assert s.stored_quartile_top_pairs(RUN, "high", 5, False, "token") is None
        new = s.quartile_top_pairs(RUN, "high", 5)
        assert not new.equals(old)
        assert_reads_equal_live(s, stored_expected=False)
        assert runs_to_summarize(s) == [RUN]
    assert summarize_runs(store) == [RUN]
    with Store(store) as s:
        assert_reads_equal_live(s, stored_expected=True)
        pd.testing.assert_frame_equal(s.quartile_top_pairs(RUN, "high", 5), new)


def test_summaries_are_for_attribution_runs_only(tmp_path):
    store = tmp_path / "s"
    write_run(store)
    with StoreWriter(store) as w:
        spec = {**proc.run_spec(N_PAIRS, CHUNK), "method": "predict"}
        w.start_run(spec)
        rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "predict", 0)
        for k in w.pending_chunks(rid):
            tables = proc.expected_tables(w.chunk_pair_ids(rid, k))
            w.write_chunk(rid, k, {"predictions": tables["predictions"].assign(explained_score=None)})
    assert summarize_runs(store) == [RUN]
    with pytest.raises(Exception, match="quartile must be one of"):
        Store(store).quartile_top_pairs(RUN, "middle")
