"""Charts draw their data: each facet of a faceted chart holds exactly its own series' rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from chart_spec import drawn_rows

from core import charts


def _conservation_points() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for series, n, slope in (("bilrp", 30, 0.5), ("bilrp (no biases)", 30, 1.0), ("hxp", 30, 3.0)):
        x = rng.uniform(0, 1, n)
        parts.append(pd.DataFrame({"series": series, "x": x, "y": slope * x + rng.normal(0, 0.01, n)}))
    return pd.concat(parts, ignore_index=True)


def test_identity_scatter_facets_hold_their_own_series():
    points = _conservation_points()
    drawn = drawn_rows(charts.identity_scatter_chart(points, "explained score", "sum of relevance"))
    assert list(drawn) == ["bilrp", "bilrp (no biases)", "hxp"]
    lo = min(points["x"].min(), points["y"].min())
    hi = max(points["x"].max(), points["y"].max())
    for series, marks in drawn.items():
        assert not any(own for _, _, own in marks), "a layer with data of its own escapes the facet"
        by_mark = {mark: rows for mark, rows, _ in marks}
        mine = points[points["series"] == series]
        dots = pd.DataFrame(by_mark["circle"])
        assert len(dots) == len(mine)
        np.testing.assert_array_equal(dots[["x", "y"]].to_numpy(), mine[["x", "y"]].to_numpy())
        line = pd.DataFrame(by_mark["line"])
        assert line[["x", "y"]].to_numpy().tolist() == [[lo, lo], [hi, hi]]


def test_evaluator_is_loud_about_what_it_cannot_evaluate():
    import altair as alt

    chart = alt.Chart(pd.DataFrame({"a": [1, 2]})).mark_point().encode(x="a:Q").transform_filter("datum.a > 1")
    with pytest.raises(ValueError, match="transform this evaluator does not know"):
        drawn_rows(chart)


def test_progress_chart_labels_whole_seconds_when_commits_fall_within_one():
    """Issue #21: three commits within one second had the time axis labelled with milliseconds (".097")."""
    import re

    t0 = pd.Timestamp("2026-12-07 20:00:00.050")
    timeline = pd.DataFrame({"committed_at": [t0, t0 + pd.Timedelta("0.047s"), t0 + pd.Timedelta("0.9s")],
                             "pairs_done": [8, 16, 24], "n_pairs": [8, 8, 8], "worker": ["w1"] * 3})
    chart = charts.progress_chart(timeline, 24)
    drawn = drawn_rows(chart)[None]
    assert [len(rows) for _, rows, _ in drawn] == [3, 3]
    svg = charts.chart_svg(chart).decode()
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    times = [t for t in labels if re.fullmatch(r"\d\d:\d\d:\d\d", t)]
    assert times, labels
    assert not [t for t in labels if re.fullmatch(r"\.\d+", t)], labels
