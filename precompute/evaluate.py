"""Faithfulness evaluations into the store: one function per ``python -m precompute`` verb.

Each function explains the first ``limit`` pairs of a dataset (or reads a stored run), computes the metrics of
:mod:`core.faithfulness` and stores one record in the store's ``evaluations`` table (``StoreWriter.put_evaluation``):

==============  ========================================================================================
convergence     |sum(A) - score| of integrated Jacobians against steps, per layer and quadrature (IJ Fig. 2)
conservation    BiLRP relevance sum against the score, with and without biases, and H x P (BiLRP Fig. 6)
perturbation    perturbation curves and AUPC per method and a random ranking, Wilcoxon tests (BiLRP §4.3)
distributions   histograms and negative share per layer, top-k% cumulative share (IJ Figs. 3 and 5)
pos-subsets     share of the score explained by noun/verb and top-ten POS relations (IJ §3.4, Fig. 6)
agreement       Spearman correlation between methods' matrices on the same pairs
ground-truth    noun-counting model and ACS of each method with the true interactions (BiLRP §4.3, Fig. 1)
table1          Spearman of cosine and dot product of a model's embeddings (IJ Table 1); ``finetune`` ends with it
==============  ========================================================================================
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core import faithfulness as fm
from core.attribution import Explanation, explain_pairs, resolve_settings
from core.datasets import PairDataset, load_dataset
from core.finetune import FinetuneConfig, FinetuneResult, finetune, read_finetune_info, table1_scores
from core.methods import METHODS
from core.models import SimilarityModel, TokenBatch, load_model
from core.pos import tag_texts_batch
from core.quadrature import QUADRATURES
from core.store import Store, StoreWriter
from precompute.runner import _dataset_meta, _model_meta, code_version

KINDS = ("convergence", "conservation", "perturbation", "distributions", "pos-subsets", "agreement",
         "ground-truth", "table1")
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_METHODS = ("bilrp", "hxp", "ij", "embedding")
RANDOM = "random"
TOPK_GRID = np.round(np.linspace(0.0, 1.0, 101), 10)
NOUN_VERB = ("NOUN", "VERB")


@dataclass
class EvaluationResult:
    """What an evaluation stored: its id and rows, and the lines the CLI prints."""

    eval_id: str
    kind: str
    rows: pd.DataFrame
    seconds: float
    summary: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# shared plumbing
# ------------------------------------------------------------------------------------------------


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")


def _load(model: SimilarityModel | str, dataset: PairDataset | str, limit: int | None, data_dir: str | None,
          device: str | None) -> tuple[SimilarityModel, PairDataset, pd.DataFrame]:
    _check_limit(limit)
    ds = dataset if isinstance(dataset, PairDataset) else load_dataset(dataset, data_dir=data_dir)
    if isinstance(model, SimilarityModel):
        loaded = model
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = load_model(model, device=device)
    rows = ds.frame if limit is None else ds.frame.iloc[:limit]
    if rows.empty:
        raise ValueError(f"dataset {ds.key} has no pairs")
    return loaded, ds, rows.reset_index(drop=True)


def _pairs(rows: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(rows["sentence1"].tolist(), rows["sentence2"].tolist(), strict=True))


def _methods(methods: Sequence[str] | str | None, default: Sequence[str], allow_random: bool = False) -> list[str]:
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


def _layers(model: SimilarityModel, layers: Sequence[int] | None, default: Sequence[int]) -> list[int]:
    chosen = default if layers is None else layers
    if not chosen:
        raise ValueError("no layers given")
    return sorted({model.check_layer(int(layer) if not isinstance(layer, bool) else layer) for layer in chosen})


def _writer(store: str | Path) -> StoreWriter:
    return StoreWriter(store)


def _put(writer: StoreWriter, kind: str, model: SimilarityModel, ds: PairDataset, n_pairs: int, params: dict,
         rows: list[dict], started: float, run_id: str | None = None) -> tuple[str, pd.DataFrame]:
    writer.put_dataset(_dataset_meta(ds), ds.frame)
    writer.put_model(_model_meta(model))
    frame = pd.DataFrame(rows)
    eval_id = writer.put_evaluation({
        "kind": kind, "model_id": model.model_id, "model_name": model.name, "dataset_key": ds.key,
        "run_id": run_id, "n_pairs": n_pairs, "params": params, "seconds": time.perf_counter() - started,
        "code_version": code_version(),
    }, frame)
    return eval_id, _stored(writer, eval_id)


def _stored(writer: StoreWriter, eval_id: str) -> pd.DataFrame:
    """The evaluation's rows as the store returns them (extra/params as JSON text)."""
    with Store(writer.root) as reader:
        return reader.evaluations(eval_id=eval_id)


def _row(metric: str, y: float, **fields) -> dict:
    return {"metric": metric, "y": float(y) if y is not None else float("nan"), **fields}


def _mean_row(metric: str, values: Sequence[float], **fields) -> dict:
    mean, sd, n = fm.mean_sd(values)
    return _row(metric, mean, y_sd=sd, n=n, **fields)


_CACHE: dict | None = None  # explanations shared between evaluations inside reuse_explanations()


@contextlib.contextmanager
def reuse_explanations() -> Iterator[None]:
    """Within the block, evaluations of the same model object share explanations of the same pairs and settings
    (a benchmark running several evaluations computes each matrix once). Do not change a model's weights inside
    the block."""
    global _CACHE
    previous, _CACHE = _CACHE, {}
    try:
        yield
    finally:
        _CACHE = previous


def _median(values: Sequence[float]) -> dict:
    """{"median": ...} of the finite values (relative residuals explode where a score is near zero)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return {"median": float(np.median(arr)) if arr.size else None}


def _explain(model: SimilarityModel, pairs: list[tuple[str, str]], method: str, layer: int | None,
             steps: int | None, quadrature: str | None, batch_size: int, progress: bool) -> list[Explanation]:
    settings = resolve_settings(model, method, layer, steps, quadrature)
    key = (id(model), tuple(pairs), settings.method, settings.layer, settings.steps, settings.quadrature)
    if _CACHE is not None and key in _CACHE:
        return _CACHE[key][1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        out = explain_pairs(model, pairs, method, layer, steps, quadrature, batch_size=batch_size, progress=progress)
    if _CACHE is not None:
        _CACHE[key] = (model, out)  # keeps the model alive, so its id is not reused
    return out


def _settings(model: SimilarityModel, method: str, layer: int | None, steps: int | None, quadrature: str | None):
    return resolve_settings(model, method, layer, steps, quadrature)


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


# ------------------------------------------------------------------------------------------------
# convergence (IJ Fig. 2)
# ------------------------------------------------------------------------------------------------


def convergence(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path,
                layers: Sequence[int] | None = None, steps: Sequence[int] = DEFAULT_STEPS,
                quadratures: Sequence[str] = QUADRATURES, limit: int | None = None, batch_size: int = 16,
                data_dir: str | None = None, device: str | None = None, progress: bool = True) -> EvaluationResult:
    """Attribution error of integrated Jacobians against the number of integration steps: mean +- sd over
    pairs of |score - sum(A)| and of that divided by |score|, per layer (default 0, L/2, L-1) and rule."""
    started = time.perf_counter()
    model, ds, rows = _load(model, dataset, limit, data_dir, device)
    writer = _writer(store)
    big = model.num_layers
    layers = _layers(model, layers, [0, big // 2, max(big - 1, 0)])
    steps = sorted({_positive(s, "steps") for s in steps})
    if not steps:
        raise ValueError("no steps given")
    quadratures = list(dict.fromkeys(quadratures))
    bad = [q for q in quadratures if q not in QUADRATURES]
    if bad or not quadratures:
        raise ValueError(f"quadrature must be one of {', '.join(QUADRATURES)}, got {', '.join(bad) or 'none'}")
    pairs = _pairs(rows)
    texts = list(dict.fromkeys(t for p in pairs for t in p))
    index = {t: i for i, t in enumerate(texts)}
    ia = np.array([index[a] for a, _ in pairs])
    ib = np.array([index[b] for _, b in pairs])
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    bar = tqdm(total=len(layers) * len(quadratures) * sum(steps) * len(texts), unit="pt", disable=not progress,
               desc="ij convergence", unit_scale=True)
    out = []
    try:
        for layer in layers:
            for quad in quadratures:
                for n in steps:
                    bar.set_postfix(layer=layer, rule=quad, steps=n)
                    targets, sums = [], []
                    for batch in batches:
                        with warnings.catch_warnings():
                            warnings.filterwarnings("ignore", message=".*was truncated.*")
                            t, s = fm.ij_totals(model, batch, layer, n, quad, batch_size=batch_size)
                        targets.append(t)
                        sums.append(s)
                        bar.update(n * len(batch))
                    targets, sums = np.concatenate(targets), np.concatenate(sums)
                    score = np.einsum("nd,nd->n", targets[ia], targets[ib])
                    total = np.einsum("nd,nd->n", sums[ia], sums[ib])
                    err = np.abs(score - total)
                    rel = np.divide(err, np.abs(score), out=np.full_like(err, np.nan), where=score != 0)
                    common = dict(method="ij", layer=layer, steps=n, quadrature=quad, series=f"layer {layer} · {quad}",
                                  x=float(n))
                    out.append(_mean_row("abs_residual", err, extra=_median(err), **common))
                    out.append(_mean_row("rel_residual", rel, extra=_median(rel), **common))
    finally:
        bar.close()
    params = {"layers": layers, "steps": steps, "quadratures": quadratures, "limit": limit}
    eval_id, frame = _put(writer, "convergence", model, ds, len(pairs), params, out, started)
    summary = [f"{r['series']:>28}  steps {int(r['x']):>5}  |residual| {_fmt(r['y'])} ± {_fmt(r['y_sd'])}"
               for r in out if r["metric"] == "abs_residual"]
    return EvaluationResult(eval_id, "convergence", frame, time.perf_counter() - started, summary)


def _positive(value: object, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------
# conservation (BiLRP App. C, Fig. 6)
# ------------------------------------------------------------------------------------------------


def conservation(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path, layer: int = 0,
                 limit: int | None = None, batch_size: int = 16, data_dir: str | None = None,
                 device: str | None = None, progress: bool = True) -> EvaluationResult:
    """Relevance sum against the explained score per pair for BiLRP, BiLRP on a copy of the model with all
    biases zeroed (conservation is then exact) and H x P; plus mean |residual|, relative residual, Pearson r
    and the least-squares slope through the origin of sum against score."""
    started = time.perf_counter()
    model, ds, rows = _load(model, dataset, limit, data_dir, device)
    writer = _writer(store)
    layer = model.check_layer(layer)
    pairs = _pairs(rows)
    pair_ids = rows["pair_id"].astype(int).tolist()
    variants = [("bilrp", model, "bilrp"), ("bilrp (no biases)", fm.without_biases(model), "bilrp"),
                ("hxp", model, "hxp")]
    out, summary = [], []
    for label, variant, method in variants:
        exps = _explain(variant, pairs, method, layer, None, None, batch_size, progress)
        scores = np.array([e.score for e in exps])
        sums = np.array([float(e.matrix.sum()) for e in exps])
        errors = [fm.conservation_error(e.matrix, e.score) for e in exps]
        common = dict(method=method, layer=layer, series=label)
        for pid, s, t in zip(pair_ids, scores, sums, strict=True):
            out.append(_row("relevance_sum", t, x=float(s), n=1, extra={"pair_id": pid}, **common))
        out.append(_mean_row("abs_residual", [e[0] for e in errors], extra=_median([e[0] for e in errors]), **common))
        out.append(_mean_row("rel_residual", [e[1] for e in errors], extra=_median([e[1] for e in errors]), **common))
        r = float(np.corrcoef(scores, sums)[0, 1]) if len(pairs) > 1 and np.ptp(scores) > 0 and np.ptp(sums) > 0 \
            else float("nan")
        slope = float(scores @ sums / (scores @ scores)) if scores @ scores > 0 else float("nan")
        out.append(_row("pearson_r", r, n=len(pairs), **common))
        out.append(_row("slope", slope, n=len(pairs), **common))
        summary.append(f"{label:>18}: |score - sum| {_fmt(np.mean([e[0] for e in errors]))}, "
                       f"relative {_fmt(np.mean([e[1] for e in errors]))}, r {_fmt(r)}, slope {_fmt(slope)}")
    params = {"layer": layer, "limit": limit}
    eval_id, frame = _put(writer, "conservation", model, ds, len(pairs), params, out, started)
    return EvaluationResult(eval_id, "conservation", frame, time.perf_counter() - started, summary)


# ------------------------------------------------------------------------------------------------
# perturbation (BiLRP §4.3, App. B)
# ------------------------------------------------------------------------------------------------


def mask_token_id(model: SimilarityModel) -> int:
    """The id that replaces removed tokens: the tokenizer's mask token, else its unknown token, else padding."""
    tok = model.tokenizer
    for name in ("mask_token_id", "unk_token_id", "pad_token_id"):
        value = getattr(tok, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"model {model.name}: the tokenizer has no mask, unknown or padding token")


def _embedder(model: SimilarityModel, text: str, chunk: int = 256) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                            np.ndarray, np.ndarray]:
    """(embed(ids) -> embeddings, input ids, special flags) of one sentence, for perturbed copies of it."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        base = model.tokenize([text])
    n = base.lengths[0]
    ids = base.input_ids[0, :n].cpu().numpy()
    special = base.special[0, :n].cpu().numpy()

    def embed(rows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            rep = base.repeat(len(part))
            batch = TokenBatch(**{**rep.__dict__, "input_ids": torch.as_tensor(part, device=model.device)})
            out.append(model.sentence_embeddings(batch).double().cpu().numpy())
        return np.concatenate(out)

    return embed, ids, special


def perturbation(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path,
                 methods: Sequence[str] | str | None = None, layer: int | None = None, steps: int | None = None,
                 quadrature: str | None = None, random_baseline: bool = True, seed: int = 0,
                 step: float = fm.PERTURBATION_STEP, limit: int | None = None, batch_size: int = 16,
                 data_dir: str | None = None, device: str | None = None, progress: bool = True) -> EvaluationResult:
    """AUPC of each method's token ranking (pooled pair relevance) and of a random ranking: the mean
    perturbation curve, mean +- sd AUPC (mean of the two sides of a pair) and paired Wilcoxon tests."""
    started = time.perf_counter()
    model, ds, rows = _load(model, dataset, limit, data_dir, device)
    writer = _writer(store)
    methods = _methods(methods, DEFAULT_METHODS, allow_random=True)
    real = [m for m in methods if m != RANDOM]
    if random_baseline and RANDOM not in methods:
        methods.append(RANDOM)
    settings = {m: _settings(model, m, layer, steps, quadrature) for m in real}
    pairs = _pairs(rows)
    mask_id = mask_token_id(model)
    fractions = fm.perturbation_fractions(step)
    rankings: dict[tuple[str, int, str], np.ndarray] = {}
    for m in real:
        s = settings[m]
        for p, exp in enumerate(_explain(model, pairs, m, s.layer, s.steps, s.quadrature, batch_size, progress)):
            for side, special in (("a", exp.special_a), ("b", exp.special_b)):
                rankings[(m, p, side)] = fm.relevance_ranking(fm.pooled_relevance(exp.matrix, side), special)
    rng = np.random.default_rng(seed)
    sentences: dict[str, list[tuple[str, int, str]]] = {}
    for p, (a, b) in enumerate(pairs):
        for side, text in (("a", a), ("b", b)):
            sentences.setdefault(text, []).append((RANDOM, p, side))
    curves: dict[tuple[str, int, str], np.ndarray] = {}
    for text, users in tqdm(sentences.items(), desc="perturbation curves", unit="sentence", disable=not progress):
        embed, ids, special = _embedder(model, text)
        if RANDOM in methods:
            for key in users:
                rankings[key] = fm.relevance_ranking(None, special, rng=rng)
        keys = [(m, p, side) for (_, p, side) in users for m in methods]
        inputs = {key: fm.perturbation_inputs(ids, special, rankings[key], mask_id, fractions) for key in keys}
        unique: dict[bytes, int] = {ids.tobytes(): 0}
        table = [ids]
        for arr in inputs.values():
            for row in arr:
                if row.tobytes() not in unique:
                    unique[row.tobytes()] = len(table)
                    table.append(row)
        emb = embed(np.stack(table))
        for key, arr in inputs.items():
            idx = [unique[row.tobytes()] for row in arr]
            curves[key] = np.linalg.norm(emb[idx] - emb[0], axis=1)
    out, summary = [], []
    per_pair: dict[str, np.ndarray] = {}
    for m in methods:
        s = settings.get(m)
        common = dict(method=m, layer=s.layer if s else None, steps=s.steps if s else None,
                      quadrature=s.quadrature if s else None, series=m)
        stack = np.stack([curves[(m, p, side)] for p in range(len(pairs)) for side in ("a", "b")])
        for k, f in enumerate(fractions):
            out.append(_mean_row("distance", stack[:, k], x=float(f), **common))
        areas = np.array([[fm.aupc(fractions, curves[(m, p, side)]) for side in ("a", "b")]
                          for p in range(len(pairs))]).mean(axis=1)
        per_pair[m] = areas
        out.append(_mean_row("aupc", areas, **common))
        summary.append(f"{m:>10}: AUPC {_fmt(areas.mean())} ± {_fmt(areas.std())}")
    for first, second in combinations(methods, 2):
        test = fm.paired_test(per_pair[first], per_pair[second])
        out.append(_row("p_value", test["p"], method=first, label=f"{first} vs {second}", n=int(test["n"]),
                        extra={"other": second, "statistic": test["statistic"], "p_less": test["p_less"],
                               "median_diff": test["median_diff"], "test": "wilcoxon signed-rank, two-sided"}))
        summary.append(f"{first} vs {second}: Wilcoxon p = {_fmt(test['p'], 3)} "
                       f"(one-sided {first} lower: {_fmt(test['p_less'], 3)})")
    params = {"methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "seed": seed,
              "step": step, "mask_token_id": mask_id, "limit": limit}
    eval_id, frame = _put(writer, "perturbation", model, ds, len(pairs), params, out, started)
    return EvaluationResult(eval_id, "perturbation", frame, time.perf_counter() - started, summary,
                            extra={"aupc": per_pair})


# ------------------------------------------------------------------------------------------------
# distributions (IJ Figs. 3 and 5)
# ------------------------------------------------------------------------------------------------


def distributions(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path,
                  methods: Sequence[str] | str | None = None, layers: Sequence[int] | None = None,
                  steps: int | None = None, quadrature: str | None = None, bins: int = 60,
                  limit: int | None = None, batch_size: int = 16, data_dir: str | None = None,
                  device: str | None = None, progress: bool = True) -> EvaluationResult:
    """Per method (default ``ij``) and layer (default 0, L/2, L-1, L): a histogram of all token-pair
    attributions (shared bins across layers, 0.5-99.5 % range, outliers in the edge bins), the share of
    negative attributions (per pair, mean +- sd), and the mean +- sd share of the explained score reached by
    the top-k % of attributions sorted by |value| (k = 0..100), with the top-5 % share and the fraction of
    pairs needed before the sd of that share stays below 5 % / 2 %."""
    started = time.perf_counter()
    model, ds, rows = _load(model, dataset, limit, data_dir, device)
    writer = _writer(store)
    methods = _methods(methods, ("ij",))
    big = model.num_layers
    layers = _layers(model, layers, [0, big // 2, max(big - 1, 0), big])
    bins = _positive(bins, "bins")
    pairs = _pairs(rows)
    out, summary = [], []
    for m in methods:
        values_by_layer = {}
        for layer in layers:
            s = _settings(model, m, layer, steps, quadrature)
            exps = _explain(model, pairs, m, layer, s.steps, s.quadrature, batch_size, progress)
            common = dict(method=m, layer=layer, steps=s.steps, quadrature=s.quadrature)
            values = np.concatenate([e.matrix.ravel() for e in exps])
            values_by_layer[layer] = (values, common)
            neg = [fm.negative_share(e.matrix) for e in exps]
            out.append(_mean_row("negative_share", neg, series=m, x=float(layer),
                                 extra={"pooled": fm.negative_share(values)}, **common))
            shares = np.stack([fm.topk_share(e.matrix, TOPK_GRID, total=e.score) for e in exps])
            for k, f in enumerate(TOPK_GRID):
                out.append(_mean_row("topk_share", shares[:, k], series=f"{m} · layer {layer}", x=float(f), **common))
            top5 = np.array([fm.topk_share(e.matrix, [0.05], total=e.score)[0] for e in exps])
            out.append(_mean_row("top5_share", top5, series=m, x=float(layer), **common))
            sds = np.nanstd(shares, axis=0)
            for threshold in (0.05, 0.02):
                above = np.flatnonzero(~(sds < threshold))
                first = 0.0 if above.size == 0 else (float(TOPK_GRID[above[-1] + 1]) if above[-1] + 1 < len(TOPK_GRID)
                                                      else float("nan"))
                out.append(_row("fraction_for_sd_below", first, series=f"{m} · layer {layer}",
                                label=f"{threshold:.0%}", n=len(exps), **common))
            summary.append(f"{m} layer {layer:>2}: negative {_fmt(np.mean(neg), 3)} ± {_fmt(np.std(neg), 3)}, "
                           f"top-5% share {_fmt(np.nanmean(top5), 3)} ± {_fmt(np.nanstd(top5), 3)}")
        pooled = np.concatenate([v for v, _ in values_by_layer.values()])
        lo, hi = np.quantile(pooled, [0.005, 0.995]) if pooled.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        width = float(edges[1] - edges[0])
        for layer, (values, common) in values_by_layer.items():
            counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
            density = counts / (counts.sum() * width) if counts.sum() else counts.astype(float)
            for c, d, left in zip(counts, density, edges[:-1], strict=True):
                out.append(_row("density", d, series=f"{m} · layer {layer}", x=float(left + width / 2), n=int(values.size),
                                extra={"count": int(c), "width": width}, **common))
    params = {"methods": methods, "layers": layers, "steps": steps, "quadrature": quadrature, "bins": bins,
              "limit": limit}
    eval_id, frame = _put(writer, "distributions", model, ds, len(pairs), params, out, started)
    return EvaluationResult(eval_id, "distributions", frame, time.perf_counter() - started, summary)


# ------------------------------------------------------------------------------------------------
# POS subsets (IJ §3.4, Fig. 6)
# ------------------------------------------------------------------------------------------------


@dataclass
class _PosPair:
    matrix: np.ndarray
    pos_a: list
    pos_b: list
    special_a: list
    special_b: list
    total: float


def _pos_pairs_from_model(model: SimilarityModel, ds: PairDataset, pairs: list[tuple[str, str]], method: str,
                          layer, steps, quadrature, batch_size: int, progress: bool) -> list[_PosPair]:
    exps = _explain(model, pairs, method, layer, steps, quadrature, batch_size, progress)
    tags_a = tag_texts_batch([e.text_a for e in exps], [e.tokens_a for e in exps], [e.offsets_a for e in exps],
                             [e.special_a for e in exps], ds.lang_a, prompt=[e.prompt_a for e in exps])
    tags_b = tag_texts_batch([e.text_b for e in exps], [e.tokens_b for e in exps], [e.offsets_b for e in exps],
                             [e.special_b for e in exps], ds.lang_b, prompt=[e.prompt_b for e in exps])
    return [_PosPair(e.matrix, [t.pos for t in ta], [t.pos for t in tb], list(e.special_a), list(e.special_b), e.score)
            for e, ta, tb in zip(exps, tags_a, tags_b, strict=True)]


def _pos_pairs_from_run(reader: Store, run_id: str, limit: int | None) -> tuple[dict, list[_PosPair]]:
    info = reader.run_info(run_id)
    if info is None:
        raise ValueError(f"run {run_id!r} is not in {str(reader.root)!r} (see python -m precompute list)")
    if info["method"] == "predict":
        raise ValueError(f"run {run_id} is a scores-only (predict) run: it has no token pairs")
    preds = reader.predictions(run_id).sort_values("pair_id")
    if preds.empty:
        raise ValueError(f"run {run_id} has no stored pairs yet")
    if limit is not None:
        preds = preds.iloc[:limit]
    wanted = set(preds["pair_id"].astype(int))
    tp = reader.table("token_pairs", run_id=run_id)
    tp = tp[tp["pair_id"].isin(wanted)]
    out = []
    for pid, group in tp.groupby("pair_id", sort=True):
        n_a, n_b = int(group["i"].max()) + 1, int(group["j"].max()) + 1
        matrix = np.zeros((n_a, n_b))
        matrix[group["i"].to_numpy(int), group["j"].to_numpy(int)] = group["relevance"].to_numpy(float)
        first_a = group.drop_duplicates("i").set_index("i").sort_index()
        first_b = group.drop_duplicates("j").set_index("j").sort_index()
        row = preds[preds["pair_id"] == pid].iloc[0]
        total = row["explained_score"] if pd.notna(row["explained_score"]) else matrix.sum()
        out.append(_PosPair(matrix, [None if pd.isna(v) else v for v in first_a["pos_a"]],
                            [None if pd.isna(v) else v for v in first_b["pos_b"]],
                            first_a["special_a"].astype(bool).tolist(), first_b["special_b"].astype(bool).tolist(),
                            float(total)))
    return info, out


def pos_subsets(model: SimilarityModel | str | None, dataset: PairDataset | str | None, store: str | Path,
                methods: Sequence[str] | str | None = None, layer: int | None = None, steps: int | None = None,
                quadrature: str | None = None, run_id: str | None = None,
                fractions: Sequence[float] = (0.1, 0.25, 0.5), top_n: int = 10, limit: int | None = None,
                batch_size: int = 16, data_dir: str | None = None, device: str | None = None,
                progress: bool = True) -> EvaluationResult:
    """Share of the explained score carried by noun/verb relations (NOUN-NOUN, NOUN-VERB, VERB-VERB) and by the
    ``top_n`` POS relations most frequent among the top 10 % of attributions (by |value|, special tokens left
    out of the ranking, their relevance kept in the total), the share reached by the n most frequent relations
    (n = 1, 2, ...), and each top relation's share of the top 10/25/50 % attributions (IJ Fig. 6).

    Relevances and POS come from the stored run ``run_id`` (no model needed), or are computed with ``model``
    (default method ``ij``) and tagged with spaCy through ``core.pos``.
    """
    started = time.perf_counter()
    _check_limit(limit)
    top_n = _positive(top_n, "top_n")
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError("fractions must lie in (0, 1]")
    if run_id is not None:
        reader = Store(store)
        info, data_by_method = _pos_pairs_from_run(reader, run_id, limit)
        writer = _writer(store)
        model_row = reader.models().set_index("model_id").loc[info["model_id"]]
        ds_key = info["dataset_key"]
        methods = [info["method"]]
        data = {info["method"]: (data_by_method, dict(layer=info["layer"], steps=info["steps"],
                                                      quadrature=info["quadrature"]))}
        model_id, model_name, n_pairs = info["model_id"], model_row["name"], len(data_by_method)
        ds = None
    else:
        if model is None or dataset is None:
            raise ValueError("give a model and a dataset, or --run to read a stored run")
        model, ds, rows = _load(model, dataset, limit, data_dir, device)
        writer = _writer(store)
        methods = _methods(methods, ("ij",))
        pairs = _pairs(rows)
        data = {}
        for m in methods:
            s = _settings(model, m, layer, steps, quadrature)
            data[m] = (_pos_pairs_from_model(model, ds, pairs, m, s.layer, s.steps, s.quadrature, batch_size, progress),
                       dict(layer=s.layer, steps=s.steps, quadrature=s.quadrature))
        model_id, model_name, ds_key, n_pairs = model.model_id, model.name, ds.key, len(pairs)
    out, summary = [], []
    noun_verb = fm.relations_within(NOUN_VERB)
    for m in methods:
        items, common = data[m]
        common = dict(method=m, **common)
        counts = {f: Counter() for f in fractions}
        for it in items:
            for f in fractions:
                counts[f] += fm.relation_counts(it.matrix, it.pos_a, it.pos_b, f, it.special_a, it.special_b)
        ranked = [r for r, _ in counts[min(fractions)].most_common()]
        top = ranked[:top_n]
        nv = [fm.pos_subset_share(it.matrix, it.pos_a, it.pos_b, noun_verb, it.total) for it in items]
        tt = [fm.pos_subset_share(it.matrix, it.pos_a, it.pos_b, top, it.total) for it in items]
        out.append(_mean_row("share", nv, series=f"{m} · noun/verb relations", label="NOUN/VERB relations",
                             extra={"relations": sorted(noun_verb)}, **common))
        out.append(_mean_row("share", tt, series=f"{m} · top {top_n} relations", label=f"top {top_n} relations",
                             extra={"relations": top}, **common))
        for n in range(1, len(ranked) + 1):
            shares = [fm.pos_subset_share(it.matrix, it.pos_a, it.pos_b, ranked[:n], it.total) for it in items]
            out.append(_mean_row("share_top_n_relations", shares, series=m, x=float(n), label=ranked[n - 1], **common))
        for f in fractions:
            total = sum(counts[f].values())
            for rel in top:
                out.append(_row("relation_share", counts[f][rel] / total if total else float("nan"),
                                series=f"{m} · top {f:.0%}", label=rel, x=f, n=total, **common))
        summary.append(f"{m}: noun/verb relations explain {_fmt(np.nanmean(nv), 3)} ± {_fmt(np.nanstd(nv), 3)}, "
                       f"top {top_n} relations {_fmt(np.nanmean(tt), 3)} ± {_fmt(np.nanstd(tt), 3)} "
                       f"({', '.join(top)})")
    params = {"methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "run_id": run_id,
              "fractions": fractions, "top_n": top_n, "limit": limit}
    if ds is not None:
        eval_id, frame = _put(writer, "pos-subsets", model, ds, n_pairs, params, out, started)
    else:
        frame = pd.DataFrame(out)
        eval_id = writer.put_evaluation({
            "kind": "pos-subsets", "model_id": model_id, "model_name": model_name, "dataset_key": ds_key,
            "run_id": run_id, "n_pairs": n_pairs, "params": params, "seconds": time.perf_counter() - started,
            "code_version": code_version()}, frame)
        frame = _stored(writer, eval_id)
    return EvaluationResult(eval_id, "pos-subsets", frame, time.perf_counter() - started, summary)


# ------------------------------------------------------------------------------------------------
# agreement between methods
# ------------------------------------------------------------------------------------------------


def agreement(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path,
              methods: Sequence[str] | str | None = None, layer: int | None = None, steps: int | None = None,
              quadrature: str | None = None, limit: int | None = None, batch_size: int = 16,
              data_dir: str | None = None, device: str | None = None, progress: bool = True) -> EvaluationResult:
    """Spearman correlation between the matrices of every two methods on the same pair (all token pairs, and
    without special tokens), mean +- sd over pairs."""
    started = time.perf_counter()
    model, ds, rows = _load(model, dataset, limit, data_dir, device)
    writer = _writer(store)
    methods = _methods(methods, DEFAULT_METHODS)
    if len(methods) < 2:
        raise ValueError("agreement needs at least two methods")
    pairs = _pairs(rows)
    exps = {}
    for m in methods:
        s = _settings(model, m, layer, steps, quadrature)
        exps[m] = _explain(model, pairs, m, s.layer, s.steps, s.quadrature, batch_size, progress)
    out, summary = [], []
    for first, second in combinations(methods, 2):
        full, words = [], []
        for e1, e2 in zip(exps[first], exps[second], strict=True):
            full.append(fm.matrix_rank_agreement(e1.matrix, e2.matrix))
            ka, kb = ~np.asarray(e1.special_a, bool), ~np.asarray(e1.special_b, bool)
            words.append(fm.matrix_rank_agreement(e1.matrix[np.ix_(ka, kb)], e2.matrix[np.ix_(ka, kb)]))
        label = f"{first} vs {second}"
        extra = {"other": second, "layers": [exps[first][0].layer, exps[second][0].layer]}
        out.append(_mean_row("spearman", full, method=first, series="all tokens", label=label, extra=extra))
        out.append(_mean_row("spearman", words, method=first, series="without special tokens", label=label, extra=extra))
        summary.append(f"{label:>22}: Spearman {_fmt(np.nanmean(full), 3)} ± {_fmt(np.nanstd(full), 3)} "
                       f"(without special tokens {_fmt(np.nanmean(words), 3)})")
    params = {"methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "limit": limit}
    eval_id, frame = _put(writer, "agreement", model, ds, len(pairs), params, out, started)
    return EvaluationResult(eval_id, "agreement", frame, time.perf_counter() - started, summary)


# ------------------------------------------------------------------------------------------------
# ground truth (BiLRP §4.3, Fig. 1)
# ------------------------------------------------------------------------------------------------


def noun_count_targets(pairs: Sequence[tuple[str, str]], lang: str = "en") -> np.ndarray:
    """Per pair, the number of distinct NOUN/PROPN lemmas both sentences share (spaCy)."""
    texts = list(dict.fromkeys(t for p in pairs for t in p))
    words = dict(zip(texts, fm.tag_words(texts, lang), strict=True))
    return np.array([fm.shared_noun_count(words[a], words[b]) for a, b in pairs], dtype=np.float64)


def truth_matrix(exp: Explanation, words_a: Sequence[fm.Word], words_b: Sequence[fm.Word]) -> np.ndarray:
    """The token-level true interaction matrix of an explanation's pair (see ``fm.shared_noun_matrix``)."""
    keys_a = fm.noun_keys(fm.align_words(exp.offsets_a, exp.special_a, words_a), words_a)
    keys_b = fm.noun_keys(fm.align_words(exp.offsets_b, exp.special_b, words_b), words_b)
    return fm.shared_noun_matrix(keys_a, keys_b)


def default_ground_truth_output(model: str | SimilarityModel) -> Path:
    name = model.name if isinstance(model, SimilarityModel) else str(model)
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "model"
    return Path("models") / f"ground-truth-{slug}"


def ground_truth(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path,
                 train_dataset: PairDataset | str = "stsb:train", train_limit: int | None = None,
                 output: str | Path | None = None, methods: Sequence[str] | str | None = None,
                 layer: int | None = None, steps: int | None = None, quadrature: str | None = None,
                 config: FinetuneConfig | None = None, limit: int | None = None, batch_size: int = 16,
                 force: bool = False, data_dir: str | None = None, device: str | None = None,
                 progress: bool = True) -> EvaluationResult:
    """Fine-tune ``model`` so that the dot product of its mean-pooled (unnormalised) embeddings predicts the
    number of shared nouns/proper nouns (lemma match, spaCy), save it to ``output``, then report its Spearman/MSE
    against the true counts and, per method, the average cosine similarity (ACS) between the explanation and the
    true token-level interaction matrix over test pairs that share at least one noun (special tokens left out;
    ``acs_all_tokens`` keeps them)."""
    started = time.perf_counter()
    _check_limit(limit)
    _check_limit(train_limit)
    config = config or FinetuneConfig(objective="dot", normalize=False, epochs=3, lr=5e-5)
    if config.objective != "dot" or config.normalize is not False:
        raise ValueError("the ground-truth model is trained with objective 'dot' and normalize=False")
    methods = _methods(methods, DEFAULT_METHODS)
    test = dataset if isinstance(dataset, PairDataset) else load_dataset(dataset, data_dir=data_dir)
    train = train_dataset if isinstance(train_dataset, PairDataset) else load_dataset(train_dataset, data_dir=data_dir)
    for d in (test, train):
        if (d.lang_a or "en") != "en" or (d.lang_b or "en") != "en":
            raise ValueError(f"the ground-truth task tags English nouns; {d.key} is {d.lang_a}-{d.lang_b}")
    writer = _writer(store)
    train_rows = train.frame if train_limit is None else train.frame.iloc[:train_limit]
    test_rows = test.frame if limit is None else test.frame.iloc[:limit]
    train_pairs, test_pairs = _pairs(train_rows), _pairs(test_rows)
    texts = list(dict.fromkeys(t for p in train_pairs + test_pairs for t in p))
    words = dict(zip(texts, fm.tag_words(texts), strict=True))
    train_targets = np.array([fm.shared_noun_count(words[a], words[b]) for a, b in train_pairs])
    test_targets = np.array([fm.shared_noun_count(words[a], words[b]) for a, b in test_pairs])
    output = Path(output) if output is not None else default_ground_truth_output(model)
    result: FinetuneResult = finetune(model, train_pairs, train_targets, output, config, force=force,
                                      progress=progress, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gt_model = load_model(output, device=device)
    out, summary = [], []
    for label, pairs, target in (("train", train_pairs[:500], train_targets[:500]), ("test", test_pairs, test_targets)):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was truncated.*")
            ea = gt_model.embed([a for a, _ in pairs])
            eb = gt_model.embed([b for _, b in pairs])
        pred = gt_model.similarity_of(ea, eb)
        from scipy import stats

        rho = float(stats.spearmanr(pred, target).statistic * 100) if np.ptp(target) > 0 and np.ptp(pred) > 0 \
            else float("nan")
        mse = float(np.mean((pred - target) ** 2))
        out.append(_row("spearman", rho, series="noun count", label=label, n=len(pairs)))
        out.append(_row("mse", mse, series="noun count", label=label, n=len(pairs)))
        summary.append(f"noun-count model on {label}: Spearman {_fmt(rho, 3)}, MSE {_fmt(mse, 3)} ({len(pairs)} pairs)")
    for m in methods:
        s = _settings(gt_model, m, layer, steps, quadrature)
        exps = _explain(gt_model, test_pairs, m, s.layer, s.steps, s.quadrature, batch_size, progress)
        inner, full = [], []
        for e, (a, b) in zip(exps, test_pairs, strict=True):
            truth = truth_matrix(e, words[a], words[b])
            if not truth.any():
                continue
            ka, kb = ~np.asarray(e.special_a, bool), ~np.asarray(e.special_b, bool)
            inner.append(fm.cosine_similarity(e.matrix[np.ix_(ka, kb)], truth[np.ix_(ka, kb)]))
            full.append(fm.cosine_similarity(e.matrix, truth))
        common = dict(method=m, layer=s.layer, steps=s.steps, quadrature=s.quadrature, series=m)
        out.append(_mean_row("acs", inner, **common))
        out.append(_mean_row("acs_all_tokens", full, **common))
        summary.append(f"{m:>10}: ACS {_fmt(np.nanmean(inner) if inner else float('nan'), 3)} ± "
                       f"{_fmt(np.nanstd(inner) if inner else float('nan'), 3)} over {len(inner)} pairs with shared nouns")
    params = {"base_model": result.info.get("base_model"), "train_dataset": train.key, "train_limit": train_limit,
              "methods": methods, "layer": layer, "steps": steps, "quadrature": quadrature, "limit": limit,
              "epochs": config.epochs, "lr": config.lr, "output": str(output)}
    eval_id, frame = _put(writer, "ground-truth", gt_model, test, len(test_pairs), params, out, started)
    return EvaluationResult(eval_id, "ground-truth", frame, time.perf_counter() - started, summary,
                            extra={"finetune": result})


# ------------------------------------------------------------------------------------------------
# Table 1 (IJ) and fine-tuning
# ------------------------------------------------------------------------------------------------


def table1(model: SimilarityModel | str, dataset: PairDataset | str, store: str | Path, limit: int | None = None,
           batch_size: int = 64, data_dir: str | None = None, device: str | None = None) -> EvaluationResult:
    """Store the model's row of Möller et al. (2023) Table 1: Spearman x100 of the cosine and of the dot product
    of its embeddings (shifted for adjusted models) against gold."""
    started = time.perf_counter()
    model, ds, rows = _load(model, dataset, limit, data_dir, device)
    writer = _writer(store)
    scores = table1_scores(model, _pairs(rows), rows["gold"].to_numpy(float), batch_size=batch_size)
    info = read_finetune_info(model.path) or {}
    out = [_row("spearman", scores["cosine"], series="table1", label="cosine", n=len(rows)),
           _row("spearman", scores["dot"], series="table1", label="dot", n=len(rows))]
    params = {"limit": limit, "adjusted": bool(model.shifted), "base_model": info.get("base_model"),
              "epochs": info.get("epochs"), "train_pairs": info.get("train_pairs"), "objective": info.get("objective")}
    eval_id, frame = _put(writer, "table1", model, ds, len(rows), params, out, started)
    summary = [f"{model.name} ({'adjusted' if model.shifted else 'not adjusted'}) on {ds.key}: Spearman x100 "
               f"cosine {_fmt(scores['cosine'], 3)}, dot {_fmt(scores['dot'], 3)}"]
    return EvaluationResult(eval_id, "table1", frame, time.perf_counter() - started, summary)


def finetune_and_evaluate(model: str | SimilarityModel, output: str | Path, store: str | Path, adjusted: bool,
                          config: FinetuneConfig | None = None, train_dataset: PairDataset | str = "stsb:train",
                          dataset: PairDataset | str = "stsb:test", limit: int | None = None,
                          eval_limit: int | None = None, force: bool = False, data_dir: str | None = None,
                          device: str | None = None, progress: bool = True) -> EvaluationResult:
    """Fine-tune on STS-b train (gold/5 targets) with the adjusted objective (shifted embeddings, dot product)
    or the standard cosine one, save the model to ``output``, and store its Table 1 row on ``dataset``."""
    _check_limit(limit)
    config = config or FinetuneConfig()
    config.objective = "shifted-dot" if adjusted else "cosine"
    train = train_dataset if isinstance(train_dataset, PairDataset) else load_dataset(train_dataset, data_dir=data_dir)
    ds = dataset if isinstance(dataset, PairDataset) else load_dataset(dataset, data_dir=data_dir)
    _writer(store)  # fail on a bad store before training
    rows = train.frame if limit is None else train.frame.iloc[:limit]
    result = finetune(model, _pairs(rows), rows["gold_norm"].to_numpy(float), output, config, force=force,
                      progress=progress, device=device)
    evaluation = table1(output, ds, store, limit=eval_limit, data_dir=data_dir, device=device)
    losses = ", ".join(f"{v:.4f}" for v in result.losses)
    evaluation.summary.insert(0, f"fine-tuning {result.status}: {result.steps} steps, {result.seconds:.0f}s, "
                                 f"loss per epoch [{losses}] -> {output}")
    evaluation.extra["finetune"] = result
    return evaluation

