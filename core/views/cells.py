"""POS heat-map cells: labels, parsing, the clicked cell of a chart and a cell's row (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from core.charts import NULL_POS
from core.views.runs import is_na

CELL_SEP = " × "


def pos_label(pos: Any) -> str:
    return NULL_POS if is_na(pos) else str(pos)


def pos_value(label: str) -> str | None:
    """Inverse of :func:`pos_label` (``∅`` -> None)."""
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


def heatmap_table(heat: pd.DataFrame, sort_col: str = "relevance_norm") -> pd.DataFrame:
    """A POS heatmap (or ``compare_pos``) as a table (∅ for missing tags), largest |sort_col| first."""
    if heat.empty:
        return heat
    out = heat.assign(pos_a=heat["pos_a"].map(pos_label), pos_b=heat["pos_b"].map(pos_label))
    return out.sort_values(sort_col, key=lambda s: s.abs(), ascending=False, kind="stable").reset_index(drop=True)
