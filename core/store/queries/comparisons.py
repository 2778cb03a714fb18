"""Two runs side by side, on the pairs both cover: what they share, POS maps, token (or word) pairs,
metrics, per-pair score changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.metrics import score_metrics
from core.store.kinds import kind_of_method
from core.store.queries.corpus import has_filter, pair_filter_sql, run_pairs_sql, unit_pairs_sql
from core.store.records import StoreError

#: how the pairs of two runs were matched (Comparability.matched_by)
MATCHED_BY = {
    "dataset": "one dataset: the same pair ids",
    "content": "the same text pair and gold (by content, whatever the datasets' names or row numbers)",
    "aligned": "aligned datasets: the same rows in two languages (same pair ids and gold)",
}


@dataclass(frozen=True)
class Comparability:
    """What two runs can be compared on.

    pair_ids_a, pair_ids_b: the pairs both runs have predictions for, as (A's pair id, B's pair id), aligned
    (the k-th of one is the k-th of the other; sorted by A's id) — every comparison uses exactly these;
    matched_by: how they were matched (a key of MATCHED_BY; "" when nothing matched): the same dataset (same
    pair ids), or by content (the same sentence1, sentence2 and gold, the k-th occurrence of a repeated pair
    with the k-th), so that a prefix (``--limit``), a shard, a subset or another revision of a dataset matches
    the pairs it shares with the whole; or aligned datasets (no pair in common by text, but the same pair ids
    and gold, e.g. ``mstsb:en`` against ``mstsb:en-de``: translations of one row);
    n_a, n_b: the pairs each run has; relevances_a/_b: the run's kind stores token-pair relevances
    (scores-only runs do not); untagged: "A side b", ... for every run side whose words carry no POS tag (a
    language without a tagger); reason: why the runs cannot be compared per pair ("" when they can)."""

    run_a: str
    run_b: str
    n_a: int
    n_b: int
    pair_ids_a: list[int] = field(repr=False)
    pair_ids_b: list[int] = field(repr=False)
    matched_by: str
    same_dataset: bool
    relevances_a: bool
    relevances_b: bool
    untagged: list[str]
    reason: str

    @property
    def n_shared(self) -> int:
        return len(self.pair_ids_a)

    @property
    def aligned(self) -> bool:
        return self.matched_by == "aligned"

    @property
    def pair_ids(self) -> dict[str, list[int]]:
        """run id -> its shared pair ids (what each side's queries filter on)."""
        return {self.run_a: self.pair_ids_a, self.run_b: self.pair_ids_b}

    @property
    def b_of_a(self) -> dict[int, int]:
        """A's pair id -> B's pair id of the same pair."""
        return dict(zip(self.pair_ids_a, self.pair_ids_b, strict=True))

    @property
    def token_pairs_reason(self) -> str:
        """Why token pairs / POS maps cannot be compared ("" when they can)."""
        if self.reason:
            return self.reason
        gone = [r for r, ok in (("A", self.relevances_a), ("B", self.relevances_b)) if not ok]
        if gone:
            return (f"run {' and '.join(gone)} is scores-only (no token-pair relevances): POS maps and token "
                    f"pairs cannot be compared; pick an attribution run")
        return ""

    @property
    def pairs_caption(self) -> str:
        """ "on the 300 shared pairs of A's 1,379 and B's 300" """
        if self.n_a == self.n_b == self.n_shared:
            return f"on the {self.n_shared:,} pairs both runs cover"
        return f"on the {self.n_shared:,} shared pairs of A's {self.n_a:,} and B's {self.n_b:,}"


def match_pairs(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[int], list[int]]:
    """(A's ids, B's ids) of the pairs with the same content in two runs' predictions (columns pair_id,
    sentence1, sentence2, gold): the k-th occurrence of a (sentence1, sentence2, gold) in A with its k-th in B;
    sorted by A's id."""
    key = ["sentence1", "sentence2", "gold"]

    def keyed(df: pd.DataFrame) -> pd.DataFrame:
        d = df[["pair_id", *key]].sort_values("pair_id", kind="stable").copy()
        d["gold"] = pd.to_numeric(d["gold"]).astype(float).round(9)
        d["_k"] = d.groupby(key, dropna=False, sort=False).cumcount()
        return d

    m = keyed(a).merge(keyed(b), on=[*key, "_k"], suffixes=("_a", "_b")).sort_values("pair_id_a", kind="stable")
    return m["pair_id_a"].astype(int).tolist(), m["pair_id_b"].astype(int).tolist()


class ComparisonQueries:
    """Comparisons of two runs, always restricted to the pairs both cover."""

    def comparability(self, run_a: str, run_b: str) -> Comparability | None:
        """What ``run_a`` and ``run_b`` share (see :class:`Comparability`); None when a run does not exist."""
        return self._memo(("comparability", str(run_a), str(run_b)), lambda: self._comparability(run_a, run_b))

    def _comparability(self, run_a: str, run_b: str) -> Comparability | None:
        with self._snapshot():
            runs = self.runs().set_index("run_id")
            if run_a not in runs.index or run_b not in runs.index:
                return None
            ra, rb = runs.loc[run_a], runs.loc[run_b]
            pa, pb = self.predictions(run_a), self.predictions(run_b)
            tagged = self._df("""
                SELECT run_id, side, count(*) FILTER (WHERE pos IS NOT NULL) AS n_tagged FROM tokens
                WHERE run_id IN (SELECT unnest($runs)) AND NOT is_special GROUP BY run_id, side
            """, {"runs": [run_a, run_b]})
        same = ra["dataset_hash"] == rb["dataset_hash"]
        reason = ""
        if same:
            ids = sorted(set(pa["pair_id"].astype(int)) & set(pb["pair_id"].astype(int)))
            ids_a, ids_b, matched_by = ids, ids, "dataset"
        else:
            ids_a, ids_b = match_pairs(pa, pb)
            matched_by = "content"
            if not ids_a:  # no pair in common by text: translations of the same rows?
                ga, gb = pa.set_index("pair_id")["gold"], pb.set_index("pair_id")["gold"]
                common = ga.index.intersection(gb.index)
                if (len(common) > 0 and ra["dataset_pairs"] == rb["dataset_pairs"]
                        and bool(np.allclose(ga.loc[common].to_numpy(float), gb.loc[common].to_numpy(float),
                                             equal_nan=True))):
                    ids_a = ids_b = sorted(int(p) for p in common)
                    matched_by = "aligned"
        if not ids_a and not same:
            matched_by = ""
            reason = (f"{ra['dataset_key']} and {rb['dataset_key']} are different datasets that share no pair (no text pair with the same gold "
                      f"in both, and their rows are not aligned translations): only whole-corpus metrics can be "
                      f"set side by side")
        untagged = [f"{name} side {row.side}" for name, rid in (("A", run_a), ("B", run_b))
                    for row in tagged[tagged["run_id"] == rid].itertuples() if int(row.n_tagged) == 0]
        return Comparability(run_a, run_b, len(pa), len(pb), ids_a, ids_b, matched_by, bool(same),
                             kind_of_method(ra["method"]).relevances, kind_of_method(rb["method"]).relevances,
                             untagged, reason)

    def _token_comparable(self, run_a: str, run_b: str) -> Comparability | None:
        c = self.comparability(run_a, run_b)
        if c is not None and c.token_pairs_reason:
            raise StoreError(c.token_pairs_reason)
        return c

    def compare_pos(self, run_a: str, run_b: str, dataset_key: str | None = None,
                    gold_band: tuple[float, float] | None = None, error_band: tuple[float, float] | None = None,
                    include_special: bool = True, level: str = "token", agg: str = "sum", text: str | None = None,
                    word: str | None = None) -> pd.DataFrame:
        """Per POS pair: pos_heatmap of run_a and run_b side by side and their difference (b - a), both on
        the pairs the two runs share (:meth:`comparability`) and passing the filters. Raises StoreError with
        the reason when token pairs cannot be compared (a scores-only run, unrelated datasets).

        Columns: pos_a, pos_b, relevance_a, relevance_b, diff, relevance_norm_a, relevance_norm_b, diff_norm
        (normalised values differ, comparable across models with different scales), count_a, count_b; cells
        missing in one run count as 0. Sorted by |diff_norm| descending.
        """
        keep = ["pos_a", "pos_b", "relevance", "relevance_norm", "count"]
        cols = ["pos_a", "pos_b", "relevance_a", "relevance_b", "diff", "relevance_norm_a", "relevance_norm_b",
                "diff_norm", "count_a", "count_b"]
        with self._snapshot():
            c = self._token_comparable(run_a, run_b)
            if c is None:
                return pd.DataFrame(columns=cols)
            kw = dict(dataset_key=dataset_key, gold_band=gold_band, error_band=error_band, text=text, word=word,
                      include_special=include_special, level=level, agg=agg)
            ha = self.pos_heatmap([run_a], pair_ids=c.pair_ids_a, **kw)[keep]
            hb = self.pos_heatmap([run_b], pair_ids=c.pair_ids_b, **kw)[keep]
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
                            level: str = "token", gold_band: tuple[float, float] | None = None,
                            error_band: tuple[float, float] | None = None, text: str | None = None,
                            word: str | None = None) -> pd.DataFrame:
        """Token (or word) pairs, by text, whose relevance summed over the shared pairs changed most.

        Texts are matched case-insensitively; level="word" matches word texts (use it across tokenizers).
        Columns: token_a, token_b, relevance_a, relevance_b, diff (= b - a), count_a, count_b, match ("both",
        "A only", "B only": a text pair of one run that the other never has — across languages or
        tokenizers most cannot match, and the table says so instead of reporting 0 as a change); sorted by
        |diff| descending. Raises StoreError when token pairs cannot be compared.
        """
        with self._snapshot():
            c = self._token_comparable(run_a, run_b)
            shared = c.pair_ids if c is not None else {str(run_a): [], str(run_b): []}
            params: dict[str, Any] = {"ra": str(run_a), "rb": str(run_b), "lim": int(limit)}
            if has_filter(gold_band, error_band, text, word):
                sel = pair_filter_sql(params, [run_a, run_b], gold_band, error_band, text, word, shared)
                up = f"SELECT u.* FROM ({unit_pairs_sql(level, include_special)}) u JOIN ({sel}) f " \
                     f"ON f.run_id = u.run_id AND f.pair_id = u.pair_id"
            else:  # only the shared pairs: a filter of the scan itself
                params["runs"] = [str(run_a), str(run_b)]
                up = unit_pairs_sql(level, include_special, run_pairs_sql(params, shared))
            # one aggregation over both runs (a FILTER per side) instead of one per side and a full outer join
            return self._df(f"""
                WITH g AS (
                    SELECT lower(label_a) AS ka, lower(label_b) AS kb,
                           coalesce(first(label_a) FILTER (WHERE run_id = $ra), first(label_a)) AS token_a,
                           coalesce(first(label_b) FILTER (WHERE run_id = $ra), first(label_b)) AS token_b,
                           coalesce(sum(relevance) FILTER (WHERE run_id = $ra), 0) AS relevance_a,
                           coalesce(sum(relevance) FILTER (WHERE run_id = $rb), 0) AS relevance_b,
                           count(*) FILTER (WHERE run_id = $ra) AS count_a,
                           count(*) FILTER (WHERE run_id = $rb) AS count_b
                    FROM ({up}) up GROUP BY ka, kb
                )
                SELECT token_a, token_b, relevance_a, relevance_b, relevance_b - relevance_a AS diff, count_a, count_b,
                       CASE WHEN count_a = 0 THEN 'B only' WHEN count_b = 0 THEN 'A only' ELSE 'both' END AS match
                FROM g
                ORDER BY (count_a > 0 AND count_b > 0) DESC, abs(diff) DESC, token_a, token_b
                LIMIT $lim
            """, params)

    def _shared(self, c: Comparability, gold_band: tuple[float, float] | None) -> tuple[list[int], list[int]]:
        """(A's ids, B's ids) of the pairs both runs cover, within ``gold_band`` (gold is the same on both
        sides)."""
        if gold_band is None or not c.pair_ids_a:
            return c.pair_ids_a, c.pair_ids_b
        inside = set(self.predictions(c.run_a, gold_band=gold_band)["pair_id"].astype(int))
        kept = [(a, b) for a, b in zip(c.pair_ids_a, c.pair_ids_b, strict=True) if a in inside]
        return [a for a, _ in kept], [b for _, b in kept]

    def compare_scores(self, run_a: str, run_b: str, gold_band: tuple[float, float] | None = None) -> pd.DataFrame:
        """Per pair both runs share (see :meth:`comparability`), optionally within a gold band: pair_id (A's),
        pair_id_b (B's id of the same pair), gold, gold_norm, score_a, score_b, delta (= b - a), error_a, error_b,
        sentence1_a, sentence2_a, sentence1_b, sentence2_b; largest |delta| first. Empty when the runs share no
        pair."""
        cols = ["pair_id", "pair_id_b", "gold", "gold_norm", "score_a", "score_b", "delta", "error_a", "error_b",
                "sentence1_a", "sentence2_a", "sentence1_b", "sentence2_b"]
        with self._snapshot():
            c = self.comparability(run_a, run_b)
            if c is None:
                return pd.DataFrame(columns=cols)
            ids_a, ids_b = self._shared(c, gold_band)
            a, b = self.predictions(run_a), self.predictions(run_b)
        keep = ["pair_id", "model_score", "error", "sentence1", "sentence2"]
        pairs = pd.DataFrame({"pair_id": pd.Series(ids_a, dtype="int64"), "pair_id_b": pd.Series(ids_b, dtype="int64")})
        a = a.assign(pair_id=a["pair_id"].astype("int64"))
        b = b.assign(pair_id=b["pair_id"].astype("int64"))
        m = pairs.merge(a[[*keep, "gold", "gold_norm"]], on="pair_id").merge(
            b[keep].rename(columns={"pair_id": "pair_id_b"}), on="pair_id_b", suffixes=("_a", "_b"))
        m = m.rename(columns={"model_score_a": "score_a", "model_score_b": "score_b"})
        m["delta"] = m["score_b"] - m["score_a"]
        m = m.assign(_abs=m["delta"].abs()).sort_values(["_abs", "pair_id"], ascending=[False, True], kind="stable")
        return m[cols].reset_index(drop=True)

    def compare_metrics(self, run_a: str, run_b: str, gold_band: tuple[float, float] | None = None) -> pd.DataFrame:
        """Metrics of two runs side by side on the pairs both cover (within ``gold_band`` when given): rows
        metric, run_a, run_b, diff (= b - a).

        Metrics: n_shared (pairs both cover), spearman, pearson, mse (recomputed from the predictions of the
        shared pairs, so a full run and a 300-pair run of one model give the same values), n_predictions
        (each run's own), mean_model_score, mean_abs_error, mean_abs_residual (shared pairs), seconds,
        pairs_per_s (whole runs), and score_pearson (x100 correlation of the two runs' model_score over the
        shared pairs; same value in both columns). Runs on unrelated datasets share no pair: their
        spearman/pearson/mse are then each run's own (see :meth:`comparability`).
        """
        cols = ["metric", "run_a", "run_b", "diff"]
        with self._snapshot():
            runs = self.runs().set_index("run_id")
            if run_a not in runs.index or run_b not in runs.index:
                return pd.DataFrame(columns=cols)
            c = self.comparability(run_a, run_b)
            ids_a, ids_b = self._shared(c, gold_band)
            shared = {run_a: set(ids_a), run_b: set(ids_b)}
            preds = self._df("""
                SELECT run_id, pair_id, model_score, gold, gold_norm, error, residual FROM predictions
                WHERE run_id IN (SELECT unnest($runs))
            """, {"runs": [run_a, run_b]})
        per: dict[str, dict[str, float]] = {}
        scores: dict[str, pd.Series] = {}
        for rid in (run_a, run_b):
            own = preds[preds["run_id"] == rid]
            g = own[own["pair_id"].isin(shared[rid])] if c.n_shared else own
            m = score_metrics(g["model_score"].to_numpy(float), g["gold"].to_numpy(float),
                              g["gold_norm"].to_numpy(float)) if len(g) else {}
            if not c.n_shared:  # unrelated datasets: each run's own metrics, side by side
                m = {k: runs.at[rid, k] for k in ("spearman", "pearson", "mse")}
            per[rid] = {**m, "n_predictions": len(own), "mean_model_score": g["model_score"].mean(),
                        "mean_abs_error": g["error"].abs().mean(), "mean_abs_residual": g["residual"].abs().mean(),
                        "seconds": runs.at[rid, "seconds"], "pairs_per_s": runs.at[rid, "pairs_per_s"]}
            scores[rid] = g.set_index("pair_id")["model_score"].astype(float)
        if c.n_shared:  # the two runs' scores of each shared pair, in A's order
            both = pd.DataFrame({"a": scores[run_a].reindex(ids_a).to_numpy(), "b": scores[run_b].reindex(ids_b).to_numpy()})
        else:
            both = pd.DataFrame({"a": [], "b": []})
        corr = float(both["a"].corr(both["b"]) * 100) if len(both) > 1 else np.nan
        rows = [("n_shared", len(ids_a), len(ids_a))]
        for m in ("spearman", "pearson", "mse", "n_predictions", "mean_model_score", "mean_abs_error",
                  "mean_abs_residual", "seconds", "pairs_per_s"):
            rows.append((m, per[run_a].get(m, np.nan), per[run_b].get(m, np.nan)))
        rows.append(("score_pearson", corr, corr))
        out = pd.DataFrame(rows, columns=["metric", "run_a", "run_b"])
        out["run_a"] = pd.to_numeric(out["run_a"], errors="coerce").astype(float)
        out["run_b"] = pd.to_numeric(out["run_b"], errors="coerce").astype(float)
        out["diff"] = out["run_b"] - out["run_a"]
        return out
