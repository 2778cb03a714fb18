"""The evaluation registry's base: what an evaluation declares, what its ``compute`` gets and returns, and the one
frame every evaluation runs in (load, compute, store).

An evaluation is a subclass of :class:`Evaluation` in its own module of this package, registered with
:func:`register`: its ``kind`` is the CLI verb and the stored kind, ``title``/``caption``/``figures`` are its
section of the Faithfulness page, ``add_options`` adds its own CLI options (the shared ones come from
:mod:`precompute.options`), and ``compute(ctx, **options)`` turns a :class:`Context` into an :class:`Output`.
:func:`evaluate` resolves the inputs (names or objects), opens the store before any work, runs ``compute`` and
stores the rows as one record of the ``evaluations`` table.

Nothing here imports torch at module level, so listing the registry (the Faithfulness page does) stays light.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from core import faithfulness as fm
from core.store import Store, StoreWriter
from precompute import options as opt

if TYPE_CHECKING:
    from core.attribution import Explanation, SentenceFactors, Settings
    from core.datasets import PairDataset
    from core.models import SimilarityModel

RANDOM = "random"  # the random-ranking baseline some evaluations accept among their methods
DEFAULT_METHODS = ("bilrp", "hxp", "ij", "embedding")


# ---- what compute returns, what evaluate returns -------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What stored rows are about when they come from a stored run instead of a model and a dataset."""

    model_id: str
    model_name: str
    dataset_key: str
    run_id: str | None = None


@dataclass
class Output:
    """What ``compute`` returns: ``rows`` (dicts with metric and y, optionally method, layer, steps, quadrature,
    series, label, x, y_sd, n and extra), ``params`` (stored; with the kind, model and dataset they make the
    eval_id), the ``summary`` lines the CLI prints, Python-only ``extra`` results, ``n_pairs`` (default: the
    context's), and ``model`` / ``source`` when the rows are about another model (one it trained) or a stored run."""

    rows: list[dict]
    params: dict
    summary: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    n_pairs: int | None = None
    model: SimilarityModel | None = None
    source: Source | None = None


@dataclass
class EvaluationResult:
    """What an evaluation stored: its id and rows (as the store returns them), and the lines the CLI prints."""

    eval_id: str
    kind: str
    rows: pd.DataFrame
    seconds: float
    summary: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ---- shared explanations ---------------------------------------------------------------------------------------


class ExplanationCache:
    """Explanations shared between evaluations: the same model object, pairs and settings are explained once.
    Pass one to several :func:`evaluate` calls (a benchmark running every evaluation); do not change a model's
    weights while it is in use. It keeps each model alive, so an id is never reused."""

    def __init__(self) -> None:
        self._found: dict[tuple, tuple[Any, list]] = {}

    def get(self, model: Any, key: tuple, compute: Callable[[], list]) -> list:
        """The explanations of ``key`` for ``model`` (computed by ``compute`` the first time)."""
        key = (id(model), *key)
        if key not in self._found:
            self._found[key] = (model, compute())
        return self._found[key][1]

    def __len__(self) -> int:
        return len(self._found)


# ---- the context compute works in ---------------------------------------------------------------------------------


class Context:
    """An evaluation's inputs, resolved on first use: ``model`` and ``dataset`` load only when ``compute`` asks
    (a run read from the store needs neither), ``rows`` are the first ``limit`` pairs. ``model_spec`` is the
    model as given (a name, a folder or a loaded model)."""

    def __init__(self, model: Any, dataset: Any, store: str | Path, limit: int | None = None, batch_size: int = 16,
                 data_dir: str | None = None, device: str | None = None, progress: bool = True,
                 cache: ExplanationCache | None = None, dataset_options: dict | None = None) -> None:
        self.model_spec, self.dataset_spec, self.store = model, dataset, Path(store)
        self.limit, self.batch_size, self.data_dir, self.device = limit, batch_size, data_dir, device
        self.progress, self.cache, self.dataset_options = progress, cache, dict(dataset_options or {})

    @cached_property
    def model(self) -> SimilarityModel:
        from core.loading import as_model

        if self.model_spec is None:
            raise ValueError("this evaluation needs a model (--model)")
        return as_model(self.model_spec, device=self.device, quiet=True)

    @cached_property
    def dataset(self) -> PairDataset:
        if self.dataset_spec is None:
            raise ValueError("this evaluation needs a dataset (--dataset)")
        # the store records only the pairs evaluated: a prefix is keyed <key>:first<limit>, as for runs
        return self.load_dataset(self.dataset_spec, **self.dataset_options).head(self.limit)

    def load_dataset(self, spec: Any, **options: Any) -> PairDataset:
        """A dataset by name or object (``data_dir`` from the context)."""
        from core.loading import as_dataset

        return as_dataset(spec, self.data_dir, **options)

    @cached_property
    def rows(self) -> pd.DataFrame:
        frame = self.dataset.frame if self.limit is None else self.dataset.frame.iloc[: self.limit]
        if frame.empty:
            raise ValueError(f"dataset {self.dataset.key} has no pairs")
        return frame.reset_index(drop=True)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return pairs_of(self.rows)

    def settings(self, method: str, layer: int | None = None, steps: int | str | None = None,
                 quadrature: str | None = None, model: SimilarityModel | None = None, tol: float | None = None,
                 max_steps: int | None = None) -> Settings:
        """``method``'s settings on ``model`` (default: the context's) with its defaults filled in."""
        from core.attribution import resolve_settings

        return resolve_settings(model or self.model, method, layer, steps, quadrature, tol, max_steps)

    def explain(self, pairs: Sequence[tuple[str, str]], method: str, layer: int | None = None,
                steps: int | None = None, quadrature: str | None = None,
                model: SimilarityModel | None = None) -> list[Explanation]:
        """Explanations of ``pairs`` (shared through the cache when there is one)."""
        from core.attribution import explain_pairs

        model = model or self.model
        s = self.settings(method, layer, steps, quadrature, model)
        pairs = list(pairs)

        def compute() -> list[Explanation]:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was truncated.*")
                return explain_pairs(model, pairs, s.method, s.layer, s.steps, s.quadrature,
                                     batch_size=self.batch_size, progress=self.progress)

        if self.cache is None:
            return compute()
        return self.cache.get(model, (tuple(pairs), s.method, s.layer, s.steps, s.quadrature), compute)

    def factors(self, texts: Sequence[str], method: str, layer: int | None = None, steps: int | str | None = None,
                quadrature: str | None = None, **integration: Any) -> list[SentenceFactors]:
        """Per-sentence factors of ``texts`` (:func:`core.attribution.compute_factors`; ``integration``: its
        ``tol``/``max_steps``)."""
        from core.attribution import compute_factors

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was truncated.*")
            return compute_factors(self.model, list(texts), method, layer, steps, quadrature,
                                   batch_size=self.batch_size, **integration)

    def methods(self, methods: Sequence[str] | str | None, default: Sequence[str],
                allow_random: bool = False) -> list[str]:
        """Validated method names (comma-separated text or a list; ``None``: ``default``)."""
        from core.methods import METHODS

        if methods is None:
            return list(default)
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        known = sorted(METHODS) + ([RANDOM] if allow_random else [])
        bad = [m for m in methods if m not in known]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}: choose from {', '.join(known)}")
        if not methods:
            raise ValueError("no methods given")
        return list(dict.fromkeys(methods))

    def layers(self, layers: Sequence[int] | None, default: Sequence[int]) -> list[int]:
        """Validated, sorted, distinct layers of the model (``None``: ``default``)."""
        chosen = default if layers is None else layers
        if not chosen:
            raise ValueError("no layers given")
        return sorted({self.model.check_layer(int(v) if not isinstance(v, bool) else v) for v in chosen})

    def common_layers(self, with_output: bool = False) -> list[int]:
        """0, L/2, L-1 (and L with ``with_output``): the layers the papers' figures use."""
        big = self.model.num_layers
        return [0, big // 2, max(big - 1, 0)] + ([big] if with_output else [])


# ---- the base class and the registry ------------------------------------------------------------------------------


class Evaluation(ABC):
    """One faithfulness evaluation. Class attributes: ``kind`` (CLI verb and stored kind; ``verb`` when a second
    verb stores the same kind), ``title`` (the page's tab), ``help`` (one line: ``--help`` and the empty page's comment)/``description`` (``--help``), ``caption`` and
    ``figures`` (the page's section: :mod:`core.views.evidence` specs), ``example`` (arguments of an example
    command on the empty page), ``order`` (place in listings), ``batch_size`` (default
    ``--batch-size``), ``newest_only`` (the page shows the newest evaluation, no selector)."""

    kind: ClassVar[str]
    title: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str]
    caption: ClassVar[str] = ""
    figures: ClassVar[tuple] = ()
    example: ClassVar[str] = "--limit 100"
    order: ClassVar[int] = 100
    batch_size: ClassVar[int] = 16
    newest_only: ClassVar[bool] = False

    @classmethod
    def verb(cls) -> str:
        return cls.kind

    @classmethod
    def help_text(cls) -> str:
        """``help`` as readers see it (argparse's ``%%`` escapes undone)."""
        return cls.help.replace("%%", "%")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The shared options (model, dataset, store, batch size, limit, device), then :meth:`add_options`."""
        opt.add_model(parser)
        opt.add_dataset(parser, default="stsb:test")
        opt.add_store(parser)
        opt.add_compute(parser, cls.batch_size)
        cls.add_options(parser)

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        """This evaluation's own options; their destinations are ``compute``'s keyword arguments."""
        return None

    @classmethod
    def arguments(cls, args: argparse.Namespace, own: Sequence[str]) -> dict:
        """:func:`evaluate`'s keyword arguments from parsed CLI ``args`` (``own``: the destinations of
        :meth:`add_options`)."""
        dataset_options = opt.dataset_arguments(args)
        data_dir = dataset_options.pop("data_dir")
        return dict(model=args.model, dataset=args.dataset, store=args.store, limit=args.limit,
                    batch_size=args.batch_size, data_dir=data_dir, device=args.device,
                    dataset_options=dataset_options, **{d: getattr(args, d) for d in own})

    @classmethod
    def reads_stored_run(cls, options: dict) -> bool:
        """Whether these options read a stored run instead of computing (the store must then exist already)."""
        return False

    @abstractmethod
    def compute(self, ctx: Context, **options: Any) -> Output:
        """The evaluation's rows from ``ctx`` (see :class:`Output`)."""


EVALUATIONS: dict[str, type[Evaluation]] = {}  # verb -> class, filled as the package's modules are imported


def register(cls: type[Evaluation]) -> type[Evaluation]:
    """Class decorator: add an evaluation to the registry under its verb."""
    verb = cls.verb()
    if verb in EVALUATIONS and EVALUATIONS[verb] is not cls:
        raise ValueError(f"evaluation verb {verb!r} is registered twice: {EVALUATIONS[verb].__name__}, {cls.__name__}")
    EVALUATIONS[verb] = cls
    return cls


def get_evaluation(verb: str) -> type[Evaluation]:
    """The evaluation class of a verb; a miss lists the verbs there are."""
    if verb not in EVALUATIONS:
        raise ValueError(f"unknown evaluation {verb!r}: choose from {', '.join(verbs())}")
    return EVALUATIONS[verb]


def verbs() -> list[str]:
    """Every evaluation verb, in listing order."""
    return sorted(EVALUATIONS, key=lambda v: (EVALUATIONS[v].order, v))


def kinds() -> list[str]:
    """Every stored kind, in listing order (a kind two verbs write appears once)."""
    return list(dict.fromkeys(EVALUATIONS[v].kind for v in verbs()))


def kinds_markdown() -> str:
    """The registered evaluations as markdown (docs/STORE.md's list of the ``evaluations`` table's kinds)."""
    lines = ["### Evaluation kinds", "",
             "The `kind` of an `evaluations` row is a registered evaluation (one module of `precompute/evaluations/`):",
             "", "| CLI verb | stored kind | what it evaluates |", "|---|---|---|"]
    lines += [f"| `{v}` | `{EVALUATIONS[v].kind}` | {EVALUATIONS[v].help_text()} |" for v in verbs()]
    return "\n".join(lines) + "\n"


def by_kind(kind: str) -> type[Evaluation] | None:
    """The evaluation that presents a stored kind (the one whose verb is the kind), or None."""
    found = [EVALUATIONS[v] for v in verbs() if EVALUATIONS[v].kind == kind]
    return next((c for c in found if c.verb() == kind), found[0] if found else None)


# ---- the frame -------------------------------------------------------------------------------------------------------


def evaluate(evaluation: str | type[Evaluation], model: Any, dataset: Any, store: str | Path, *,
             limit: int | None = None, batch_size: int | None = None, data_dir: str | None = None,
             device: str | None = None, progress: bool = True, cache: ExplanationCache | None = None,
             dataset_options: dict | None = None, **options: Any) -> EvaluationResult:
    """Run one evaluation (a verb or a class) on ``model`` and ``dataset`` (names or loaded objects) and store it.

    ``limit``: only the first N pairs; ``cache``: explanations shared with other evaluations;
    ``dataset_options``: how to read a user's file (columns, lang, gold_range); ``options``: the evaluation's own
    (see its ``compute``). The store is opened before any work, so a bad one fails first (one that reads a stored
    run opens it to read).
    """
    cls = get_evaluation(evaluation) if isinstance(evaluation, str) else evaluation
    check_limit(limit)
    started = time.perf_counter()
    ctx = Context(model, dataset, store, limit, batch_size or cls.batch_size, data_dir, device, progress, cache,
                  dataset_options)
    writer = None if cls.reads_stored_run(options) else StoreWriter(store)  # a bad store fails before any work
    try:
        out = cls().compute(ctx, **options)
        writer = writer or StoreWriter(store)
        eval_id = _put(writer, cls.kind, ctx, out, started)
    finally:
        if writer is not None:
            writer.close()
    with Store(store) as reader:
        stored = reader.evaluations(eval_id=eval_id)
    return EvaluationResult(eval_id, cls.kind, stored, time.perf_counter() - started, out.summary, out.extra)


def _put(writer: StoreWriter, kind: str, ctx: Context, out: Output, started: float) -> str:
    from precompute.runner import _dataset_meta, _model_meta, code_version

    meta: dict[str, Any] = {"params": out.params, "code_version": code_version(), "kind": kind}
    if out.source is not None:
        meta.update(model_id=out.source.model_id, model_name=out.source.model_name,
                    dataset_key=out.source.dataset_key, run_id=out.source.run_id)
    else:
        model = out.model or ctx.model
        writer.put_dataset(_dataset_meta(ctx.dataset), ctx.dataset.frame)
        writer.put_model(_model_meta(model))
        meta.update(model_id=model.model_id, model_name=model.name, dataset_key=ctx.dataset.key, run_id=None)
    meta["n_pairs"] = out.n_pairs if out.n_pairs is not None else len(ctx.rows)
    meta["seconds"] = time.perf_counter() - started
    return writer.put_evaluation(meta, pd.DataFrame(out.rows))


# ---- helpers the evaluations share ----------------------------------------------------------------------------------


def check_limit(limit: int | None, name: str = "limit") -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"{name} must be a positive integer, got {limit!r}")


def positive(value: object, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def pairs_of(rows: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(rows["sentence1"].tolist(), rows["sentence2"].tolist(), strict=True))


def row(metric: str, y: float | None, **fields: Any) -> dict:
    """One stored row."""
    return {"metric": metric, "y": float(y) if y is not None else float("nan"), **fields}


def mean_row(metric: str, values: Sequence[float], **fields: Any) -> dict:
    """A row of the mean, sd and count of the finite ``values``."""
    mean, sd, n = fm.mean_sd(values)
    return row(metric, mean, y_sd=sd, n=n, **fields)


def median(values: Sequence[float]) -> dict:
    """{"median": ...} of the finite values (relative residuals explode where a score is near zero)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return {"median": float(np.median(arr)) if arr.size else None}


def fmt(value: float | None, digits: int = 4) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def training_config(args: argparse.Namespace, **overrides: Any):
    """A validated :class:`core.finetune.FinetuneConfig` from :func:`precompute.options.add_training`'s options."""
    from core.finetune import FinetuneConfig

    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
                            seed=args.seed, **overrides)
    config.validate()
    return config
