"""POS heat-map cells: labels, parsing, the clicked cell of a chart and a cell's row (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.charts import NULL_POS
from core.views.runs import fmt_signed, is_na

CELL_SEP = " × "


def pos_label(pos: Any) -> str:
    return NULL_POS if is_na(pos) else str(pos)


def pos_value(label: str) -> str | None:
    """Inverse of :func:`pos_label` (``untagged`` -> None)."""
    return None if label == NULL_POS else label


def cell_label(pos_a: Any, pos_b: Any) -> str:
    return f"{pos_label(pos_a)}{CELL_SEP}{pos_label(pos_b)}"


def parse_cell(label: str | None) -> tuple[str | None, str | None] | None:
    """``"NOUN × VERB"`` -> ("NOUN", "VERB"); None for no/invalid label."""
    if not label or CELL_SEP not in label:
        return None
    a, b = label.split(CELL_SEP, 1)
    return pos_value(a), pos_value(b)


def cell_options(heat: pd.DataFrame, value: str = "relevance_norm") -> list[str]:
    """Cell labels, strongest |value| first (the fallback selector of the clickable heatmap)."""
    if heat.empty:
        return []
    order = heat.assign(_k=heat[value].abs()).sort_values(["_k", "pos_a", "pos_b"], ascending=[False, True, True],
                                                          kind="stable", na_position="last")
    return [cell_label(a, b) for a, b in zip(order["pos_a"], order["pos_b"], strict=True)]


def selected_cell(event: Any, name: str = "cell") -> tuple[str | None, str | None] | None:
    """The (pos_a, pos_b) clicked in a chart (``st.altair_chart(..., on_select="rerun")`` state), or None."""
    if event is None:
        return None
    sel = event.get("selection") if isinstance(event, Mapping) else getattr(event, "selection", None)
    if sel is None:
        return None
    points = sel.get(name) if isinstance(sel, Mapping) else getattr(sel, name, None)
    if isinstance(points, Mapping):
        points = points.get("values", [points] if "pos_a" in points else [])
    if not points:
        return None
    p = points[0]
    if not isinstance(p, Mapping) or "pos_a" not in p or "pos_b" not in p:
        return None
    return pos_value(str(p["pos_a"])), pos_value(str(p["pos_b"]))


def cell_row(heat: pd.DataFrame, cell: tuple[str | None, str | None]) -> dict[str, Any] | None:
    """The heatmap row of a cell (None if absent)."""
    if heat.empty:
        return None
    a = heat["pos_a"].map(pos_label) == pos_label(cell[0])
    b = heat["pos_b"].map(pos_label) == pos_label(cell[1])
    hit = heat[a & b]
    return None if hit.empty else hit.iloc[0].to_dict()


def own_maximum(heat: pd.DataFrame, col: str) -> tuple[pd.DataFrame, float]:
    """``heat`` with ``<col>_own`` = ``col`` ÷ its own largest |value| (so a weak map, such as the negative
    one, shows its structure), and that maximum (0 when the map is all zero)."""
    m = float(heat[col].abs().max()) if len(heat) else 0.0
    own = heat[col] / m if m > 0 and np.isfinite(m) else heat[col] * 0.0
    return heat.assign(**{f"{col}_own": own}), m


def heatmap_table(heat: pd.DataFrame, sort_col: str = "relevance_norm") -> pd.DataFrame:
    """A POS heatmap (or ``compare_pos``) as a table ("untagged" for missing tags), largest |sort_col| first;
    ``sort_col`` is the first value column, so the order shown is the order of the column next to the labels."""
    if heat.empty:
        return heat
    out = heat.assign(pos_a=heat["pos_a"].map(pos_label), pos_b=heat["pos_b"].map(pos_label))
    out = out[["pos_a", "pos_b", sort_col, *[c for c in out.columns if c not in ("pos_a", "pos_b", sort_col)]]]
    return out.sort_values(sort_col, key=lambda s: s.abs(), ascending=False, kind="stable").reset_index(drop=True)


def own_maximum_text(pos_max: float, neg_max: float) -> str:
    """The caption under the positive and negative maps: what each is divided by, and how they compare."""
    if pos_max > 0 and neg_max > 0:
        return (f"Each map on its own maximum, so the weaker one shows its structure: positive ÷ "
                f"{fmt_signed(pos_max)}, negative ÷ {fmt_signed(-neg_max)} (the largest |negative| is "
                f"{neg_max / pos_max:.0%} of the largest positive).")
    if pos_max > 0:
        return f"Each map on its own maximum: positive ÷ {fmt_signed(pos_max)}; no negative relevance."
    if neg_max > 0:
        return f"Each map on its own maximum: negative ÷ {fmt_signed(-neg_max)}; no positive relevance."
    return "No positive or negative relevance in these cells."


CELL_EXAMPLE_COLS = ("open", "pair_id", "token_a", "token_b", "relevance", "gold", "gold_norm", "model_score",
                     "error", "sentence1", "sentence2")


def cell_examples_table(examples: pd.DataFrame) -> pd.DataFrame:
    """``Store.pos_cell_examples`` for display: the token pair, its sentence pair's gold, model score and error,
    then the sentences, then the rest (positions, words)."""
    first = [c for c in CELL_EXAMPLE_COLS if c in examples.columns]
    return examples[[*first, *[c for c in examples.columns if c not in first]]]
