"""Score quartiles: the most relevant text pairs among a run's highest- and lowest-scored pairs (BiLRP paper,
Fig. 5), read from the run's stored summary (``quartile_pairs``) while it matches the run's chunks, computed
from token_pairs otherwise."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from core.store.queries.corpus import LEVEL_COLS, unit_pairs_sql
from core.store.records import StoreError

#: the score quartiles: the ceil(n/4) pairs with the highest and with the lowest model score
QUARTILES = ("high", "low")
#: text pairs stored per run, level, special-token choice and quartile (the Failures page shows up to 20)
QUARTILE_TOP_MAX = 20
QUARTILE_COLS = ["token_a", "token_b", "relevance", "mean_relevance", "count", "n_pairs"]


def content_key(chunks: pd.DataFrame) -> str:
    """The identity of a run's results: a hash of its winning chunks' (chunk_index, content_hash)."""
    rows = sorted(zip(chunks["chunk_index"].astype(int), chunks["content_hash"].astype(str), strict=True))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:32]


class QuartileQueries:
    """Top text pairs of a run's score quartiles."""

    def run_content_key(self, run_id: str) -> str:
        """:func:`content_key` of the run's committed chunks at this snapshot."""
        with self._snapshot():
            chunks = self._df("SELECT chunk_index, content_hash FROM chunks WHERE run_id = $r", {"r": str(run_id)})
        return content_key(chunks)

    def quartile_top_pairs(self, run_id: str, quartile: str = "high", k: int = 5, include_special: bool = False,
                           level: str = "token") -> pd.DataFrame:
        """Most relevant token (or word) pairs among the 25% pairs with the highest/lowest model_score.

        The quartile = the ceil(n/4) pairs with the highest (lowest) model_score, ties broken by pair_id;
        their token pairs are grouped by text (token_a, token_b) and ranked by summed relevance, largest
        first (BiLRP paper, Fig. 5). Columns: token_a, token_b, relevance (sum), mean_relevance, count
        (token pairs), n_pairs. Read from the run's stored summary when it holds ``k`` rows and matches the
        run's chunks (:meth:`stored_quartile_top_pairs`), else computed from token_pairs.
        """
        if quartile not in QUARTILES:
            raise StoreError(f"quartile must be one of {', '.join(map(repr, QUARTILES))}")
        if level not in LEVEL_COLS:
            raise StoreError(f"level must be one of {', '.join(map(repr, LEVEL_COLS))}")
        with self._snapshot():
            stored = self.stored_quartile_top_pairs(run_id, quartile, k, include_special, level)
            return stored if stored is not None else self.live_quartile_top_pairs(run_id, quartile, k,
                                                                                  include_special, level)

    def stored_quartile_top_pairs(self, run_id: str, quartile: str, k: int, include_special: bool,
                                  level: str) -> pd.DataFrame | None:
        """The run's stored top ``k`` (columns of :meth:`quartile_top_pairs`), or None when ``k`` is over
        :data:`QUARTILE_TOP_MAX` or the run has no summary of its current chunks."""
        if int(k) > QUARTILE_TOP_MAX:
            return None
        with self._snapshot():
            rows = self._df("SELECT * FROM quartile_pairs WHERE run_id = $r", {"r": str(run_id)})
            if rows.empty or rows["content_key"].iloc[0] != self.run_content_key(run_id):
                return None
        rows = rows[(rows["level"] == level) & (rows["include_special"] == bool(include_special))
                    & (rows["quartile"] == quartile)].sort_values("rank")
        out = rows[QUARTILE_COLS].head(int(k)).reset_index(drop=True)
        return out.astype({"count": "int64", "n_pairs": "int64"})  # the live query's types

    def live_quartile_top_pairs(self, run_id: str, quartile: str, k: int, include_special: bool,
                                level: str) -> pd.DataFrame:
        """:meth:`quartile_top_pairs` computed from token_pairs (the summary's source)."""
        # the quartile's pairs filter the scans themselves (word units are formed for those pairs only)
        sub = unit_pairs_sql(level, include_special, "pair_id IN (SELECT pair_id FROM q WHERE rn <= ceil(n / 4.0))")
        direction = "DESC" if quartile == "high" else "ASC"
        return self._df(f"""
            WITH q AS (
                SELECT pair_id, row_number() OVER (ORDER BY model_score {direction}, pair_id) AS rn,
                       count(*) OVER () AS n
                FROM predictions WHERE run_id = $run AND model_score IS NOT NULL
            ), up AS ({sub}), top AS (
                SELECT label_a, label_b, sum(relevance) AS relevance, avg(relevance) AS mean_relevance,
                       count(*) AS count
                FROM up GROUP BY label_a, label_b
                ORDER BY relevance DESC, label_a, label_b
                LIMIT $k
            ), spread AS (  -- distinct pairs counted for the k top text pairs only
                SELECT u.label_a, u.label_b, count(DISTINCT u.pair_id) AS n_pairs
                FROM up u SEMI JOIN top t ON u.label_a = t.label_a AND u.label_b = t.label_b
                GROUP BY u.label_a, u.label_b
            )
            SELECT t.label_a AS token_a, t.label_b AS token_b, t.relevance, t.mean_relevance, t.count, s.n_pairs
            FROM top t JOIN spread s ON s.label_a = t.label_a AND s.label_b = t.label_b
            ORDER BY t.relevance DESC, token_a, token_b
        """, {"run": str(run_id), "runs": [str(run_id)], "k": int(k)})

    def quartile_summary(self, run_id: str) -> pd.DataFrame:
        """The ``quartile_pairs`` rows of the run at this snapshot: the top :data:`QUARTILE_TOP_MAX` of every
        level, special-token choice and quartile, computed from token_pairs, with the run's content key."""
        parts: list[pd.DataFrame] = []
        with self._snapshot():
            key = self.run_content_key(run_id)
            for level in LEVEL_COLS:
                for include_special in (False, True):
                    for quartile in QUARTILES:
                        top = self.live_quartile_top_pairs(run_id, quartile, QUARTILE_TOP_MAX, include_special, level)
                        meta: dict[str, Any] = {"run_id": str(run_id), "content_key": key, "level": level,
                                                "include_special": include_special, "quartile": quartile}
                        parts.append(top.assign(**meta, rank=range(1, len(top) + 1)))
        return pd.concat(parts, ignore_index=True)
