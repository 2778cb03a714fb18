"""Failure cases: the pairs a model got most wrong, with their strongest token pairs."""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.store.queries.corpus import has_filter, pair_filter_sql
from core.store.records import StoreError

FAILURE_COLS = ["pair_id", "model_score", "gold", "gold_norm", "error", "explained_score", "sentence1",
                "sentence2", "top_pairs", "top_pairs_text"]


class FailureQueries:
    """Worst over- and under-estimated pairs."""

    def failures(self, run_id: str, kind: str = "over", limit: int = 10, top_k: int = 3,
                 include_special: bool = False, gold_band: tuple[float, float] | None = None,
                 error_band: tuple[float, float] | None = None, text: str | None = None,
                 word: str | None = None) -> pd.DataFrame:
        """Pairs the model got most wrong, with each pair's strongest token pairs.

        kind="over": largest error (model_score - gold_norm > 0, similarity over-estimated), kind="under":
        most negative error. Columns: pair_id, model_score, gold, gold_norm, error, explained_score,
        sentence1, sentence2, top_pairs (list of dicts token_a, token_b, i, j, relevance: the ``top_k``
        largest |relevance|), top_pairs_text ("a↔b (+0.123); ..."). Filters as in
        :func:`core.store.queries.corpus.pair_filter_sql` (gold and error bands, sentence text, a word).
        """
        if kind not in ("over", "under"):
            raise StoreError("kind must be 'over' or 'under'")
        direction = "DESC" if kind == "over" else "ASC"
        with self._snapshot():
            info = self._run_row(run_id)
            if info is None:
                return pd.DataFrame(columns=FAILURE_COLS)
            params = {"run": str(run_id), "dh": info["dataset_hash"], "lim": int(limit)}
            join = ""
            if has_filter(gold_band, error_band, text, word):
                join = (f"JOIN ({pair_filter_sql(params, [run_id], gold_band, error_band, text, word)}) f "
                        f"ON f.run_id = p.run_id AND f.pair_id = p.pair_id")
            worst = self._df(f"""
                SELECT p.pair_id, p.model_score, p.gold, p.gold_norm, p.error, p.explained_score, s.sentence1,
                       s.sentence2, p.chunk_index
                FROM predictions p LEFT JOIN _pairs_all s ON s.dataset_hash = $dh AND s.pair_id = p.pair_id {join}
                WHERE p.run_id = $run AND p.error IS NOT NULL
                ORDER BY p.error {direction}, p.pair_id
                LIMIT $lim
            """, params)
            if worst.empty:
                return pd.DataFrame(columns=FAILURE_COLS)
            special = "" if include_special else " AND NOT special_a AND NOT special_b"
            chunks = sorted({int(c) for c in worst["chunk_index"]})
            top = self._df(f"""
                SELECT pair_id, token_a, token_b, i, j, relevance FROM (
                    SELECT pair_id, token_a, token_b, i, j, relevance,
                           row_number() OVER (PARTITION BY pair_id ORDER BY abs(relevance) DESC, i, j) AS rn
                    FROM token_pairs
                    WHERE run_id = $run AND chunk_index IN (SELECT unnest($chunks))
                      AND pair_id IN (SELECT unnest($pids)){special}
                ) WHERE rn <= $k ORDER BY pair_id, rn
            """, {"run": str(run_id), "chunks": chunks, "pids": [int(p) for p in worst["pair_id"]], "k": int(top_k)})
        lists: dict[int, list[dict[str, Any]]] = {}
        for rec in top.to_dict("records"):
            lists.setdefault(int(rec["pair_id"]), []).append(
                {"token_a": rec["token_a"], "token_b": rec["token_b"], "i": int(rec["i"]), "j": int(rec["j"]),
                 "relevance": float(rec["relevance"])})
        worst["top_pairs"] = [lists.get(int(p), []) for p in worst["pair_id"]]
        worst["top_pairs_text"] = [
            "; ".join(f"{d['token_a']}↔{d['token_b']} ({d['relevance']:+.3f})" for d in tp) for tp in worst["top_pairs"]
        ]
        return worst[FAILURE_COLS]
