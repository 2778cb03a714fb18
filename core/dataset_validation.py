"""Row-by-row validation of a pair table: nothing is changed silently. A row is rejected for its first problem
(missing, non-numeric or out-of-range gold, an empty or non-text sentence, a sentence with a control character
such as NUL (tab and line breaks are text), a repeated pair); rejected rows
raise a DatasetError naming them, or are dropped and counted, as the caller chooses."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.safe_text import control_character, has_visible_character, parse_ascii_decimal

ROLES = ("sentence1", "sentence2", "score")
ON_BAD = ("error", "skip")
DUPLICATE_POLICIES = ("error", "skip", "keep")
#: How bad-row messages name the options, for Python callers and for the CLI (``precompute --on-bad skip``).
_SKIP_HINT = ("pass --on-bad skip (Python: on_bad='skip') to drop and count them; duplicates: "
              "--duplicates skip or keep (duplicates='skip' or 'keep')")

# Reasons a row is rejected, in the order they are checked; a row is counted under its first reason.
MISSING_GOLD = "missing gold"
NON_NUMERIC_GOLD = "non-numeric gold"
GOLD_OUT_OF_RANGE = "gold out of range"
EMPTY_SENTENCE = "empty sentence"  # no visible character: blank, or only zero-width/format characters
NON_TEXT_SENTENCE = "non-text sentence"
CONTROL_CHARACTER = "control character in a sentence"  # NUL, escape, DEL ...: not tab or line breaks
DUPLICATE_PAIR = "duplicate pair"
REASONS = (
    MISSING_GOLD,
    NON_NUMERIC_GOLD,
    GOLD_OUT_OF_RANGE,
    EMPTY_SENTENCE,
    NON_TEXT_SENTENCE,
    CONTROL_CHARACTER,
    DUPLICATE_PAIR,
)
_SHOWN_ROWS = 5


def shown_rows(rows) -> str:
    """The first few row numbers of ``rows`` for a message: ``3, 7, 9``."""
    return ", ".join(map(str, list(rows)[:_SHOWN_ROWS]))


class DatasetError(ValueError):
    """A dataset cannot be found, read or validated; the message says which file or argument and why."""




def require_columns(table: pd.DataFrame, needed: tuple[str, ...] | list[str], where: str) -> None:
    missing = [name for name in needed if name not in table.columns]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {missing}; columns found: {list(table.columns)} "
            "(map yours with columns={'sentence1': ..., 'sentence2': ..., 'score': ...})"
        )


def _gold_value(value: object) -> tuple[float, str | None]:
    """The gold score as a float, or NaN and the reason it is not usable (infinite counts as non-numeric)."""
    if isinstance(value, str):
        if not value.strip():
            return math.nan, MISSING_GOLD
        number = parse_ascii_decimal(value)  # float() would also take "0_5" and Arabic-Indic digits
        if number is None:
            return math.nan, NON_NUMERIC_GOLD
    elif isinstance(value, (bool, np.bool_)):
        return math.nan, NON_NUMERIC_GOLD
    elif value is None or value is pd.NA:
        return math.nan, MISSING_GOLD
    elif isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
    else:
        return math.nan, NON_NUMERIC_GOLD
    if math.isnan(number):
        return math.nan, MISSING_GOLD
    if math.isinf(number):
        return math.nan, NON_NUMERIC_GOLD
    return number, None


def _text_problem(value: object) -> str | None:
    if isinstance(value, str):
        if not has_visible_character(value):
            return EMPTY_SENTENCE
        return CONTROL_CHARACTER if control_character(value) is not None else None
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return EMPTY_SENTENCE
    return NON_TEXT_SENTENCE


def _gold_scale(
    gold: np.ndarray, usable: np.ndarray, gold_range: tuple[float, float] | None, where: str
) -> tuple[float, float]:
    if gold_range is None:
        if not usable.any():
            raise DatasetError(f"{where}: no row has a numeric gold score")
        low, high = float(gold[usable].min()), float(gold[usable].max())
        if low == high:
            raise DatasetError(
                f"{where}: every gold score is {low}, so the scale cannot be inferred; pass gold_range=(min, max)"
            )
        warnings.warn(
            f"{where}: gold scale inferred from the data as [{low}, {high}]; pass gold_range=(min, max) to set it",
            stacklevel=6,
        )
        return low, high
    low, high = (float(bound) for bound in gold_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise DatasetError(f"gold_range must be (min, max) with min < max, got {gold_range!r}")
    return low, high


@dataclass(frozen=True)
class ValidRows:
    """A source table's rows after validation.

    Attributes:
        frame: one row per kept pair, in source order: pair_id (0-based data row), sentence1, sentence2, gold
            (original scale), gold_norm (0-1 over the scale), then the source's other columns (``source_``
            prefixed where a name clashes).
        gold_min, gold_max: the gold scale.
        skipped: rows dropped, by reason (with ``on_bad="skip"`` or ``duplicates="skip"``).
        duplicates_kept: rows kept although they repeat an earlier (sentence1, sentence2) pair.
    """

    frame: pd.DataFrame
    gold_min: float
    gold_max: float
    skipped: dict[str, int]
    duplicates_kept: int


def validate_rows(
    table: pd.DataFrame,
    roles: dict[str, str],
    where: str,
    gold_range: tuple[float, float] | None,
    duplicate_policy: str,
    on_bad: str,
    control_policy: str | None = None,
) -> ValidRows:
    """Validate ``table`` (its ``roles`` columns) row by row; ``where`` names the source in messages. Bad rows
    raise a DatasetError listing them by reason, or are dropped and counted, as ``on_bad`` and
    ``duplicate_policy`` say. ``control_policy``: what to do with a text holding a control character (default
    ``on_bad``); ``"keep"`` (a published benchmark split that has one) keeps such rows with a warning."""
    require_columns(table, [roles[role] for role in ROLES], where)
    if table.empty:
        raise DatasetError(f"{where}: no data rows (only a header); a dataset needs at least one pair")
    first = table[roles["sentence1"]].tolist()
    second = table[roles["sentence2"]].tolist()
    parsed = [_gold_value(value) for value in table[roles["score"]].tolist()]
    gold = np.array([number for number, _ in parsed], dtype=float)
    reasons: list[str | None] = [reason for _, reason in parsed]
    low, high = _gold_scale(
        gold, np.array([reason is None for reason in reasons], dtype=bool), gold_range, where
    )

    seen: set[tuple[str, str]] = set()
    duplicates_kept = 0
    controls_kept: list[int] = []
    for row, (a, b) in enumerate(zip(first, second, strict=True)):
        if reasons[row] is None and not low <= gold[row] <= high:
            reasons[row] = GOLD_OUT_OF_RANGE
        text = [p for p in (_text_problem(a), _text_problem(b)) if p is not None]
        if control_policy == "keep" and CONTROL_CHARACTER in text:
            text = [p for p in text if p != CONTROL_CHARACTER]
            if reasons[row] is None and not text:
                controls_kept.append(row)
        reasons[row] = reasons[row] or (text[0] if text else None)
        if reasons[row] is None:
            if (a, b) not in seen:
                seen.add((a, b))
            elif duplicate_policy == "keep":
                duplicates_kept += 1
            else:
                reasons[row] = DUPLICATE_PAIR

    bad = {reason: [row for row, r in enumerate(reasons) if r == reason] for reason in REASONS}
    bad = {reason: rows for reason, rows in bad.items() if rows}
    fatal = {
        reason: rows
        for reason, rows in bad.items()
        if {DUPLICATE_PAIR: duplicate_policy, CONTROL_CHARACTER: control_policy or on_bad}.get(reason, on_bad) == "error"
    }
    if fatal:
        details = "; ".join(
            f"{reason}: {len(rows)} row(s), e.g. {shown_rows(rows)}"
            for reason, rows in fatal.items()
        )
        raise DatasetError(
            f"{where}: bad rows (0-based data rows, header not counted): {details}. Fix the data, or {_SKIP_HINT}"
        )
    skipped = {reason: len(rows) for reason, rows in bad.items()}
    if len(table) == sum(skipped.values()):
        counts = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        raise DatasetError(f"{where}: every one of its {len(table)} rows was skipped ({counts}); no pair is left")
    if skipped:
        summary = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        warnings.warn(
            f"{where}: skipped {sum(skipped.values())} of {len(table)} rows ({summary})", stacklevel=5
        )

    if controls_kept:
        warnings.warn(f"{where}: kept {len(controls_kept)} row(s) whose text holds a control character, as the "
                      f"published split has them (e.g. {shown_rows(controls_kept)}); on_bad='skip' (--on-bad skip) "
                      f"drops them", stacklevel=5)
    keep = np.array([reason is None for reason in reasons], dtype=bool)
    frame = pd.DataFrame(
        {
            "pair_id": np.flatnonzero(keep).astype(np.int64),
            "sentence1": table[roles["sentence1"]].to_numpy()[keep],
            "sentence2": table[roles["sentence2"]].to_numpy()[keep],
            "gold": gold[keep],
            "gold_norm": (gold[keep] - low) / (high - low),
        }
    )
    used = set(roles.values())
    for column in table.columns:
        if column not in used:
            label = str(column)
            while label in frame.columns:
                label = f"source_{label}"
            frame[label] = table[column].to_numpy()[keep]
    return ValidRows(frame, low, high, skipped, duplicates_kept)
