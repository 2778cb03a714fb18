"""The reader facade: every query group on one connection."""

from __future__ import annotations

from core.store.queries.catalogue import CatalogueQueries
from core.store.queries.comparisons import ComparisonQueries
from core.store.queries.corpus import CorpusQueries
from core.store.queries.evaluations import EvaluationQueries
from core.store.queries.failures import FailureQueries
from core.store.queries.pairs import PairQueries
from core.store.queries.progress import ProgressQueries
from core.store.queries.quartiles import QuartileQueries
from core.store.reader import StoreReader


class Store(CatalogueQueries, PairQueries, CorpusQueries, QuartileQueries, ComparisonQueries, FailureQueries,
            EvaluationQueries, ProgressQueries, StoreReader):
    """Read-only view of a store for the dashboard; safe while writers write or merges and compactions run.

    Follows the newest snapshot (one snapshot per call); ``Store(path).at(snapshot_id)`` is pinned to one.
    Query functions return pandas DataFrames; unknown ids give empty frames (see the package doc).
    """
