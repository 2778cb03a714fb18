"""A run's progress while it runs: who committed which chunks, and when (the chunks ledger)."""

from __future__ import annotations

import pandas as pd

WORKER_COLS = ["host", "pid", "chunks", "pairs", "seconds", "pairs_per_s", "first_commit", "last_commit"]
TIMELINE_COLS = ["committed_at", "host", "pid", "n_pairs", "pairs_done"]


class ProgressQueries:
    """Per-worker progress of a run, from the chunks that count (the first committed write of each)."""

    def run_workers(self, run_id: str) -> pd.DataFrame:
        """One row per process that committed chunks of the run (a Ray actor, a shard's writer, a resumed run):
        host, pid, chunks, pairs, seconds (computing and committing its chunks), pairs_per_s (pairs / seconds),
        first_commit, last_commit (UTC). Ordered by first commit; empty when no chunk is committed yet."""
        return self._df("""
            SELECT host, pid, count(*) AS chunks, sum(n_pairs) AS pairs, sum(seconds) AS seconds,
                   sum(n_pairs) / nullif(sum(seconds), 0) AS pairs_per_s,
                   min(committed_at) AS first_commit, max(committed_at) AS last_commit
            FROM chunks WHERE run_id = $r
            GROUP BY host, pid ORDER BY first_commit, host, pid
        """, {"r": str(run_id)}).reindex(columns=WORKER_COLS)

    def chunk_timeline(self, run_id: str) -> pd.DataFrame:
        """The run's committed chunks in commit order: committed_at, host, pid, n_pairs, and pairs_done (the
        run's pairs committed up to and including this chunk)."""
        return self._df("""
            SELECT committed_at, host, pid, n_pairs,
                   sum(n_pairs) OVER (ORDER BY committed_at, chunk_index ROWS UNBOUNDED PRECEDING) AS pairs_done
            FROM chunks WHERE run_id = $r ORDER BY committed_at, chunk_index
        """, {"r": str(run_id)}).reindex(columns=TIMELINE_COLS)
