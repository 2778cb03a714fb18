"""Attribute a dataset into a store, chunk by chunk: resumable, shardable, with progress."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.attribution import (
    EngineOptions,
    SentenceFactors,
    Settings,
    compute_factors,
    pair_explanation,
    route_settings,
    with_options,
)
from core.datasets import PairDataset
from core.loading import as_dataset, as_model
from core.memory import DEFAULT_MAX_MEMORY, DEFAULT_MAX_ROWS, parse_memory
from core.metrics import score_metrics
from core.models import SimilarityModel
from core.pos import tag_texts_batch
from core.sentence_pipeline import pooling_mode
from core.store import (
    PREDICT,
    ChunkExistsError,
    Store,
    StoreWriter,
    chunk_pair_range,
    kind_of_method,
    make_run_id,
    parse_shard,
    summarize_runs,
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


def chunk_tables(model: SimilarityModel, rows: pd.DataFrame, job: ChunkJob,
                 engine: EngineOptions) -> dict[str, pd.DataFrame]:
    """The store tables of one chunk of pairs (``rows`` of the dataset frame) of an attribution run's ``job``,
    its factors computed with ``engine``."""
    settings = job.settings
    a_texts, b_texts = rows["sentence1"].tolist(), rows["sentence2"].tolist()
    prompts = [model.side_prompts[0]] * len(a_texts) + [model.side_prompts[1]] * len(b_texts)
    routes = [model.side_routes[0]] * len(a_texts) + [model.side_routes[1]] * len(b_texts)
    factors = compute_factors(model, a_texts + b_texts, settings.method, settings.layer, settings.steps,
                              settings.quadrature, prompts=prompts, engine=engine, routes=routes,
                              tol=settings.tol, max_steps=settings.max_steps)
    fa, fb = factors[: len(a_texts)], factors[len(a_texts) :]
    pair_ids = rows["pair_id"].astype(int).tolist()
    predictions, token_pairs = [], []
    for pid, a, b in zip(pair_ids, fa, fb, strict=True):
        exp = pair_explanation(model, a, b, settings)
        predictions.append({"pair_id": pid, "model_score": exp.model_score, "explained_score": exp.score,
                            "truncated": exp.truncated, "steps_a": exp.steps_a, "steps_b": exp.steps_b,
                            "capped": None if exp.steps_a is None else exp.capped})
        i, j = np.meshgrid(np.arange(exp.matrix.shape[0]), np.arange(exp.matrix.shape[1]), indexing="ij")
        hidden_a = np.array(a.special, bool) | np.array(a.prompt, bool)  # prompt tokens hide with special ones
        hidden_b = np.array(b.special, bool) | np.array(b.prompt, bool)
        token_pairs.append(pd.DataFrame({"pair_id": pid, "i": i.ravel(), "j": j.ravel(),
                                         "relevance": exp.matrix.ravel().astype(np.float32),
                                         "special_a": hidden_a[i.ravel()], "special_b": hidden_b[j.ravel()]}))
    tables = {
        "predictions": pd.DataFrame(predictions),
        "tokens": pd.concat([_token_rows(pair_ids, "a", fa, job.lang_a, job.taggers[0]),
                             _token_rows(pair_ids, "b", fb, job.lang_b, job.taggers[1])], ignore_index=True),
        "token_pairs": pd.concat(token_pairs, ignore_index=True),
    }
    if job.save_factors:
        tables["factors"] = pd.concat([_factor_rows(pair_ids, "a", fa), _factor_rows(pair_ids, "b", fb)],
                                      ignore_index=True)
    return tables


def prediction_tables(model: SimilarityModel, rows: pd.DataFrame, batch_size: int) -> dict[str, pd.DataFrame]:
    """The store tables of one chunk of a scores-only run."""
    emb_a, cut_a = model.embed_with_flags(rows["sentence1"].tolist(), batch_size, model.side_prompts[0],
                                          model.side_routes[0])
    emb_b, cut_b = model.embed_with_flags(rows["sentence2"].tolist(), batch_size, model.side_prompts[1],
                                          model.side_routes[1])
    return {"predictions": pd.DataFrame({
        "pair_id": rows["pair_id"].astype(int).to_numpy(), "model_score": model.similarity_of(emb_a, emb_b),
        "truncated": np.array(cut_a, dtype=bool) | np.array(cut_b, dtype=bool),
    })}


@dataclass(frozen=True)
class RunSettings:
    """What a precompute run computes and how, whoever runs it (:func:`run` here, or
    :func:`precompute.distributed.run_on_ray` on a Ray actor pool).

    ``method``: an attribution method or a method-less run kind (``predict``: scores only); ``layer``, ``steps``
    (a count or ``"auto"``), ``quadrature``, ``tol``, ``max_steps``: its settings (None: the method's defaults;
    see :func:`core.attribution.resolve_settings`). ``batch_size``: at most this many sentences per
    batch; ``max_memory``: bytes or a size such as ``"2GB"`` that one batch's working memory may take beyond the
    model (see :class:`core.attribution.EngineOptions`; results do not depend on it). ``chunk_size``: pairs per
    committed chunk; ``limit``: only the first N pairs (the dataset is keyed ``<key>:firstN``); ``force``:
    recompute a finished run (and register an edited dataset file as the dataset's next revision);
    ``save_factors``: also store per-token factors. ``pooling``: a plain Hugging Face model's pooling;
    ``prompt_a``/``prompt_b``: the prompts of sentence1/sentence2 (names or texts; default: the model's default
    prompt); ``route_a``/``route_b``: the routes (tasks, e.g. query and document) of sentence1/sentence2 through a
    Router/Asym model (default: plain ``encode``'s); ``tagger_a``/``tagger_b``: their spaCy pipelines (see
    ``core.pos.get_tagger``); ``trust_remote_code``: run a model folder's custom code (``auto_map``).
    """

    method: str = "bilrp"
    layer: int | None = None
    steps: int | str | None = None
    quadrature: str | None = None
    tol: float | None = None
    max_steps: int | None = None
    batch_size: int = 16
    max_memory: int | str = DEFAULT_MAX_MEMORY
    chunk_size: int = DEFAULT_CHUNK_SIZE
    limit: int | None = None
    force: bool = False
    save_factors: bool = False
    pooling: str | None = None
    prompt_a: str | None = None
    prompt_b: str | None = None
    tagger_a: str | None = None
    tagger_b: str | None = None
    route_a: str | None = None
    route_b: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ValueError(f"limit must be a positive integer, got {self.limit!r}")
        parse_memory(self.max_memory)

    @classmethod
    def of(cls, settings: RunSettings | None, options: dict) -> RunSettings:
        """``settings`` (default: the defaults) with ``options`` (keyword arguments named like its fields)."""
        return with_options(settings or cls(), options, "run setting")

    @property
    def prompts(self) -> tuple[str | None, str | None] | None:
        """The prompts to apply to the model (None: keep its own)."""
        return None if self.prompt_a is None and self.prompt_b is None else (self.prompt_a, self.prompt_b)

    @property
    def routes(self) -> tuple[str | None, str | None] | None:
        """The routes to apply to the model (None: plain ``encode``'s)."""
        return None if self.route_a is None and self.route_b is None else (self.route_a, self.route_b)


@dataclass(frozen=True)
class ChunkJob:
    """What computing any chunk of a started run needs; picklable and free of dataset rows (a chunk's rows
    travel with the chunk), so Ray actors get it once. ``settings`` is None for a scores-only run;
    ``max_memory`` (bytes) bounds each batch's working memory on whichever process computes the chunk."""

    run_id: str
    settings: Settings | None
    lang_a: str | None
    lang_b: str | None
    batch_size: int
    save_factors: bool
    taggers: tuple[str | None, str | None] = (None, None)
    pooling: str | None = None
    prompts: tuple[str | None, str | None] | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    routes: tuple[str | None, str | None] | None = None
    trust_remote_code: bool = False

    def prepare(self, model: SimilarityModel) -> SimilarityModel:
        """``model`` with this job's prompts and routes (a worker that loaded the model itself applies them here)."""
        model = model if self.prompts is None else model.with_prompts(*self.prompts)
        return model if self.routes is None else model.with_routes(*self.routes)


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


def start_run(model: SimilarityModel, ds: PairDataset, store: str | Path, settings: RunSettings,
              shard: str | None = None, device: str | None = None) -> StartedRun:
    """Validate the settings, store dataset and model, and register (or resume) the run; ``model`` is the run's
    (see :func:`model_for_run`); ``device`` is what the run record names as its device (default: the model's)."""
    parse_shard(shard)
    ds = ds.head(settings.limit)  # the store records only the pairs the run covers (a prefix is keyed :firstN)
    method = settings.method
    scores_only = kind_of_method(method) is PREDICT
    resolved = None if scores_only else route_settings(model, model.side_routes, method, settings.layer,
                                                       settings.steps, settings.quadrature, settings.tol,
                                                       settings.max_steps)
    writer = StoreWriter(store, shard)
    try:
        return _register(writer, model, ds, settings, resolved, device)
    except BaseException:
        writer.close()
        raise


def _register(writer: StoreWriter, model: SimilarityModel, ds: PairDataset, settings: RunSettings,
              resolved: Settings | None, device: str | None) -> StartedRun:
    """:func:`start_run`'s writes through ``writer`` (closed when the run is skipped)."""
    method = settings.method
    scores_only = resolved is None
    writer.put_dataset(_dataset_meta(ds), ds.frame, replace=settings.force)
    writer.put_model(_model_meta(model))
    n_pairs = len(ds)
    identity = {"model_id": model.model_id, "dataset_key": ds.key, "method": method,
                "layer": model.num_layers if scores_only else resolved.layer,
                "steps": None if scores_only else resolved.stored_steps,
                "quadrature": None if scores_only else resolved.quadrature,
                "tol": None if scores_only else resolved.tol, "max_steps": None if scores_only else resolved.max_steps}
    run_id = make_run_id(**identity)
    previous = writer.start_run({**identity, "chunk_size": settings.chunk_size, "n_pairs": n_pairs,
                                 "code_version": code_version(), "device": device or _device_name(model)},
                                force=settings.force)
    job = ChunkJob(run_id, resolved, ds.lang_a, ds.lang_b, settings.batch_size, settings.save_factors,
                   (settings.tagger_a, settings.tagger_b), settings.pooling, settings.prompts,
                   parse_memory(settings.max_memory), settings.routes, settings.trust_remote_code)
    skipped = previous == "done" and not settings.force
    pending = [] if skipped else writer.pending_chunks(run_id)
    if skipped:
        writer.close()
    return StartedRun(writer, job, method, ds, n_pairs, settings.chunk_size, pending, skipped)


def process_chunk(writer: StoreWriter, model: SimilarityModel, job: ChunkJob, chunk_index: int,
                  rows: pd.DataFrame, batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """Compute chunk ``chunk_index`` from its ``rows`` and commit it to the store in one write; returns the
    pairs written. ``batch_size`` (default the job's) and ``max_rows`` cap the engine's batches further than
    the job's memory bound does."""
    batch_size = job.batch_size if batch_size is None else batch_size
    start = time.perf_counter()
    if job.settings is None:
        tables = prediction_tables(model, rows, batch_size)
    else:
        engine = EngineOptions(batch_size=batch_size, max_memory=job.max_memory, max_rows=max_rows)
        tables = chunk_tables(model, rows, job, engine)
    with contextlib.suppress(ChunkExistsError):  # another writer of the run committed it: its rows count
        writer.write_chunk(job.run_id, chunk_index, tables, compute_seconds=time.perf_counter() - start)
    return len(rows)


def model_for_run(model: SimilarityModel, settings: RunSettings) -> SimilarityModel:
    """The model a run uses (its prompts and routes applied); a ``pooling`` that the model's own configuration
    contradicts is an error."""
    if settings.pooling is not None and model.pooling != pooling_mode(settings.pooling):
        raise ValueError(f"model {model.name} has {model.pooling} pooling, not {settings.pooling}")
    model = model if settings.prompts is None else model.with_prompts(*settings.prompts)
    return model if settings.routes is None else model.with_routes(*settings.routes)


def finish_run(started: StartedRun, store: str | Path, written: int, seconds: float) -> RunResult:
    """Store the run's metrics and status (and close its writer) after this run wrote ``written`` pairs in
    ``seconds``; the stored seconds and pairs/s cover every process that worked on the run."""
    run_id = started.job.run_id
    with started.writer:
        with Store(store) as reader:
            predictions = reader.predictions(run_id)
        metrics = score_metrics(predictions["model_score"].to_numpy(), predictions["gold"].to_numpy(),
                                predictions["gold_norm"].to_numpy())
        started.writer.finish_run(run_id, metrics)
        complete = len(started.writer.completed_chunks(run_id)) >= len(chunk_range_all(started.n_pairs,
                                                                                        started.chunk_size))
        if complete:  # the pages' corpus aggregates, computed once (whichever shard or worker finishes last)
            summarize_runs(store, [run_id], writer=started.writer)
    return RunResult(run_id=run_id, status="done" if complete else "partial", pairs_written=written,
                     seconds=seconds, metrics=metrics)


def run(
    model: SimilarityModel | str,
    dataset: PairDataset | str,
    store: str | Path,
    settings: RunSettings | None = None,
    *,
    shard: str | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool | ProgressCallback = True,
    **options,
) -> RunResult:
    """Attribute ``dataset`` with ``model`` into ``store`` with ``settings`` (a :class:`RunSettings`, or its
    fields as keyword arguments: ``method``, ``layer``, ``steps``, ``max_memory``, ``limit``, ...).

    Work is cut into chunks of ``chunk_size`` pairs, each committed in one transaction; a run that was
    interrupted resumes with the chunks that are missing (its seconds add up), and a finished run is skipped
    unless ``force``. ``shard`` "K/N" takes every N-th chunk, so several processes or machines can split one
    corpus into one store. ``device``: where the model loads (default: cuda when available). ``progress`` is a
    tqdm bar (True), nothing (False), or a callback ``(pairs_done, pairs_total)``.
    """
    settings = RunSettings.of(settings, options)
    parse_shard(shard)
    ds = as_dataset(dataset, data_dir)
    model = model_for_run(as_model(model, device=device, pooling=settings.pooling,
                                   trust_remote_code=settings.trust_remote_code), settings)
    started = start_run(model, ds, store, settings, shard)
    if started.skipped:
        return RunResult(run_id=started.job.run_id, status="skipped", pairs_written=0, seconds=0.0)

    def commit(k: int) -> int:
        return process_chunk(started.writer, model, started.job, k, started.rows(k))

    def failed(exc: Exception, seconds: float) -> None:
        started.writer.fail_run(started.job.run_id, f"{type(exc).__name__}: {exc}")

    try:
        written, seconds = commit_chunks(started.pending, commit, started.pending_pairs, "pair",
                                         f"{settings.method} {ds.key}", progress, failed)
    except BaseException:  # an error (recorded by ``failed``) or Ctrl-C: the committed chunks stay
        started.writer.close()
        raise
    return finish_run(started, store, written, seconds)


def commit_chunks(pending: Sequence[int], commit: Callable[[int], int], total: int, unit: str, desc: str,
                  progress: bool | ProgressCallback, failed: Callable[[Exception, float], None]) -> tuple[int, float]:
    """Compute and commit each chunk of ``pending`` in order (``commit(k)`` returns the items it wrote), with a
    tqdm bar (``progress`` True) or a callback ``(items_done, total)``; returns (items written, seconds). An
    error calls ``failed(error, seconds)`` and is raised; an interrupt (Ctrl-C) leaves the committed chunks."""
    bar = tqdm(total=total, unit=unit, desc=desc, disable=progress is not True, smoothing=0.1)
    written, start = 0, time.perf_counter()
    try:
        for k in pending:
            n = commit(k)
            written += n
            bar.update(n)
            if callable(progress):
                progress(written, total)
    except Exception as exc:  # not KeyboardInterrupt: an interrupted run stays resumable as it is
        failed(exc, time.perf_counter() - start)
        raise
    finally:
        bar.close()
    return written, time.perf_counter() - start


def chunk_range_all(n_pairs: int, chunk_size: int) -> range:
    """Indices of all chunks of a run of ``n_pairs`` pairs."""
    return range((n_pairs + chunk_size - 1) // chunk_size)
