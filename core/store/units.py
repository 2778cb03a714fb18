"""Word units and the per-pair POS aggregate: the one rule for how subword tokens form words.

A token's *word unit* is its ``word_index``, or ``-1 - token_index`` when it is a special token or has no
word (so each such token is a unit of its own). :data:`WORD_UNIT` states that rule once and renders it both
as SQL (for queries over stored token pairs) and as numpy (for frames in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.store.catalog import duckdb_config


@dataclass(frozen=True)
class WordUnitRule:
    """unit = -1 - index if special or word is NULL else word."""

    def sql(self, special: str, word: str, index: str) -> str:
        """The rule as a SQL expression over the given column expressions."""
        return f"CASE WHEN coalesce({special}, false) OR {word} IS NULL THEN -1 - {index} ELSE {word} END"

    def numpy(self, special: Any, word: Any, index: Any) -> np.ndarray:
        """The rule over array-likes (``word`` may hold NaN/NA/None for no word)."""
        idx = np.asarray(index, dtype=np.int64)
        words = pd.array(pd.Series(word, dtype="object").tolist(), dtype="Int64")
        no_word = np.asarray(pd.isna(words))
        flags = pd.Series(special, dtype="object").fillna(False).astype(bool).to_numpy()
        return np.where(flags | no_word, -1 - idx, np.asarray(words.fillna(0), dtype=np.int64))


WORD_UNIT = WordUnitRule()

_POS_AGG_SQL = f"""
WITH t AS (
    SELECT pair_id, i, j, CAST(relevance AS DOUBLE) AS r, pos_a, pos_b,
           coalesce(special_a, false) AS sa, coalesce(special_b, false) AS sb,
           {WORD_UNIT.sql("special_a", "word_a", "i")} AS ua,
           {WORD_UNIT.sql("special_b", "word_b", "j")} AS ub
    FROM tp_input
), w AS (
    SELECT pair_id, ua, ub, first(pos_a ORDER BY i, j) AS pos_a, first(pos_b ORDER BY j, i) AS pos_b,
           bool_or(sa) AS sa, bool_or(sb) AS sb, sum(r) AS r
    FROM t GROUP BY pair_id, ua, ub
), cells AS (
    SELECT pair_id, pos_a, pos_b, sa, sb, sum(greatest(r, 0)) AS ps, sum(least(r, 0)) AS ns,
           count(*) AS n, 0.0 AS wps, 0.0 AS wns, 0 AS wn
    FROM t GROUP BY pair_id, pos_a, pos_b, sa, sb
    UNION ALL
    SELECT pair_id, pos_a, pos_b, sa, sb, 0.0, 0.0, 0,
           sum(greatest(r, 0)), sum(least(r, 0)), count(*)
    FROM w GROUP BY pair_id, pos_a, pos_b, sa, sb
)
SELECT pair_id, pos_a, pos_b, sa AS special_a, sb AS special_b,
       sum(ps) AS pos_sum, sum(ns) AS neg_sum, CAST(sum(n) AS INTEGER) AS n_token_pairs,
       sum(wps) AS word_pos_sum, sum(wns) AS word_neg_sum, CAST(sum(wn) AS INTEGER) AS n_word_pairs,
       CAST(row_number() OVER (PARTITION BY pair_id, pos_a, pos_b ORDER BY sa, sb) = 1 AS TINYINT) AS pair_count
FROM cells
GROUP BY pair_id, pos_a, pos_b, sa, sb
ORDER BY pair_id, pos_a NULLS LAST, pos_b NULLS LAST, special_a, special_b
"""


def pos_pair_aggregate(token_pairs: pd.DataFrame) -> pd.DataFrame:
    """pos_pairs rows for a frame of token_pairs rows (one chunk or any subset).

    Groups by (pair_id, pos_a, pos_b, special_a, special_b); NULL POS stays NULL. Token level:
    ``pos_sum``/``neg_sum`` = sums of the positive/negative relevances, ``n_token_pairs``. Word level:
    relevances are first summed over the :data:`WORD_UNIT` pairs (a word takes the POS of its first piece),
    then split into ``word_pos_sum``/``word_neg_sum``; ``n_word_pairs`` counts them. ``pair_count`` is 1 on
    one row per (pair_id, pos_a, pos_b) (the one with fewest special tokens). Needs pair_id, i, j,
    relevance; pos_*/word_*/special_* default to NULL/NULL/False.
    """
    from core.store.records import StoreError

    needed = ["pair_id", "i", "j", "relevance"]
    missing = [c for c in needed if c not in token_pairs.columns]
    if missing:
        raise StoreError(f"pos_pair_aggregate: token_pairs is missing column(s) {missing}")
    types = {"pair_id": pa.int64(), "i": pa.int64(), "j": pa.int64(), "relevance": pa.float64(),
             "pos_a": pa.string(), "pos_b": pa.string(), "word_a": pa.int64(), "word_b": pa.int64(),
             "special_a": pa.bool_(), "special_b": pa.bool_()}
    defaults = {"pos_a": None, "pos_b": None, "word_a": None, "word_b": None, "special_a": False, "special_b": False}
    n = len(token_pairs)
    arrays = {}
    for c, typ in types.items():
        values = token_pairs[c] if c in token_pairs.columns else pd.Series([defaults[c]] * n, dtype="object")
        arrays[c] = pa.array(values, typ, from_pandas=True)
    con = _aggregator().cursor()  # a cursor of one in-memory database: connecting anew cost more than the query
    try:
        con.register("tp_input", pa.table(arrays))
        return con.execute(_POS_AGG_SQL).df()
    finally:
        con.close()


_AGGREGATOR: list[duckdb.DuckDBPyConnection] = []


def _aggregator() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB for :func:`pos_pair_aggregate` (cursors of it are independent)."""
    if not _AGGREGATOR:
        _AGGREGATOR.append(duckdb.connect(config=duckdb_config()))
    return _AGGREGATOR[0]


@dataclass(frozen=True)
class SideUnits:
    """One side's word units, in order of their first token: ``order[k]`` is the unit order of token index k
    (-1 for an index the pair does not have); per unit: label, pos, word (NA for special units), special."""

    order: np.ndarray
    label: list[str]
    pos: pd.Series
    word: pd.arrays.IntegerArray
    special: np.ndarray


def _side_units(tp: pd.DataFrame, toks: pd.DataFrame, side: str) -> SideUnits:
    """The word units of one side of a pair's token-level rows ``tp`` (plain Python over the sentence's few
    tokens; a word's label is its text in ``toks``, else its pieces joined without "##")."""
    idx_col = "i" if side == "a" else "j"
    index, rows = np.unique(tp[idx_col].to_numpy(np.int64), return_index=True)  # each token's first row
    words = pd.array(tp[f"word_{side}"].to_numpy(object)[rows].tolist(), dtype="Int64")
    flags = pd.Series(tp[f"special_{side}"].to_numpy(object)[rows]).fillna(False).astype(bool).to_numpy()
    units = WORD_UNIT.numpy(flags, words, index).tolist()
    special = (flags | np.asarray(pd.isna(words))).tolist()
    tokens = [str(x) for x in tp[f"token_{side}"].to_numpy(object)[rows]]
    texts = toks[(toks["side"] == side) & toks["word_index"].notna()].sort_values("token_index")
    word_text = dict(zip(texts["word_index"].tolist()[::-1], texts["word"].tolist()[::-1], strict=True))  # first wins
    pieces: dict[int, list[str]] = {}
    first: dict[int, int] = {}  # unit -> its first token (position in ``index``)
    for k, u in enumerate(units):
        pieces.setdefault(u, []).append(tokens[k])
        first.setdefault(u, k)
    unit_order = {u: n for n, u in enumerate(first)}
    labels, unit_words = [], []
    for u, k in first.items():
        w = words[k]
        text = None if special[k] or pd.isna(w) else word_text.get(int(w))
        joined = pieces[u][0] + "".join(x[2:] if x.startswith("##") else x for x in pieces[u][1:])
        labels.append((text if text is not None and pd.notna(text) else None) or joined)
        unit_words.append(pd.NA if special[k] else int(w))
    order = np.full(int(index.max()) + 1 if len(index) else 0, -1, dtype=np.int64)
    order[index] = [unit_order[u] for u in units]
    starts = list(first.values())
    pos = tp[f"pos_{side}"].iloc[rows[starts]].reset_index(drop=True)
    return SideUnits(order, labels, pos, pd.array(unit_words, dtype="Int16"), flags[starts])


def word_matrix(tp: pd.DataFrame, toks: pd.DataFrame) -> pd.DataFrame:
    """A pair's token-level matrix rows summed into word units (see ``Store.pair_matrix(level="word")``):
    i, j (unit orders), token_a, token_b (labels), relevance (float64 sums), pos_a, pos_b, word_a, word_b,
    special_a, special_b, n_token_pairs; sorted by (i, j)."""
    a, b = _side_units(tp, toks, "a"), _side_units(tp, toks, "b")
    n_b = len(b.label)
    key = a.order[tp["i"].to_numpy(np.int64)] * n_b + b.order[tp["j"].to_numpy(np.int64)]
    size = len(a.label) * n_b
    counts = np.bincount(key, minlength=size)
    sums = np.bincount(key, weights=tp["relevance"].to_numpy(np.float64), minlength=size)
    cells = np.flatnonzero(counts)  # ascending key = sorted by (i, j)
    ia, jb = cells // n_b, cells % n_b
    return pd.DataFrame({
        "i": ia.astype("int64"), "j": jb.astype("int64"),
        "token_a": np.asarray(a.label, dtype=object)[ia], "token_b": np.asarray(b.label, dtype=object)[jb],
        "relevance": sums[cells],
        "pos_a": a.pos.iloc[ia].to_numpy(), "pos_b": b.pos.iloc[jb].to_numpy(),
        "word_a": a.word[ia], "word_b": b.word[jb],
        "special_a": a.special[ia].astype(bool), "special_b": b.special[jb].astype(bool),
        "n_token_pairs": counts[cells].astype("int64"),
    })
