"""Retrieval audit, the pure part: windows of long passages, top-k hits folded to passages, the query x passage
explanation of a hit from two factors, and the contrast of two hits on the query's tokens.

Everything here is numpy in, numpy/dataclasses out (no I/O, no SQL, no Streamlit). The store keeps an index's
windows with their embeddings and float16 factors (:mod:`core.store.index`); ``precompute/index.py`` builds
it; the Search page and ``python -m precompute search`` call :func:`explain_hit` and :func:`contrast_hits`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.attribution import Explanation, SentenceFactors, Settings, pair_explanation
from core.model_files import legacy_model_id
from core.models import SimilarityModel


class SearchError(ValueError):
    """Bad search input (empty query, unknown index, a model other than the index's): the message says what."""


# --------------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpan:
    """One window of a passage: characters ``[start, end)`` of the passage, ``n_tokens`` content tokens
    (special tokens not counted)."""

    start: int
    end: int
    n_tokens: int


def window_spans(text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None], budget: int,
                 overlap: int) -> list[WindowSpan]:
    """Overlapping windows of at most ``budget`` content tokens covering ``text``, cut between words.

    ``offsets``/``word_ids``: the tokenizer's character span and word of each content token (no special
    tokens). A text that fits is one window spanning all of it. Consecutive windows share about ``overlap``
    tokens (whole words); a single word longer than ``budget`` tokens is cut inside the word. Every token is
    in at least one window, and each window starts after the previous one.
    """
    if budget < 1:
        raise ValueError(f"window budget must be a positive number of tokens, got {budget}")
    if not 0 <= overlap < budget:
        raise ValueError(f"window overlap must be in 0..{budget - 1} tokens, got {overlap}")
    n = len(offsets)
    if n <= budget:
        return [WindowSpan(0, len(text), n)]
    # word starts: token positions where a new word begins (every token of an unknown word counts as one)
    starts = [t for t in range(n) if t == 0 or word_ids[t] is None or word_ids[t] != word_ids[t - 1]]
    is_start = np.zeros(n + 1, dtype=bool)
    is_start[starts] = True
    is_start[n] = True
    spans: list[WindowSpan] = []
    first = 0
    while True:
        last = min(first + budget, n)  # exclusive end in tokens
        if last < n:
            cut = max((t for t in range(first + 1, last + 1) if is_start[t]), default=last)
            last = cut
        spans.append(WindowSpan(int(offsets[first][0]), int(offsets[last - 1][1]), last - first))
        if last >= n:
            return spans
        wanted = max(last - overlap, first + 1)
        following = [t for t in range(wanted, last + 1) if is_start[t]]
        first = following[0] if following else wanted


# --------------------------------------------------------------------------------------------------
# top-k: the numpy reference, and folding window hits to passages
# --------------------------------------------------------------------------------------------------


def similarities(query: np.ndarray, embeddings: np.ndarray, similarity: str) -> np.ndarray:
    """(N,) similarity of one query embedding (D,) to every row of ``embeddings`` (N, D), in float64:
    ``cosine`` or ``dot`` (the model's own similarity)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    dots = emb @ q
    if similarity == "cosine":
        return dots / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    if similarity == "dot":
        return dots
    raise ValueError(f"similarity must be cosine or dot, got {similarity!r}")


@dataclass(frozen=True)
class WindowHit:
    """A passage's best window among the candidates: ``row`` indexes the candidate arrays."""

    passage_id: int
    window_index: int
    score: float
    row: int


def fold_to_passages(passage_ids: Sequence[int], window_indices: Sequence[int], scores: Sequence[float],
                     k: int) -> list[WindowHit]:
    """The ``k`` best passages of scored windows: each passage counts once, with its best window.

    Order: score descending, then passage id, then window index (so ties are deterministic).
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    pids = np.asarray(passage_ids, dtype=np.int64)
    wins = np.asarray(window_indices, dtype=np.int64)
    sc = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((wins, pids, -sc))
    hits: list[WindowHit] = []
    seen: set[int] = set()
    for row in order:
        pid = int(pids[row])
        if pid in seen:
            continue
        seen.add(pid)
        hits.append(WindowHit(pid, int(wins[row]), float(sc[row]), int(row)))
        if len(hits) == k:
            break
    return hits


def exact_top_k(query: np.ndarray, embeddings: np.ndarray, passage_ids: Sequence[int],
                window_indices: Sequence[int], similarity: str, k: int) -> list[WindowHit]:
    """Brute-force top-k passages (the reference the store's searches are tested against)."""
    return fold_to_passages(passage_ids, window_indices, similarities(query, embeddings, similarity), k)


def candidate_count(k: int, max_windows: int) -> int:
    """How many top windows are enough to hold the top ``k`` passages exactly: ``k * max_windows``.

    The k-th best passage's best window is beaten only by windows of the k-1 better passages."""
    return max(1, int(k)) * max(1, int(max_windows))


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompts:
    """A model's named prompts (sentence-transformers ``prompts``) and its default prompt name."""

    prompts: dict[str, str]
    default: str | None = None

    def resolve(self, name: str | None, fallback: Sequence[str] = ()) -> tuple[str | None, str]:
        """(name, text) of the prompt ``name``; None: the first of ``fallback`` the model has, else its
        default prompt, else no prompt (None, "")."""
        if name is not None:
            if name not in self.prompts:
                known = ", ".join(sorted(self.prompts)) or "none"
                raise SearchError(f"the model has no prompt named {name!r}; its prompts: {known}")
            return name, self.prompts[name]
        for candidate in (*fallback, self.default):
            if candidate is not None and candidate in self.prompts:
                return candidate, self.prompts[candidate]
        return None, ""


def model_prompts(model: SimilarityModel) -> Prompts:
    """The model's prompts: ``model.prompts`` when the model adapter provides them, else
    ``config_sentence_transformers.json`` of its folder (``prompts``, ``default_prompt_name``)."""
    own = getattr(model, "prompts", None)
    if isinstance(own, dict):
        return Prompts(dict(own), getattr(model, "default_prompt_name", None))
    path = Path(model.path) / "config_sentence_transformers.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        config = {}
    prompts = {str(k): str(v) for k, v in (config.get("prompts") or {}).items()}
    return Prompts(prompts, config.get("default_prompt_name") or None)


# --------------------------------------------------------------------------------------------------
# a hit's explanation, and the contrast of two hits
# --------------------------------------------------------------------------------------------------


def explain_hit(model: SimilarityModel, query: SentenceFactors, passage: SentenceFactors,
                settings: Settings) -> Explanation:
    """The query (rows) x passage window (columns) explanation, from the query's live factor and the window's
    stored factor: ``matrix = F_q @ F_p.T * scale_q * scale_p``; no model pass."""
    if query.factor.shape[1] != passage.factor.shape[1]:
        raise SearchError(f"query factor has {query.factor.shape[1]} dims but the stored factor has "
                          f"{passage.factor.shape[1]}: the index was built with another model")
    return pair_explanation(model, query, passage, settings)


@dataclass
class Contrast:
    """Why hit A ranks above hit B, on the query's tokens.

    ``relevance_a``/``relevance_b``: (Tq,) each query token's row of the hit's matrix summed over the passage;
    ``difference`` = relevance_a - relevance_b (> 0: the token pushes A up relative to B). Σ difference =
    explained_a - explained_b - (residual_a - residual_b): the difference of the explained scores up to the
    method's residuals (:attr:`gap`).
    """

    tokens: list[str]
    special: list[bool]
    relevance_a: np.ndarray
    relevance_b: np.ndarray
    difference: np.ndarray
    model_score_a: float
    model_score_b: float
    explained_a: float
    explained_b: float
    residual_a: float
    residual_b: float

    @property
    def total(self) -> float:
        """Σ difference over the query's tokens."""
        return float(self.difference.sum())

    @property
    def explained_difference(self) -> float:
        return self.explained_a - self.explained_b

    @property
    def gap(self) -> float:
        """total - explained difference = -(residual_a - residual_b) (0 for conservative methods)."""
        return self.total - self.explained_difference


def contrast_hits(a: Explanation, b: Explanation) -> Contrast:
    """The contrast of two hits of the same query (rows of both matrices are the query's tokens)."""
    if list(a.tokens_a) != list(b.tokens_a):
        raise SearchError("the two hits were explained for different queries; contrast needs the same query")
    ra = np.asarray(a.matrix, dtype=np.float64).sum(axis=1)
    rb = np.asarray(b.matrix, dtype=np.float64).sum(axis=1)
    return Contrast(
        tokens=list(a.tokens_a), special=list(a.special_a) or [False] * len(ra), relevance_a=ra, relevance_b=rb,
        difference=ra - rb, model_score_a=a.model_score, model_score_b=b.model_score, explained_a=a.score,
        explained_b=b.score, residual_a=a.residual, residual_b=b.residual,
    )


# --------------------------------------------------------------------------------------------------
# one search: the query's factor (one model pass), top-k in the store, each hit's explanation
# --------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One passage returned by a search, with its best window and that window's explanation.

    ``score``: the model's similarity of query and window as the store computed it; ``explanation``: query
    tokens (rows) x window tokens (columns), from the query's live factor and the window's stored one.
    ``dataset_key``/``pair_id``/``side``: where the passage first occurs (None for a corpus file).
    """

    rank: int
    passage_id: int
    window_index: int
    chunk_index: int
    score: float
    passage: str
    window_start: int
    window_end: int
    explanation: Explanation | None
    dataset_key: str | None
    pair_id: int | None
    side: str | None


@dataclass
class SearchResult:
    """``hits`` best first; ``mode``: ``exact`` or ``hnsw``; ``seconds``: {encode, search, explain}."""

    index_id: str
    query: str
    query_prompt: str
    query_factors: SentenceFactors
    hits: list[Hit]
    mode: str
    seconds: dict[str, float]


def check_query(query: object) -> str:
    """The query if it has words, else a SearchError."""
    if not isinstance(query, str) or not query.strip():
        raise SearchError("the query is empty: type some words to search for")
    return query


def index_model_source(record: dict) -> str:
    """Where to load an index's model from: the folder it was built from, or its name when that folder is gone
    (:func:`check_model` then checks that the name gives the same model)."""
    return record["model_path"] if record.get("model_path") and Path(record["model_path"]).is_dir() else \
        record["model_name"]


def check_model(model: SimilarityModel, record: dict) -> None:
    """A SearchError when ``model`` is not the model the index was built with: the same content (the same
    ``model_id``) by any name or path; an index written before ids were content hashes recorded the name-based
    id of :func:`core.model_files.legacy_model_id` (``python -m precompute migrate STORE`` rewrites it)."""
    if model.model_id == record["model_id"]:
        return
    if model.path.is_dir() and legacy_model_id(record["model_name"], model.path, model.variant) == record["model_id"]:
        return
    raise SearchError(
        f"index {record['index_id']} was built with {record['model_name']} (model id {record['model_id']}); "
        f"the query model {model.name} (model id {model.model_id}) is a different model, whose embeddings "
        f"are not comparable: search with --model {record['model_path']}, or build an index with this model"
    )


def index_settings(model: SimilarityModel, record: dict) -> Settings:
    from core.attribution import resolve_settings

    def optional(key: str, cast):
        value = record.get(key)
        return None if value is None or pd.isna(value) else cast(value)

    steps, tol, max_steps = optional("steps", int), optional("tol", float), optional("max_steps", int)
    if record["method"] == "ij" and steps is None and tol is None:
        raise SearchError(f"index {record['index_id']} records neither ij's steps nor its tolerance")
    return resolve_settings(model, record["method"], record["layer"], steps, record["quadrature"], tol, max_steps)


def stored_factors(row: dict, prompt: str) -> SentenceFactors:
    """A stored window (a row of ``core.store.index_search.IndexStore.windows``) as the SentenceFactors the live path would give."""
    text = prompt + row["passage_window"]
    return SentenceFactors(
        text=text, tokens=list(row["tokens"]),
        offsets=[(int(s), int(e)) for s, e in zip(row["token_start"], row["token_end"], strict=True)],
        special=[bool(v) for v in row["special"]], word_ids=[None if int(w) < 0 else int(w) for w in row["word_ids"]],
        factor=row["factor"], target=row["target"], scale=float(row["scale"]), embedding=row["embedding"],
        truncated=bool(row["truncated"]), steps=None if pd.isna(row.get("steps")) else int(row["steps"]),
        capped=bool(row.get("capped")) if not pd.isna(row.get("capped")) else False,
    )


def search_index(model: SimilarityModel, reader, index_id: str, query: str, k: int = 10, mode: str = "auto",
                 query_prompt: str | None = None, explain: bool = True) -> SearchResult:
    """Search index ``index_id`` of ``reader`` (a :class:`core.store.index_search.IndexStore`) for ``query``.

    ``query_prompt``: text prepended to the query (None: the index's query prompt, which is the model's
    ``query`` prompt when it has one). One model pass computes the query's factor and embedding; the top
    ``k`` passages come from the store (exact scan or HNSW), and each hit's matrix is the product of the
    query's factor with the window's stored float16 factor.
    """
    import time

    from core.attribution import compute_factors

    check_query(query)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SearchError(f"k must be a positive integer, got {k!r}")
    record = reader.index_info(index_id)
    check_model(model, record)
    if record["status"] != "done":
        raise SearchError(f"index {index_id} is {record['status']} ({record['chunks_present']} of "
                          f"{record['n_chunks']} chunks): run the same precompute index command to finish it")
    settings = index_settings(model, record)
    prompt = (record["query_prompt"] or "") if query_prompt is None else query_prompt
    t0 = time.perf_counter()
    (qf,) = compute_factors(model, [prompt + query], settings.method, settings.layer, settings.steps,
                            settings.quadrature, prompts="", tol=settings.tol,  # the query carries its prompt
                            max_steps=settings.max_steps)
    t1 = time.perf_counter()
    windows, used = reader.search_windows(index_id, qf.embedding, candidate_count(k, record["max_windows"] or 1),
                                          mode=mode)
    best = fold_to_passages(windows["passage_id"], windows["window_index"], windows["score"], k)
    chunks = windows["chunk_index"].to_numpy()
    keys = [(int(chunks[h.row]), h.passage_id, h.window_index) for h in best]
    passages = reader.passages(index_id, [h.passage_id for h in best]).set_index("passage_id")
    stored = reader.windows(index_id, keys) if explain else None
    t2 = time.perf_counter()
    hits = []
    for rank, (hit, key) in enumerate(zip(best, keys, strict=True), start=1):
        p = passages.loc[hit.passage_id]
        exp = None
        if stored is not None:
            row = stored.iloc[rank - 1].to_dict()
            row["passage_window"] = str(p["text"])[int(row["char_start"]) : int(row["char_end"])]
            exp = explain_hit(model, qf, stored_factors(row, record["prompt"] or ""), settings)
        hits.append(Hit(
            rank=rank, passage_id=hit.passage_id, window_index=hit.window_index, chunk_index=key[0],
            score=hit.score, passage=str(p["text"]),
            window_start=int(stored.iloc[rank - 1]["char_start"]) if stored is not None else 0,
            window_end=int(stored.iloc[rank - 1]["char_end"]) if stored is not None else len(str(p["text"])),
            explanation=exp, dataset_key=_optional(p["dataset_key"]),
            pair_id=None if _optional(p["pair_id"]) is None else int(p["pair_id"]), side=_optional(p["side"]),
        ))
    t3 = time.perf_counter()
    return SearchResult(index_id=index_id, query=query, query_prompt=prompt, query_factors=qf, hits=hits, mode=used,
                        seconds={"encode": t1 - t0, "search": t2 - t1, "explain": t3 - t2, "total": t3 - t0})


def _optional(value):
    return None if value is None or pd.isna(value) else value


def top_pairs(exp: Explanation, k: int = 5, include_special: bool = False) -> list[tuple[str, str, float]]:
    """The ``k`` token pairs (query token, passage token, relevance) with the largest |relevance|."""
    m = np.asarray(exp.matrix, dtype=np.float64)
    mask = np.ones_like(m, dtype=bool)
    if not include_special:
        sa = np.asarray(exp.special_a or [False] * m.shape[0], dtype=bool)
        sb = np.asarray(exp.special_b or [False] * m.shape[1], dtype=bool)
        mask &= ~sa[:, None] & ~sb[None, :]
    flat = np.where(mask, np.abs(m), -1.0).ravel()
    order = [i for i in np.argsort(-flat, kind="stable")[:k] if flat[i] >= 0]
    return [(exp.tokens_a[i // m.shape[1]], exp.tokens_b[i % m.shape[1]], float(m.flat[i])) for i in order]
