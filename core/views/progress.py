"""A run's progress and its workers, for the Overview's "Run progress" section (pure: pandas in and out)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from core.views.runs import display_status, is_na

LIVE_STATUSES = ("running", "interrupted")


def progress_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a progress view offers: running and interrupted ones first (newest first within each), then
    the rest in the given order."""
    live = runs["status"].isin(LIVE_STATUSES)
    return pd.concat([runs[live], runs[~live]]).reset_index(drop=True)


def worker_label(host: Any, pid: Any) -> str:
    return f"{host} · pid {int(pid)}" if not is_na(pid) else str(host)


def worker_table(workers: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """``Store.run_workers`` rows for display: worker (host · pid), chunks, pairs, share of the run's committed
    pairs, seconds, pairs/s, last commit and seconds since it (``now``: naive UTC)."""
    total = workers["pairs"].sum()
    out = pd.DataFrame({
        "worker": [worker_label(h, p) for h, p in zip(workers["host"], workers["pid"], strict=True)],
        "chunks": workers["chunks"].astype("int64"),
        "pairs": workers["pairs"].astype("int64"),
        "share": workers["pairs"] / total if total else 0.0,
        "seconds": workers["seconds"],
        "pairs_per_s": workers["pairs_per_s"],
        "last_commit": workers["last_commit"],
        "since_last_s": [(now - pd.Timestamp(t)).total_seconds() if not is_na(t) else None
                         for t in workers["last_commit"]],
    })
    return out.reset_index(drop=True)


def timeline_frame(timeline: pd.DataFrame) -> pd.DataFrame:
    """``Store.chunk_timeline`` rows with a worker label, for :func:`core.charts.progress_chart`."""
    return timeline.assign(worker=[worker_label(h, p) for h, p in zip(timeline["host"], timeline["pid"],
                                                                        strict=True)])


def progress_caption(run: Mapping[str, Any], workers: pd.DataFrame) -> str:
    """``running: 12 of 35 chunks (190 of 1,379 pairs) by 2 workers, 3.1 pairs/s over 61 s.`` (plain text)."""
    status = display_status(run)
    n_chunks, present = run.get("n_chunks"), run.get("chunks_present")
    pairs, n_pairs = int(workers["pairs"].sum()) if len(workers) else 0, run.get("n_pairs")
    text = (f"{status}: {int(present or 0):,} of {int(n_chunks or 0):,} chunks ({pairs:,} of "
            f"{int(n_pairs or 0):,} pairs) by {len(workers)} worker{'s' if len(workers) != 1 else ''}")
    seconds, rate = run.get("seconds"), run.get("pairs_per_s")
    if not is_na(seconds) and seconds:
        rate = rate if not is_na(rate) else (pairs / seconds)
        text += f", {rate:.3g} pairs/s over {seconds:,.0f} s"
    if status == "interrupted":
        text += "; its writer is gone: resume it with the same command"
    return text + "."
