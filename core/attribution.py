"""The public attribution API: per-sentence factors, and token-pair explanations built from them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from core.memory import AUTODIFF_MODES, DEFAULT_MAX_MEMORY, BatchPlan, EncoderShape, parse_memory, plan_batch
from core.methods import get_method
from core.methods.base import truncated
from core.models import SimilarityModel
from core.quadrature import (
    AUTO,
    DEFAULT_MAX_STEPS,
    DEFAULT_QUADRATURE,
    DEFAULT_TOL,
    PANEL_POINTS,
    QUADRATURES,
    AutoSteps,
)
from core.token_batch import check_text


@dataclass
class Settings:
    """The resolved settings of an attribution run (``steps``/``quadrature`` are None for step-free methods).

    ``steps``: a fixed number of integration steps, or ``"auto"``: each sentence's integral refined until its
    completeness error meets ``tol`` or it has ``max_steps`` steps (``tol``/``max_steps`` are None otherwise).
    """

    method: str
    layer: int
    steps: int | str | None
    quadrature: str | None
    tol: float | None = None
    max_steps: int | None = None

    @property
    def integration(self) -> int | AutoSteps | None:
        """What the method's ``factors`` takes as ``steps``: the fixed count, or the ``AutoSteps`` rule."""
        return AutoSteps(self.tol, self.max_steps) if self.steps == AUTO else self.steps

    @property
    def stored_steps(self) -> int | None:
        """``steps`` as the store's INTEGER columns hold it: the fixed count, or None (``auto``: see ``tol``)."""
        return None if self.steps == AUTO else self.steps

    @property
    def plan_points(self) -> int:
        """Integration points one sentence carries through the engine at once (memory plans)."""
        return PANEL_POINTS if self.steps == AUTO else self.steps or 1


@dataclass(frozen=True)
class EngineOptions:
    """How the engine computes factors; results do not depend on any of it.

    ``batch_size``: at most this many sentences per batch (texts are batched by similar length, so padding
    stays small). ``max_memory``: bytes, or a size such as ``"2GB"`` or ``"512MiB"``, that one batch's working
    memory may take beyond the loaded model; the engine turns it into sentences per batch and sequences per
    forward pass (``core.memory.plan_batch``). ``autodiff``: ``auto`` takes forward or reverse mode per batch,
    whichever is estimated cheaper (``core.memory.cheaper_mode``); ``forward``/``reverse`` force one.
    ``max_rows``: a further cap on sequences per forward pass (None: the plan's). ``progress``: a tqdm bar.
    """

    batch_size: int = 16
    max_memory: int | str = DEFAULT_MAX_MEMORY
    autodiff: str = "auto"
    max_rows: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.autodiff not in AUTODIFF_MODES:
            raise ValueError(f"autodiff must be one of {', '.join(AUTODIFF_MODES)}, got {self.autodiff!r}")
        rows = self.max_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"max_rows must be a positive integer or None, got {rows!r}")
        parse_memory(self.max_memory)

    @property
    def memory_bytes(self) -> int:
        """``max_memory`` in bytes."""
        return parse_memory(self.max_memory)

    @classmethod
    def of(cls, engine: EngineOptions | None, options: dict) -> EngineOptions:
        """``engine`` (default: the defaults) with ``options`` (keyword arguments named like its fields)."""
        return with_options(engine or cls(), options, "engine option")


def with_options(base, options: dict, what: str):
    """The dataclass ``base`` with ``options`` (named like its fields) replaced, validated again; an unknown name
    is a ValueError that lists the known ones (``what`` names them in the message)."""
    known = [f.name for f in fields(base)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return replace(base, **options)



@dataclass
class SentenceFactors:
    """One sentence's factor and what is needed to read it.

    ``factor``: (T, D) float32, one row per token (T = ``len(tokens)``, D = embedding dims);
    ``target``: (D,), what the rows sum to (exactly, or in the limit of many steps); ``scale``: the
    sentence's multiplier of pair products; ``embedding``: (D,), the model's own sentence embedding;
    ``offsets``: (start, end) character spans, (0, 0) for special and prompt tokens; ``word_ids``: the
    pre-tokenizer word of each token (None for special and prompt tokens); ``prompt``: per token, whether it
    belongs to the prompt prepended to the text; ``prompt_text``: that prompt ("" for none); ``route``: the route
    of a Router/Asym model the text went through (None for other models).
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[bool]
    word_ids: list[int | None]
    factor: np.ndarray
    target: np.ndarray
    scale: float
    embedding: np.ndarray
    truncated: bool
    prompt: list[bool] = field(default_factory=list)
    prompt_text: str = ""
    autodiff: str = ""  # the mode its batch ran in (forward or reverse)
    route: str | None = None
    steps: int | None = None  # integration steps its factor took (None: a step-free method)
    capped: bool = False  # steps="auto": its integral stopped at the step cap, short of its tolerance


@dataclass
class Explanation:
    """A token-pair explanation of one pair's similarity.

    ``matrix``: (len(tokens_a), len(tokens_b)) relevances; ``score``: the quantity the matrix decomposes
    (cosine for BiLRP/H x P/embedding on cosine models, the shifted dot product for integrated Jacobians);
    ``model_score``: the model's own similarity; ``residual`` = score - matrix.sum(); ``level``: "token" or
    "word"; ``truncated``: whether either text was cut at the model's maximum length; ``prompt_a``/``prompt_b``:
    per token, whether it belongs to the side's prompt (``prompt_text_a``/``prompt_text_b``, "" for none);
    ``route_a``/``route_b``: the route of a Router/Asym model each side went through (None for other models).
    ``steps``: the setting (a count, or ``"auto"`` with ``tol`` and ``max_steps``); ``steps_a``/``steps_b``:
    the integration steps each side's factor took (None for step-free methods); ``capped``: under ``auto``,
    a side's integral hit ``max_steps`` short of its tolerance, so ``|residual|`` may exceed ``tol``.
    """

    matrix: np.ndarray
    tokens_a: list[str]
    tokens_b: list[str]
    score: float
    model_score: float
    residual: float
    method: str
    layer: int
    steps: int | None
    quadrature: str | None
    truncated: bool
    text_a: str
    text_b: str
    level: str = "token"
    special_a: list[bool] = field(default_factory=list)
    special_b: list[bool] = field(default_factory=list)
    offsets_a: list[tuple[int, int]] = field(default_factory=list)
    offsets_b: list[tuple[int, int]] = field(default_factory=list)
    word_ids_a: list[int | None] = field(default_factory=list)
    word_ids_b: list[int | None] = field(default_factory=list)
    prompt_a: list[bool] = field(default_factory=list)
    prompt_b: list[bool] = field(default_factory=list)
    prompt_text_a: str = ""
    prompt_text_b: str = ""
    route_a: str | None = None
    route_b: str | None = None
    tol: float | None = None
    max_steps: int | None = None
    steps_a: int | None = None
    steps_b: int | None = None
    capped: bool = False

    @property
    def steps_used(self) -> int | None:
        """The most integration steps either side's factor took (None when neither side records them)."""
        known = [s for s in (self.steps_a, self.steps_b) if s is not None]
        return max(known) if known else None

    @property
    def relative_residual(self) -> float:
        """|residual| / |score| (inf when the score is 0 and the residual is not)."""
        if self.score == 0:
            return 0.0 if self.residual == 0 else float("inf")
        return abs(self.residual) / abs(self.score)

    def to_words(self) -> Explanation:
        """The same explanation with subword pieces summed into words (special and prompt tokens stay on their
        own)."""
        if self.level == "word":
            return self
        group_a, words_a, special_a, prompt_a = _word_groups(
            self.text_a, self.tokens_a, self.offsets_a, self.word_ids_a, self.special_a, self.prompt_a)
        group_b, words_b, special_b, prompt_b = _word_groups(
            self.text_b, self.tokens_b, self.offsets_b, self.word_ids_b, self.special_b, self.prompt_b)
        matrix = group_a @ self.matrix @ group_b.T
        return replace(
            self, matrix=matrix, tokens_a=words_a, tokens_b=words_b, level="word", special_a=special_a,
            special_b=special_b, offsets_a=[], offsets_b=[], word_ids_a=[], word_ids_b=[], prompt_a=prompt_a,
            prompt_b=prompt_b,
        )


def _word_groups(text, tokens, offsets, word_ids, special, prompt) -> tuple[np.ndarray, list[str], list[bool], list[bool]]:
    """(words x tokens) 0/1 matrix, word labels, special flags and prompt flags."""
    prompt = list(prompt) or [False] * len(tokens)
    keys: list[tuple] = []
    for t, (wid, sp, pr) in enumerate(zip(word_ids, special, prompt, strict=True)):
        keys.append(("special", t) if sp or pr or wid is None else ("word", wid))
    order = list(dict.fromkeys(keys))
    group = np.zeros((len(order), len(tokens)), dtype=np.float64)
    index = {k: i for i, k in enumerate(order)}
    spans: dict[int, list[int]] = {}
    for t, key in enumerate(keys):
        group[index[key], t] = 1.0
        spans.setdefault(index[key], []).append(t)
    labels, flags, prompts = [], [], []
    for i, key in enumerate(order):
        members = spans[i]
        is_prompt = key[0] == "special" and prompt[members[0]]
        if key[0] == "special":
            labels.append(tokens[members[0]])
        else:
            labels.append(text[offsets[members[0]][0] : offsets[members[-1]][1]])
        flags.append(key[0] == "special" and not is_prompt)
        prompts.append(is_prompt)
    return group, labels, flags, prompts


def resolve_settings(model: SimilarityModel, method: str, layer: int | None, steps: int | str | None,
                     quadrature: str | None, tol: float | None = None, max_steps: int | None = None) -> Settings:
    """Validate the arguments and fill in each method's defaults. ``steps``: a positive integer, or ``"auto"``
    (refined per sentence until the completeness error meets ``tol``, default 1e-3, or ``max_steps``, default
    512, is reached: Gauss-Legendre panels only); ``tol``/``max_steps`` are refused with a fixed count."""
    impl = get_method(method)
    layer = impl.default_layer(model) if layer is None else model.check_layer(layer)
    if steps is not None and steps != AUTO and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be a positive integer or 'auto', got {steps!r}")
    if quadrature is not None and quadrature not in QUADRATURES:
        raise ValueError(f"quadrature must be one of {', '.join(QUADRATURES)}, got {quadrature!r}")
    if not impl.uses_steps:
        return Settings(method=method, layer=layer, steps=None, quadrature=None)
    steps = steps or impl.default_steps
    if steps != AUTO:
        given = [name for name, value in (("tol", tol), ("max_steps", max_steps)) if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to steps='auto' only, not to steps={steps}")
        return Settings(method=method, layer=layer, steps=steps, quadrature=quadrature or DEFAULT_QUADRATURE)
    if quadrature not in (None, DEFAULT_QUADRATURE):
        raise ValueError(f"steps='auto' integrates with adaptive {DEFAULT_QUADRATURE} panels; quadrature "
                         f"{quadrature!r} needs a fixed number of steps")
    auto = AutoSteps(DEFAULT_TOL if tol is None else tol, DEFAULT_MAX_STEPS if max_steps is None else max_steps)
    return Settings(method=method, layer=layer, steps=AUTO, quadrature=DEFAULT_QUADRATURE, tol=float(auto.tol),
                    max_steps=auto.max_steps)


def compute_factors(
    model: SimilarityModel,
    texts: Sequence[str],
    method: str = "bilrp",
    layer: int | None = None,
    steps: int | str | None = None,
    quadrature: str | None = None,
    prompts: str | Sequence[str | None] | None = None,
    engine: EngineOptions | None = None,
    routes: str | Sequence[str | None] | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    **options,
) -> list[SentenceFactors]:
    """Factors of every text, in the order given; repeated (route, prompt, text) inputs are computed once.

    ``steps``/``quadrature``/``tol``/``max_steps``: the integration of step methods (``ij``), see
    :func:`resolve_settings`; under ``steps="auto"`` (ij's default) each factor records the ``steps`` it took
    and whether it was ``capped``; its integral does not depend on the other texts of the call.

    ``prompts``: None (the model's default prompt), one prompt name or text for all texts, or one per text
    ("" = no prompt); see ``SimilarityModel.prompt_texts``. ``routes``: for a Router/Asym model, the task of the
    texts (None: plain ``encode``'s route; ``query``/``document``: ``encode_query``'s/``encode_document``'s; or
    a route name), one for all or one per text; each text's factor is that of its route's function (see
    ``SimilarityModel.routed``). ``engine`` (or its fields as keyword arguments:
    ``batch_size``, ``max_memory``, ``autodiff``, ``max_rows``, ``progress``) says how the factors are computed
    within a memory bound (see :class:`EngineOptions`); results do not depend on it.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError("texts must be a sequence of strings")
    for i, text in enumerate(texts):
        check_text(text, f"texts[{i}]")
    engine = EngineOptions.of(engine, options)
    if not texts:
        resolve_settings(model, method, layer, steps, quadrature, tol, max_steps)  # the arguments are still checked
        return []
    prompt_texts = model.prompt_texts(len(texts), prompts)
    tasks = model.route_tasks(len(texts), routes)
    out: list[SentenceFactors | None] = [None] * len(texts)
    groups = model.route_groups(len(texts), routes)
    settings = route_settings(model, [tasks[rows[0]] for rows in groups.values()], method, layer, steps, quadrature,
                              tol, max_steps)
    for rows in groups.values():
        found = _route_factors(model.routed(tasks[rows[0]]), [(prompt_texts[i], texts[i]) for i in rows], settings, engine)
        for i, factors in zip(rows, found, strict=True):
            out[i] = factors
    return out


def route_settings(model: SimilarityModel, tasks: Sequence[str | None], method: str, layer: int | None,
                   steps: int | str | None, quadrature: str | None, tol: float | None = None,
                   max_steps: int | None = None) -> Settings:
    """The resolved settings of a run whose texts go through the routes of ``tasks``; routes whose settings
    differ (e.g. default layers of encoders of different depths) are an error naming them."""
    found = {model.resolve_route(t): resolve_settings(model.routed(t), method, layer, steps, quadrature, tol, max_steps)
             for t in dict.fromkeys(tasks)}
    if len({(s.layer, s.steps, s.quadrature, s.tol, s.max_steps) for s in found.values()}) > 1:
        raise ValueError(f"the routes' encoders resolve {method}'s settings differently "
                         f"({', '.join(f'{r}: layer {s.layer}' for r, s in found.items())}); give the layer")
    return next(iter(found.values()))


def _route_factors(model: SimilarityModel, keys: list[tuple[str, str]], settings: Settings,
                   engine: EngineOptions) -> list[SentenceFactors]:
    """Factors of the (prompt text, text) ``keys`` through ``model`` (one route), in order."""
    method = settings.method
    impl = get_method(method)
    unique = list(dict.fromkeys(keys))
    inputs = [p + t for p, t in unique]
    lengths = [len(ids) for ids in model.tokenizer(inputs, truncation=True, max_length=model.max_length)["input_ids"]]
    order = sorted(range(len(unique)), key=lambda i: lengths[i])
    plan_for = _planner(model, settings, engine)
    batches: list[list[int]] = []
    for i in order:  # ascending length: a batch grows while its longest text's plan allows one more sentence
        if batches and len(batches[-1]) < min(engine.batch_size, plan_for(lengths[i]).max_sentences):
            batches[-1].append(i)
        else:
            batches.append([i])
    done: dict[tuple[str, str], SentenceFactors] = {}
    for members in tqdm(batches, desc=f"{method} factors", unit="batch", disable=not engine.progress):
        batch = model.tokenize([unique[i][1] for i in members], [unique[i][0] for i in members])
        plan = plan_for(max(lengths[i] for i in members))
        rows = plan.max_rows if engine.max_rows is None else min(plan.max_rows, engine.max_rows)
        out = truncated(model, impl.factors(model, batch, settings.layer, settings.integration, settings.quadrature,
                                            plan.mode, rows))
        embeddings = model.sentence_embeddings(batch) if model.shifted else model.normalized(out.pooled)
        for row, member in enumerate(members):
            real = batch.real(row)
            done[unique[member]] = SentenceFactors(
                text=batch.texts[row], tokens=batch.tokens[row], offsets=batch.offsets[row],
                special=batch.special[row, real].tolist(), word_ids=batch.word_ids[row],
                factor=out.factors[row, real].detach().float().cpu().numpy(),
                target=out.targets[row].detach().float().cpu().numpy(), scale=float(out.scales[row]),
                embedding=embeddings[row].float().cpu().numpy(), truncated=batch.truncated[row],
                prompt=batch.prompt[row, real].tolist(), prompt_text=batch.prompts[row], autodiff=plan.mode,
                route=model.route,
                steps=None if out.steps is None else int(out.steps[row]),
                capped=out.capped is not None and bool(out.capped[row]),
            )
    return [done[key] for key in keys]


def _planner(model: SimilarityModel, settings: Settings, engine: EngineOptions) -> Callable[[int], BatchPlan]:
    """``plan(seq)``: the memory plan (cached per length) of a batch whose longest input has ``seq`` tokens."""
    shape = EncoderShape.of(model.encoder.config, model.hidden_size, next(model.encoder.parameters()).dtype)
    budget, plans = engine.memory_bytes, {}

    def plan(seq: int) -> BatchPlan:
        if seq not in plans:
            plans[seq] = plan_batch(shape, seq, model.num_layers - settings.layer, settings.plan_points,
                                    engine.autodiff, budget)
        return plans[seq]

    return plan


def pair_explanation(model: SimilarityModel, a: SentenceFactors, b: SentenceFactors, settings: Settings) -> Explanation:
    """The explanation of one pair from its two sentences' factors."""
    scale = a.scale * b.scale
    matrix = (a.factor.astype(np.float64) @ b.factor.astype(np.float64).T) * scale
    score = float(a.target.astype(np.float64) @ b.target.astype(np.float64) * scale)
    model_score = float(model.similarity_of(a.embedding[None], b.embedding[None])[0])
    return Explanation(
        matrix=matrix, tokens_a=a.tokens, tokens_b=b.tokens, score=score, model_score=model_score,
        residual=score - float(matrix.sum()), method=settings.method, layer=settings.layer, steps=settings.steps,
        quadrature=settings.quadrature, truncated=a.truncated or b.truncated, text_a=a.text, text_b=b.text,
        special_a=a.special, special_b=b.special, offsets_a=a.offsets, offsets_b=b.offsets,
        word_ids_a=a.word_ids, word_ids_b=b.word_ids, prompt_a=a.prompt, prompt_b=b.prompt,
        prompt_text_a=a.prompt_text, prompt_text_b=b.prompt_text, route_a=a.route, route_b=b.route,
        tol=settings.tol, max_steps=settings.max_steps, steps_a=a.steps, steps_b=b.steps, capped=a.capped or b.capped,
    )


def explain_pairs(
    model: SimilarityModel,
    pairs: Sequence[tuple[str, str]],
    method: str = "bilrp",
    layer: int | None = None,
    steps: int | str | None = None,
    quadrature: str | None = None,
    prompt_a: str | None = None,
    prompt_b: str | None = None,
    engine: EngineOptions | None = None,
    route_a: str | None = None,
    route_b: str | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    **options,
) -> list[Explanation]:
    """Explanations of many pairs; each distinct sentence's factor is computed once and reused.

    ``prompt_a``/``prompt_b``: the prompt (a name of one of the model's prompts, or a text; "" = none) prepended
    to every first/second text, e.g. ``"query"`` and ``"passage"``; default: the model's ``side_prompts``
    (see ``SimilarityModel.with_prompts``), else its default prompt. ``route_a``/``route_b``: for a Router/Asym
    model, the task of every first/second text, e.g. ``"query"`` and ``"document"`` (as ``encode_query`` and
    ``encode_document`` route them; or a route name); default: the model's ``side_routes`` (see
    ``SimilarityModel.with_routes``), else plain ``encode``'s route. ``engine`` or its fields as keyword
    arguments (``batch_size``, ``max_memory``, ``autodiff``, ``max_rows``, ``progress``) and ``steps``/``tol``/
    ``max_steps``: as in :func:`compute_factors`.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise ValueError("pairs must be a sequence of (text_a, text_b) tuples")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pairs[{i}] must be a (text_a, text_b) pair, got {pair!r}")
        check_text(pair[0], f"pairs[{i}][0]")
        check_text(pair[1], f"pairs[{i}][1]")
    engine = EngineOptions.of(engine, options)
    texts = [t for pair in pairs for t in pair]
    prompt_a = model.side_prompts[0] if prompt_a is None else prompt_a
    prompt_b = model.side_prompts[1] if prompt_b is None else prompt_b
    route_a = model.side_routes[0] if route_a is None else route_a
    route_b = model.side_routes[1] if route_b is None else route_b
    settings = route_settings(model, [route_a, route_b], method, layer, steps, quadrature, tol, max_steps)
    side_prompts = [model.pipeline.resolve_prompt(prompt_a), model.pipeline.resolve_prompt(prompt_b)] * len(pairs)
    factors = compute_factors(model, texts, method, settings.layer, settings.steps, settings.quadrature,
                              prompts=side_prompts, engine=engine, routes=[route_a, route_b] * len(pairs),
                              tol=settings.tol, max_steps=settings.max_steps)
    return [pair_explanation(model, factors[2 * i], factors[2 * i + 1], settings) for i in range(len(pairs))]


def explain(
    model: SimilarityModel,
    text_a: str,
    text_b: str,
    method: str = "bilrp",
    layer: int | None = None,
    steps: int | str | None = None,
    quadrature: str | None = None,
    **options,
) -> Explanation:
    """Explain the similarity of ``text_a`` and ``text_b`` with ``method`` (see ``core.METHODS``),
    attributing to the hidden state after ``layer`` (0 = input embeddings; default per method). ``steps``
    (integrated Jacobians): a count, or ``"auto"`` (the default: refined to ``tol``, default 1e-3, within
    ``max_steps``, default 512, both passed as options).

    ``options`` are :func:`explain_pairs`'s: the prompts ``prompt_a``/``prompt_b`` (names or texts; default:
    the model's default prompt; "" = none), the routes ``route_a``/``route_b`` of a Router/Asym model (tasks
    such as ``query``/``document``; default: plain ``encode``'s route), and ``engine`` or its fields: ``max_memory`` (bytes or e.g.
    ``"2GB"``; default 1 GiB) bounds the working memory beyond the loaded model, ``autodiff`` is ``auto`` (the
    cheaper mode), ``forward`` or ``reverse`` (see :class:`EngineOptions`)."""
    check_text(text_a, "text_a")
    check_text(text_b, "text_b")
    return explain_pairs(model, [(text_a, text_b)], method, layer, steps, quadrature, **options)[0]


def cut_to_tokens(model: SimilarityModel, text: str, max_tokens: int, prompt: str | None = None) -> str:
    """The longest prefix of ``text``, ending at a token's end, that the model reads as at most ``max_tokens``
    tokens with ``prompt`` (a name or text; None: the model's default prompt) and special tokens counted; the
    whole text when it fits. A prompt that alone takes ``max_tokens`` is a ValueError."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    check_text(text, "text")

    def count(candidate: str) -> tuple[int, list[int]]:
        batch = model.tokenize([candidate], [prompt])
        ends = [end for start, end in batch.offsets[0] if end > start]  # the text's own tokens
        return len(batch.tokens[0]), ends

    total, ends = count(text)
    if total <= max_tokens:
        return text
    keep = max_tokens - (total - len(ends))  # the special and prompt tokens stay (also past the model's maximum)
    if keep < 1:
        raise ValueError(f"the prompt and special tokens alone take {max_tokens - keep + 1} tokens, more than "
                         f"the {max_tokens} allowed")
    cut = text[: ends[keep - 1]]
    while count(cut)[0] > max_tokens and keep > 1:  # a prefix can tokenise differently: shrink until it fits
        keep -= 1
        cut = text[: ends[keep - 1]]
    return cut


def seed_everything(seed: int) -> None:
    """Seed torch and numpy (tests and benchmarks build random models)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
