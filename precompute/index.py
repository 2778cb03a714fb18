"""Build a search index: every distinct text of a corpus embedded with its factor, chunk by chunk (resumable).

A corpus is the sentences of one or more pair datasets (both sides, first occurrence kept) or the texts of a
file (one per line, or one column of a CSV/TSV/Parquet/JSONL table). Passages longer than the model's maximum
are cut into overlapping windows (:func:`core.search.window_spans`); each window's factor is computed once
(:func:`core.attribution.compute_factors`, batched) and stored in float16 with its embedding.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.attribution import compute_factors, resolve_settings
from core.datasets import DatasetError, load_dataset, read_table
from core.model_folders import load_model
from core.models import SimilarityModel
from core.search import SearchError, model_prompts, window_spans
from core.store import ChunkExistsError
from core.store.index import corpus_hash, make_index_id
from core.store.index_search import IndexStore
from core.store.index_writer import IndexWriter
from precompute.runner import _device_name, _model_meta, code_version, commit_chunks

DEFAULT_CHUNK_SIZE = 256
DEFAULT_OVERLAP = 32
INDEX_METHODS = ("bilrp", "ij", "hxp")
TEXT_SUFFIXES = (".txt", ".text")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".json")


@dataclass
class Corpus:
    """Distinct texts to index. ``passages``: passage_id, text, dataset_key, pair_id, side, source_row,
    occurrences (first occurrence order)."""

    key: str
    source: str
    passages: pd.DataFrame

    def __len__(self) -> int:
        return len(self.passages)


def _distinct(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=["text", "dataset_key", "pair_id", "side", "source_row"])
    counts = frame.groupby("text", sort=False).size()
    first = frame.drop_duplicates("text", keep="first").reset_index(drop=True)
    first["occurrences"] = first["text"].map(counts).astype("int32")
    first.insert(0, "passage_id", np.arange(len(first), dtype=np.int32))
    first["pair_id"] = first["pair_id"].astype("Int32")
    first["source_row"] = first["source_row"].astype("Int32")
    return first


def dataset_corpus(specs: Sequence[str], data_dir: str | Path | None = None) -> Corpus:
    """The distinct sentences (sentence1 then sentence2 of each pair, in dataset order) of pair datasets."""
    records, keys, sources = [], [], []
    for spec in specs:
        with warnings.catch_warnings():  # a pair file's gold scale does not matter to an index
            warnings.filterwarnings("ignore", message=".*gold scale inferred.*")
            ds = load_dataset(spec, data_dir=data_dir)
        keys.append(ds.key)
        sources.append(str(ds.source))
        for pid, a, b in zip(ds.frame["pair_id"], ds.frame["sentence1"], ds.frame["sentence2"], strict=True):
            records.append({"text": a, "dataset_key": ds.key, "pair_id": int(pid), "side": "a", "source_row": None})
            records.append({"text": b, "dataset_key": ds.key, "pair_id": int(pid), "side": "b", "source_row": None})
    return Corpus(key="+".join(keys), source=" + ".join(sources), passages=_distinct(records))


def file_corpus(path: str | Path, column: str | None = None) -> Corpus:
    """The distinct texts of a corpus file: one per non-blank line of a .txt file, or one column (``column``;
    default ``text``, or the only column) of a CSV/TSV/Parquet/JSONL table. Empty cells are an error naming
    the rows."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"corpus file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        if column is not None:
            raise DatasetError(f"{path}: --column applies to tables, not to a text file (one passage per line)")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from exc
        records = [{"text": line, "source_row": n} for n, line in enumerate(lines) if line.strip()]
        key = f"file:{path.stem}"
    elif suffix in TABLE_SUFFIXES:
        table = read_table(path)
        if column is None:
            column = "text" if "text" in table.columns else (table.columns[0] if len(table.columns) == 1 else None)
            if column is None:
                raise DatasetError(f"{path}: which column holds the texts? pass --column; columns: {list(table.columns)}")
        if column not in table.columns:
            raise DatasetError(f"{path}: no column {column!r}; columns: {list(table.columns)}")
        values = table[column].tolist()
        bad = [n for n, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise DatasetError(f"{path}: column {column!r} is empty or not text in {len(bad)} row(s), e.g. rows "
                               f"{bad[:5]} (0-based, header not counted)")
        records = [{"text": v, "source_row": n} for n, v in enumerate(values)]
        key = f"file:{path.stem}:{column}"
    else:
        raise DatasetError(f"corpus file {path}: unknown type {suffix!r}; use one of "
                           f"{', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)}")
    if not records:
        raise DatasetError(f"corpus file {path} has no texts")
    for r in records:
        r.update(dataset_key=None, pair_id=None, side=None)
    return Corpus(key=key, source=str(path), passages=_distinct(records))


@dataclass
class IndexPlan:
    """The settings an index is built with (resolved against the model)."""

    method: str
    layer: int
    steps: int | str | None
    quadrature: str | None
    prompt_name: str | None
    prompt: str
    query_prompt_name: str | None
    query_prompt: str
    window_tokens: int
    window_overlap: int
    tol: float | None = None
    max_steps: int | None = None


def plan_index(model: SimilarityModel, method: str = "bilrp", layer: int | None = None, steps: int | str | None = None,
               quadrature: str | None = None, prompt: str | None = None, query_prompt: str | None = None,
               window_tokens: int | None = None, window_overlap: int | None = None, tol: float | None = None,
               max_steps: int | None = None) -> IndexPlan:
    """Validate the settings. ``prompt``/``query_prompt``: names of the model's prompts (default: the model's
    default prompt for passages; its ``query`` prompt, else the passages' prompt, for queries);
    ``window_overlap`` default: DEFAULT_OVERLAP tokens, at most a quarter of a window; ``steps``/``tol``/
    ``max_steps``: ij's integration (default ``auto``, see :func:`core.attribution.resolve_settings`)."""
    if method not in INDEX_METHODS:
        raise ValueError(f"an index stores factors of {', '.join(INDEX_METHODS)}, not {method!r}")
    settings = resolve_settings(model, method, layer, steps, quadrature, tol, max_steps)
    prompts = model_prompts(model)
    p_name, p_text = prompts.resolve(prompt, ("passage", "document"))
    q_name, q_text = prompts.resolve(query_prompt, ("query",))
    if query_prompt is None and q_name is None:
        q_name, q_text = p_name, p_text
    special = len(model.tokenizer("", add_special_tokens=True)["input_ids"])
    prompt_tokens = len(model.tokenizer(p_text, add_special_tokens=False)["input_ids"]) if p_text else 0
    most = model.max_length - special - prompt_tokens
    if most < 1:
        raise ValueError(f"the prompt {p_name!r} leaves no room for text in {model.name}'s {model.max_length} tokens")
    tokens = most if window_tokens is None else int(window_tokens)
    if not 1 <= tokens <= most:
        raise ValueError(f"--window-tokens must be in 1..{most} ({model.name}: at most {model.max_length} tokens, "
                         f"{special} special and {prompt_tokens} prompt tokens), got {window_tokens}")
    if window_overlap is None:
        window_overlap = min(DEFAULT_OVERLAP, tokens // 4)
    if not 0 <= window_overlap < tokens:
        raise ValueError(f"--window-overlap must be in 0..{tokens - 1} tokens, got {window_overlap}")
    return IndexPlan(settings.method, settings.layer, settings.steps, settings.quadrature, p_name, p_text, q_name,
                     q_text, tokens, int(window_overlap), settings.tol, settings.max_steps)


def passage_windows(model: SimilarityModel, text: str, plan: IndexPlan) -> list[tuple[int, int]]:
    """Character spans of the windows of one passage; each window with the prompt fits the model."""
    enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets, word_ids = enc["offset_mapping"], enc.word_ids()
    budget = plan.window_tokens
    while True:
        spans = window_spans(text, offsets, word_ids, budget, min(plan.window_overlap, budget - 1))
        lengths = [len(model.tokenizer(plan.prompt + text[s.start : s.end])["input_ids"]) for s in spans] \
            if len(spans) > 1 else [len(model.tokenizer(plan.prompt + text)["input_ids"])]
        excess = max(lengths) - model.max_length
        if excess <= 0 or budget <= 1:  # a single over-long word: truncated, and flagged
            return [(s.start, s.end) for s in spans]
        budget = max(1, budget - excess)


def chunk_windows(model: SimilarityModel, passages: pd.DataFrame, plan: IndexPlan, batch_size: int) -> pd.DataFrame:
    """The ``index_windows`` rows of a chunk of passages."""
    items = []
    for pid, text in zip(passages["passage_id"], passages["text"], strict=True):
        for w, (start, end) in enumerate(passage_windows(model, text, plan)):
            items.append((int(pid), w, start, end, plan.prompt + text[start:end]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        factors = compute_factors(model, [it[4] for it in items], plan.method, plan.layer, plan.steps,
                                  plan.quadrature, batch_size=batch_size, prompts="",  # texts carry their prompt
                                  tol=plan.tol, max_steps=plan.max_steps)
    rows = []
    for (pid, w, start, end, _), f in zip(items, factors, strict=True):
        rows.append({
            "passage_id": pid, "window_index": w, "char_start": start, "char_end": end, "n_tokens": len(f.tokens),
            "tokens": f.tokens, "token_start": [o[0] for o in f.offsets], "token_end": [o[1] for o in f.offsets],
            "special": f.special, "word_ids": [-1 if x is None else int(x) for x in f.word_ids],
            "embedding": f.embedding, "factor": f.factor, "target": f.target, "scale": f.scale,
            "truncated": f.truncated, "steps": f.steps, "capped": f.capped,
        })
    return pd.DataFrame(rows)


@dataclass
class IndexResult:
    """``status``: ``done`` or ``skipped`` (already built; ``force`` rebuilds)."""

    index_id: str
    status: str
    passages: int
    passages_written: int
    windows: int
    seconds: float


def build_index(
    model: SimilarityModel | str, corpus: Corpus, store: str | Path, method: str = "bilrp", layer: int | None = None,
    steps: int | str | None = None, quadrature: str | None = None, prompt: str | None = None,
    query_prompt: str | None = None, window_tokens: int | None = None, window_overlap: int | None = None,
    tol: float | None = None, max_steps: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE, batch_size: int = 16, limit: int | None = None, force: bool = False,
    hnsw: bool | None = None, device: str | None = None, progress: bool | Callable[[int, int], None] = True,
) -> IndexResult:
    """Embed every passage of ``corpus`` with its factor into ``store``, ``chunk_size`` passages per chunk.

    An interrupted build resumes with the missing chunks on the same call; a finished one is skipped unless
    ``force``. ``hnsw``: build the HNSW index (None: when the index has at least
    :data:`core.store.index.HNSW_MIN_WINDOWS` windows; its local copy is built at the end). ``progress``: a tqdm bar, nothing, or a callback
    ``(passages_done, passages_total)``.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    model = model if isinstance(model, SimilarityModel) else load_model(model, device=device)
    try:
        plan = plan_index(model, method, layer, steps, quadrature, prompt, query_prompt, window_tokens, window_overlap,
                          tol, max_steps)
    except SearchError as exc:
        raise ValueError(str(exc)) from None
    passages = corpus.passages if limit is None else corpus.passages.head(limit)
    content = corpus_hash(passages["text"].tolist())
    stored_steps = None if plan.tol is not None else plan.steps
    index_id = make_index_id(model.model_id, content, plan.method, plan.layer, stored_steps, plan.quadrature,
                             plan.prompt, plan.window_tokens, plan.window_overlap, plan.tol, plan.max_steps)
    n = len(passages)
    record = {
        "index_id": index_id, "corpus_key": corpus.key + (f"[:{limit}]" if limit and limit < len(corpus) else ""),
        "corpus_source": corpus.source, "corpus_hash": content, "model_id": model.model_id, "model_name": model.name,
        "model_path": str(model.path), "similarity": "dot" if model.shifted else model.similarity,
        "dim": model.hidden_size, "method": plan.method, "layer": plan.layer, "steps": stored_steps,
        "quadrature": plan.quadrature, "tol": plan.tol, "max_steps": plan.max_steps, "prompt_name": plan.prompt_name, "prompt": plan.prompt,
        "query_prompt_name": plan.query_prompt_name, "query_prompt": plan.query_prompt,
        "window_tokens": plan.window_tokens, "window_overlap": plan.window_overlap, "n_passages": n,
        "chunk_size": chunk_size, "n_chunks": (n + chunk_size - 1) // chunk_size, "code_version": code_version(),
        "device": _device_name(model),
    }
    with IndexWriter(store) as writer:
        writer.put_model(_model_meta(model))
        if writer.start_index(record, force=force) == "done":
            return IndexResult(index_id, "skipped", n, 0, 0, 0.0)
        pending = writer.pending_chunks(index_id)

        def commit(k: int) -> int:
            t0 = time.perf_counter()
            rows = passages.iloc[k * chunk_size : (k + 1) * chunk_size]
            frame = chunk_windows(model, rows, plan, batch_size)
            with contextlib.suppress(ChunkExistsError):  # another writer of the index committed it first
                writer.write_chunk(index_id, k, rows, frame, seconds=time.perf_counter() - t0)
            return len(rows)

        def failed(exc: Exception, seconds: float) -> None:
            writer.fail_index(index_id, f"{type(exc).__name__}: {exc}", seconds)

        total = sum(min((k + 1) * chunk_size, n) - k * chunk_size for k in pending)
        done, seconds = commit_chunks(pending, commit, total, "text", f"index {corpus.key}", progress, failed)
        final = writer.finish_index(index_id, seconds, hnsw=hnsw)
    with IndexStore(store) as reader:  # the local copy (with its HNSW index), so that the first search is fast
        reader.local_vectors(index_id)
    return IndexResult(index_id, "done", n, done, int(final["n_windows"]), seconds)
