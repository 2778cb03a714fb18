"""The run-kind registry: what a run computes and which chunk tables it fills.

A run of kind ``attribute`` explains pairs with an attribution method of :data:`core.methods.METHODS` (its
``method`` column names the method); a kind without a method (``predict``: scores only) stores its own name
in ``method``. Other features register their kinds here (:func:`register_run_kind`), and everything that
lists run kinds (the writer's validation, the runner, the CLI) reads :data:`RUN_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunKind:
    """One kind of run. ``uses_method``: its runs name an attribution method (else ``method`` = ``name``);
    ``tables``: the chunk tables its chunks fill (the others are stored empty); ``relevances``: whether its
    chunks hold token-pair relevances (POS maps, failures' top pairs and comparisons need them)."""

    name: str
    description: str
    uses_method: bool
    tables: tuple[str, ...]
    relevances: bool


RUN_KINDS: dict[str, RunKind] = {}


def register_run_kind(kind: RunKind) -> RunKind:
    """Add ``kind`` to :data:`RUN_KINDS` (a name may be registered once)."""
    if kind.name in RUN_KINDS and RUN_KINDS[kind.name] != kind:
        raise ValueError(f"run kind {kind.name!r} is registered already")
    RUN_KINDS[kind.name] = kind
    return kind


ATTRIBUTE = register_run_kind(RunKind(
    "attribute", "token-pair relevances of every pair with an attribution method", True,
    ("predictions", "tokens", "token_pairs", "pos_pairs", "factors"), True,
))
PREDICT = register_run_kind(RunKind("predict", "the model's scores only (fast)", False, ("predictions",), False))


def method_names() -> list[str]:
    """The attribution methods (:data:`core.methods.METHODS`; imported here, on first use, with torch)."""
    from core.methods import METHODS

    return sorted(METHODS)


def kind_of_method(method: str) -> RunKind:
    """The run kind of a run whose ``method`` column is ``method``: a method-less kind's name, else the kind
    that uses methods (``attribute``)."""
    for kind in RUN_KINDS.values():
        if not kind.uses_method and kind.name == method:
            return kind
    return ATTRIBUTE


def methodless_kinds() -> list[str]:
    """Names of the kinds without a method (stored as ``method``; e.g. ``predict``)."""
    return [k.name for k in RUN_KINDS.values() if not k.uses_method]
