"""Precompute on Ray Data: a run's pending chunks become a Ray dataset, an actor pool loads the model once per
actor (on its GPU when Ray gives it one) and every actor commits each chunk it finishes straight into the shared
store, one write per chunk. Ray restarts killed actors and retries their chunks; the store's chunk rule keeps
every chunk exactly once, so a retried chunk that was already committed is skipped."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from core.datasets import PairDataset
from core.loading import as_dataset, as_model
from core.memory import DEFAULT_MAX_ROWS
from core.model_folders import load_model
from core.models import SimilarityModel
from core.store import ChunkExistsError, StoreWriter, parse_location
from precompute.runner import (
    ChunkJob,
    RunResult,
    RunSettings,
    StartedRun,
    finish_run,
    model_for_run,
    process_chunk,
    start_run,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CPUS_PER_WORKER = 0.5
LOCAL = ""  # ``--ray`` without an address: start a local cluster on this machine


class RayRunError(RuntimeError):
    """A distributed run failed: a worker raised, or the cluster cannot host the actor pool."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a distributed run is.

    ``address``: an existing cluster (``auto``, ``ray://host:10001``, ``host:6379``); empty or None starts a
    local cluster. ``workers``: actors in the pool. ``gpus_per_worker``: GPUs each actor asks for (fractions
    share a GPU, e.g. 0.5; None: 1 when the cluster has GPUs and the device is not ``cpu``, else 0).
    ``cpus_per_worker``: CPUs each actor asks for; a fraction (default 0.5) keeps CPUs free for Ray's own tasks,
    which on a small machine would otherwise starve and hang the job.
    """

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float | None = None
    cpus_per_worker: float = DEFAULT_CPUS_PER_WORKER

    def validate(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        if not isinstance(self.cpus_per_worker, (int, float)) or not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker must be a positive number, got {self.cpus_per_worker!r}")
        gpus = self.gpus_per_worker
        if gpus is not None and (not isinstance(gpus, (int, float)) or gpus < 0 or (gpus > 1 and gpus != int(gpus))):
            raise ValueError(f"gpus_per_worker must be 0, a fraction in (0, 1] or a whole number, got {gpus!r}")


@dataclass(frozen=True)
class ChunkReport:
    """One chunk a worker finished: ``pairs`` in it, ``written`` False when an earlier attempt (a worker that
    died after committing) had committed it already; the worker's ``host``, ``pid`` and ``device``; ``seconds``
    of compute and commit; ``batch_size`` it ran with (smaller than asked after out-of-memory halvings)."""

    chunk_index: int
    pairs: int
    written: bool
    host: str
    pid: int
    device: str
    seconds: float
    batch_size: int


ChunkCallback = Callable[[ChunkReport], None]


class ChunkWorker:
    """The callable class of the actor pool: one instance per Ray actor.

    It loads the model once, on the GPU Ray assigned to it (``cuda`` when it has one and ``device`` allows it),
    and commits each chunk it is given. On ``torch.cuda.OutOfMemoryError`` it halves its batch (sentences per
    batch and rows per forward pass) and retries the chunk; it fails only when one sentence does not fit.
    """

    def __init__(self, model_name: str, model_path: str, model_id: str, store: str, job: ChunkJob,
                 device: str | None) -> None:
        import torch

        gpu = torch.cuda.is_available() and device != "cpu"
        # the driver's folder when this node sees it, else the name (a packaged model or hub id) resolved here;
        # the name is the driver's either way, so the model id (name and weights' revision) must match
        where = model_path if Path(model_path).is_dir() else model_name
        loaded = load_model(where, device="cuda" if gpu else "cpu", pooling=job.pooling,
                            trust_remote_code=job.trust_remote_code)
        loaded.name = model_name
        self.model = job.prepare(loaded)
        if self.model.model_id != model_id:
            raise RayRunError(f"worker on {socket.gethostname()} loaded {where!r} with other weights (model id "
                              f"{self.model.model_id}, the run's is {model_id}): install the same model on every "
                              f"node")
        self.writer = StoreWriter(store)
        self.job = job
        self.batch_size = job.batch_size
        self.max_rows = DEFAULT_MAX_ROWS
        self.device = str(self.model.device)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        reports = [self._chunk(int(row.chunk_index), pd.DataFrame({
            "pair_id": list(row.pair_id), "sentence1": list(row.sentence1), "sentence2": list(row.sentence2)}))
            for row in batch.itertuples(index=False)]
        return pd.DataFrame([r.__dict__ for r in reports])

    def _chunk(self, k: int, rows: pd.DataFrame) -> ChunkReport:
        start = time.perf_counter()
        written = k not in self.writer.completed_chunks(self.job.run_id) and self._commit(k, rows)
        return ChunkReport(chunk_index=k, pairs=len(rows), written=written, host=socket.gethostname(),
                           pid=os.getpid(), device=self.device, seconds=time.perf_counter() - start,
                           batch_size=self.batch_size)

    def _commit(self, k: int, rows: pd.DataFrame) -> bool:
        import torch

        while True:
            try:
                process_chunk(self.writer, self.model, self.job, k, rows, self.batch_size, self.max_rows)
                return True
            except ChunkExistsError:  # another attempt of this chunk committed first
                return False
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1 and self.max_rows == 1:
                    raise
                self.batch_size, self.max_rows = max(1, self.batch_size // 2), max(1, self.max_rows // 2)
                torch.cuda.empty_cache()
                logging.getLogger(__name__).warning(
                    "chunk %d: out of GPU memory, retrying with batch_size=%d, max_rows=%d", k, self.batch_size,
                    self.max_rows)


def chunk_items(started: StartedRun) -> list[dict]:
    """One Ray dataset row per pending chunk: its index and its pairs' ids and texts."""
    items = []
    for k in started.pending:
        rows = started.rows(k)
        items.append({"chunk_index": k, "pair_id": rows["pair_id"].astype(int).tolist(),
                      "sentence1": rows["sentence1"].tolist(), "sentence2": rows["sentence2"].tolist()})
    return items


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[None]:
    """Connect to ``address`` (None/empty: start a local cluster) unless this process is connected already;
    disconnect (and stop a local cluster) on exit, also after an error or Ctrl-C."""
    import ray

    if ray.is_initialized():
        yield
        return
    local = not address
    # local workers import this checkout; remote nodes get its code shipped (their packages must be installed)
    # and this shell's object-store credentials (AWS_*), so that every worker reaches an s3:// store
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    code = ({"env_vars": {"PYTHONPATH": _pythonpath()}} if local
            else {"py_modules": [str(ROOT / "core"), str(ROOT / "precompute")], "env_vars": aws})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray.init(address="local" if local else address, include_dashboard=False if local else None,
                 logging_level=logging.WARNING, runtime_env=code)
    try:
        yield
    finally:
        ray.shutdown()


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def _cluster_resources(options: RayOptions, device: str | None) -> tuple[float, float]:
    """(CPUs, GPUs) each actor asks for, checked against what the cluster has when it is a local one."""
    import ray

    total = ray.cluster_resources()
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if total.get("GPU", 0) > 0 and device != "cpu" else 0.0
    if device == "cuda" and gpus == 0:
        raise ValueError("--device cuda needs --gpus-per-worker > 0 (the cluster has "
                         f"{total.get('GPU', 0):g} GPUs)")
    if not options.address:  # a local cluster cannot grow: a pool that does not fit would wait forever
        need_cpu, need_gpu = options.workers * options.cpus_per_worker, options.workers * gpus
        if need_cpu > total.get("CPU", 0) or need_gpu > total.get("GPU", 0):
            raise ValueError(
                f"{options.workers} workers x ({options.cpus_per_worker:g} CPU, {gpus:g} GPU) need {need_cpu:g} "
                f"CPUs and {need_gpu:g} GPUs; this machine's Ray cluster has {total.get('CPU', 0):g} CPUs and "
                f"{total.get('GPU', 0):g} GPUs: use fewer --workers or a smaller --cpus-per-worker")
    return options.cpus_per_worker, gpus


@contextlib.contextmanager
def _quiet_data_context() -> Iterator[None]:
    """Ray Data without its own progress bars and banners (the driver shows one bar), tolerating a few
    actors that die while loading the model; restored afterwards."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start",
                                          "max_consecutive_actor_init_deaths")}
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.max_consecutive_actor_init_deaths = 3
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        data_logger.setLevel(level)


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt)): (.+)$")


def _worker_error(exc: BaseException) -> str:
    """The worker's own exception (``Type: message``), found in Ray's wrapping exceptions and tracebacks."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    for link in chain:
        for line in reversed(str(link).splitlines()):
            found = _ERROR_LINE.match(line.strip())
            if found and not line.strip().startswith("ray."):
                return f"{found.group(1)}: {found.group(2)}"
    last = chain[-1]
    lines = str(last).strip().splitlines()
    return f"{type(last).__name__}: {lines[-1] if lines else ''}"


def run_on_ray(
    model: SimilarityModel | str,
    dataset: PairDataset | str,
    store: str | Path,
    options: RayOptions,
    settings: RunSettings | None = None,
    *,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool | Callable[[int, int], None] = True,
    on_chunk: ChunkCallback | None = None,
    **run_options,
) -> RunResult:
    """:func:`precompute.runner.run` on a Ray actor pool: the same run, chunks and store rows.

    The driver (this process) validates everything and registers the run, loading the model on the CPU only
    to read its identity; the ``options.workers`` actors compute and commit the chunks; the driver shows one
    tqdm bar (pairs/s; or calls ``progress(pairs_done, pairs_total)``), calls ``on_chunk`` with every
    :class:`ChunkReport`, and stores the run's status and metrics. A rerun after any interruption computes only
    the missing chunks. Raises :class:`RayRunError` when a worker fails (the run is marked failed).
    ``settings`` (or its fields as keyword arguments) are :class:`precompute.runner.RunSettings`; every worker
    honours its ``max_memory``.
    """
    import ray

    options.validate()
    settings = RunSettings.of(settings, run_options)
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    ds = as_dataset(dataset, data_dir)
    driver_model = model_for_run(as_model(model, device="cpu", pooling=settings.pooling,
                                          trust_remote_code=settings.trust_remote_code), settings)
    location = parse_location(store)  # a folder (made absolute: actors need not share the cwd) or a ducklake: string
    store = str(location.root.resolve()) if location.root is not None else location.spec
    with ray_cluster(options.address):
        cpus, gpus = _cluster_resources(options, device)
        kind = f"cuda x {gpus:g} GPU" if gpus else "cpu"
        started = start_run(driver_model, ds, store, settings, device=f"ray: {options.workers} workers ({kind})")
        run_id = started.job.run_id
        if started.skipped:
            return RunResult(run_id=run_id, status="skipped", pairs_written=0, seconds=0.0)
        total = started.pending_pairs
        bar = tqdm(total=total, unit="pair", desc=f"{settings.method} {ds.key} on Ray", disable=progress is not True,
                   smoothing=0.1)
        done, workers, start = 0, set(), time.perf_counter()
        try:
            with _quiet_data_context():
                if started.pending:
                    items = chunk_items(started)
                    results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                        ChunkWorker, batch_size=1, batch_format="pandas",
                        compute=ray.data.ActorPoolStrategy(size=options.workers), num_cpus=cpus, num_gpus=gpus,
                        fn_constructor_kwargs={"model_name": driver_model.name,
                                               "model_path": str(Path(driver_model.path).resolve()),
                                               "model_id": driver_model.model_id, "store": store,
                                               "job": started.job, "device": device})
                    for row in results.iter_rows():
                        report = ChunkReport(**{k: row[k] for k in ChunkReport.__dataclass_fields__})
                        done += report.pairs
                        workers.add((report.host, report.pid))
                        bar.update(report.pairs)
                        bar.set_postfix(workers=len(workers), refresh=False)
                        if callable(progress):
                            progress(done, total)
                        if on_chunk is not None:
                            on_chunk(report)
        except KeyboardInterrupt:  # the committed chunks stay: the run resumes
            bar.close()
            started.writer.close()
            raise
        except Exception as exc:
            bar.close()
            message = _worker_error(exc)
            started.writer.fail_run(run_id, message)
            started.writer.close()
            raise RayRunError(f"run {run_id} failed on a Ray worker: {message}") from exc
        bar.close()
        # every pending chunk was committed during this run (by its worker or by an attempt that then died)
        return finish_run(started, store, done, time.perf_counter() - start)
