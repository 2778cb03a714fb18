"""Altair charts of the SimLens dashboard and the bytes of its downloads (pure: no Streamlit, no torch).

Every relevance chart uses one diverging colour scale centred at zero (:func:`signed_scale`): red is
positive relevance (the pair raises the similarity), blue is negative, white is zero, and the domain is
symmetric, so equal magnitudes get equal saturation. Tooltips show the values behind every mark.
Exports: :func:`chart_png` / :func:`chart_svg` (vl-convert, no browser needed), :func:`table_csv` /
:func:`table_parquet`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

# Token matrices of long texts exceed Altair's default limit of 5,000 inline rows; the pages keep the
# data they chart small (one pair, one POS grid, one corpus of scores), so the limit only gets in the way.
alt.data_transformers.disable_max_rows()

SCHEME = "redblue"  # Vega's red->blue diverging scheme; reversed so that red = positive
NULL_POS = "untagged"  # label of a missing POS tag (a language without a tagger)
UPOS_ORDER = ("NOUN", "PROPN", "VERB", "AUX", "ADJ", "ADV", "PRON", "DET", "ADP", "NUM", "CCONJ", "SCONJ",
              "PART", "INTJ", "PUNCT", "SYM", "X")
FONT_SIZE = 12


# --------------------------------------------------------------------------------------------------
# scales and orders
# --------------------------------------------------------------------------------------------------


def max_abs(values: Sequence[float] | pd.Series | np.ndarray) -> float:
    """Largest finite |value| (1.0 when there is none, so that a scale never collapses)."""
    arr = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    arr = arr[np.isfinite(arr)]
    m = float(np.abs(arr).max()) if arr.size else 0.0
    return m if m > 0 else 1.0


def signed_scale(limit: float = 1.0, kind: str = "linear", half: str | None = None) -> alt.Scale:
    """Diverging scale centred at 0 over [-limit, limit]: red positive, white zero, blue negative.

    ``kind="sqrt"`` maps |value| through a square root (sign kept), so weak cells get visible colour.
    ``half="neg"`` / ``"pos"``: the domain (and so the legend) is [-limit, 0] / [0, limit] only, for maps
    whose values have one sign; colours stay those of the full scale."""
    m = float(limit) if limit and math.isfinite(limit) and limit > 0 else 1.0
    domain = {"neg": [-m, 0.0], "pos": [0.0, m], None: [-m, m]}[half]
    scheme = {"scheme": SCHEME} if half is None else \
        {"range": ["#2166ac", "#f7f7f7"] if half == "neg" else ["#f7f7f7", "#b2182b"]}
    extra = {"domainMid": 0, "reverse": True} if half is None else {}
    if kind == "sqrt":
        return alt.Scale(type="sqrt", domain=domain, **scheme, **extra)
    return alt.Scale(domain=domain, **scheme, **extra)


def pos_order(labels: Sequence[str | None]) -> list[str]:
    """POS labels in a stable, readable order: universal POS, then special tokens, then other tags, then "untagged"."""
    seen = [NULL_POS if (x is None or (isinstance(x, float) and math.isnan(x))) else str(x) for x in labels]
    uniq = list(dict.fromkeys(seen))
    rank = {p: k for k, p in enumerate(UPOS_ORDER)}

    def key(p: str) -> tuple:
        if p in rank:
            return (0, rank[p], p)
        if p == NULL_POS:
            return (3, 0, p)
        if p.startswith(("[", "<")):
            return (1, 0, p)
        return (2, 0, p)

    return sorted(uniq, key=key)


def _finish(chart: alt.TopLevelMixin, title: str | None, subtitle: str | None = None) -> alt.TopLevelMixin:
    if title or subtitle:
        chart = chart.properties(title=alt.Title(title or "", subtitle=subtitle or alt.Undefined, anchor="start",
                                                 fontSize=FONT_SIZE + 2, subtitleFontSize=FONT_SIZE - 1,
                                                 subtitleColor="#666666"))
    return chart.configure_axis(labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE, labelLimit=180).configure_view(
        strokeWidth=0)


# --------------------------------------------------------------------------------------------------
# POS x POS heatmaps
# --------------------------------------------------------------------------------------------------

POS_VALUE_TITLES = {
    "relevance_norm": "relevance (÷ max |R|)",
    "pos_norm": "positive (÷ max)",
    "neg_norm": "negative (÷ max)",
    "pos_sum_own": "positive (÷ its own max)",
    "neg_sum_own": "negative (÷ its own max)",
    "relevance": "relevance",
    "pos_sum": "positive relevance",
    "neg_sum": "negative relevance",
    "diff_norm": "B − A (normalised)",
    "relevance_norm_a": "A (÷ max |R|)",
    "relevance_norm_b": "B (÷ max |R|)",
    "diff": "B − A",
}


def pos_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A POS heatmap frame with missing tags labelled "untagged" (Vega drops null categories)."""
    out = df.copy()
    for c in ("pos_a", "pos_b"):
        if c in out.columns:
            out[c] = out[c].astype(object).where(out[c].notna(), NULL_POS).astype(str)
    return out


def pos_heatmap_chart(df: pd.DataFrame, value: str = "relevance_norm", title: str | None = None,
                      selection: str | None = "cell", limit: float | None = None, cell: int = 24,
                      order_a: Sequence[str] | None = None, order_b: Sequence[str] | None = None,
                      highlight: tuple[str | None, str | None] | None = None,
                      scale: str = "linear", half: str | None = None, subtitle: str | None = None) -> alt.Chart:
    """POS (sentence 1, rows) x POS (sentence 2, columns) heatmap of ``value``.

    ``df``: :meth:`core.store.Store.pos_heatmap` or :meth:`~core.store.Store.compare_pos` rows.
    ``limit``: colour domain [-limit, limit] (default 1 for normalised values, else the largest |value|).
    ``selection``: name of a click selection on (pos_a, pos_b) (None: not selectable). ``highlight``: the
    (pos_a, pos_b) cell to outline (the page's current cell, whether clicked or picked in a selector).
    ``scale``: "linear" or "sqrt" colour mapping; ``half``: one-signed legend (see :func:`signed_scale`).
    ``subtitle``: a line under the title (e.g. what the map covers: "partial run: ... 100 of 1,379 pairs").
    """
    d = pos_frame(df)
    d["chosen"] = False
    if highlight is not None and len(d):
        ha, hb = (NULL_POS if h is None else str(h) for h in highlight)
        d["chosen"] = (d["pos_a"] == ha) & (d["pos_b"] == hb)
        d = d.sort_values("chosen", kind="stable")  # drawn last, so its outline is on top
    if limit is None:
        limit = 1.0 if value.endswith("_norm") and value != "diff_norm" else max_abs(d.get(value, []))
    order_a = list(order_a) if order_a is not None else pos_order(d["pos_a"]) if len(d) else []
    order_b = list(order_b) if order_b is not None else pos_order(d["pos_b"]) if len(d) else []
    tips = [alt.Tooltip("pos_a:N", title="POS sentence 1"), alt.Tooltip("pos_b:N", title="POS sentence 2"),
            alt.Tooltip(f"{value}:Q", title=POS_VALUE_TITLES.get(value, value), format="+.4f")]
    for c, fmt in (("relevance", "+.4g"), ("pos_sum", "+.4g"), ("neg_sum", "+.4g"), ("relevance_a", "+.4g"),
                   ("relevance_b", "+.4g"), ("relevance_norm_a", "+.3f"), ("relevance_norm_b", "+.3f"),
                   ("count", ",d"), ("count_a", ",d"), ("count_b", ",d"), ("n_pairs", ",d")):
        if c in d.columns and c != value:
            tips.append(alt.Tooltip(f"{c}:Q", title=c.replace("_", " "), format=fmt))
    enc = {
        "x": alt.X("pos_b:N", sort=order_b, title="sentence 2 POS",
                   axis=alt.Axis(orient="top", labelAngle=-45, labelLimit=120, labelOverlap=False)),
        "y": alt.Y("pos_a:N", sort=order_a, title="sentence 1 POS", axis=alt.Axis(labelOverlap=False)),
        "color": alt.Color(f"{value}:Q", scale=signed_scale(limit, scale, half),
                           legend=alt.Legend(title=POS_VALUE_TITLES.get(value, value), orient="bottom",
                                             gradientLength=180)),
        "tooltip": tips,
    }
    enc["stroke"] = alt.when(alt.datum.chosen).then(alt.value("#111111")).otherwise(alt.value("#ffffff"))
    enc["strokeWidth"] = alt.when(alt.datum.chosen).then(alt.value(2.5)).otherwise(alt.value(0.5))
    chart = alt.Chart(d).mark_rect().encode(**enc)
    if selection:
        sel = alt.selection_point(name=selection, fields=["pos_a", "pos_b"], on="click", clear="dblclick")
        chart = chart.add_params(sel)
    chart = chart.properties(width=alt.Step(cell), height=alt.Step(cell))
    return _finish(chart, title, subtitle)


# --------------------------------------------------------------------------------------------------
# token x token heatmaps
# --------------------------------------------------------------------------------------------------


def token_labels(indices: Sequence[int], tokens: Sequence[str]) -> list[str]:
    """Axis labels ``"<index>:<token>"``: unique even when a token repeats (``3:the`` and ``7:the``)."""
    return [f"{int(i)}:{t}" for i, t in zip(indices, tokens, strict=True)]


def matrix_frame(long: pd.DataFrame) -> pd.DataFrame:
    """A long relevance matrix (i, j, token_a, token_b, relevance, ...) with labels and normalised values."""
    d = long.copy()
    if d.empty:
        for c in ("label_a", "label_b", "relevance_norm"):
            d[c] = pd.Series(dtype=object if c.startswith("label") else float)
        return d
    d["i"] = d["i"].astype(int)
    d["j"] = d["j"].astype(int)
    d["relevance"] = pd.to_numeric(d["relevance"], errors="coerce").astype(float)
    d["label_a"] = token_labels(d["i"], d["token_a"].astype(str))
    d["label_b"] = token_labels(d["j"], d["token_b"].astype(str))
    d["relevance_norm"] = d["relevance"] / max_abs(d["relevance"])
    return d


def token_heatmap_chart(long: pd.DataFrame, title: str | None = None, limit: float | None = None,
                        show_values: bool | None = None, cell: int | None = None) -> alt.Chart:
    """Token (sentence 1, rows) x token (sentence 2, columns) heatmap of a pair's relevances.

    Axes keep the token order and label every token ``i:token``. ``limit``: colour domain
    [-limit, limit] (default: the matrix's largest |relevance|; pass a common limit to compare
    matrices). ``show_values``: print the values in the cells when they are big enough to hold them
    (None: only for small matrices; False: never).
    """
    d = matrix_frame(long)
    n_a = int(d["i"].nunique()) if len(d) else 0
    n_b = int(d["j"].nunique()) if len(d) else 0
    if limit is None:
        limit = max_abs(d["relevance"]) if len(d) else 1.0
    if cell is None:
        cell = 30 if max(n_a, n_b) <= 16 else 22 if max(n_a, n_b) <= 32 else 14
    show_values = (n_a * n_b <= 256 if show_values is None else bool(show_values)) and cell >= 26
    order_a = d.drop_duplicates("i").sort_values("i")["label_a"].tolist() if len(d) else []
    order_b = d.drop_duplicates("j").sort_values("j")["label_b"].tolist() if len(d) else []
    tips = [alt.Tooltip("label_a:N", title="sentence 1 token"), alt.Tooltip("label_b:N", title="sentence 2 token"),
            alt.Tooltip("relevance:Q", title="relevance", format="+.5f"),
            alt.Tooltip("relevance_norm:Q", title="÷ max |R|", format="+.3f")]
    for c in ("pos_a", "pos_b"):
        if c in d.columns:
            d[c] = d[c].astype(object).where(d[c].notna(), NULL_POS).astype(str)
            tips.append(alt.Tooltip(f"{c}:N", title=f"POS {'1' if c == 'pos_a' else '2'}"))
    if "n_token_pairs" in d.columns:
        tips.append(alt.Tooltip("n_token_pairs:Q", title="token pairs summed", format=",d"))
    if show_values:
        d["pct"] = (d["relevance_norm"] * 100).round().astype(int)
    x = alt.X("label_b:N", sort=order_b, title="sentence 2",
              axis=alt.Axis(orient="top", labelAngle=-50, labelLimit=140, labelOverlap=False))
    y = alt.Y("label_a:N", sort=order_a, title="sentence 1", axis=alt.Axis(labelLimit=140, labelOverlap=False))
    base = alt.Chart(d).encode(x=x, y=y)
    rect = base.mark_rect(stroke="#ffffff", strokeWidth=0.5).encode(
        color=alt.Color("relevance:Q", scale=signed_scale(limit),
                        legend=alt.Legend(title="relevance", orient="right", format="+.2~g", gradientLength=160)),
        tooltip=tips,
    )
    chart: alt.TopLevelMixin = rect
    subtitle = None
    if show_values:
        subtitle = "numbers: relevance in % of the largest |relevance|"
        text = base.mark_text(fontSize=10).encode(
            text=alt.Text("pct:Q", format="d"),
            color=alt.when(abs_gt("relevance_norm", 0.55)).then(alt.value("white")).otherwise(alt.value("#222222")),
            tooltip=tips,
        )
        chart = alt.layer(rect, text)
    chart = chart.properties(width=alt.Step(cell), height=alt.Step(cell))
    return _finish(chart, title, subtitle)


def abs_gt(field: str, threshold: float) -> alt.expr.core.Expression:
    """Vega predicate |datum[field]| > threshold."""
    return alt.expr.abs(alt.datum[field]) > threshold


# --------------------------------------------------------------------------------------------------
# bars and scatter plots
# --------------------------------------------------------------------------------------------------


def pair_bar_chart(df: pd.DataFrame, value: str = "relevance", title: str | None = None,
                   label_cols: tuple[str, str] = ("token_a", "token_b"), extra_tooltips: Sequence[str] = (),
                   width: int = 320, subtitle: str | None = None) -> alt.Chart:
    """Horizontal bars of token pairs (``token_a ↔ token_b``), largest |value| on top, signed colours; every
    bar is labelled."""
    d = df.copy()
    a, b = label_cols
    d["pair"] = (d[a].astype(str) + " ↔ " + d[b].astype(str)) if len(d) else pd.Series(dtype=str)
    d["pair"] = _dedupe(d["pair"].tolist())
    order = d.assign(_k=d[value].abs() if len(d) else 0).sort_values("_k", ascending=False)["pair"].tolist()
    tips = [alt.Tooltip("pair:N", title="token pair"), alt.Tooltip(f"{value}:Q", format="+.4g")]
    tips += [alt.Tooltip(f"{c}:Q", format=",.4~g") for c in extra_tooltips if c in d.columns]
    chart = alt.Chart(d).mark_bar().encode(
        y=alt.Y("pair:N", sort=order, title=None, axis=alt.Axis(labelLimit=220, labelOverlap=False)),  # every bar
        x=alt.X(f"{value}:Q", title=value.replace("_", " ")),
        color=alt.Color(f"{value}:Q", scale=signed_scale(max_abs(d[value]) if len(d) else 1.0), legend=None),
        tooltip=tips,
    ).properties(width=width, height=alt.Step(18))
    return _finish(chart, title, subtitle)


def _dedupe(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in labels:
        k = seen.get(s, 0)
        out.append(s if k == 0 else f"{s} ({k + 1})")
        seen[s] = k + 1
    return out


def score_scatter_chart(pred: pd.DataFrame, title: str | None = None, highlight: Sequence[int] = (),
                        width: int = 420, height: int = 320, subtitle: str | None = None) -> alt.Chart:
    """Model score against gold (0-1) per pair, coloured by error (red: over-estimated), with the
    identity line; pairs in ``highlight`` are drawn larger and outlined."""
    d = pred.copy()
    keep = [c for c in ("pair_id", "gold", "gold_norm", "model_score", "error", "sentence1", "sentence2") if c in d]
    d = d[keep].dropna(subset=["gold_norm", "model_score"])
    d["highlighted"] = d["pair_id"].isin(list(highlight)) if len(d) else pd.Series(dtype=bool)
    tips = [alt.Tooltip("pair_id:Q", title="pair"), alt.Tooltip("gold:Q", format=".2f"),
            alt.Tooltip("gold_norm:Q", title="gold (0-1)", format=".3f"),
            alt.Tooltip("model_score:Q", title="model score", format=".3f"),
            alt.Tooltip("error:Q", format="+.3f")]
    tips += [alt.Tooltip(f"{c}:N") for c in ("sentence1", "sentence2") if c in d.columns]
    lo = float(min(0.0, d["model_score"].min() if len(d) else 0.0))
    hi = float(max(1.0, d["model_score"].max() if len(d) else 1.0))
    diag = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="#888888").encode(x="x:Q", y="y:Q")
    points = alt.Chart(d).mark_circle(stroke="#000000").encode(
        x=alt.X("gold_norm:Q", title="gold (0-1)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("model_score:Q", title="model score", scale=alt.Scale(domain=[lo, hi], nice=True)),
        color=alt.Color("error:Q", scale=signed_scale(max_abs(d["error"]) if len(d) else 1.0),
                        legend=alt.Legend(title="error", format="+.2f")),
        size=alt.when(alt.datum.highlighted).then(alt.value(140)).otherwise(alt.value(45)),
        strokeWidth=alt.when(alt.datum.highlighted).then(alt.value(1.5)).otherwise(alt.value(0)),
        tooltip=tips,
    )
    chart = alt.layer(diag, points).properties(width=width, height=height)
    return _finish(chart, title, subtitle)


def score_compare_chart(df: pd.DataFrame, label_a: str = "A", label_b: str = "B", title: str | None = None,
                        width: int = 380, height: int = 320, subtitle: str | None = None) -> alt.Chart:
    """Per-pair model score of run A (x) against run B (y), coloured by the change B - A."""
    d = df.copy()
    tips = [alt.Tooltip("pair_id:Q", title="pair"), alt.Tooltip("score_a:Q", title=f"score {label_a}", format=".4f"),
            alt.Tooltip("score_b:Q", title=f"score {label_b}", format=".4f"),
            alt.Tooltip("delta:Q", title="B − A", format="+.4f")]
    tips += [alt.Tooltip(f"{c}:Q", format=".2f") for c in ("gold",) if c in d.columns]
    tips += [alt.Tooltip(f"{c}:N") for c in ("sentence1", "sentence2", "sentence1_a", "sentence2_a", "sentence1_b",
                                             "sentence2_b") if c in d.columns]
    vals = pd.concat([d.get("score_a", pd.Series(dtype=float)), d.get("score_b", pd.Series(dtype=float))])
    lo = float(vals.min()) if len(vals) else 0.0
    hi = float(vals.max()) if len(vals) else 1.0
    diag = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(
        strokeDash=[4, 4], color="#888888").encode(x="x:Q", y="y:Q")
    points = alt.Chart(d).mark_circle(size=50).encode(
        x=alt.X("score_a:Q", title=f"model score — {label_a}", scale=alt.Scale(zero=False)),
        y=alt.Y("score_b:Q", title=f"model score — {label_b}", scale=alt.Scale(zero=False)),
        color=alt.Color("delta:Q", scale=signed_scale(max_abs(d["delta"]) if len(d) else 1.0),
                        legend=alt.Legend(title="B − A", format="+.2f")),
        tooltip=tips,
    )
    return _finish(alt.layer(diag, points).properties(width=width, height=height), title, subtitle)


# --------------------------------------------------------------------------------------------------
# faithfulness evaluations (rows of Store.evaluations; lo/hi = y -/+ sd from core.views.evidence.with_band)
# --------------------------------------------------------------------------------------------------


def _legend(columns: int = 3) -> alt.Legend:
    return alt.Legend(orient="bottom", columns=columns, labelLimit=260)


def evidence_lines_chart(df: pd.DataFrame, x_title: str, y_title: str, log_x: bool = False, log_y: bool = False,
                         band: bool = True) -> alt.Chart:
    """Mean (line with points) and mean ± sd (shaded, not on a log y axis) of y against x, per series."""
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(type="log") if log_x else alt.Undefined)
    color = alt.Color("series:N", title=None, legend=_legend())
    tip = [alt.Tooltip("series:N"), alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("y:Q", format=".4g"),
           alt.Tooltip("y_sd:Q", title="sd", format=".3g"), alt.Tooltip("n:Q")]
    base = alt.Chart(df)
    layers = [base.mark_line(point=True).encode(
        x=x, y=alt.Y("y:Q", title=y_title, scale=alt.Scale(type="log") if log_y else alt.Undefined), color=color,
        tooltip=tip)]
    if band and not log_y:
        layers.insert(0, base.mark_area(opacity=0.15).encode(x=x, y="lo:Q", y2="hi:Q", color=color))
    return alt.layer(*layers).properties(width=560, height=320)


def evidence_bars_chart(df: pd.DataFrame, y_title: str, color: str | None = None) -> alt.Chart:
    """Mean bars with ± sd rules per ``category`` (in the rows' order), grouped by ``color`` when given."""
    cat = alt.X("category:N", title=None, sort=list(dict.fromkeys(df["category"])),
                axis=alt.Axis(labelAngle=-30, labelLimit=220))
    tip = [alt.Tooltip("category:N", title="group"), alt.Tooltip("y:Q", format=".4g"),
           alt.Tooltip("y_sd:Q", title="sd", format=".3g"), alt.Tooltip("n:Q")]
    enc: dict = {}
    if color:
        enc = {"color": alt.Color(f"{color}:N", title=None, legend=_legend()), "xOffset": alt.XOffset(f"{color}:N")}
        tip.insert(1, alt.Tooltip(f"{color}:N"))
    bars = alt.Chart(df).mark_bar().encode(x=cat, y=alt.Y("y:Q", title=y_title), tooltip=tip, **enc)
    offset = {"xOffset": enc["xOffset"]} if color else {}
    rule = alt.Chart(df).mark_rule().encode(x=cat, y="lo:Q", y2="hi:Q", **offset)
    return alt.layer(bars, rule).properties(width=max(240, 70 * df["category"].nunique()), height=300)


def identity_scatter_chart(points: pd.DataFrame, x_title: str, y_title: str) -> alt.TopLevelMixin:
    """y against x per row with the identity line, one panel per series.

    Both layers read the facet's data (one frame: the points, ``kind`` "point", and two "identity" rows per
    series spanning every panel's common range), so each panel draws exactly its own series' points; a layer
    with data of its own would escape the facet and draw every series in every panel."""
    tips = [alt.Tooltip("series:N"), alt.Tooltip("x:Q", format=".4f"), alt.Tooltip("y:Q", format=".4f")]
    if points.empty:
        return alt.Chart(points).mark_circle(size=28, opacity=0.6).encode(
            x=alt.X("x:Q", title=x_title), y=alt.Y("y:Q", title=y_title), tooltip=tips)
    order = list(dict.fromkeys(points["series"]))
    lo = float(min(points["x"].min(), points["y"].min()))
    hi = float(max(points["x"].max(), points["y"].max()))
    ident = pd.DataFrame({"series": [s for s in order for _ in (0, 1)], "x": [lo, hi] * len(order),
                          "y": [lo, hi] * len(order), "kind": "identity"})
    both = pd.concat([points[["series", "x", "y"]].assign(kind="point"), ident], ignore_index=True)
    base = alt.Chart()
    line = base.mark_line(color="gray", strokeDash=[4, 4]).encode(
        x=alt.X("x:Q", title=x_title), y=alt.Y("y:Q", title=y_title)).transform_filter(alt.datum.kind == "identity")
    dots = base.mark_circle(size=28, opacity=0.6).encode(
        x=alt.X("x:Q", title=x_title), y=alt.Y("y:Q", title=y_title), tooltip=tips,
    ).transform_filter(alt.datum.kind == "point")
    return alt.layer(line, dots, data=both).properties(width=260, height=260).facet(
        column=alt.Column("series:N", title=None, sort=order))


def histogram_chart(hist: pd.DataFrame, x_title: str) -> alt.Chart:
    """Densities (y) at bin centres (x) as step lines, one per series."""
    return alt.Chart(hist).mark_line(interpolate="step-after").encode(
        x=alt.X("x:Q", title=x_title), y=alt.Y("y:Q", title="density"),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["series:N", alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("y:Q", format=".3g")],
    ).properties(width=560, height=280)


def pair_matrix_chart(both: pd.DataFrame, title: str) -> alt.LayerChart:
    """A method x method matrix of y in [-1, 1] on the signed scale, values written in the cells."""
    rect = alt.Chart(both).mark_rect().encode(
        x=alt.X("method:N", title=None), y=alt.Y("other:N", title=None),
        color=alt.Color("y:Q", title=title, scale=signed_scale(1.0)),
        tooltip=["method:N", "other:N", alt.Tooltip("y:Q", format=".3f"), alt.Tooltip("y_sd:Q", format=".3f"), "n:Q"])
    text = alt.Chart(both).mark_text(fontSize=FONT_SIZE).encode(
        x="method:N", y="other:N", text=alt.Text("y:Q", format=".2f"))
    return alt.layer(rect, text).properties(width=320, height=320)


# --------------------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------------------


def chart_png(chart: alt.TopLevelMixin, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes (rendered by vl-convert, no browser)."""
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


def chart_svg(chart: alt.TopLevelMixin) -> bytes:
    """The chart as SVG (UTF-8 bytes)."""
    import vl_convert as vlc

    return vlc.vegalite_to_svg(chart.to_json()).encode("utf-8")


def table_csv(df: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV (no index)."""
    return df.to_csv(index=False).encode("utf-8")


def table_parquet(df: pd.DataFrame) -> bytes:
    """The table as Parquet bytes; columns Arrow cannot type (mixed objects) are written as text."""
    out = df.reset_index(drop=True)
    buf = io.BytesIO()
    try:
        out.to_parquet(buf, index=False)
    except Exception:  # noqa: BLE001  (pyarrow raises several types for untypable object columns)
        out = out.copy()
        for c in out.columns:
            if out[c].dtype == object:
                out[c] = out[c].map(lambda v: None if v is None else str(v))
        buf = io.BytesIO()
        out.to_parquet(buf, index=False)
    return buf.getvalue()


def progress_chart(timeline: pd.DataFrame, n_pairs: int, title: str | None = None) -> alt.TopLevelMixin:
    """The run's committed pairs over time (a step line up to ``n_pairs``), each commit a point coloured by the
    worker that made it (``timeline``: core.views.progress.timeline_frame rows)."""
    # whole seconds on the axis (commits within one second had Vega label its milliseconds: ".097"), over at
    # least a minute around the commits
    times = pd.to_datetime(timeline["committed_at"]) if len(timeline) else pd.Series([pd.Timestamp(0)])
    lo, hi = times.min(), times.max()
    pad = max(pd.Timedelta(seconds=30), (hi - lo) * 0.05) if hi - lo < pd.Timedelta(minutes=1) else (hi - lo) * 0.02
    domain = [(lo - pad).isoformat(), (hi + pad).isoformat()]
    x = alt.X("committed_at:T", title="commit time (UTC)", scale=alt.Scale(domain=domain),
              axis=alt.Axis(format="%H:%M:%S", tickMinStep=1000, labelOverlap=True))
    y = alt.Y("pairs_done:Q", title="pairs committed", scale=alt.Scale(domain=[0, max(int(n_pairs), 1)]))
    tip = [alt.Tooltip("worker:N"), alt.Tooltip("committed_at:T", format="%H:%M:%S"),
           alt.Tooltip("n_pairs:Q", title="pairs in chunk"), alt.Tooltip("pairs_done:Q", title="pairs so far")]
    base = alt.Chart(timeline)
    line = base.mark_line(interpolate="step-after", color="#888888").encode(x=x, y=y)
    points = base.mark_point(filled=True, size=50).encode(x=x, y=y, color=alt.Color("worker:N", legend=_legend(2)),
                                                         tooltip=tip)
    return _finish(alt.layer(line, points).properties(width=620, height=260), title)
