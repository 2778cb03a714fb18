"""Attribute a dataset into a store, chunk by chunk: resumable, shardable, with progress."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.attribution import SentenceFactors, compute_factors, pair_explanation, resolve_settings
from core.datasets import PairDataset
from core.loading import as_dataset, as_model
from core.metrics import score_metrics
from core.models import SimilarityModel
from core.pos import tag_texts_batch
from core.store import (
    PREDICT,
    ChunkExistsError,
    Store,
    StoreWriter,
    chunk_pair_range,
    kind_of_method,
    make_run_id,
    parse_shard,
)

DEFAULT_CHUNK_SIZE = 64
ProgressCallback = Callable[[int, int], None]


def code_version() -> str:
    """The git commit of this checkout (with ``+dirty`` when it has changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


@dataclass
class RunResult:
    """What a precompute call did: ``status`` is ``done`` (all chunks of the run present), ``partial`` (this
    shard is finished, others are not), or ``skipped`` (already done; pass ``force`` to recompute)."""

    run_id: str
    status: str
    pairs_written: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def _device_name(model: SimilarityModel) -> str:
    if model.device.type == "cuda":
        import torch

        return f"{model.device} ({torch.cuda.get_device_name(model.device)})"
    return str(model.device)


def _dataset_meta(ds: PairDataset) -> dict:
    return {"dataset_key": ds.key, "name": ds.name, "split": ds.split, "lang_a": ds.lang_a, "lang_b": ds.lang_b,
            "source": str(ds.source), "skipped": dict(ds.skipped), "gold_min": ds.gold_min, "gold_max": ds.gold_max}


def _model_meta(model: SimilarityModel) -> dict:
    return {"model_id": model.model_id, "name": model.name, "path": str(model.path), "revision": model.revision,
            "architecture": model.architecture.name, "pooling": model.pooling, "similarity": model.similarity,
            "dim": model.hidden_size, "num_layers": model.num_layers}


def _token_rows(pair_ids: list[int], side: str, factors: list[SentenceFactors], lang: str | None) -> pd.DataFrame:
    tags = tag_texts_batch([f.text for f in factors], [f.tokens for f in factors], [f.offsets for f in factors],
                           [f.special for f in factors], lang)
    rows = [
        {"pair_id": pid, "side": side, "token_index": t.token_index, "token": t.token, "start": t.start,
         "end": t.end, "is_special": t.is_special, "word_index": t.word_index, "word": t.word, "pos": t.pos}
        for pid, sentence in zip(pair_ids, tags, strict=True) for t in sentence
    ]
    return pd.DataFrame(rows)


def _factor_rows(pair_ids: list[int], side: str, factors: list[SentenceFactors]) -> pd.DataFrame:
    rows = []
    for pid, f in zip(pair_ids, factors, strict=True):
        norm = None if f.scale == 1.0 else 1.0 / f.scale
        rows += [{"pair_id": pid, "side": side, "token_index": t, "dim": f.factor.shape[1], "factor": f.factor[t],
                  "embedding_norm": norm} for t in range(f.factor.shape[0])]
    return pd.DataFrame(rows)


def chunk_tables(model: SimilarityModel, rows: pd.DataFrame, ds: PairDataset, settings, batch_size: int,
                 save_factors: bool) -> dict[str, pd.DataFrame]:
    """The store tables of one chunk of pairs (``rows`` of the dataset frame)."""
    a_texts, b_texts = rows["sentence1"].tolist(), rows["sentence2"].tolist()
    factors = compute_factors(model, a_texts + b_texts, settings.method, settings.layer, settings.steps,
                              settings.quadrature, batch_size=batch_size)
    fa, fb = factors[: len(a_texts)], factors[len(a_texts) :]
    pair_ids = rows["pair_id"].astype(int).tolist()
    predictions, token_pairs = [], []
    for pid, a, b in zip(pair_ids, fa, fb, strict=True):
        exp = pair_explanation(model, a, b, settings)
        predictions.append({"pair_id": pid, "model_score": exp.model_score, "explained_score": exp.score,
                            "truncated": exp.truncated})
        i, j = np.meshgrid(np.arange(exp.matrix.shape[0]), np.arange(exp.matrix.shape[1]), indexing="ij")
        token_pairs.append(pd.DataFrame({"pair_id": pid, "i": i.ravel(), "j": j.ravel(),
                                         "relevance": exp.matrix.ravel().astype(np.float32)}))
    tables = {
        "predictions": pd.DataFrame(predictions),
        "tokens": pd.concat([_token_rows(pair_ids, "a", fa, ds.lang_a), _token_rows(pair_ids, "b", fb, ds.lang_b)],
                            ignore_index=True),
        "token_pairs": pd.concat(token_pairs, ignore_index=True),
    }
    if save_factors:
        tables["factors"] = pd.concat([_factor_rows(pair_ids, "a", fa), _factor_rows(pair_ids, "b", fb)],
                                      ignore_index=True)
    return tables


def prediction_tables(model: SimilarityModel, rows: pd.DataFrame, batch_size: int) -> dict[str, pd.DataFrame]:
    """The store tables of one chunk of a scores-only run."""
    emb_a = model.embed(rows["sentence1"].tolist(), batch_size=batch_size)
    emb_b = model.embed(rows["sentence2"].tolist(), batch_size=batch_size)
    truncated = [t for t in model.tokenize(rows["sentence1"].tolist() + rows["sentence2"].tolist()).truncated]
    n = len(rows)
    return {"predictions": pd.DataFrame({
        "pair_id": rows["pair_id"].astype(int).to_numpy(), "model_score": model.similarity_of(emb_a, emb_b),
        "truncated": np.array(truncated[:n]) | np.array(truncated[n:]),
    })}


def run(
    model: SimilarityModel | str,
    dataset: PairDataset | str,
    store: str | Path,
    method: str = "bilrp",
    layer: int | None = None,
    steps: int | None = None,
    quadrature: str | None = None,
    shard: str | None = None,
    batch_size: int = 16,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    limit: int | None = None,
    force: bool = False,
    save_factors: bool = False,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool | ProgressCallback = True,
) -> RunResult:
    """Attribute ``dataset`` with ``model`` and ``method`` into ``store`` (a method-less run kind's name,
    ``predict``: scores only).

    Work is cut into chunks of ``chunk_size`` pairs, each committed in one transaction; a run that was
    interrupted resumes with the chunks that are missing (its seconds add up), and a finished run is skipped
    unless ``force`` (which also registers an edited dataset file as the dataset's next revision). ``shard``
    "K/N" takes every N-th chunk, so several processes or machines can split one corpus into one store.
    ``progress`` is a tqdm bar (True), nothing (False), or a callback ``(pairs_done, pairs_total)``.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parse_shard(shard)
    # the store records only the pairs the run covers (a prefix is keyed <key>:first<limit>)
    ds = as_dataset(dataset, data_dir).head(limit)
    model = as_model(model, device=device)
    scores_only = kind_of_method(method) is PREDICT
    settings = None if scores_only else resolve_settings(model, method, layer, steps, quadrature)
    writer = StoreWriter(store, shard)
    writer.put_dataset(_dataset_meta(ds), ds.frame, replace=force)
    writer.put_model(_model_meta(model))
    n_pairs = len(ds)
    identity = {"model_id": model.model_id, "dataset_key": ds.key, "method": method,
                "layer": model.num_layers if scores_only else settings.layer,
                "steps": None if scores_only else settings.steps,
                "quadrature": None if scores_only else settings.quadrature}
    run_id = make_run_id(**identity)
    previous = writer.start_run({**identity, "chunk_size": chunk_size, "n_pairs": n_pairs,
                                 "code_version": code_version(), "device": _device_name(model)}, force=force)
    if previous == "done":
        writer.close()
        return RunResult(run_id=run_id, status="skipped", pairs_written=0, seconds=0.0)
    pending = writer.pending_chunks(run_id)
    ranges = {k: chunk_pair_range(k, chunk_size, n_pairs) for k in pending}
    total = sum(len(r) for r in ranges.values())
    bar = tqdm(total=total, unit="pair", desc=f"{method} {ds.key}", disable=progress is not True, smoothing=0.1)
    written, start = 0, time.perf_counter()
    try:
        for k in pending:
            rows = ds.frame.iloc[ranges[k].start : ranges[k].stop]
            tables = (prediction_tables(model, rows, batch_size) if scores_only
                      else chunk_tables(model, rows, ds, settings, batch_size, save_factors))
            with contextlib.suppress(ChunkExistsError):  # another writer of the run committed it: its rows count
                writer.write_chunk(run_id, k, tables)
            written += len(rows)
            bar.update(len(rows))
            if callable(progress):
                progress(written, total)
    except KeyboardInterrupt:
        bar.close()
        raise
    except Exception as exc:
        bar.close()
        writer.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        writer.close()
        raise
    bar.close()
    seconds = time.perf_counter() - start
    with Store(store) as reader:
        predictions = reader.predictions(run_id)
    metrics = score_metrics(predictions["model_score"].to_numpy(), predictions["gold"].to_numpy(),
                            predictions["gold_norm"].to_numpy())
    writer.finish_run(run_id, metrics)  # seconds and pairs/s over every process that worked on the run
    complete = len(writer.completed_chunks(run_id)) >= len(chunk_range_all(n_pairs, chunk_size))
    writer.close()
    return RunResult(run_id=run_id, status="done" if complete else "partial", pairs_written=written,
                     seconds=seconds, metrics=metrics)


def chunk_range_all(n_pairs: int, chunk_size: int) -> range:
    """Indices of all chunks of a run of ``n_pairs`` pairs."""
    return range((n_pairs + chunk_size - 1) // chunk_size)
