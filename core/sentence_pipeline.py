"""sentence-transformers' module pipeline, read from a model folder and applied to token embeddings in torch.

A sentence-transformers folder lists its modules in ``modules.json``: a ``Transformer`` first, then a
``Pooling`` and any number of ``Dense`` and ``Normalize`` modules, each reading and writing one entry of a
features dict (``token_embeddings``, ``sentence_embedding``). ``read_pipeline`` reads them (and the prompts and
similarity of ``config_sentence_transformers.json``) without importing sentence-transformers, so that nothing
depends on its version; ``SentencePipeline.apply`` runs them differentiably, so that every attribution method
sees exactly the function the model computes.

LRP semantics of the modules (the attribution head runs through them):
  - every pooling mode is linear in the token embeddings once its token choice is fixed: ``max`` picks each
    dimension's winning token on detached values and gathers it (winner-take-all), ``cls``/``lasttoken`` gather
    one token, the means are weighted sums, so gradient x input is the LRP rule for all of them;
  - a ``Dense`` activation goes through ``core.rules``' gate rule y = f(0) + z * [(f(z) - f(0)) / z].detach(),
    and a ``Normalize`` that is not the last module through its detached-denominator norm rule;
  - a ``Normalize`` that is the last module is not part of the head: it is the model's ``normalize`` flag, and
    methods account for it with their cosine scale.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

TOKENS, SENTENCE = "token_embeddings", "sentence_embedding"
#: Similarity functions, by the name ``config_sentence_transformers.json`` uses for them.
SIMILARITY_NAMES = {"cosine": "cosine", "dot": "dot", "dot_product": "dot"}


def _weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return mask.unsqueeze(-1).to(dtype)


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, S, H) at token ``index`` (B,) -> (B, H); linear in x."""
    return x.gather(1, index.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)


def _pool_cls(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    # the first pooled token (after left padding, and after the prompt when it is excluded), as ST does
    return _gather_tokens(x, mask.to(torch.int).argmax(dim=1))


def _pool_max(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    # winner-take-all: the argmax is chosen on values, then gathered, so relevance flows to the winner only
    masked = x.detach().masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
    return x.gather(1, masked.argmax(dim=1, keepdim=True)).squeeze(1)


def _pool_mean(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    w = _weights(mask, x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp(min=1e-9)


def _pool_mean_sqrt_len(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    w = _weights(mask, x.dtype)
    return (x * w).sum(1) / torch.sqrt(w.sum(1).clamp(min=1e-9))


def _pool_weightedmean(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    # position weights 1, 2, ... counted from the first real token (left padding does not shift them)
    positions = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
    w = _weights(mask, x.dtype) * (positions - first.view(-1, 1, 1).to(x.dtype))
    return (x * w).sum(1) / w.sum(1).clamp(min=1e-9)


def _pool_lasttoken(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    seq = x.shape[1]
    values, from_end = mask.to(torch.int).flip(1).max(1)
    last = seq - 1 - torch.where(values == 0, seq - 1, from_end)
    return _gather_tokens(x * _weights(mask, x.dtype), last)


#: Pooling modes by sentence-transformers' names: (token embeddings (B, S, H), pooling mask (B, S), index of
#: each row's first real token (B,)) -> (B, H).
POOLING_MODES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cls": _pool_cls,
    "max": _pool_max,
    "mean": _pool_mean,
    "mean_sqrt_len_tokens": _pool_mean_sqrt_len,
    "weightedmean": _pool_weightedmean,
    "lasttoken": _pool_lasttoken,
}
#: Other spellings people use for a mode (the legacy config keys' stems).
POOLING_ALIASES = {"mean_sqrt_len": "mean_sqrt_len_tokens", "cls_token": "cls", "mean_tokens": "mean",
                   "max_tokens": "max", "weightedmean_tokens": "weightedmean"}
LEGACY_POOLING_KEYS = {  # in the order sentence-transformers concatenates them
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}


def pooling_mode(name: str) -> str:
    """The canonical name of a pooling mode (``mean_sqrt_len`` -> ``mean_sqrt_len_tokens``); a miss lists them."""
    canonical = POOLING_ALIASES.get(name, name)
    if canonical not in POOLING_MODES:
        raise ValueError(f"unknown pooling {name!r}: choose one of {', '.join(POOLING_MODES)}")
    return canonical


@dataclass(frozen=True)
class Pooling:
    """A ``Pooling`` module: ``modes`` concatenated in order; ``include_prompt`` False excludes the prompt tokens."""

    modes: tuple[str, ...]
    include_prompt: bool = True
    source: str = TOKENS
    target: str = SENTENCE

    @property
    def name(self) -> str:
        return "+".join(self.modes)

    def apply(self, features: dict[str, torch.Tensor], context: PoolingContext) -> None:
        x = features[self.source]
        mask = context.attention_mask
        if not self.include_prompt:
            positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
            mask = mask * (positions >= (context.first + context.prompt_length).unsqueeze(1)).to(mask.dtype)
        features[self.target] = torch.cat([POOLING_MODES[m](x, mask, context.first) for m in self.modes], dim=-1)


@dataclass(eq=False)
class Dense:
    """A ``Dense`` module: act(x W^T + b) (+ x, or x R^T, with ``residual``); weights stay float64-ready (they are
    cast to the input's dtype and device on use)."""

    linear: nn.Linear
    activation: nn.Module
    residual: nn.Linear | bool = False
    source: str = SENTENCE
    target: str = SENTENCE

    @property
    def name(self) -> str:
        act = type(self.activation).__name__
        return f"Dense({self.linear.in_features}->{self.linear.out_features}, {act})"

    def apply(self, features: dict[str, torch.Tensor], context: PoolingContext) -> None:
        x = features[self.source]
        # cast by dtype and device, not .to(x): the weights must not look like functions of the input
        weight = self.linear.weight.to(dtype=x.dtype, device=x.device)
        bias = None if self.linear.bias is None else self.linear.bias.to(dtype=x.dtype, device=x.device)
        out = self.activation(torch.nn.functional.linear(x, weight, bias))
        if self.residual is True:
            out = out + x
        elif isinstance(self.residual, nn.Linear):
            out = out + torch.nn.functional.linear(x, self.residual.weight.to(dtype=x.dtype, device=x.device))
        features[self.target] = out


@dataclass(frozen=True)
class Normalize:
    """A ``Normalize`` module: unit L2 length (``F.normalize``: a detached denominator under the LRP rules)."""

    source: str = SENTENCE
    target: str = SENTENCE
    name: str = "Normalize"

    def apply(self, features: dict[str, torch.Tensor], context: PoolingContext) -> None:
        x = features[self.source]
        if x is None:
            return
        features[self.target] = torch.nn.functional.normalize(x, p=2, dim=-1)


@dataclass
class PoolingContext:
    """What pooling needs besides the token embeddings: ``attention_mask`` (B, S); ``first`` (B,), the index of
    each row's first real token (its left padding); ``prompt_length`` (B,), the leading tokens sentence-transformers
    counts as the prompt (0 without one)."""

    attention_mask: torch.Tensor
    first: torch.Tensor
    prompt_length: torch.Tensor


@dataclass
class SentencePipeline:
    """The modules after the Transformer and the settings around them.

    ``modules``: Pooling, Dense and Normalize in order, without a final Normalize, which is ``normalize``;
    ``prompts``: name -> prompt text; ``default_prompt_name``: the prompt applied when the caller names none;
    ``similarity``: ``cosine`` or ``dot``; ``max_seq_length``: the folder's truncation length (None: the model's);
    ``truncate_dim``: the folder's Matryoshka dimension (None: the full embedding); ``do_lower_case``: the text is
    lower-cased before tokenising.
    """

    modules: list[Pooling | Dense | Normalize]
    normalize: bool = False
    similarity: str = "cosine"
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_seq_length: int | None = None
    transformer_path: str = ""
    truncate_dim: int | None = None
    do_lower_case: bool = False

    @property
    def pooling(self) -> Pooling:
        return next(m for m in self.modules if isinstance(m, Pooling))

    @property
    def description(self) -> str:
        """The modules in order, e.g. ``Pooling(mean) > Dense(768->512, Tanh) > Normalize``."""
        parts = [f"Pooling({m.name})" if isinstance(m, Pooling) else m.name for m in self.modules]
        return " > ".join(parts + (["Normalize"] if self.normalize else []))

    @property
    def default_prompt(self) -> str:
        """The default prompt's text ("" when the model has none)."""
        return self.prompts.get(self.default_prompt_name, "") if self.default_prompt_name else ""

    def resolve_prompt(self, prompt: str | None) -> str:
        """The prompt text for ``prompt``: None -> the model's default prompt; the name of one of the model's
        prompts -> its text; any other string -> that text itself ("" = no prompt, also overriding a default)."""
        if prompt is None:
            return self.default_prompt
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a prompt name or text, got {type(prompt).__name__}")
        if prompt not in self.prompts and re.fullmatch(r"[A-Za-z_][\w-]*", prompt):
            warnings.warn(f"prompt {prompt!r} is not one of the model's prompts ({', '.join(self.prompts) or 'none'});"
                          f" it is used as the prompt text itself", stacklevel=3)
        return self.prompts.get(prompt, prompt)

    def apply(self, token_embeddings: torch.Tensor, context: PoolingContext) -> torch.Tensor:
        """Sentence embeddings (B, dim) before the final normalisation, from token embeddings (B, S, H)."""
        features: dict[str, torch.Tensor] = {TOKENS: token_embeddings}
        for module in self.modules:
            module.apply(features, context)
        return features[SENTENCE]

    def output_dim(self, hidden_size: int) -> int:
        """The sentence embedding's dimension for a Transformer of ``hidden_size``."""
        dims = {TOKENS: hidden_size}
        for module in self.modules:
            if isinstance(module, Pooling):
                dims[module.target] = len(module.modes) * dims[module.source]
            elif isinstance(module, Dense):
                dims[module.target] = module.linear.out_features
            else:
                dims[module.target] = dims[module.source]
        return dims[SENTENCE]


def plain_pipeline(pooling: str = "mean") -> SentencePipeline:
    """What sentence-transformers builds around a plain Hugging Face model: one pooling, cosine similarity."""
    return SentencePipeline(modules=[Pooling((pooling_mode(pooling),))])
