"""What the store holds: models, datasets, runs (with liveness) and the metrics table."""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.metrics import score_metrics
from core.store.kinds import RUN_KINDS

RUN_COLS = [
    "run_id", "kind", "model_id", "model_name", "dataset_key", "dataset_hash", "method", "layer", "steps",
    "quadrature", "tol", "max_steps", "pooling", "similarity", "code_version", "status", "n_pairs", "n_chunks", "chunk_size",
    "chunks_present", "complete", "started_at", "finished_at", "seconds", "pairs_done", "pairs_per_s", "device",
    "spearman", "pearson", "mse", "error_message", "n_segments", "shards", "heartbeat_at",
    "dataset_pairs", "pairs_written", "partial", "coverage",
]


def coverage_label(covered: Any, total: Any) -> str:
    """How every page and the CLI name a run's coverage: "100 of 1,379 pairs", or "all 1,379 pairs"."""
    if covered is None or pd.isna(covered):
        return "pairs unknown"
    covered = int(covered)
    if total is None or pd.isna(total):
        return f"{covered:,} pairs"
    total = int(total)
    return f"all {total:,} pairs" if covered >= total else f"{covered:,} of {total:,} pairs"

_COMBINE_SQL = """
    SELECT r.run_id, first(r.kind) AS kind, first(r.model_id) AS model_id, first(r.model_name) AS model_name,
           first(r.dataset_key) AS dataset_key, first(r.dataset_hash) AS dataset_hash, first(r.method) AS method,
           first(r.layer) AS layer, first(r.steps) AS steps, first(r.quadrature) AS quadrature,
           first(r.tol) AS tol, first(r.max_steps) AS max_steps,
           first(r.pooling) AS pooling, first(r.similarity) AS similarity,
           string_agg(DISTINCT r.code_version, ', ' ORDER BY r.code_version) AS code_version,
           CASE WHEN bool_or(r.status = 'failed') THEN 'failed'
                WHEN bool_or(r.status = 'interrupted') THEN 'interrupted'
                WHEN bool_or(r.status = 'running') THEN 'running' ELSE 'done' END AS status,
           first(r.n_pairs) AS n_pairs, first(r.n_chunks) AS n_chunks, first(r.chunk_size) AS chunk_size,
           min(r.started_at) AS started_at,
           CASE WHEN bool_and(r.finished_at IS NOT NULL) THEN max(r.finished_at) END AS finished_at,
           sum(r.seconds) AS seconds, sum(r.pairs_done) AS pairs_done,
           CASE WHEN count(*) = 1 THEN first(r.pairs_per_s)
                ELSE sum(r.pairs_done) / nullif(sum(r.seconds), 0) END AS pairs_per_s,
           string_agg(DISTINCT r.device, ', ' ORDER BY r.device) AS device,
           first(r.spearman) AS spearman, first(r.pearson) AS pearson, first(r.mse) AS mse,
           string_agg(r.error_message, '; ' ORDER BY r.shard) AS error_message,
           count(*) AS n_segments, string_agg(r.shard, ',' ORDER BY r.shard) AS shards,
           max(r.heartbeat_at) AS heartbeat_at
    FROM _segments r
    GROUP BY r.run_id
    ORDER BY started_at DESC NULLS LAST, r.run_id
"""


class CatalogueQueries:
    """Models, datasets, runs."""

    def models(self) -> pd.DataFrame:
        """All models (models table)."""
        return self._df("SELECT * FROM models ORDER BY name, model_id")

    def datasets(self) -> pd.DataFrame:
        """All datasets (datasets table: each key's latest revision)."""
        return self._df("SELECT * FROM datasets ORDER BY dataset_key")

    def runs(self, status: str | None = None) -> pd.DataFrame:
        """One row per run (segments of all shards combined), newest first.

        status: "failed" if any segment failed, else "interrupted" if a segment's writer is gone without
        finishing (resume it with the same command), else "running" if any runs, else "done".
        seconds/pairs_done are summed over segments (and over the processes that resumed them); metrics of
        multi-segment runs are recomputed from the stored predictions. Extra columns: model_name,
        chunks_present, complete (all n_chunks present), n_segments, shards, heartbeat_at.
        """
        with self._snapshot():
            seg = self._df("SELECT r.*, m.name AS model_name FROM runs r LEFT JOIN models m USING (model_id)")
            if seg.empty:
                return pd.DataFrame(columns=RUN_COLS)
            seg["status"] = self.live_status(seg)
            with self._lock:
                self._con.register("_segments", seg)
                try:
                    df = self._con.execute(_COMBINE_SQL).df()
                finally:
                    self._con.unregister("_segments")
            present = self._df("SELECT run_id, count(*) AS n FROM chunks GROUP BY run_id").set_index("run_id")["n"]
            df["chunks_present"] = df["run_id"].map(present).fillna(0).astype("int64")
            df["complete"] = df["chunks_present"] >= df["n_chunks"]
            sizes = self._df("SELECT dataset_hash, first(n_pairs) AS n FROM _datasets_rev GROUP BY dataset_hash")
            df["dataset_pairs"] = df["dataset_hash"].map(sizes.set_index("dataset_hash")["n"]).astype("Int64")
            written = self._df("SELECT run_id, sum(n_pairs) AS n FROM chunks GROUP BY run_id").set_index("run_id")["n"]
            df["pairs_written"] = df["run_id"].map(written).fillna(0).astype("int64")
            # what the run's numbers cover now: its pairs when every chunk is written, else the pairs written so far
            # (a running, interrupted or partly sharded run: "128 of 1,379 pairs")
            covered = df["n_pairs"].where(df["complete"], df["pairs_written"])
            df["partial"] = (covered < df["dataset_pairs"]).fillna(False).astype(bool)
            df["coverage"] = [coverage_label(n, t) for n, t in zip(covered, df["dataset_pairs"], strict=True)]
            multi = df.loc[df["n_segments"] > 1, "run_id"].tolist()
            if multi:
                preds = self._df("SELECT run_id, model_score, gold, gold_norm FROM predictions "
                                 "WHERE run_id IN (SELECT unnest($runs))", {"runs": multi})
                for rid, g in preds.groupby("run_id"):
                    m = score_metrics(g["model_score"].to_numpy(float), g["gold"].to_numpy(float),
                                      g["gold_norm"].to_numpy(float))
                    for k, v in m.items():
                        df.loc[df["run_id"] == rid, k] = v
        if status is not None:
            df = df[df["status"] == status]
        return df[RUN_COLS].reset_index(drop=True)

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        """The runs() row of ``run_id`` as a dict, or None if the run does not exist."""
        df = self.runs()
        df = df[df["run_id"] == run_id]
        return None if df.empty else df.iloc[0].to_dict()

    def metrics_table(self, per_method: bool = False) -> pd.DataFrame:
        """Spearman/Pearson (x100) and MSE per (model, dataset) — or per (model, dataset, method) with
        ``per_method`` — long form, each from the *most complete* finished run.

        The run of each group is the finished ("done") one that wrote the most pairs of its dataset; among equally complete runs scores-only runs (kinds without relevances) are preferred,
        then the latest. A 100-pair run is therefore never chosen over a full one. Columns: model_id,
        model_name, dataset_key, method, spearman, pearson, mse, n_pairs (pairs the run covers),
        dataset_pairs, coverage ("100 of 1,379 pairs" / "all 1,379 pairs"), partial, run_id, complete.
        Pivot with ``df.pivot(index="model_name", columns="dataset_key", values="spearman")``.
        """
        cols = ["model_id", "model_name", "dataset_key", "method", "spearman", "pearson", "mse", "n_pairs",
                "dataset_pairs", "coverage", "partial", "run_id", "complete"]
        runs = self.runs(status="done")
        if runs.empty:
            return pd.DataFrame(columns=cols)
        scores_only = [k for k, kind in RUN_KINDS.items() if not kind.relevances]
        runs = runs.assign(_pred=runs["kind"].isin(scores_only), _n=runs["pairs_written"].astype(float))
        runs = runs.sort_values(["_n", "_pred", "finished_at"], ascending=False, kind="stable")
        key = ["model_id", "dataset_key", "method"] if per_method else ["model_id", "dataset_key"]
        best = runs.drop_duplicates(key)
        return best.sort_values(["model_name", "dataset_key", "method"])[cols].reset_index(drop=True)

    def _run_row(self, run_id: str) -> dict[str, Any] | None:
        df = self._df("SELECT first(dataset_key) AS dataset_key, first(dataset_hash) AS dataset_hash, "
                      "first(chunk_size) AS chunk_size, first(n_pairs) AS n_pairs FROM runs WHERE run_id = $run "
                      "GROUP BY run_id", {"run": str(run_id)})
        return None if df.empty else df.iloc[0].to_dict()

    def _select_runs(self, run_ids: Any, dataset_key: str | None) -> list[str]:
        df = self._df("SELECT DISTINCT run_id, dataset_key FROM runs")
        if run_ids is not None:
            wanted = {run_ids} if isinstance(run_ids, str) else {str(r) for r in run_ids}
            df = df[df["run_id"].isin(wanted)]
        if dataset_key is not None:
            df = df[df["dataset_key"] == dataset_key]
        return sorted(df["run_id"].tolist())

