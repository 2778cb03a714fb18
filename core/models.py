"""Sentence-similarity models and their encoders, run from any hidden layer (loading a folder: ``core.model_folders``).

A ``SimilarityModel`` wraps a Hugging Face encoder with the module pipeline (pooling, Dense, Normalize),
prompts and similarity function of its sentence-transformers configuration, read from the model folder itself
by ``core.sentence_modules`` so that nothing depends on one sentence-transformers version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.architectures import Architecture, get_architecture
from core.model_files import (
    content_revision,
    model_id_of,
)
from core.routes import Routes
from core.rules import traced
from core.sentence_pipeline import POOLING_MODES, SentencePipeline, plain_pipeline
from core.token_batch import TokenBatch

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Pooling modes a plain Hugging Face model can be given (sentence-transformers' names).
POOLINGS = tuple(POOLING_MODES)
SIMILARITIES = ("cosine", "dot")
#: How weights are computed: ``float32`` (the default: half-precision checkpoints are upcast, so that
#: explanations conserve) or ``native`` (the checkpoint's own dtype, as sentence-transformers runs it).
DTYPES = ("float32", "native")
#: Keyword names under which blocks receive their hidden-state input when it is not passed positionally.
_HIDDEN_KWARGS = ("hidden_states", "hidden_state", "x")


def set_variant(variant: str, key: str, value: object | None) -> str:
    """``variant`` (``key=value`` settings joined by ``;``) with ``key`` set to ``value`` (None: removed).

    The one place where a setting that makes a model's outputs differ from its folder's own (a plain model's
    pooling, prompts, ...) enters its ``model_id``: every such loader option must be set here."""
    kept = [v for v in re.split(r";(?=[a-z_]+=)", variant) if v and not v.startswith(f"{key}=")]
    if value is not None:
        kept.append(f"{key}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}")
    return ";".join(sorted(kept))  # sorted: the order options were set in does not change the id


class _Captured(Exception):
    """Raised by a hook to stop a forward pass once the wanted hidden state is captured."""


@dataclass
class EncoderStates:
    """``hidden``: (B, S, hidden_size) hidden state after one layer; ``pooled``: (B, dim) pooled sentence
    embeddings before any normalisation."""

    hidden: torch.Tensor
    pooled: torch.Tensor


@dataclass(frozen=True, eq=False)
class RouteTable:
    """A ``Router``/``Asym`` model's routes (``core.routes.Routes``) and, per route name, the model that
    route runs (its own encoder, tokenizer and modules; routes that share a Transformer share its encoder)."""

    routes: Routes
    views: dict[str, SimilarityModel]


@dataclass(eq=False)
class SimilarityModel:
    """A sentence encoder with its module pipeline (pooling, Dense, Normalize; ``core.sentence_pipeline``),
    prompts and similarity (``cosine``/``dot``), able to run from the hidden state of any layer (0 = input of the
    first block, i = input of block i, L = the hidden state the model outputs, final norm included)."""

    name: str
    path: Path
    revision: str
    encoder: nn.Module
    tokenizer: object
    architecture: Architecture
    pipeline: SentencePipeline
    max_length: int
    device: torch.device
    shifted: bool = False
    variant: str = ""
    side_prompts: tuple[str | None, str | None] = (None, None)
    router: RouteTable | None = field(default=None, repr=False)
    route: str | None = None
    side_routes: tuple[str | None, str | None] = (None, None)
    truncate_dim: int | None = None
    _prompt_lengths: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def pooling(self) -> str:
        """The pooling mode(s), e.g. ``mean`` or ``lasttoken`` (``cls+mean`` for concatenated modes)."""
        return self.pipeline.pooling.name

    @property
    def normalize(self) -> bool:
        """Whether the model's last module normalises sentence embeddings to unit length."""
        return self.pipeline.normalize

    @property
    def similarity(self) -> str:
        return self.pipeline.similarity

    @property
    def display_name(self) -> str:
        """The name, with the variant (chosen pooling, prompts) when there is one."""
        return f"{self.name} [{self.variant}]" if self.variant else self.name

    def with_prompts(self, prompt_a: str | None = None, prompt_b: str | None = None) -> SimilarityModel:
        """This model (sharing its encoder) with its own prompts for the first and the second text of pairs
        (names or texts, see ``SentencePipeline.resolve_prompt``; None = the default prompt). Prompts other than
        the default make a variant, with its own ``model_id``, so that stores keep its runs apart."""
        texts = (self.pipeline.resolve_prompt(prompt_a), self.pipeline.resolve_prompt(prompt_b))
        default = self.pipeline.default_prompt
        variant = set_variant(self.variant, "prompts", None if texts == (default, default) else list(texts))
        return dataclasses.replace(self, side_prompts=texts, variant=variant)

    # --- routes (Router / Asym models) ---------------------------------------------------------------------

    @property
    def route_names(self) -> list[str]:
        """The routes of a Router/Asym model ([] for others)."""
        return [] if self.router is None else self.router.routes.names

    def resolve_route(self, task: str | None) -> str | None:
        """The route texts of ``task`` go through, as sentence-transformers resolves it (``encode(task=...)``:
        None for plain ``encode``, ``query``/``document`` for ``encode_query``/``encode_document``, or a route
        name); None for a model without routes, which sentence-transformers runs whatever the task."""
        return None if self.router is None else self.router.routes.resolve(task)

    def routed(self, task: str | None) -> SimilarityModel:
        """This model as it encodes texts of ``task`` (see ``resolve_route``): the route's encoder, tokenizer and
        modules, with this model's name, prompts, routes and variant."""
        name = self.resolve_route(task)
        if name == self.route:
            return self
        return dataclasses.replace(self.router.views[name], side_prompts=self.side_prompts,
                                   side_routes=self.side_routes, variant=self.variant, router=self.router)

    def with_routes(self, route_a: str | None = None, route_b: str | None = None) -> SimilarityModel:
        """This model with its own routes (tasks) for the first and the second text of pairs, e.g. ``query`` and
        ``document`` (None = plain ``encode``'s route). Routes other than the default make a variant, with its
        own ``model_id``, so that stores keep their runs apart; a model without routes stays itself."""
        names = (self.resolve_route(route_a), self.resolve_route(route_b))
        try:
            default = self.resolve_route(None)
        except ValueError:  # no default route: every side names its own
            default = None
        variant = set_variant(self.variant, "routes", None if names == (default, default) else list(names))
        return dataclasses.replace(self, side_routes=(route_a, route_b), variant=variant)

    @property
    def dim(self) -> int:
        """The dimension of the sentence embeddings (the hidden size, unless Dense modules change it, cut to
        ``truncate_dim``)."""
        full = self.pipeline.output_dim(self.hidden_size)
        return full if self.truncate_dim is None else min(full, self.truncate_dim)

    def truncate(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., D) cut to its first ``truncate_dim`` dimensions, as sentence-transformers' ``truncate_dim``
        cuts embeddings after the modules run (``x`` itself without one)."""
        return x if self.truncate_dim is None else x[..., : self.truncate_dim]

    @property
    def num_layers(self) -> int:
        return len(self.architecture.blocks(self.encoder))

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def model_id(self) -> str:
        """A short stable id for stores, from what decides the outputs: the content of the model's files
        (``revision``) and its variant; the same files by any name, path or copy have the same id."""
        return model_id_of(self.revision, self.variant)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer must be an integer from 0 (input embeddings) to {self.num_layers}, got {layer!r}")
        return layer

    def prompt_texts(self, count: int, prompts: str | Sequence[str | None] | None) -> list[str]:
        """The prompt text of each of ``count`` texts: ``prompts`` is None (the model's default prompt), one prompt
        name or text for all, or one per text (see ``SentencePipeline.resolve_prompt``; "" = no prompt)."""
        if prompts is None or isinstance(prompts, str):
            return [self.pipeline.resolve_prompt(prompts)] * count
        prompts = list(prompts)
        if len(prompts) != count:
            raise ValueError(f"got {len(prompts)} prompts for {count} texts")
        return [self.pipeline.resolve_prompt(p) for p in prompts]

    def prompt_length(self, prompt: str) -> int:
        """How many leading tokens sentence-transformers counts as ``prompt``: the prompt tokenised alone, less a
        trailing special token (so a leading [CLS] counts, a trailing [SEP] does not); 0 for no prompt."""
        if not prompt:
            return 0
        if prompt not in self._prompt_lengths:
            ids = self.tokenizer([prompt], verbose=False)["input_ids"][0]
            trailing = bool(ids) and ids[-1] in set(self.tokenizer.all_special_ids)
            self._prompt_lengths[prompt] = len(ids) - int(trailing)
        return self._prompt_lengths[prompt]

    def _encode(self, texts: Sequence[str], prompts: str | Sequence[str | None] | None, details: bool):
        """(encoding, prompt texts, prompt lengths (B,), truncated flags) of the prompted texts."""
        prompt_texts = self.prompt_texts(len(texts), prompts)
        enc = self.tokenizer(
            [p + t for p, t in zip(prompt_texts, texts, strict=True)], padding=True, truncation=True,
            max_length=self.max_length, return_tensors="pt", return_offsets_mapping=details,
            return_special_tokens_mask=details, verbose=False,
        )
        truncated = [bool(e.overflowing) for e in enc.encodings]
        for text, cut in zip(texts, truncated, strict=True):
            if cut:
                warnings.warn(
                    f"text longer than {self.name}'s maximum of {self.max_length} tokens was truncated: "
                    f"{text[:60]!r}...",
                    stacklevel=4,
                )
        lengths = torch.tensor([self.prompt_length(p) for p in prompt_texts], dtype=torch.long)
        return enc, prompt_texts, lengths, truncated

    def tokenize(self, texts: Sequence[str], prompts: str | Sequence[str | None] | None = None) -> TokenBatch:
        """Tokenise ``texts``, each with its prompt prepended as sentence-transformers does (``prompts``: see
        ``prompt_texts``; default: the model's default prompt), truncating with a warning at the model's maximum
        length. Tokens, offsets and word ids are those of the real tokens, whatever the padding side."""
        enc, prompt_texts, prompt_length, truncated = self._encode(texts, prompts, details=True)
        mask = enc["attention_mask"]
        first = mask.argmax(dim=1)
        lengths = mask.sum(1).tolist()
        positions = torch.arange(mask.shape[1]).unsqueeze(0)
        special = enc["special_tokens_mask"].bool() & mask.bool()
        in_prompt = (positions >= first.unsqueeze(1)) & (positions < (first + prompt_length).unsqueeze(1))
        prompt = in_prompt & mask.bool() & ~special
        tokens, offsets, word_ids = [], [], []
        for row, (start, n) in enumerate(zip(first.tolist(), lengths, strict=True)):
            span = range(start, start + n)
            tokens.append(self.tokenizer.convert_ids_to_tokens(enc["input_ids"][row, start : start + n].tolist()))
            shift = len(prompt_texts[row])
            row_offsets, row_words = [], []
            words = enc.word_ids(row)
            for t in span:
                s, e = enc["offset_mapping"][row, t].tolist()
                hidden = bool(special[row, t] or prompt[row, t])
                row_offsets.append((0, 0) if hidden else (max(0, s - shift), max(0, e - shift)))
                row_words.append(None if hidden else words[t])
            offsets.append(row_offsets)
            word_ids.append(row_words)
        return TokenBatch(
            texts=list(texts), tokens=tokens, input_ids=enc["input_ids"].to(self.device),
            attention_mask=mask.to(self.device), special=special.to(self.device), offsets=offsets,
            word_ids=word_ids, truncated=truncated, prompts=prompt_texts, prompt=prompt.to(self.device),
            prompt_length=prompt_length.to(self.device), first=first.to(self.device),
        )

    def reference_batch(self, batch: TokenBatch) -> TokenBatch:
        """The integrated-Jacobians reference: every real non-special token replaced by the padding token."""
        ids = batch.input_ids.clone()
        ids[batch.attention_mask.bool() & ~batch.special] = self.tokenizer.pad_token_id
        return TokenBatch(**{**batch.__dict__, "input_ids": ids})

    def _block(self, layer: int) -> nn.Module:
        return self.architecture.blocks(self.encoder)[layer]

    def _block_hidden_hook(self, layer: int, hook: Callable[[torch.Tensor], torch.Tensor | None]) -> object:
        """A forward pre-hook on block ``layer`` that passes its hidden-state input to ``hook`` and replaces it
        with what ``hook`` returns (unless None); returns the handle."""

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            if args:
                new = hook(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next((k for k in _HIDDEN_KWARGS if k in kwargs), None)
            if key is None:
                raise ValueError(f"{self.architecture.name}: cannot find the hidden state among the arguments of "
                                 f"{type(module).__name__} ({', '.join(kwargs)})")
            new = hook(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return self._block(layer).register_forward_pre_hook(pre_hook, with_kwargs=True)

    @contextmanager
    def _substituted(self, layer: int, hidden: torch.Tensor) -> Iterator[None]:
        """Within the block, hidden state ``layer`` (< num_layers: the input of that block) is ``hidden``."""
        handle = self._block_hidden_hook(layer, lambda _old: hidden)
        try:
            yield
        finally:
            handle.remove()

    def last_hidden_state(self, batch: TokenBatch) -> torch.Tensor:
        """The hidden state the model outputs (final norm included); absolute positions are counted over each
        row's real tokens (``Architecture.run_arguments``), so a row does not depend on its padding."""
        return self.encoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            **self.architecture.run_arguments(batch.attention_mask),
        ).last_hidden_state

    def _states(self, batch: TokenBatch, layer: int, stop: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden state ``layer``, last hidden state or None when ``stop``) of one gradient-free pass."""
        self.check_layer(layer)
        with torch.no_grad():
            if layer == self.num_layers:
                last = self.last_hidden_state(batch)
                return last, last
            captured: list[torch.Tensor] = []

            def keep(hidden: torch.Tensor) -> None:
                captured.append(hidden)
                if stop:
                    raise _Captured

            handle = self._block_hidden_hook(layer, keep)
            last = None
            try:
                last = self.last_hidden_state(batch)
            except _Captured:
                pass
            finally:
                handle.remove()
        return captured[0], last

    def encode_states(self, batch: TokenBatch, layer: int) -> EncoderStates:
        """One forward pass: hidden state ``layer`` and the pooled sentence embedding."""
        hidden, last = self._states(batch, layer, stop=False)
        return EncoderStates(hidden=hidden, pooled=self.pool(last, batch))

    def hidden_states(self, batch: TokenBatch, layer: int) -> torch.Tensor:
        """Hidden state ``layer`` (0 = input of the first block, num_layers = the model's output, final norm
        included), shape (B, S, hidden_size); the blocks from ``layer`` on are not run."""
        return self._states(batch, layer, stop=True)[0]

    def unit(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings (..., D) at unit length if the model normalises (``F.normalize``, as the Normalize
        module: a zero vector stays zero), else themselves; not truncated."""
        return torch.nn.functional.normalize(pooled, p=2, dim=-1) if self.normalize else pooled

    def normalized(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings as the model outputs them: unit length if the model normalises, then cut to
        ``truncate_dim`` (sentence-transformers truncates after the modules, the Normalize included)."""
        return self.truncate(self.unit(pooled))

    def pool(self, last_hidden: torch.Tensor, batch: TokenBatch | torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, dim) from token embeddings (B, S, hidden): the model's pooling and the modules
        after it (``core.sentence_pipeline``), without a final Normalize (see ``normalized``). ``batch`` is the
        TokenBatch (its prompt lengths matter to pooling that excludes the prompt), or just an attention mask."""
        if isinstance(batch, torch.Tensor):
            batch = TokenBatch(texts=[""] * batch.shape[0], tokens=[], input_ids=batch, attention_mask=batch,
                               special=batch.bool(), offsets=[], word_ids=[], truncated=[])
        return self.pipeline.apply(last_hidden, batch.pooling_context())

    def head(self, batch: TokenBatch, layer: int, normalize: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function from hidden state ``layer`` (B, S, hidden) to the sentence embedding (B, D) before any
        truncation (D: the full embedding; ``methods.base.truncated`` cuts factors to ``truncate_dim``), normalised
        to unit length when ``normalize`` and the model normalises; under ``core.rules.lrp_rules`` every operation
        on its input is checked against the rules."""

        def head(hidden: torch.Tensor) -> torch.Tensor:
            if layer == self.num_layers:
                last = hidden
            else:  # SDPA's math backend is the one that forward-mode autodiff can differentiate
                with self._substituted(layer, hidden), sdpa_kernel(SDPBackend.MATH):
                    last = self.last_hidden_state(batch)
            pooled = self.pool(last, batch)
            return self.unit(pooled) if normalize else pooled

        return traced(head)

    def sentence_embeddings(self, batch: TokenBatch) -> torch.Tensor:
        """The model's own sentence embeddings (B, dim) of a batch, normalised if the model normalises, and for
        shifted (exact-attribution) models minus the embedding of the padding reference (Möller et al. §2.2)."""
        embeddings = self.normalized(self.encode_states(batch, self.num_layers).pooled)
        if self.shifted:
            embeddings = embeddings - self.normalized(self.encode_states(self.reference_batch(batch), self.num_layers).pooled)
        return embeddings

    def embed(self, texts: Sequence[str], batch_size: int = 64, prompts: str | Sequence[str | None] | None = None,
              routes: str | Sequence[str | None] | None = None) -> np.ndarray:
        """The model's own sentence embeddings (N, dim), as ``SentenceTransformer.encode`` returns them (with the
        same prompts, see ``prompt_texts``, and tasks: ``routes`` is None (plain ``encode``), one task for all, e.g.
        ``query`` as ``encode_query`` routes it, or one per text; see ``route_tasks``)."""
        return self.embed_with_flags(texts, batch_size, prompts, routes)[0]

    def route_tasks(self, count: int, routes: str | Sequence[str | None] | None) -> list[str | None]:
        """The task of each of ``count`` texts: ``routes`` is None (plain ``encode``'s), one task for all, or one
        per text."""
        if routes is None or isinstance(routes, str):
            return [routes] * count
        routes = list(routes)
        if len(routes) != count:
            raise ValueError(f"got {len(routes)} routes for {count} texts")
        return routes

    def route_groups(self, count: int, routes: str | Sequence[str | None] | None) -> dict[str | None, list[int]]:
        """The indices of ``count`` texts by the route each goes through (one group, None, without routes)."""
        groups: dict[str | None, list[int]] = {}
        for i, task in enumerate(self.route_tasks(count, routes)):
            groups.setdefault(self.resolve_route(task), []).append(i)
        return groups

    def embed_with_flags(self, texts: Sequence[str], batch_size: int = 64,
                         prompts: str | Sequence[str | None] | None = None,
                         routes: str | Sequence[str | None] | None = None) -> tuple[np.ndarray, list[bool]]:
        """``embed`` and, per text, whether it was truncated.

        The scoring path: texts are batched longest first, as sentence-transformers does, so that little
        padding is computed; each text is tokenised once, without offsets; the encoder runs with no hooks, under
        ``torch.inference_mode`` and with its fastest exact attention (``scoring_attention``).
        """
        texts = list(texts)
        prompt_texts = self.prompt_texts(len(texts), prompts)
        if self.router is not None:
            return self._embed_routed(texts, batch_size, prompt_texts, routes)
        return self._embed_route(texts, batch_size, prompt_texts)

    def _embed_route(self, texts: list[str], batch_size: int, prompt_texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """``embed_with_flags`` through this model's own encoder and modules (one route)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        truncated = [False] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(prompt_texts[i]) - len(texts[i]))
        with torch.inference_mode(), self.scoring_attention():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self._scoring_batch([texts[i] for i in rows], [prompt_texts[i] for i in rows])
                if self.shifted:
                    embeddings = self.sentence_embeddings(self.tokenize(batch.texts, batch.prompts))
                else:
                    embeddings = self.normalized(self.pool(self.last_hidden_state(batch), batch))
                out[rows] = embeddings.float().cpu().numpy()
                for i, cut in zip(rows, batch.truncated, strict=True):
                    truncated[i] = cut
        return out, truncated

    def _embed_routed(self, texts: list[str], batch_size: int, prompt_texts: list[str],
                      routes: str | Sequence[str | None] | None) -> tuple[np.ndarray, list[bool]]:
        """``embed_with_flags`` of a Router model: each route's texts through that route."""
        groups = self.route_groups(len(texts), routes)
        tasks = self.route_tasks(len(texts), routes)
        parts = {name: self.routed(tasks[rows[0]])._embed_route(
            [texts[i] for i in rows], batch_size, [prompt_texts[i] for i in rows]) for name, rows in groups.items()}
        dims = {name: emb.shape[1] for name, (emb, _) in parts.items()}
        if len(set(dims.values())) > 1:
            raise ValueError(f"model {self.name}: its routes give embeddings of different sizes ({dims})")
        out = np.zeros((len(texts), next(iter(dims.values()))), np.float32)
        truncated = [False] * len(texts)
        for name, rows in groups.items():
            out[rows] = parts[name][0]
            for i, cut in zip(rows, parts[name][1], strict=True):
                truncated[i] = cut
        return out, truncated

    def _scoring_batch(self, texts: list[str], prompts: list[str]) -> TokenBatch:
        """A TokenBatch for scoring only: ids, masks and prompt lengths; tokens, offsets and word ids empty."""
        enc, prompt_texts, prompt_length, truncated = self._encode(texts, prompts, details=False)
        mask = enc["attention_mask"]
        return TokenBatch(
            texts=texts, tokens=[[] for _ in texts], input_ids=enc["input_ids"].to(self.device),
            attention_mask=mask.to(self.device), special=torch.zeros_like(mask, dtype=torch.bool, device=self.device),
            offsets=[[] for _ in texts], word_ids=[[] for _ in texts], truncated=truncated, prompts=prompt_texts,
            prompt_length=prompt_length.to(self.device),
        )

    @contextmanager
    def scoring_attention(self) -> Iterator[None]:
        """Within the block the encoder uses PyTorch's scaled-dot-product attention when it supports it (the
        same values as eager attention, computed faster), as sentence-transformers loads it; attribution runs
        keep the implementation the model was set up with."""
        config = self.encoder.config
        previous = config._attn_implementation
        if getattr(self.encoder, "_supports_sdpa", False):
            config._attn_implementation = "sdpa"
        try:
            yield
        finally:
            config._attn_implementation = previous

    def similarity_of(self, emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
        """Row-wise similarity of two (N, dim) embedding arrays with the model's similarity function."""
        dots = np.einsum("nd,nd->n", emb_a.astype(np.float64), emb_b.astype(np.float64))
        if self.similarity == "cosine":
            dots = dots / (np.linalg.norm(emb_a, axis=1) * np.linalg.norm(emb_b, axis=1))
        return dots


def model_max_length(folder: Path, st_max: int | None, config: object, tokenizer: object,
                arch: Architecture | None = None) -> int:
    limits = [st_max] if st_max else []
    arch = arch or get_architecture(config.model_type)
    positions = arch.max_positions(config)
    if positions:  # e.g. RoBERTa-style models reserve padding_idx + 1 positions
        limits.append(positions - arch.position_offset(config))
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 1_000_000:
        limits.append(tok_max)
    if not limits:
        raise ValueError(f"model {folder}: cannot tell its maximum sequence length")
    return int(min(limits))


def from_parts(
    name: str, folder: Path, encoder: nn.Module, tokenizer: object, pooling: str = "mean",
    normalize: bool = False, similarity: str = "cosine", max_length: int | None = None, device: str | None = None,
    shifted: bool = False, pipeline: SentencePipeline | None = None, variant: str = "",
    architecture: Architecture | None = None, revision: str | None = None, truncate_dim: int | None = None,
) -> SimilarityModel:
    """A SimilarityModel around an encoder and tokenizer already in memory (tests build tiny random ones).

    ``pipeline`` (the modules after the encoder) defaults to ``pooling``, optional normalisation and
    ``similarity``; ``variant`` names a setting that makes these embeddings differ from the folder's own (a
    plain Hugging Face model's chosen pooling), so that stores keep them apart. ``architecture``: the encoder's
    (default: the registry's entry for its ``model_type``); ``revision``: the content hash of ``folder``
    (default: computed here; that of the encoder's parameters when there is no folder);
    ``truncate_dim`` cuts embeddings (None: the pipeline's own ``truncate_dim``) and enters the variant.
    """
    arch = architecture or get_architecture(encoder.config.model_type)
    if pipeline is None:
        pipeline = plain_pipeline(pooling)
        pipeline.normalize, pipeline.similarity = normalize, similarity
    if pipeline.similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {pipeline.similarity!r}")
    if shifted and pipeline.similarity != "dot":
        raise ValueError(f"model {name}: shifted embeddings are compared by dot product, not {pipeline.similarity}")
    if getattr(tokenizer, "pad_token_id", None) is None or not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model {name}: SimLens needs a fast tokenizer with a padding token")
    arch.check(encoder)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    full = pipeline.output_dim(int(encoder.config.hidden_size))
    truncate_dim = check_truncate_dim(pipeline.truncate_dim if truncate_dim is None else truncate_dim)
    if truncate_dim is not None and truncate_dim >= full:
        truncate_dim = None  # cutting at or past the full dimension keeps every dimension, as sentence-transformers
    if truncate_dim is not None:
        variant = set_variant(variant, "truncate_dim", truncate_dim)
    encoder = encoder.to(dev).eval()
    for param in encoder.parameters():
        param.requires_grad_(False)
    return SimilarityModel(
        name=name, path=folder, encoder=encoder,
        revision=revision or (content_revision(folder) if folder.exists() else
                              _in_memory_revision(encoder, tokenizer, pipeline)),
        tokenizer=tokenizer, architecture=arch, pipeline=pipeline,
        max_length=max_length or model_max_length(folder, pipeline.max_seq_length, encoder.config, tokenizer, arch), device=dev,
        shifted=shifted, variant=variant, truncate_dim=truncate_dim,
    )


def _in_memory_revision(encoder: nn.Module, tokenizer: object, pipeline: SentencePipeline) -> str:
    """The content hash of a model that has no folder: its encoder's config and parameters, its tokenizer and
    its pipeline (modules with their parameters, prompts, similarity)."""
    digest = hashlib.sha256(encoder.config.to_json_string(use_diff=False).encode())
    digest.update(tokenizer.backend_tokenizer.to_str().encode())
    digest.update(repr((pipeline.modules, pipeline.normalize, pipeline.similarity, pipeline.prompts,
                        pipeline.default_prompt_name, pipeline.max_seq_length)).encode())
    parts = [encoder] + [p for m in pipeline.modules for p in vars(m).values() if isinstance(p, nn.Module)]
    for part in parts:
        for key, tensor in sorted(part.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "mem-" + digest.hexdigest()[:12]


def check_truncate_dim(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"truncate_dim must be a positive integer or None, got {value!r}")
    return value
