"""Reading a user's table file (.csv, .tsv, .parquet, .jsonl/.json) into a DataFrame, exactly as written: CSV/TSV
fields stay text, rows with a wrong field count and repeated header names are errors naming the line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from core.dataset_validation import DatasetError

FILE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".json")


def read_table(path: Path) -> pd.DataFrame:
    """The table in ``path`` (by its suffix); a DatasetError naming the file when it cannot be parsed."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return read_delimited(path, "\t" if suffix == ".tsv" else ",")
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return read_json(path)
    except (ValueError, OSError, csv.Error) as exc:  # decode, JSON and Arrow errors are ValueErrors
        raise DatasetError(f"cannot parse {path}: {exc}") from exc


def read_delimited(path: Path, delimiter: str) -> pd.DataFrame:
    """All fields as text; every non-blank line must have as many fields as the header."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        header = next(reader, None)
        if header is None:
            raise ValueError("the file is empty")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise ValueError(f"repeated column name(s) {repeated} in the header")
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"line {reader.line_num} has {len(row)} fields but the header has {len(header)}"
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=header, dtype=str)


def read_json(path: Path) -> pd.DataFrame:
    """JSON lines (one object per line) or one JSON array of objects."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = []
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number}: {exc}") from exc
    not_object = next((i for i, record in enumerate(records) if not isinstance(record, dict)), None)
    if not_object is not None:
        raise ValueError(f"record {not_object + 1} is not a JSON object")
    return pd.DataFrame.from_records(records)
