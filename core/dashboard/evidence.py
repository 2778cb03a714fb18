"""Draw an evaluation's figure specs (:mod:`core.views.evidence`) with the shared charts and widgets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from core import charts
from core.dashboard import data, widgets
from core.views import evidence as ev


def show_evidence(rows: pd.DataFrame, figures: Sequence[Any], key: str) -> None:
    """Every figure of ``figures`` in order; no figures: the rows as a table."""
    if not figures:
        widgets.show_table(rows, f"{key}_rows", key)
        return
    for n, figure in enumerate(figures):
        show_figure(rows, figure, f"{key}_{n}")


def show_figure(rows: pd.DataFrame, figure: Any, key: str) -> None:
    """One figure spec (``key``: unique per page for its widgets)."""
    draw = _DRAW.get(type(figure))
    if draw is None:
        raise TypeError(f"unknown figure spec {type(figure).__name__}; known: {', '.join(t.__name__ for t in _DRAW)}")
    draw(rows, figure, key)


def _side(rows: pd.DataFrame, figure: ev.Side, key: str) -> None:
    for n, (column, inner) in enumerate(zip(st.columns(len(figure.figures)), figure.figures, strict=True)):
        with column:
            show_figure(rows, inner, f"{key}_{n}")


def _lines(rows: pd.DataFrame, figure: ev.Lines, key: str) -> None:
    metric, y_title = figure.metric, figure.y_title
    if figure.toggle is not None and st.toggle(figure.toggle[0], key=f"{key}_toggle"):
        metric, y_title = figure.toggle[1], figure.toggle[2]
    sub = ev.metric_rows(rows, [metric])
    if figure.log_y:
        sub = ev.positive_rows(sub)
    chart = charts.evidence_lines_chart(ev.with_band(sub), figure.x_title, y_title, log_x=figure.log_x,
                                        log_y=figure.log_y, band=figure.band)
    widgets.show_chart(chart, figure.name, key)


def _bars(rows: pd.DataFrame, figure: ev.Bars, key: str) -> None:
    color = "metric_label" if figure.color == "metric" else figure.color
    chart = charts.evidence_bars_chart(ev.with_band(ev.bar_rows(rows, figure)), figure.y_title, color=color)
    widgets.show_chart(chart, figure.name, key)


def _scatter(rows: pd.DataFrame, figure: ev.Scatter, key: str) -> None:
    chart = charts.identity_scatter_chart(ev.metric_rows(rows, [figure.metric]), figure.x_title, figure.y_title)
    widgets.show_chart(chart, figure.name, key)


def _histogram(rows: pd.DataFrame, figure: ev.Histogram, key: str) -> None:
    widgets.show_chart(charts.histogram_chart(ev.metric_rows(rows, [figure.metric]), figure.x_title), figure.name, key)


def _pair_matrix(rows: pd.DataFrame, figure: ev.PairMatrix, key: str) -> None:
    series = ev.series_of(rows, figure.metric)
    if not series:
        return
    pick = st.segmented_control("Token pairs", series, default=series[0], key=f"{key}_series") or series[0]
    widgets.show_chart(charts.pair_matrix_chart(ev.pair_matrix_rows(rows, figure, pick), figure.title), figure.name,
                       key)


def _table(rows: pd.DataFrame, figure: ev.Table, key: str) -> None:
    if figure.heading:
        st.markdown(figure.heading)
    widgets.show_table(ev.evidence_table(rows, figure), figure.name, key)


def _model_table1(rows: pd.DataFrame, figure: ev.ModelTable1, key: str) -> None:
    widgets.show_table(data.model_table1(), figure.name, key,
                       column_config={c: st.column_config.NumberColumn(c, format="%.1f") for c in ("cosine", "dot")})


_DRAW: dict[type, Callable[[pd.DataFrame, Any, str], None]] = {
    ev.Side: _side, ev.Lines: _lines, ev.Bars: _bars, ev.Scatter: _scatter, ev.Histogram: _histogram,
    ev.PairMatrix: _pair_matrix, ev.Table: _table, ev.ModelTable1: _model_table1,
}
