"""A chunk's tables checked and completed before they are written: every derivable column filled in
(token_pairs' token/POS/word columns from ``tokens``, ``pos_pairs``, predictions' gold/residual/error ...)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.store.records import StoreError, check_columns, check_keys, encode_factor, to_arrow
from core.store.schema import CHUNK_COLUMNS, CHUNK_TABLES, TABLES, arrow_schema
from core.store.units import pos_pair_aggregate


def prepare_chunk(run_id: str, k: int, tables: Mapping[str, pd.DataFrame | None], pairs: pd.DataFrame,
                  allowed_ids: set[int], chunk_size: int, ctx: str) -> dict[str, pa.Table]:
    """The Arrow tables (SCHEMA columns, sorted by key) of chunk ``k`` of ``run_id``.

    ``pairs``: pair_id, gold, gold_norm of the run's dataset; ``allowed_ids``: the chunk's pair ids.
    """
    unknown = [t for t in tables if t not in CHUNK_TABLES]
    if unknown:
        raise StoreError(f"{ctx}: unknown table(s) {unknown}; chunk tables are {CHUNK_TABLES}")
    frames: dict[str, pd.DataFrame | None] = {}
    for name in CHUNK_TABLES:
        df = tables.get(name)
        if df is None:
            frames[name] = None
            continue
        check_columns(name, df, (), ctx)
        df = df.copy()
        for col, value in zip(CHUNK_COLUMNS, (run_id, k), strict=True):
            if col in df.columns and not (df[col] == value).all():
                raise StoreError(f"{ctx}: table '{name}' has {col} values other than {value!r}")
            df[col] = value
        frames[name] = df.reset_index(drop=True)

    tokens = frames["tokens"]
    if tokens is not None:
        check_columns("tokens", tokens, TABLES["tokens"].required, ctx)
        check_keys("tokens", tokens, ctx)
        bad = ~tokens["side"].isin(["a", "b"])
        if bad.any():
            raise StoreError(f"{ctx}: tokens.side must be 'a' or 'b', got {sorted(set(tokens.loc[bad, 'side']))}")
        tokens["is_special"] = tokens["is_special"].fillna(False) if "is_special" in tokens else False

    tp = frames["token_pairs"]
    if tp is not None:
        check_columns("token_pairs", tp, TABLES["token_pairs"].required, ctx)
        tp = denormalise_token_pairs(tp, tokens, ctx)
        frames["token_pairs"] = tp

    if frames["pos_pairs"] is None and tp is not None and len(tp):
        frames["pos_pairs"] = pos_pair_aggregate(tp).assign(run_id=run_id, chunk_index=k)
    elif frames["pos_pairs"] is not None:
        pp = frames["pos_pairs"]
        check_columns("pos_pairs", pp, TABLES["pos_pairs"].required, ctx)
        if "pair_count" not in pp.columns:
            order = pp.sort_values(["pair_id", "pos_a", "pos_b", "special_a", "special_b"], kind="stable")
            first = ~order.duplicated(["pair_id", "pos_a", "pos_b"])
            pp["pair_count"] = first.reindex(pp.index).astype("int8")

    pred = frames["predictions"]
    if pred is not None:
        check_columns("predictions", pred, TABLES["predictions"].required, ctx)
        frames["predictions"] = derive_predictions(pred, pairs, tokens, tp)

    fac = frames["factors"]
    if fac is not None:
        check_columns("factors", fac, TABLES["factors"].required, ctx)
        blobs = [v if isinstance(v, (bytes, bytearray, memoryview)) or v is None else encode_factor(v)
                 for v in fac["factor"]]
        fac["factor"] = pd.Series(blobs, dtype=object, index=fac.index)
        lengths = pd.Series([None if b is None else len(b) // 2 for b in blobs], index=fac.index, dtype="Int64")
        if "dim" not in fac.columns:
            fac["dim"] = lengths
        elif not (pd.to_numeric(fac["dim"]).astype("Int64") == lengths).fillna(False).all():
            raise StoreError(f"{ctx}: factors.dim does not match the length of factors.factor (float16)")

    out: dict[str, pa.Table] = {}
    for name in CHUNK_TABLES:
        df = frames[name]
        if df is None:
            out[name] = arrow_schema(name).empty_table()
            continue
        nullable = ("pos_a", "pos_b") if name == "pos_pairs" else ()
        check_keys(name, df, ctx, nullable=nullable)
        outside = ~df["pair_id"].isin(allowed_ids)
        if outside.any():
            bad = sorted(set(df.loc[outside, "pair_id"].tolist()))[:5]
            raise StoreError(f"{ctx}: table '{name}' has pair_id(s) {bad} that are not in this chunk "
                             f"(pair_index [{k * chunk_size}, {(k + 1) * chunk_size}); see chunk_pair_ids())")
        df = df.sort_values(list(TABLES[name].key), kind="stable", na_position="last")
        out[name] = to_arrow(name, df, ctx)
    return out


def content_hash(tables: Mapping[str, pa.Table]) -> str:
    """A hash of a chunk's rows in every chunk table (equal content, equal hash; however the rows were read)."""
    h = hashlib.sha1()
    for name in CHUNK_TABLES:
        t = tables[name]
        cols = [c for c in arrow_schema(name).names if c not in CHUNK_COLUMNS]
        schema = pa.schema([arrow_schema(name).field(c) for c in cols])
        df = t.select(cols).cast(schema).to_pandas() if t.num_rows else None
        h.update(f"{name}:{t.num_rows};".encode())
        if df is None:
            continue
        for c in cols:
            if pa.types.is_binary(arrow_schema(name).field(c).type):
                df[c] = df[c].map(lambda b: None if b is None else bytes(b).hex())
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:20]


def denormalise_token_pairs(tp: pd.DataFrame, tokens: pd.DataFrame | None, ctx: str) -> pd.DataFrame:
    denorm = {"token": "token", "pos": "pos", "word_index": "word", "is_special": "special"}
    wanted = [f"{v}_{s}" for v in denorm.values() for s in ("a", "b")]
    missing = [c for c in wanted if c not in tp.columns]
    if missing and tokens is not None:
        for side, idx in (("a", "i"), ("b", "j")):
            cols = [c for c, v in denorm.items() if f"{v}_{side}" in missing and c in tokens.columns]
            if not cols:
                continue
            t = tokens.loc[tokens["side"] == side, ["pair_id", "token_index", *cols]]
            t = t.rename(columns={"token_index": idx, **{c: f"{denorm[c]}_{side}" for c in cols}})
            t["_found"] = True
            tp = tp.merge(t, on=["pair_id", idx], how="left", validate="many_to_one")
            if tp["_found"].isna().any():
                bad = tp.loc[tp["_found"].isna(), ["pair_id", idx]].head(3).to_dict("records")
                raise StoreError(f"{ctx}: token_pairs rows refer to side-{side} tokens not in 'tokens', e.g. {bad}")
            tp = tp.drop(columns="_found")
        missing = [c for c in wanted if c not in tp.columns]
    hard = [c for c in missing if c.startswith("token_")]
    if hard:
        raise StoreError(f"{ctx}: table 'token_pairs' is missing required column(s) {hard} "
                         f"(give them or a 'tokens' table to derive them from)")
    for side in ("a", "b"):
        col = f"special_{side}"
        tp[col] = tp[col].fillna(False) if col in tp.columns else False
    return tp


def derive_predictions(pred: pd.DataFrame, pairs: pd.DataFrame, tokens: pd.DataFrame | None,
                       tp: pd.DataFrame | None) -> pd.DataFrame:
    ids = pred["pair_id"]
    if "gold" not in pred.columns or "gold_norm" not in pred.columns:
        gold = pairs.set_index("pair_id")
        for c in ("gold", "gold_norm"):
            if c not in pred.columns:
                pred[c] = ids.map(gold[c]).astype(float)
    if tokens is not None:
        counts = tokens.groupby(["pair_id", "side"]).size()
        for side in ("a", "b"):
            col = f"n_tokens_{side}"
            if col not in pred.columns:
                sides = counts.index.get_level_values("side")
                per: Any = counts.xs(side, level="side") if side in sides else pd.Series(dtype=int)
                pred[col] = ids.map(per).astype("Int64")
    if "matrix_sum" not in pred.columns and tp is not None:
        sums = tp.groupby("pair_id")["relevance"].apply(lambda r: float(np.asarray(r, dtype=np.float64).sum()))
        pred["matrix_sum"] = ids.map(sums).astype(float)
    if "residual" not in pred.columns and "explained_score" in pred.columns and "matrix_sum" in pred.columns:
        pred["residual"] = pd.to_numeric(pred["explained_score"]) - pd.to_numeric(pred["matrix_sum"])
    if "error" not in pred.columns:
        pred["error"] = pd.to_numeric(pred["model_score"]) - pd.to_numeric(pred["gold_norm"])
    pred["truncated"] = pred["truncated"].fillna(False) if "truncated" in pred.columns else False
    return pred
