"""One run's pairs: predictions, a pair's sentences, runs, tokens, factors and relevance matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store.queries.corpus import has_filter, pair_filter_sql, run_pairs_sql
from core.store.records import StoreError, decode_factor, quote
from core.store.units import word_matrix

_MATRIX_COLS = ["i", "j", "token_a", "token_b", "relevance", "pos_a", "pos_b", "word_a", "word_b",
                "special_a", "special_b"]


class PairQueries:
    """Per run and per pair."""

    def _pair_params(self, run_id: str, pair_id: int) -> dict[str, Any] | None:
        """{run, chunk, pid} query parameters for one pair of a run (chunk: for file pruning)."""
        chunk = self._pair_chunks({str(run_id): int(pair_id)}).get(str(run_id))
        return None if chunk is None else {"run": str(run_id), "chunk": chunk, "pid": int(pair_id)}

    def predictions(self, run_id: str, gold_band: tuple[float, float] | None = None,
                    error_band: tuple[float, float] | None = None, text: str | None = None,
                    word: str | None = None) -> pd.DataFrame:
        """Predictions of a run (plus sentence1/sentence2), ordered by pair_id; optionally only the pairs
        passing the filters of :func:`core.store.queries.corpus.pair_filter_sql`."""
        with self._snapshot():
            info = self._run_row(run_id)
            params = {"run": str(run_id), "dh": info["dataset_hash"] if info else None}
            join = ""
            if has_filter(gold_band, error_band, text, word):
                join = (f"JOIN ({pair_filter_sql(params, [run_id], gold_band, error_band, text, word)}) f "
                        f"ON f.run_id = p.run_id AND f.pair_id = p.pair_id")
            return self._df(f"""
                SELECT p.* EXCLUDE (chunk_index), s.sentence1, s.sentence2
                FROM predictions p LEFT JOIN _pairs_all s ON s.dataset_hash = $dh AND s.pair_id = p.pair_id {join}
                WHERE p.run_id = $run ORDER BY p.pair_id
            """, params)

    def pair_info(self, dataset_key: str, pair_id: int) -> pd.DataFrame:
        """The pair's sentences and gold plus its dataset's name/split/languages (0 or 1 row)."""
        return self._df("""
            SELECT s.dataset_key, s.pair_id, s.sentence1, s.sentence2, s.gold, s.gold_norm,
                   d.name, d.split, d.lang_a, d.lang_b, d.gold_min, d.gold_max
            FROM pairs s LEFT JOIN datasets d ON d.dataset_key = s.dataset_key
            WHERE s.dataset_key = $ds AND s.pair_id = $pid
        """, {"ds": str(dataset_key), "pid": int(pair_id)})

    def pair_runs(self, dataset_key: str, pair_id: int) -> pd.DataFrame:
        """Every stored run that has this pair, on any dataset: the pair is its content (sentence1, sentence2,
        gold), so a run on a prefix, a subset or another dataset holding the same pair under another id counts.
        Run/model columns + pair_id (the pair's id in that run's dataset) + the pair's prediction."""
        cols = ["run_id", "model_id", "model_name", "method", "layer", "steps", "quadrature", "tol", "max_steps",
                "status"]
        pcols = ["model_score", "explained_score", "matrix_sum", "residual", "gold", "gold_norm", "error",
                 "n_tokens_a", "n_tokens_b", "truncated", "steps_a", "steps_b", "capped"]
        with self._snapshot():
            same = self._df("""
                SELECT o.dataset_hash, min(o.pair_id) AS pair_id
                FROM pairs p JOIN _pairs_all o
                  ON o.sentence1 = p.sentence1 AND o.sentence2 = p.sentence2 AND o.gold = p.gold
                WHERE p.dataset_key = $ds AND p.pair_id = $pid GROUP BY o.dataset_hash
            """, {"ds": str(dataset_key), "pid": int(pair_id)})
            runs = self.runs().merge(same, on="dataset_hash", how="inner")
            if runs.empty:
                return pd.DataFrame(columns=[*cols, "pair_id", *pcols])
            params: dict[str, Any] = {}
            where = run_pairs_sql(params, {r: [int(p)] for r, p in zip(runs["run_id"], runs["pair_id"], strict=True)})
            preds = self._df(f"SELECT run_id, pair_id, {', '.join(quote(c) for c in pcols)} FROM predictions "
                             f"WHERE {where}", params)
        out = runs[[*cols, "pair_id"]].merge(preds, on=["run_id", "pair_id"], how="inner")
        return out.sort_values(["model_name", "method", "layer", "run_id"], kind="stable").reset_index(drop=True)

    def tokens(self, run_id: str, pair_id: int) -> pd.DataFrame:
        """Tokens of both sentences of a pair in a run, ordered by side, token_index."""
        with self._snapshot():
            params = self._pair_params(run_id, pair_id)
            if params is None:
                return self.table("tokens").head(0)
            return self._df("""
                SELECT * FROM tokens WHERE run_id = $run AND chunk_index = $chunk AND pair_id = $pid
                ORDER BY side, token_index
            """, params)

    def load_factors(self, run_id: str, pair_id: int, side: str,
                     return_norm: bool = False) -> np.ndarray | tuple[np.ndarray, float | None]:
        """Factor vectors of one sentence as a float32 array (n_tokens, dim), by token_index.

        With ``return_norm=True`` returns ``(factors, embedding_norm)`` (norm None if not stored); a cosine
        model's matrix of two stored sentences is then F_a @ F_b.T / (|e_a| |e_b|). Raises StoreError when
        none are stored (unknown run/pair, or run without factors).
        """
        if side not in ("a", "b"):
            raise StoreError("side must be 'a' or 'b'")
        with self._snapshot():
            params = self._pair_params(run_id, pair_id)
            df = pd.DataFrame()
            if params is not None:
                df = self._df("""
                    SELECT token_index, dim, factor, embedding_norm FROM factors
                    WHERE run_id = $run AND chunk_index = $chunk AND pair_id = $pid AND side = $side
                    ORDER BY token_index
                """, {**params, "side": side})
        if df.empty:
            raise StoreError(f"no factors stored for run {run_id!r}, pair {pair_id}, side {side!r} in {self.location}")
        f = np.stack([decode_factor(b, d) for b, d in zip(df["factor"], df["dim"], strict=True)])
        if not return_norm:
            return f
        norm = df["embedding_norm"].iloc[0]
        return f, None if pd.isna(norm) else float(norm)

    def pair_matrix(self, run_id: str, pair_id: int, level: str = "token",
                    include_special: bool = True) -> pd.DataFrame:
        """Relevance matrix of one pair in long form, ordered by (i, j).

        level="token": i, j are token indices. level="word": the token pairs are summed into word units
        (:data:`core.store.units.WORD_UNIT`); i, j are then the 0-based positions of the units in sentence
        order, word_a/word_b their word_index (NULL for special tokens), token_a/token_b the word text, pos_*
        the POS of the word's first piece and n_token_pairs how many token pairs were summed.
        Columns: i, j, token_a, token_b, relevance, pos_a, pos_b, word_a, word_b, special_a, special_b
        (+ n_token_pairs at word level).
        """
        return self.pair_matrices([run_id], pair_id, level=level, include_special=include_special)[str(run_id)]

    def pair_matrices(self, run_ids: Sequence[str], pair_id: int | Mapping[str, int], level: str = "token",
                      include_special: bool = True) -> dict[str, pd.DataFrame]:
        """:meth:`pair_matrix` of one pair in each of several runs (one scan per table): run_id -> frame (an
        empty frame for a run without the pair). ``pair_id``: the pair's id in every run, or run id -> the
        pair's id in that run's dataset (the same pair under other ids: ``pair_runs``' pair_id column)."""
        if level not in ("token", "word"):
            raise StoreError("level must be 'token' or 'word'")
        cols = _MATRIX_COLS + (["n_token_pairs"] if level == "word" else [])
        runs = [str(r) for r in dict.fromkeys(run_ids)]
        ids = {str(k): int(v) for k, v in pair_id.items()} if isinstance(pair_id, Mapping) else {}
        wanted = {r: ids.get(r, pair_id if not isinstance(pair_id, Mapping) else None) for r in runs}
        wanted = {r: int(p) for r, p in wanted.items() if p is not None}
        with self._snapshot():
            chunks = self._pair_chunks(wanted)
            out = {r: pd.DataFrame(columns=cols) for r in runs}
            if not chunks:
                return out
            params: dict[str, Any] = {}
            where = []
            for n, (r, c) in enumerate(chunks.items()):  # (run, chunk) literals per run: DuckLake prunes files by them
                where.append(f"(run_id = $r{n} AND chunk_index = {int(c)} AND pair_id = $p{n})")
                params[f"r{n}"], params[f"p{n}"] = r, wanted[r]
            found = f"({' OR '.join(where)})"
            special = "" if include_special else " AND NOT special_a AND NOT special_b"
            tp = self._df(f"""
                SELECT run_id, {', '.join(quote(c) for c in _MATRIX_COLS)} FROM token_pairs
                WHERE {found}{special} ORDER BY run_id, i, j
            """, params)
            toks = self._df(f"SELECT run_id, side, token_index, token, word_index, word FROM tokens WHERE {found}",
                            params) if level == "word" else None
        for r, g in tp.groupby("run_id", sort=False):
            g = g.drop(columns="run_id").reset_index(drop=True)
            out[str(r)] = g if toks is None else word_matrix(g, toks[toks["run_id"] == r].drop(columns="run_id"))
        return out

    def _pair_chunks(self, pair_ids: Mapping[str, int]) -> dict[str, int]:
        """run_id -> the chunk holding the run's pair (``pair_ids``: run id -> pair id) for each of the runs
        whose dataset has it."""
        runs = self._df("""
            SELECT run_id, first(dataset_hash) AS dh, first(chunk_size) AS chunk_size FROM runs
            WHERE run_id IN (SELECT unnest($runs)) GROUP BY run_id
        """, {"runs": list(pair_ids)})
        out = {}
        for r, dh, size in zip(runs["run_id"], runs["dh"], runs["chunk_size"], strict=True):
            index = self._pair_index(pair_ids[str(r)])
            if dh in index:
                out[str(r)] = int(index[dh]) // int(size)
        return out

    def _pair_index(self, pair_id: int) -> dict[str, int]:
        """dataset_hash -> pair_index of ``pair_id`` in every stored dataset revision that has it (one lake
        query per pair and snapshot: a page asks it for its pair's runs several times)."""
        def read() -> dict[str, int]:
            df = self._df("SELECT dataset_hash, pair_index FROM _pairs_all WHERE pair_id = $pid", {"pid": int(pair_id)})
            return {str(h): int(i) for h, i in zip(df["dataset_hash"], df["pair_index"], strict=True)}

        return self._memo(("pair_index", int(pair_id)), read)
