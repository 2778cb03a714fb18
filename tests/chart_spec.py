"""The rows each mark of a Vega-Lite spec draws, per facet: a small, loud evaluator of the specs core.charts
builds (inline datasets, facets, layers, and filter transforms of the form ``datum.F === 'v'``), so tests can
check each chart against the rows it must draw rather than against its code."""

from __future__ import annotations

import re
from typing import Any

_FILTER = re.compile(r"^\(?datum\.(\w+) === ('([^']*)'|-?[\d.]+|true|false)\)?$")


def _rows(data: dict[str, Any], datasets: dict[str, list[dict]]) -> list[dict]:
    if "name" in data:
        return list(datasets[data["name"]])
    if "values" in data:
        return list(data["values"])
    raise ValueError(f"data of a kind this evaluator does not know: {data}")


def _apply(rows: list[dict], transforms: list[dict]) -> list[dict]:
    for t in transforms:
        if set(t) != {"filter"} or not isinstance(t["filter"], str) or not _FILTER.match(t["filter"].strip()):
            raise ValueError(f"transform this evaluator does not know: {t}")
        field, literal, text = _FILTER.match(t["filter"].strip()).groups()
        value: Any = text if text is not None else {"true": True, "false": False}.get(literal)
        if value is None and text is None:
            value = float(literal)
        rows = [r for r in rows if r.get(field) == value]
    return rows


def _marks(spec: dict, rows: list[dict], datasets: dict) -> list[tuple[str, list[dict], bool]]:
    """(mark type, rows drawn, whether the mark has data of its own) of a unit or layer spec."""
    own = "data" in spec
    if own:
        rows = _rows(spec["data"], datasets)
    rows = _apply(rows, spec.get("transform", []))
    if "layer" in spec:
        out = []
        for layer in spec["layer"]:
            out += [(m, r, o or own) for m, r, o in _marks(layer, rows, datasets)]
        return out
    mark = spec["mark"]["type"] if isinstance(spec["mark"], dict) else spec["mark"]
    return [(mark, rows, own)]


def drawn_rows(chart: Any) -> dict[Any, list[tuple[str, list[dict], bool]]]:
    """facet value (None for a chart without facets) -> [(mark type, rows it draws there, own data?)]."""
    spec = chart.to_dict()
    datasets = spec.get("datasets", {})
    top = _rows(spec["data"], datasets) if "data" in spec else []
    if "facet" not in spec:
        return {None: _marks(spec, top, datasets)}
    facet = spec["facet"]
    if set(facet) != {"column"} and set(facet) != {"row"}:
        raise ValueError(f"facet this evaluator does not know: {facet}")
    field = next(iter(facet.values()))["field"]
    top = _apply(top, spec.get("transform", []))
    values = list(dict.fromkeys(r[field] for r in top))
    return {v: _marks(spec["spec"], [r for r in top if r[field] == v], datasets) for v in values}
