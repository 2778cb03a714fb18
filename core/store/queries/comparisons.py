"""Two runs side by side: POS maps, token (or word) pairs, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.store.queries.corpus import unit_pairs_sql


class ComparisonQueries:
    """Comparisons of two runs (on the pairs both have where it matters)."""

    def compare_pos(self, run_a: str, run_b: str, dataset_key: str | None = None,
                    gold_band: tuple[float, float] | None = None, error_band: tuple[float, float] | None = None,
                    include_special: bool = True, level: str = "token", agg: str = "sum") -> pd.DataFrame:
        """Per POS pair: pos_heatmap of run_a and run_b side by side and their difference (b - a).

        Columns: pos_a, pos_b, relevance_a, relevance_b, diff, relevance_norm_a, relevance_norm_b, diff_norm
        (normalised values differ, comparable across models with different scales), count_a, count_b; cells
        missing in one run count as 0. Sorted by |diff_norm| descending.
        """
        kw = dict(dataset_key=dataset_key, gold_band=gold_band, error_band=error_band,
                  include_special=include_special, level=level, agg=agg)
        keep = ["pos_a", "pos_b", "relevance", "relevance_norm", "count"]
        with self._snapshot():
            ha = self.pos_heatmap([run_a], **kw)[keep]
            hb = self.pos_heatmap([run_b], **kw)[keep]
        cols = ["pos_a", "pos_b", "relevance_a", "relevance_b", "diff", "relevance_norm_a", "relevance_norm_b",
                "diff_norm", "count_a", "count_b"]
        if ha.empty and hb.empty:
            return pd.DataFrame(columns=cols)
        m = ha.merge(hb, on=["pos_a", "pos_b"], how="outer", suffixes=("_a", "_b"))
        for c in ("relevance_a", "relevance_b", "relevance_norm_a", "relevance_norm_b"):
            m[c] = pd.to_numeric(m[c]).astype(float).fillna(0.0)
        for c in ("count_a", "count_b"):
            m[c] = pd.to_numeric(m[c]).fillna(0).astype("int64")
        m["diff"] = m["relevance_b"] - m["relevance_a"]
        m["diff_norm"] = m["relevance_norm_b"] - m["relevance_norm_a"]
        m = m.assign(_abs=m["diff_norm"].abs()).sort_values(["_abs", "pos_a", "pos_b"], ascending=[False, True, True],
                                                            kind="stable", na_position="last")
        return m[cols].reset_index(drop=True)

    def compare_token_pairs(self, run_a: str, run_b: str, limit: int = 20, include_special: bool = False,
                            level: str = "token") -> pd.DataFrame:
        """Token (or word) pairs, by text, whose relevance summed over the corpus changed most.

        Columns: token_a, token_b, relevance_a, relevance_b, diff (= b - a), count_a, count_b; sorted by
        |diff| descending. level="word" compares word texts (use it across tokenizers).
        """
        sub = unit_pairs_sql(level, include_special)
        return self._df(f"""
            WITH up AS ({sub}),
            a AS (SELECT label_a, label_b, sum(relevance) AS rel, count(*) AS n FROM up
                  WHERE run_id = $ra GROUP BY label_a, label_b),
            b AS (SELECT label_a, label_b, sum(relevance) AS rel, count(*) AS n FROM up
                  WHERE run_id = $rb GROUP BY label_a, label_b)
            SELECT coalesce(a.label_a, b.label_a) AS token_a, coalesce(a.label_b, b.label_b) AS token_b,
                   coalesce(a.rel, 0) AS relevance_a, coalesce(b.rel, 0) AS relevance_b,
                   coalesce(b.rel, 0) - coalesce(a.rel, 0) AS diff,
                   coalesce(a.n, 0) AS count_a, coalesce(b.n, 0) AS count_b
            FROM a FULL OUTER JOIN b ON a.label_a = b.label_a AND a.label_b = b.label_b
            ORDER BY abs(diff) DESC, token_a, token_b
            LIMIT $lim
        """, {"runs": [str(run_a), str(run_b)], "ra": str(run_a), "rb": str(run_b), "lim": int(limit)})

    def compare_metrics(self, run_a: str, run_b: str) -> pd.DataFrame:
        """Metrics of two runs side by side: rows metric, run_a, run_b, diff (= b - a).

        Metrics: spearman, pearson, mse (from the run records), n_predictions, mean_model_score,
        mean_abs_error, mean_abs_residual (from predictions), seconds, pairs_per_s, and score_pearson (x100
        correlation of the two runs' model_score over the pairs in common; same value in both columns).
        """
        cols = ["metric", "run_a", "run_b", "diff"]
        with self._snapshot():
            runs = self.runs().set_index("run_id")
            if run_a not in runs.index or run_b not in runs.index:
                return pd.DataFrame(columns=cols)
            agg = self._df("""
                SELECT run_id, count(*) AS n_predictions, avg(model_score) AS mean_model_score,
                       avg(abs(error)) AS mean_abs_error, avg(abs(residual)) AS mean_abs_residual
                FROM predictions WHERE run_id IN (SELECT unnest($runs)) GROUP BY run_id
            """, {"runs": [run_a, run_b]}).set_index("run_id")
            both = self._df("""
                SELECT corr(a.model_score, b.model_score) * 100 AS c
                FROM (SELECT pair_id, model_score FROM predictions WHERE run_id = $ra) a
                JOIN (SELECT pair_id, model_score FROM predictions WHERE run_id = $rb) b USING (pair_id)
            """, {"ra": run_a, "rb": run_b})
        rows = []
        for m in ("spearman", "pearson", "mse"):
            rows.append((m, runs.at[run_a, m], runs.at[run_b, m]))
        for m in ("n_predictions", "mean_model_score", "mean_abs_error", "mean_abs_residual"):
            rows.append((m, agg[m].get(run_a, np.nan), agg[m].get(run_b, np.nan)))
        for m in ("seconds", "pairs_per_s"):
            rows.append((m, runs.at[run_a, m], runs.at[run_b, m]))
        c = both["c"].iloc[0] if not both.empty else np.nan
        rows.append(("score_pearson", c, c))
        out = pd.DataFrame(rows, columns=["metric", "run_a", "run_b"])
        out["run_a"] = pd.to_numeric(out["run_a"], errors="coerce").astype(float)
        out["run_b"] = pd.to_numeric(out["run_b"], errors="coerce").astype(float)
        out["diff"] = out["run_b"] - out["run_a"]
        return out
