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

from core.attribution import SentenceFactors, Settings, compute_factors, pair_explanation, resolve_settings
from core.datasets import PairDataset
from core.factors import DEFAULT_MAX_ROWS
from core.loading import as_dataset, as_model
from core.metrics import score_metrics
from core.models import SimilarityModel
from core.pos import tag_texts_batch
from core.sentence_modules import pooling_mode
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
    return {"model_id": model.model_id, "name": model.display_name, "path": str(model.path), "revision": model.revision,
            "architecture": model.architecture.name, "pooling": model.pooling, "similarity": model.similarity,
            "dim": model.dim, "num_layers": model.num_layers}


def _token_rows(pair_ids: list[int], side: str, factors: list[SentenceFactors], lang: str | None,
                tagger: str | None = None) -> pd.DataFrame:
    tags = tag_texts_batch([f.text for f in factors], [f.tokens for f in factors], [f.offsets for f in factors],
                           [f.special for f in factors], lang, prompt=[f.prompt for f in factors], tagger=tagger)
    rows = [
        {"pair_id": pid, "side": side, "token_index": t.token_index, "token": t.token, "start": t.start,
         "end": t.end, "is_special": t.is_special, "is_prompt": t.is_prompt, "word_index": t.word_index,
         "word": t.word, "pos": t.pos}
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


def chunk_tables(model: SimilarityModel, rows: pd.DataFrame, lang_a: str | None, lang_b: str | None,
                 settings: Settings, batch_size: int, save_factors: bool,
                 max_rows: int = DEFAULT_MAX_ROWS,
                 taggers: tuple[str | None, str | None] = (None, None)) -> dict[str, pd.DataFrame]:
    """The store tables of one chunk of pairs (``rows`` of the dataset frame); ``taggers``: spaCy pipelines
    for sides a and b (None: found by the dataset's languages)."""
    a_texts, b_texts = rows["sentence1"].tolist(), rows["sentence2"].tolist()
    prompts = [model.side_prompts[0]] * len(a_texts) + [model.side_prompts[1]] * len(b_texts)
    factors = compute_factors(model, a_texts + b_texts, settings.method, settings.layer, settings.steps,
                              settings.quadrature, batch_size=batch_size, max_rows=max_rows, prompts=prompts)
    fa, fb = factors[: len(a_texts)], factors[len(a_texts) :]
    pair_ids = rows["pair_id"].astype(int).tolist()
    predictions, token_pairs = [], []
    for pid, a, b in zip(pair_ids, fa, fb, strict=True):
        exp = pair_explanation(model, a, b, settings)
        predictions.append({"pair_id": pid, "model_score": exp.model_score, "explained_score": exp.score,
                            "truncated": exp.truncated})
        i, j = np.meshgrid(np.arange(exp.matrix.shape[0]), np.arange(exp.matrix.shape[1]), indexing="ij")
        hidden_a = np.array(a.special, bool) | np.array(a.prompt, bool)  # prompt tokens hide with special ones
        hidden_b = np.array(b.special, bool) | np.array(b.prompt, bool)
        token_pairs.append(pd.DataFrame({"pair_id": pid, "i": i.ravel(), "j": j.ravel(),
                                         "relevance": exp.matrix.ravel().astype(np.float32),
                                         "special_a": hidden_a[i.ravel()], "special_b": hidden_b[j.ravel()]}))
    tables = {
        "predictions": pd.DataFrame(predictions),
        "tokens": pd.concat([_token_rows(pair_ids, "a", fa, lang_a, taggers[0]),
                             _token_rows(pair_ids, "b", fb, lang_b, taggers[1])], ignore_index=True),
        "token_pairs": pd.concat(token_pairs, ignore_index=True),
    }
    if save_factors:
        tables["factors"] = pd.concat([_factor_rows(pair_ids, "a", fa), _factor_rows(pair_ids, "b", fb)],
                                      ignore_index=True)
    return tables


def prediction_tables(model: SimilarityModel, rows: pd.DataFrame, batch_size: int) -> dict[str, pd.DataFrame]:
    """The store tables of one chunk of a scores-only run."""
    emb_a, cut_a = model.embed_with_flags(rows["sentence1"].tolist(), batch_size, model.side_prompts[0])
    emb_b, cut_b = model.embed_with_flags(rows["sentence2"].tolist(), batch_size, model.side_prompts[1])
    return {"predictions": pd.DataFrame({
        "pair_id": rows["pair_id"].astype(int).to_numpy(), "model_score": model.similarity_of(emb_a, emb_b),
        "truncated": np.array(cut_a, dtype=bool) | np.array(cut_b, dtype=bool),
    })}


@dataclass(frozen=True)
class ChunkJob:
    """What computing any chunk of a started run needs; picklable and free of dataset rows (a chunk's rows
    travel with the chunk), so Ray actors get it once. ``settings`` is None for a scores-only run."""

    run_id: str
    settings: Settings | None
    lang_a: str | None
    lang_b: str | None
    batch_size: int
    save_factors: bool
    taggers: tuple[str | None, str | None] = (None, None)
    pooling: str | None = None
    prompts: tuple[str | None, str | None] | None = None

    def prepare(self, model: SimilarityModel) -> SimilarityModel:
        """``model`` with this job's prompts (a worker that loaded the model itself applies them here)."""
        return model if self.prompts is None else model.with_prompts(*self.prompts)


@dataclass
class StartedRun:
    """A run registered in the store: its job, its size and the chunks still to compute (``pending``, in order).
    ``skipped``: the run was done already and not forced (nothing pending)."""

    writer: StoreWriter
    job: ChunkJob
    method: str
    dataset: PairDataset
    n_pairs: int
    chunk_size: int
    pending: list[int]
    skipped: bool

    def rows(self, chunk_index: int) -> pd.DataFrame:
        """The dataset rows of chunk ``chunk_index``."""
        r = chunk_pair_range(chunk_index, self.chunk_size, self.n_pairs)
        return self.dataset.frame.iloc[r.start : r.stop]

    @property
    def pending_pairs(self) -> int:
        return sum(len(chunk_pair_range(k, self.chunk_size, self.n_pairs)) for k in self.pending)


def start_run(model: SimilarityModel, ds: PairDataset, store: str | Path, method: str, layer: int | None,
              steps: int | None, quadrature: str | None, shard: str | None, batch_size: int, chunk_size: int,
              limit: int | None, force: bool, save_factors: bool, device: str | None = None,
              taggers: tuple[str | None, str | None] = (None, None), pooling: str | None = None,
              prompts: tuple[str | None, str | None] | None = None) -> StartedRun:
    """Validate the settings, store dataset and model, and register (or resume) the run; ``device`` is what
    the run record names as its device (default: the model's)."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parse_shard(shard)
    ds = ds.head(limit)  # the store records only the pairs the run covers (a prefix is keyed <key>:first<limit>)
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
                                 "code_version": code_version(), "device": device or _device_name(model)},
                                force=force)
    job = ChunkJob(run_id, settings, ds.lang_a, ds.lang_b, batch_size, save_factors, tuple(taggers), pooling, prompts)
    skipped = previous == "done" and not force
    pending = [] if skipped else writer.pending_chunks(run_id)
    if skipped:
        writer.close()
    return StartedRun(writer, job, method, ds, n_pairs, chunk_size, pending, skipped)


def process_chunk(writer: StoreWriter, model: SimilarityModel, job: ChunkJob, chunk_index: int,
                  rows: pd.DataFrame, batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """Compute chunk ``chunk_index`` from its ``rows`` and commit it to the store in one write; returns the
    pairs written. ``batch_size`` (default the job's) and ``max_rows`` bound the engine's batches."""
    batch_size = job.batch_size if batch_size is None else batch_size
    start = time.perf_counter()
    tables = (prediction_tables(model, rows, batch_size) if job.settings is None
              else chunk_tables(model, rows, job.lang_a, job.lang_b, job.settings, batch_size, job.save_factors,
                                max_rows, job.taggers))
    with contextlib.suppress(ChunkExistsError):  # another writer of the run committed it: its rows count
        writer.write_chunk(job.run_id, chunk_index, tables, compute_seconds=time.perf_counter() - start)
    return len(rows)


def model_for_run(model: SimilarityModel, pooling: str | None, prompt_a: str | None,
                  prompt_b: str | None) -> tuple[SimilarityModel, tuple[str | None, str | None] | None]:
    """The model a run uses (its prompts applied) and the prompts to hand to workers; a ``pooling`` that the
    model's own configuration contradicts is an error."""
    if pooling is not None and model.pooling != pooling_mode(pooling):
        raise ValueError(f"model {model.name} has {model.pooling} pooling, not {pooling}")
    if prompt_a is None and prompt_b is None:
        return model, None
    return model.with_prompts(prompt_a, prompt_b), (prompt_a, prompt_b)


def finish_run(started: StartedRun, store: str | Path, written: int, seconds: float) -> RunResult:
    """Store the run's metrics and status (and close its writer) after this run wrote ``written`` pairs in
    ``seconds``; the stored seconds and pairs/s cover every process that worked on the run."""
    run_id = started.job.run_id
    with Store(store) as reader:
        predictions = reader.predictions(run_id)
    metrics = score_metrics(predictions["model_score"].to_numpy(), predictions["gold"].to_numpy(),
                            predictions["gold_norm"].to_numpy())
    started.writer.finish_run(run_id, metrics)
    complete = len(started.writer.completed_chunks(run_id)) >= len(chunk_range_all(started.n_pairs,
                                                                                    started.chunk_size))
    started.writer.close()
    return RunResult(run_id=run_id, status="done" if complete else "partial", pairs_written=written,
                     seconds=seconds, metrics=metrics)


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
    pooling: str | None = None,
    prompt_a: str | None = None,
    prompt_b: str | None = None,
    tagger_a: str | None = None,
    tagger_b: str | None = None,
) -> RunResult:
    """Attribute ``dataset`` with ``model`` and ``method`` into ``store`` (a method-less run kind's name,
    ``predict``: scores only).

    Work is cut into chunks of ``chunk_size`` pairs, each committed in one transaction; a run that was
    interrupted resumes with the chunks that are missing (its seconds add up), and a finished run is skipped
    unless ``force`` (which also registers an edited dataset file as the dataset's next revision). ``shard``
    "K/N" takes every N-th chunk, so several processes or machines can split one corpus into one store.
    ``progress`` is a tqdm bar (True), nothing (False), or a callback ``(pairs_done, pairs_total)``. ``pooling``
    chooses a plain Hugging Face model's pooling; ``prompt_a``/``prompt_b`` the prompts of sentence1/sentence2
    (names or texts; default: the model's default prompt; see ``SimilarityModel.with_prompts``);
    ``tagger_a``/``tagger_b`` their spaCy pipelines (see ``core.pos.get_tagger``).
    """
    ds = as_dataset(dataset, data_dir)
    model, prompts = model_for_run(as_model(model, device=device, pooling=pooling), pooling, prompt_a, prompt_b)
    started = start_run(model, ds, store, method, layer, steps, quadrature, shard, batch_size, chunk_size, limit,
                        force, save_factors, taggers=(tagger_a, tagger_b), pooling=pooling, prompts=prompts)
    if started.skipped:
        return RunResult(run_id=started.job.run_id, status="skipped", pairs_written=0, seconds=0.0)
    total = started.pending_pairs
    bar = tqdm(total=total, unit="pair", desc=f"{method} {ds.key}", disable=progress is not True, smoothing=0.1)
    written, start = 0, time.perf_counter()
    try:
        for k in started.pending:
            n = process_chunk(started.writer, model, started.job, k, started.rows(k))
            written += n
            bar.update(n)
            if callable(progress):
                progress(written, total)
    except KeyboardInterrupt:
        bar.close()
        raise
    except Exception as exc:
        bar.close()
        started.writer.fail_run(started.job.run_id, f"{type(exc).__name__}: {exc}")
        started.writer.close()
        raise
    bar.close()
    return finish_run(started, store, written, time.perf_counter() - start)


def chunk_range_all(n_pairs: int, chunk_size: int) -> range:
    """Indices of all chunks of a run of ``n_pairs`` pairs."""
    return range((n_pairs + chunk_size - 1) // chunk_size)
