"""The pages' typed, cached access to the current store: one function per question a page asks.

Every function reads the store named by ``$SIMLENS_STORE`` (default ``./store``) through one shared
:class:`core.store.Store` per server process, at the snapshot this session pinned on first use ("Reload store"
moves it to the newest, :func:`newest_snapshot`), and caches its answer per snapshot. Each says which columns it returns; the pages use no others and hold
no SQL. Store methods are referenced as attributes (``Store.runs``), so a renamed one fails at import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.store import Store, StoreError
from core.store.queries.comparisons import Comparability
from core.store.queries.quartiles import QUARTILE_TOP_MAX  # noqa: F401  (the Failures page's slider)
from core.store.reader import StoreReader
from core.views.location import StoreState, store_location, store_state

Band = tuple[float, float] | None
QUERY_LOG: list[tuple[str, float]] = []  # (query, seconds) of the latest queries (bench/bench_pages.py reads it)


def still_current(store: StoreReader) -> bool:
    """Whether a cached Store (or IndexStore) still reads the store at its location; one whose store was deleted
    or rebuilt since is closed (the next call opens the store that is there now)."""
    if store.is_current():
        return True
    store.close()
    return False


@st.cache_resource(show_spinner=False, validate=still_current, on_release=Store.close)
def open_store(path: str) -> Store:
    """One Store per path and server process (it is thread-safe and sees new chunks by itself), reopened when
    the store at ``path`` was deleted or rebuilt (:func:`still_current`)."""
    return Store(path)


def current_store_path() -> Path | str:
    """The store the dashboard reads (``$SIMLENS_STORE``: a folder or a DuckLake connection string, else
    ``./store``)."""
    return store_location()[0]


@st.cache_data(show_spinner=False, max_entries=1024)
def _cached(path: str, fingerprint: tuple, name: str, args: tuple, kwargs: tuple) -> Any:
    store = open_store(path).at(fingerprint[0]) if fingerprint else open_store(path)
    return getattr(store, name)(*args, **dict(kwargs))


def pinned_fingerprint(path: str) -> tuple:
    """The snapshot this session reads (pinned on first use; :func:`forget_snapshots` moves to the newest)."""
    pins = st.session_state.setdefault("_store_snapshots", {})
    if not pins.get(path):
        pins[path] = newest_snapshot(path)
    return pins[path]


def newest_snapshot(path: str) -> tuple:
    """The store's newest snapshot id, ``(id,)``, read through the process's open store (a new session opens
    no connection of its own); ``()`` when the store cannot be read."""
    try:
        return (open_store(path).snapshot_id(),)
    except StoreError:
        return ()


def forget_snapshots() -> None:
    """Read the newest snapshot from now on ("Reload store", a freshly built demo store)."""
    st.session_state.pop("_store_snapshots", None)
    st.cache_data.clear()


def _query(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method`` (a ``Store`` method) on the current store at the session's snapshot, cached."""
    path = str(current_store_path())
    t0 = time.perf_counter()
    try:
        out = _cached(path, pinned_fingerprint(path), method.__name__, args, tuple(sorted(kwargs.items())))
    except StoreError as exc:  # a missing or damaged data file, an expired snapshot: say so, never a trace
        st.error(f"The store cannot be read: {exc}")
        st.stop()
    QUERY_LOG.append((method.__name__, time.perf_counter() - t0))
    del QUERY_LOG[:-200]
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_state(path: str, fingerprint: tuple) -> StoreState:
    return store_state(path, opener=open_store)


def state() -> StoreState:
    """Whether the current store is ``ok`` (has runs), ``empty``, ``missing`` or ``invalid`` (and why)."""
    path = str(current_store_path())
    return _cached_state(path, pinned_fingerprint(path))


def store_ok() -> bool:
    """Whether the current store can be read and has runs."""
    return state().state == "ok"


# ---- runs, models, datasets ---------------------------------------------------------------------------


def runs() -> pd.DataFrame:
    """One row per run, newest first: run_id, model_id, model_name, dataset_key, method, layer, steps,
    quadrature, status, n_pairs (pairs the run covers), dataset_pairs, pairs_written, partial, coverage
    ("100 of 1,379 pairs"), n_chunks, chunks_present, complete, spearman, pearson, mse, pairs_per_s, seconds,
    started_at, device, error_message (and the other ``Store.runs`` columns)."""
    return _query(Store.runs)


def models() -> pd.DataFrame:
    """Every stored model (the models table): model_id, name, ..."""
    return _query(Store.models)


def datasets() -> pd.DataFrame:
    """Every stored dataset: dataset_key, name, split, lang_a, lang_b, n_pairs, gold_min, gold_max, source."""
    return _query(Store.datasets)


def metrics_table(per_method: bool = False) -> pd.DataFrame:
    """Per (model, dataset) — or per (model, dataset, method) — the metrics of its most complete finished run:
    model_id, model_name, dataset_key, method, spearman, pearson (x100), mse, n_pairs, dataset_pairs,
    coverage, partial, run_id, complete."""
    return _query(Store.metrics_table, per_method=per_method)


def summary() -> pd.DataFrame:
    """Rows, files and bytes on disk per store table."""
    return _query(Store.summary)


# ---- one run's pairs ------------------------------------------------------------------------------------


def predictions(run_id: str, gold_band: Band = None, error_band: Band = None, text: str | None = None,
                word: str | None = None) -> pd.DataFrame:
    """The predictions of a run by pair_id (only the pairs passing the filters: gold/error band, sentence text,
    a word or token): pair_id, model_score, explained_score, gold, gold_norm, error, residual, sentence1,
    sentence2."""
    return _query(Store.predictions, run_id, gold_band=gold_band, error_band=error_band, text=text, word=word)


def pair_info(dataset_key: str, pair_id: int) -> pd.DataFrame:
    """0 or 1 row: the pair's sentence1, sentence2, gold, gold_norm and its dataset's name, split, lang_a,
    lang_b, gold_min, gold_max."""
    return _query(Store.pair_info, dataset_key, int(pair_id))


def pair_runs(dataset_key: str, pair_id: int) -> pd.DataFrame:
    """Every run that has this pair: run_id, model_id, model_name, method, layer, steps, quadrature, status
    and the pair's model_score, explained_score, error."""
    return _query(Store.pair_runs, dataset_key, int(pair_id))


def pair_matrix(run_id: str, pair_id: int, level: str = "token", include_special: bool = True) -> pd.DataFrame:
    """One pair's relevance matrix, long form: i, j, token_a, token_b, relevance, pos_a, pos_b, special_a,
    special_b (``level="word"``: subword pieces summed into words)."""
    return _query(Store.pair_matrix, run_id, int(pair_id), level=level, include_special=include_special)


def pair_matrices(run_ids: Sequence[str], pair_id: int | Mapping[str, int], level: str = "token",
                  include_special: bool = True) -> dict[str, pd.DataFrame]:
    """:func:`pair_matrix` of one pair in several runs, read at once: run_id -> frame. ``pair_id``: its id in
    every run, or run id -> its id in that run's dataset (``pair_runs``' pair_id column)."""
    ids = {str(k): int(v) for k, v in pair_id.items()} if isinstance(pair_id, Mapping) else int(pair_id)
    return _query(Store.pair_matrices, list(run_ids), ids, level=level, include_special=include_special)


def failures(run_id: str, kind: str = "over", limit: int = 10, top_k: int = 3, include_special: bool = False,
             text: str | None = None, word: str | None = None) -> pd.DataFrame:
    """The pairs a run got most wrong (``kind`` over/under), among those whose text or words match:
    pair_id, gold, gold_norm, model_score, error, top_pairs_text, sentence1, sentence2."""
    return _query(Store.failures, run_id, kind=kind, limit=limit, top_k=top_k, include_special=include_special,
                  text=text, word=word)


def quartile_top_pairs(run_id: str, quartile: str = "high", k: int = 5, include_special: bool = False,
                       level: str = "token") -> pd.DataFrame:
    """The most relevant token (word) pairs among the quarter of pairs with the highest/lowest score:
    token_a, token_b, relevance, count, share."""
    return _query(Store.quartile_top_pairs, run_id, quartile=quartile, k=k, include_special=include_special,
                  level=level)


# ---- POS maps and comparisons ---------------------------------------------------------------------------


def pos_heatmap(run_ids: Sequence[str], gold_band: Band = None, error_band: Band = None,
                include_special: bool = True, level: str = "token", agg: str = "sum", text: str | None = None,
                word: str | None = None) -> pd.DataFrame:
    """POS x POS relevance over the runs' pairs that pass the filters: pos_a, pos_b, relevance,
    relevance_norm, pos_sum, pos_norm, neg_sum, neg_norm, count, n_pairs."""
    return _query(Store.pos_heatmap, list(run_ids), gold_band=gold_band, error_band=error_band,
                  include_special=include_special, level=level, agg=agg, text=text, word=word)


def pos_cell_examples(run_id: str, pos_a: str | None, pos_b: str | None, limit: int = 20,
                      include_special: bool = True, order: str = "abs", gold_band: Band = None,
                      error_band: Band = None, text: str | None = None, word: str | None = None) -> pd.DataFrame:
    """The token pairs behind one heat-map cell under the same filters as :func:`pos_heatmap`, strongest
    first: pair_id, i, j, token_a, token_b, relevance, word_a, word_b, gold, gold_norm, model_score, error,
    sentence1, sentence2."""
    return _query(Store.pos_cell_examples, run_id, pos_a, pos_b, limit=limit, include_special=include_special,
                  order=order, gold_band=gold_band, error_band=error_band, text=text, word=word)


def comparability(run_a: str, run_b: str) -> Comparability | None:
    """What two runs can be compared on: the pairs both cover, same or aligned datasets, whether each side
    has token pairs, untagged sides, and why a comparison is refused (None when a run does not exist)."""
    return _query(Store.comparability, run_a, run_b)


def compare_metrics(run_a: str, run_b: str, gold_band: Band = None) -> pd.DataFrame:
    """Metrics of two runs side by side on the pairs both cover (in the gold band): metric (n_shared,
    spearman, pearson, mse, ...), run_a, run_b, diff (= b - a)."""
    return _query(Store.compare_metrics, run_a, run_b, gold_band=gold_band)


def compare_pos(run_a: str, run_b: str, gold_band: Band = None, include_special: bool = True,
                level: str = "token", agg: str = "sum") -> pd.DataFrame:
    """Per POS pair, both runs' maps and their difference on the pairs both cover: pos_a, pos_b, relevance_a,
    relevance_b, diff, relevance_norm_a, relevance_norm_b, diff_norm, count_a, count_b. Only for runs whose
    :func:`comparability` has no ``token_pairs_reason``."""
    return _query(Store.compare_pos, run_a, run_b, gold_band=gold_band, include_special=include_special,
                  level=level, agg=agg)


def compare_token_pairs(run_a: str, run_b: str, limit: int = 20, include_special: bool = False,
                        level: str = "token", gold_band: Band = None) -> pd.DataFrame:
    """Token (word) pairs, matched by lower-cased text, whose relevance over the shared pairs changed most:
    token_a, token_b, relevance_a, relevance_b, diff, count_a, count_b, match ("both", "A only", "B only")."""
    return _query(Store.compare_token_pairs, run_a, run_b, limit=limit, include_special=include_special,
                  level=level, gold_band=gold_band)


def compare_scores(run_a: str, run_b: str, gold_band: Band = None) -> pd.DataFrame:
    """Per pair both runs cover (same or aligned datasets), in the gold band: pair_id, gold, gold_norm,
    score_a, score_b, delta (= b - a), error_a, error_b, sentence1_a, sentence2_a, sentence1_b, sentence2_b."""
    return _query(Store.compare_scores, run_a, run_b, gold_band=gold_band)


# ---- faithfulness evaluations ---------------------------------------------------------------------------


def evaluation_list(kind: str | None = None) -> pd.DataFrame:
    """One row per stored evaluation, newest first: eval_id, kind, model_name, dataset_key, n_pairs, params,
    created_at, seconds, code_version, n_rows."""
    return _query(Store.evaluation_list, kind)


def evaluation_rows(eval_id: str) -> pd.DataFrame:
    """The rows of one evaluation (metric, y, y_sd, n, x, series, label, method, layer, steps, quadrature,
    extra as JSON) with its settings (model_name, dataset_key, n_pairs, seconds, code_version, params);
    :func:`core.views.evidence_rows` parses the JSON."""
    return _query(Store.evaluations, eval_id=eval_id)


def model_table1() -> pd.DataFrame:
    """Möller et al. (2023) Table 1: model_name, base_model, adjusted, cosine, dot, dataset_key, n_pairs, ..."""
    return _query(Store.model_table1)


# ---- a run's progress ----------------------------------------------------------------------------------


def run_workers(run_id: str) -> pd.DataFrame:
    """Per process that committed chunks of the run: host, pid, chunks, pairs, seconds, pairs_per_s,
    first_commit, last_commit."""
    return _query(Store.run_workers, run_id)


def chunk_timeline(run_id: str) -> pd.DataFrame:
    """The run's committed chunks in commit order: committed_at, host, pid, n_pairs, pairs_done."""
    return _query(Store.chunk_timeline, run_id)
