"""Corpus aggregates: POS heat maps and the token pairs behind a cell (score quartiles: ``quartiles``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.store.records import StoreError, quote
from core.store.units import WORD_UNIT

LEVEL_COLS = {  # level -> (positive sum, negative sum, count) columns of pos_pairs
    "token": ("pos_sum", "neg_sum", "n_token_pairs"),
    "word": ("word_pos_sum", "word_neg_sum", "n_word_pairs"),
}
_EXAMPLE_ORDER = {"abs": "abs(t.relevance) DESC", "pos": "t.relevance DESC", "neg": "t.relevance ASC"}
HEATMAP_COLS = ["pos_a", "pos_b", "relevance", "pos_sum", "neg_sum", "count", "n_pairs",
                "relevance_norm", "pos_norm", "neg_norm"]


def check_band(band: Any, what: str) -> tuple[float, float] | None:
    if band is None:
        return None
    try:
        lo, hi = (float(x) for x in band)
    except (TypeError, ValueError):
        raise StoreError(f"{what} must be a (lo, hi) pair of numbers or None") from None
    return lo, hi


def run_pairs_sql(params: dict[str, Any], pair_ids: Mapping[str, Iterable[int]], prefix: str = "") -> str:
    """A condition on run_id and pair_id (columns of ``prefix``): each run's own pairs (adds parameters)."""
    parts = []
    for n, (run, ids) in enumerate(pair_ids.items()):
        params[f"fpr{n}"], params[f"fpids{n}"] = str(run), [int(p) for p in ids]
        parts.append(f"({prefix}run_id = $fpr{n} AND {prefix}pair_id IN (SELECT unnest($fpids{n})))")
    return "(" + (" OR ".join(parts) or "false") + ")"


def pair_filter_sql(params: dict[str, Any], runs: list[str], gold_band: Any = None, error_band: Any = None,
                    text: str | None = None, word: str | None = None,
                    pair_ids: Iterable[int] | Mapping[str, Iterable[int]] | None = None) -> str:
    """SQL selecting (run_id, pair_id) of the runs in ``$runs`` whose pairs pass every filter (adds its
    parameters to ``params``); one definition for every page's filters.

    gold_band (lo, hi) on gold_norm and error_band on error, inclusive; text: a case-insensitive substring of
    either sentence; word: a whole word of either sentence (or a token/word of the run's tokens, so "##s"
    finds word pieces); pair_ids: only these pairs, or run id -> that run's pairs (the pairs two compared runs
    share, each under its own id)."""
    gold_band = check_band(gold_band, "gold_band")
    error_band = check_band(error_band, "error_band")
    params["runs"] = [str(r) for r in runs]
    where = ["r.run_id IN (SELECT unnest($runs))"]
    if gold_band:
        where.append("r.gold_norm BETWEEN $glo AND $ghi")
        params.update(glo=gold_band[0], ghi=gold_band[1])
    if error_band:
        where.append("r.error BETWEEN $elo AND $ehi")
        params.update(elo=error_band[0], ehi=error_band[1])
    if text:
        where.append("(contains(lower(s.sentence1), lower($ftext)) OR contains(lower(s.sentence2), lower($ftext)))")
        params["ftext"] = str(text)
    if word:
        where.append("""(regexp_matches(s.sentence1, $fword_re, 'i') OR regexp_matches(s.sentence2, $fword_re, 'i')
            OR EXISTS (SELECT 1 FROM tokens k WHERE k.run_id = r.run_id AND k.pair_id = r.pair_id
                       AND (lower(k.token) = lower($fword) OR lower(k.word) = lower($fword))))""")
        params.update(fword=str(word).strip(), fword_re=r"(^|\W)" + re.escape(str(word).strip()) + r"(\W|$)")
    if isinstance(pair_ids, Mapping):
        where.append(run_pairs_sql(params, pair_ids, "r."))
    elif pair_ids is not None:
        where.append("r.pair_id IN (SELECT unnest($fpids))")
        params["fpids"] = [int(p) for p in pair_ids]
    return f"""
        SELECT r.run_id, r.pair_id FROM predictions r
        JOIN (SELECT DISTINCT run_id, dataset_hash FROM runs) ru ON ru.run_id = r.run_id
        LEFT JOIN _pairs_all s ON s.dataset_hash = ru.dataset_hash AND s.pair_id = r.pair_id
        WHERE {' AND '.join(where)}"""


def has_filter(gold_band: Any = None, error_band: Any = None, text: str | None = None, word: str | None = None,
               pair_ids: Any = None) -> bool:
    return bool(gold_band or error_band or text or word or pair_ids is not None)


def _norm(values: pd.Series, scale: float) -> pd.Series:
    return values / scale if scale and np.isfinite(scale) and scale > 0 else values * 0.0


def finish_heatmap(df: pd.DataFrame, agg: str) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=HEATMAP_COLS)
    for c in ("pos_sum", "neg_sum"):
        df[c] = df[c].astype(float)
    if agg == "mean":
        denom = df["count"].where(df["count"] > 0).astype(float)
        df["pos_sum"] = df["pos_sum"] / denom
        df["neg_sum"] = df["neg_sum"] / denom
    df["relevance"] = df["pos_sum"] + df["neg_sum"]
    df["relevance_norm"] = _norm(df["relevance"], float(df["relevance"].abs().max()))
    scale = float(max(df["pos_sum"].abs().max(), df["neg_sum"].abs().max()))
    df["pos_norm"] = _norm(df["pos_sum"], scale)
    df["neg_norm"] = _norm(df["neg_sum"], scale)
    return df[HEATMAP_COLS].reset_index(drop=True)


def unit_pairs_sql(level: str, include_special: bool, where: str = "") -> str:
    """SQL for (run_id, pair_id, label_a, label_b, relevance) of the runs in $runs (tokens or word units);
    ``where``: a further condition on the columns run_id and pair_id (applied to every table read)."""
    special = "" if include_special else " AND NOT special_a AND NOT special_b"
    extra = f" AND {where}" if where else ""
    if level == "token":
        return (f"SELECT run_id, pair_id, token_a AS label_a, token_b AS label_b, relevance "
                f"FROM token_pairs WHERE run_id IN (SELECT unnest($runs)){extra}{special}")
    if level != "word":
        raise StoreError("level must be 'token' or 'word'")
    return f"""
        WITH u AS (
            SELECT run_id, pair_id, i, j, relevance, token_a, token_b,
                   {WORD_UNIT.sql("special_a", "word_a", "i")} AS ua, {WORD_UNIT.sql("special_b", "word_b", "j")} AS ub
            FROM token_pairs WHERE run_id IN (SELECT unnest($runs)){extra}{special}
        ), w AS (
            SELECT run_id, pair_id, ua, ub, sum(relevance) AS relevance,
                   first(token_a ORDER BY i) AS ta, first(token_b ORDER BY j) AS tb
            FROM u GROUP BY run_id, pair_id, ua, ub
        ), words AS (
            SELECT run_id, pair_id, side, word_index, first(word ORDER BY token_index) AS word
            FROM tokens WHERE run_id IN (SELECT unnest($runs)){extra} AND word_index IS NOT NULL
            GROUP BY run_id, pair_id, side, word_index
        )
        SELECT w.run_id, w.pair_id, coalesce(wa.word, w.ta) AS label_a, coalesce(wb.word, w.tb) AS label_b,
               w.relevance
        FROM w
        LEFT JOIN words wa ON wa.run_id = w.run_id AND wa.pair_id = w.pair_id AND wa.side = 'a' AND wa.word_index = w.ua
        LEFT JOIN words wb ON wb.run_id = w.run_id AND wb.pair_id = w.pair_id AND wb.side = 'b' AND wb.word_index = w.ub
    """


class CorpusQueries:
    """Aggregates over a run's (or several runs') pairs."""

    def pos_heatmap(self, run_ids: str | Iterable[str] | None = None, dataset_key: str | None = None,
                    gold_band: tuple[float, float] | None = None, error_band: tuple[float, float] | None = None,
                    include_special: bool = True, level: str = "token", agg: str = "sum", text: str | None = None,
                    word: str | None = None, pair_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """POS x POS relevance over the selected runs' pairs (from pos_pairs; fast).

        run_ids: one id, a list, or None (= all runs, optionally of ``dataset_key``). Filters (see
        :func:`pair_filter_sql`): gold_band = (lo, hi) on predictions.gold_norm (0-1), error_band on
        predictions.error (model_score - gold_norm), both inclusive; text (substring of either sentence), word
        (a word or token of either sentence), pair_ids (only these pairs); include_special=False drops cells
        with a special token. level "token"/"word" chooses
        token-pair or word-pair sums; agg "sum" or "mean" (divided by count = number of token/word pairs).
        Columns: pos_a, pos_b, relevance (= pos_sum + neg_sum), pos_sum, neg_sum, count, n_pairs (sentence
        pairs contributing), relevance_norm (÷ largest |relevance|), pos_norm, neg_norm (both ÷ the largest
        |pos_sum| or |neg_sum|, so they share one scale). NULL POS (untagged words) stays NULL.
        """
        if level not in LEVEL_COLS:
            raise StoreError("level must be 'token' or 'word'")
        if agg not in ("sum", "mean"):
            raise StoreError("agg must be 'sum' or 'mean'")
        with self._snapshot():
            runs = self._select_runs(run_ids, dataset_key)
            if not runs:
                return pd.DataFrame(columns=HEATMAP_COLS)
            ps, ns, n = (quote(c) for c in LEVEL_COLS[level])
            params: dict[str, Any] = {"runs": runs}
            join, where = "", ["p.run_id IN (SELECT unnest($runs))"]
            if has_filter(gold_band, error_band, text, word, pair_ids):
                sel = pair_filter_sql(params, runs, gold_band, error_band, text, word, pair_ids)
                join = f"JOIN ({sel}) f ON f.run_id = p.run_id AND f.pair_id = p.pair_id"
            if not include_special:
                where.append("NOT p.special_a AND NOT p.special_b")
            df = self._df(f"""
                SELECT p.pos_a, p.pos_b, sum(p.{ps}) AS pos_sum, sum(p.{ns}) AS neg_sum,
                       CAST(sum(p.{n}) AS BIGINT) AS count, CAST(sum(p.pair_count) AS BIGINT) AS n_pairs
                FROM pos_pairs p {join}
                WHERE {' AND '.join(where)}
                GROUP BY p.pos_a, p.pos_b
                ORDER BY p.pos_a NULLS LAST, p.pos_b NULLS LAST
            """, params)
        return finish_heatmap(df, agg)

    def pos_cell_examples(self, run_id: str, pos_a: str | None, pos_b: str | None, limit: int = 20,
                          include_special: bool = True, order: str = "abs",
                          gold_band: tuple[float, float] | None = None, error_band: tuple[float, float] | None = None,
                          text: str | None = None, word: str | None = None,
                          pair_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """The token pairs behind one heat-map cell (NULL POS matches NULL), strongest first, under the same
        filters as :meth:`pos_heatmap` (so the list is the cell that is shown).

        order: "abs" (largest |relevance|), "pos" (most positive) or "neg" (most negative).
        Columns: pair_id, i, j, token_a, token_b, relevance, word_a, word_b, gold, gold_norm, model_score,
        error, sentence1, sentence2.
        """
        if order not in _EXAMPLE_ORDER:
            raise StoreError(f"order must be one of {list(_EXAMPLE_ORDER)}")
        special = "" if include_special else " AND NOT t.special_a AND NOT t.special_b"
        with self._snapshot():
            info = self._run_row(run_id)
            params: dict[str, Any] = {"run": str(run_id),
                                      "dh": info["dataset_hash"] if info else None, "pa": pos_a, "pb": pos_b,
                                      "lim": int(limit)}
            join = ""
            if has_filter(gold_band, error_band, text, word, pair_ids):
                join = (f"JOIN ({pair_filter_sql(params, [run_id], gold_band, error_band, text, word, pair_ids)}) f "
                        f"ON f.run_id = t.run_id AND f.pair_id = t.pair_id")
            return self._df(f"""
                WITH top AS (
                    SELECT t.pair_id, t.i, t.j, t.token_a, t.token_b, t.relevance, t.word_a, t.word_b
                    FROM token_pairs t {join}
                    WHERE t.run_id = $run AND t.pos_a IS NOT DISTINCT FROM CAST($pa AS VARCHAR)
                      AND t.pos_b IS NOT DISTINCT FROM CAST($pb AS VARCHAR){special}
                    ORDER BY {_EXAMPLE_ORDER[order]}, t.pair_id, t.i, t.j
                    LIMIT $lim
                )
                SELECT t.*, p.gold, p.gold_norm, p.model_score, p.error, s.sentence1, s.sentence2
                FROM top t LEFT JOIN _pairs_all s ON s.dataset_hash = $dh AND s.pair_id = t.pair_id
                LEFT JOIN predictions p ON p.run_id = $run AND p.pair_id = t.pair_id
                ORDER BY {_EXAMPLE_ORDER[order]}, t.pair_id, t.i, t.j
            """, params)
