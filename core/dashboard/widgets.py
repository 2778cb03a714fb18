"""Streamlit widgets every page shares: charts and tables with their download buttons, run selectors, links
to the Example page, and keeping a widget's value valid when its options change."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from core.charts import chart_png, chart_svg, table_csv, table_parquet
from core.views.pairs import example_url


def download_table(df: pd.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet download buttons for a table (bytes made on click)."""
    with st.container(horizontal=True, gap="small"):
        st.download_button("CSV", icon=":material/download:", data=functools.partial(table_csv, df), file_name=f"{name}.csv", mime="text/csv",
                           key=f"{key}__csv", on_click="ignore", type="tertiary")
        st.download_button("Parquet", icon=":material/download:", data=functools.partial(table_parquet, df), file_name=f"{name}.parquet",
                           mime="application/vnd.apache.parquet", key=f"{key}__parquet", on_click="ignore",
                           type="tertiary")


def download_chart(chart: Any, name: str, key: str) -> None:
    """PNG and SVG download buttons for a chart (rendered with vl-convert on click)."""
    with st.container(horizontal=True, gap="small"):
        st.download_button("PNG", icon=":material/download:", data=functools.partial(chart_png, chart), file_name=f"{name}.png",
                           mime="image/png", key=f"{key}__png", on_click="ignore", type="tertiary")
        st.download_button("SVG", icon=":material/download:", data=functools.partial(chart_svg, chart), file_name=f"{name}.svg",
                           mime="image/svg+xml", key=f"{key}__svg", on_click="ignore", type="tertiary")


def show_chart(chart: Any, name: str, key: str, on_select: Any = "ignore") -> Any:
    """An Altair chart at its own size plus its download buttons; returns the selection state."""
    event = st.altair_chart(chart, width="content", key=key, on_select=on_select)
    download_chart(chart, name, key)
    return event


def show_table(df: pd.DataFrame, name: str, key: str, height: int | str = "auto", link_col: str | None = None,
               **kwargs: Any) -> None:
    """A dataframe plus CSV/Parquet downloads (of the table without its link column)."""
    config = dict(kwargs.pop("column_config", {}) or {})
    if link_col and link_col in df.columns:
        config[link_col] = st.column_config.LinkColumn("open", display_text="example ↗", width="small")
    st.dataframe(df, hide_index=True, height=height, column_config=config, key=key, **kwargs)
    download_table(df.drop(columns=[link_col]) if link_col and link_col in df.columns else df, name, key)


def example_link(run_id: str, pair_id: int, label: str = "Open in Example", key: str | None = None) -> None:
    """A link to the Example page for one pair (st.page_link; a plain link outside the app's navigation)."""
    try:
        st.page_link("pages/5_Example.py", label=label, icon=":material/open_in_new:",
                     query_params={"run": str(run_id), "pair": str(int(pair_id))})
    except Exception:  # noqa: BLE001  (page not registered, e.g. a page script run on its own)
        st.markdown(f"[{label}]({example_url(run_id, pair_id)})")


def run_select(label: str, run_ids: Sequence[str], labels: Mapping[str, str], key: str,
               index: int = 0, **kwargs: Any) -> str | None:
    """A selectbox of runs showing their labels; keeps a still-valid previous choice."""
    if not run_ids:
        st.info("No matching runs.")
        return None
    keep_valid(key, run_ids)
    if key not in st.session_state:  # the first choice; later the widget keeps its own state
        st.session_state[key] = run_ids[min(index, len(run_ids) - 1)]
    return st.selectbox(label, list(run_ids), format_func=lambda r: labels.get(r, r), key=key, **kwargs)


def keep_valid(key: str, options: Sequence[Any]) -> None:
    """Drop a widget's stored value when it is no longer among ``options`` (after a filter change)."""
    if key in st.session_state:
        value = st.session_state[key]
        if isinstance(value, list):
            kept = [v for v in value if v in options]
            if kept != value:
                st.session_state[key] = kept
        elif value not in options:
            with contextlib.suppress(KeyError):
                del st.session_state[key]


def matrix_options(prefix: str) -> tuple[str, bool, bool]:
    """The toggles above a token heat map: (level "token"/"word", special tokens shown, values in cells);
    widget keys ``{prefix}_level``, ``{prefix}_special``, ``{prefix}_values``."""
    c_level, c_special, c_values = st.columns([1.3, 1, 1])
    with c_level:
        level = st.radio("Level", ["token", "word"], horizontal=True, key=f"{prefix}_level",
                         format_func=lambda v: {"token": "subword tokens", "word": "words"}[v])
    with c_special:
        special = st.toggle("Special tokens", value=True, key=f"{prefix}_special")
    with c_values:
        show_values = st.toggle("Values in cells", value=True, key=f"{prefix}_values",
                                help="printed when the cells are large enough (short texts)")
    return level, special, show_values


def prompt_toggle(prefix: str, has_prompt: bool) -> bool:
    """The "Prompt tokens" toggle (widget key ``{prefix}_prompt_tokens``): whether a heat map shows the tokens of
    the prompts prepended to its texts; disabled when there are none."""
    return st.toggle("Prompt tokens", value=True, key=f"{prefix}_prompt_tokens", disabled=not has_prompt,
                     help="the tokens of the prompts prepended to the texts")


def reset_on_change(key: str, value: Any, dependents: Sequence[str]) -> None:
    """Forget the widgets ``dependents`` (they fall back to their defaults) when ``value`` — the run (or runs)
    they depend on, chosen in widget ``key`` — differs from the previous page run's."""
    marker = f"_previous_{key}"
    previous = st.session_state.get(marker)
    if previous is not None and previous != value:
        for k in dependents:
            st.session_state.pop(k, None)
    st.session_state[marker] = value


def find_inputs(prefix: str) -> dict[str, str]:
    """The "find pairs" inputs of a page, side by side: a word or token of either sentence, and text of either
    sentence; returns the query keyword arguments of those filled in (``word``, ``text``). Widget keys
    ``{prefix}_word`` / ``{prefix}_text``."""
    with st.container(horizontal=True):
        word = st.text_input("Word or token in either sentence", key=f"{prefix}_word",
                             help="a whole word (cat) or a stored token (##s); case-insensitive")
        text = st.text_input("Sentence text contains", key=f"{prefix}_text", help="a substring of either sentence")
    return {k: v.strip() for k, v in (("word", word), ("text", text)) if v and v.strip()}
