"""Faithfulness evidence: stored evaluations, their list, and the Table 1 rows."""

from __future__ import annotations

import json

import pandas as pd

from core.store.meta import EVAL_META_COLS
from core.store.records import quote


class EvaluationQueries:
    """The ``evaluations`` table."""

    def evaluations(self, kind: str | None = None, eval_id: str | None = None, model_id: str | None = None,
                    dataset_key: str | None = None) -> pd.DataFrame:
        """Rows of the stored evaluations (evaluations table, all columns), optionally filtered; newest
        evaluation first, rows in order. Unknown filters give an empty frame."""
        where, params = [], {}
        for col, value in (("kind", kind), ("eval_id", eval_id), ("model_id", model_id), ("dataset_key", dataset_key)):
            if value is not None:
                where.append(f"{quote(col)} = ${col}")
                params[col] = str(value)
        sql = "SELECT * FROM evaluations" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._df(sql + " ORDER BY created_at DESC NULLS LAST, eval_id, row_index", params)

    def evaluation_list(self, kind: str | None = None) -> pd.DataFrame:
        """One row per stored evaluation, newest first: eval_id, kind, model_id, model_name, dataset_key,
        run_id, n_pairs, params (JSON), created_at, seconds, code_version, n_rows."""
        where = "WHERE kind = $kind" if kind is not None else ""
        cols = ", ".join(f"first({quote(c)}) AS {quote(c)}" for c in EVAL_META_COLS if c != "eval_id")
        return self._df(f"""
            SELECT eval_id, {cols}, CAST(count(*) AS BIGINT) AS n_rows
            FROM evaluations {where}
            GROUP BY eval_id
            ORDER BY created_at DESC NULLS LAST, eval_id
        """, {"kind": str(kind)} if kind is not None else None)

    def model_table1(self, dataset_key: str | None = None) -> pd.DataFrame:
        """Möller et al. (2023) Table 1 from the stored ``table1`` evaluations: Spearman x100 of the cosine and
        of the dot product of each model's embeddings against gold, one row per (model, dataset) (the newest
        evaluation). Columns: model_name, base_model, adjusted, cosine, dot, dataset_key, n_pairs, epochs,
        train_pairs, model_id, eval_id, created_at (base_model/epochs/train_pairs: NULL for models SimLens
        did not fine-tune)."""
        cols = ["model_name", "base_model", "adjusted", "cosine", "dot", "dataset_key", "n_pairs", "epochs",
                "train_pairs", "model_id", "eval_id", "created_at"]
        where = " AND dataset_key = $ds" if dataset_key is not None else ""
        df = self._df(f"""
            SELECT eval_id, first(model_id) AS model_id, first(model_name) AS model_name,
                   first(dataset_key) AS dataset_key, first(n_pairs) AS n_pairs, first(params) AS params,
                   first(created_at) AS created_at,
                   max(y) FILTER (WHERE metric = 'spearman' AND label = 'cosine') AS cosine,
                   max(y) FILTER (WHERE metric = 'spearman' AND label = 'dot') AS dot
            FROM evaluations WHERE kind = 'table1'{where}
            GROUP BY eval_id
            ORDER BY created_at DESC NULLS LAST, eval_id
        """, {"ds": str(dataset_key)} if dataset_key is not None else None)
        if df.empty:
            return pd.DataFrame(columns=cols)
        params = [json.loads(p) if isinstance(p, str) and p else {} for p in df["params"]]
        df["adjusted"] = [bool(p.get("adjusted", False)) for p in params]
        for c in ("base_model", "epochs", "train_pairs"):
            df[c] = [p.get(c) for p in params]
        df = df.drop_duplicates(["model_id", "dataset_key"])
        return df.sort_values(["base_model", "adjusted", "model_name"], kind="stable", na_position="first")[cols] \
            .reset_index(drop=True)
