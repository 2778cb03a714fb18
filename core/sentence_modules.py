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

import ast
import importlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.model_files import read_json

TOKENS, SENTENCE = "token_embeddings", "sentence_embedding"
#: Similarity functions, by the name ``config_sentence_transformers.json`` uses for them.
SIMILARITY_NAMES = {"cosine": "cosine", "dot": "dot", "dot_product": "dot"}
_TRANSFORMER = "Transformer"


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
_LEGACY_POOLING_KEYS = {  # in the order sentence-transformers concatenates them
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
    ``similarity``: ``cosine`` or ``dot``; ``max_seq_length``: the folder's truncation length (None: the model's).
    """

    modules: list[Pooling | Dense | Normalize]
    normalize: bool = False
    similarity: str = "cosine"
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_seq_length: int | None = None
    transformer_path: str = ""

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


def _pooling(config: dict) -> Pooling:
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    modes = tuple(pooling_mode(m) for m in ([mode] if isinstance(mode, str) else mode))
    return Pooling(modes=modes, include_prompt=bool(config.get("include_prompt", True)))


def _activation(path: str | None, folder: Path) -> nn.Module:
    """The activation as sentence-transformers loads it: a ``torch.`` nn.Module class by its import path; an
    untrusted path falls back to its default, Tanh (with a warning, as sentence-transformers does)."""
    if path is None:
        return nn.Tanh()
    if not path.startswith("torch."):
        warnings.warn(f"model {folder}: Dense activation {path!r} is not a torch module; sentence-transformers "
                      "falls back to Tanh for it (without trust_remote_code), and so does SimLens", stacklevel=4)
        return nn.Tanh()
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ValueError(f"model {folder}: Dense activation {path!r} does not exist in this torch") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"model {folder}: Dense activation {path!r} must be a torch.nn.Module class")
    return cls()


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ValueError(f"Dense module {folder} has no weights (model.safetensors or pytorch_model.bin)")


def _dense(folder: Path, config: dict) -> Dense:
    if "in_features" not in config or "out_features" not in config:
        raise ValueError(f"Dense module {folder} has no config.json with in_features and out_features")
    linear = nn.Linear(int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True)))
    state = _load_state(folder)
    residual: nn.Linear | bool = bool(config.get("use_residual", False))
    if residual and linear.in_features != linear.out_features:
        residual = nn.Linear(linear.in_features, linear.out_features, bias=False)
        residual.weight.data.copy_(state.pop("residual.weight"))
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")})
    for param in linear.parameters():
        param.requires_grad_(False)
    source = config.get("module_input_name", SENTENCE)
    return Dense(linear=linear, activation=_activation(config.get("activation_function"), folder),
                 residual=residual, source=source, target=config.get("module_output_name") or source)


def read_pipeline(folder: Path, modules: list[dict] | None = None) -> SentencePipeline | None:
    """The pipeline of a sentence-transformers folder, or None for a plain Hugging Face model (no modules.json).
    ``modules``: the module list to read instead of ``modules.json``'s (one route of a Router, see ``read_routes``;
    paths relative to ``folder``).

    Any module other than Transformer (first), Pooling, Dense and Normalize is an error naming it.
    """
    modules = read_json(folder / "modules.json") if modules is None else modules
    if modules is None:
        return None
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != _TRANSFORMER:
        raise ValueError(f"model {folder}: its first module must be a Transformer, found {', '.join(kinds) or 'none'}")
    unsupported = [f"{m.get('type')} ({m.get('path') or m.get('name')})" for m, kind in zip(modules, kinds, strict=True)
                   if kind not in ("Pooling", "Dense", "Normalize") and m is not modules[0]]
    if unsupported:
        raise ValueError(f"model {folder}: module {', '.join(unsupported)} is not supported; SimLens explains "
                         f"models made of a Transformer followed by Pooling, Dense and Normalize modules")
    pipeline: list[Pooling | Dense | Normalize] = []
    for spec, kind in zip(modules[1:], kinds[1:], strict=True):
        path = folder / spec.get("path", "")
        config = read_json(path / "config.json") or {} if spec.get("path") else {}
        if kind == "Pooling":
            pipeline.append(_pooling(config))
        elif kind == "Dense":
            pipeline.append(_dense(path, config))
        else:
            source = config.get("module_input_name", SENTENCE)
            pipeline.append(Normalize(source=source, target=config.get("module_output_name") or source))
    if not any(isinstance(m, Pooling) for m in pipeline):
        pipeline.insert(0, Pooling(("mean",)))  # sentence-transformers adds mean pooling to a bare Transformer
    normalize = bool(pipeline) and isinstance(pipeline[-1], Normalize) and pipeline[-1].target == SENTENCE
    if normalize:
        pipeline.pop()
    st_config = read_json(folder / "config_sentence_transformers.json") or {}
    similarity = st_config.get("similarity_fn_name") or "cosine"
    if similarity not in SIMILARITY_NAMES:
        raise ValueError(f"model {folder}: similarity {similarity!r} is not supported; supported: "
                         f"{', '.join(sorted(SIMILARITY_NAMES))}")
    prompts = {str(k): str(v or "") for k, v in (st_config.get("prompts") or {}).items()}
    default = st_config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"model {folder}: default_prompt_name {default!r} is not one of its prompts "
                         f"({', '.join(prompts) or 'none'})")
    transformer = modules[0].get("path", "")
    bert_config = (read_json(folder / transformer / "sentence_bert_config.json")
                   or read_json(folder / "sentence_bert_config.json") or {})
    return SentencePipeline(modules=pipeline, normalize=normalize, similarity=SIMILARITY_NAMES[similarity],
                            prompts=prompts, default_prompt_name=default,
                            max_seq_length=bert_config.get("max_seq_length"), transformer_path=transformer)


# --- Router / Asym: one module pipeline per route ------------------------------------------------------------
#: The module types that route inputs (sentence-transformers 6's ``Router``; ``Asym``, its legacy name).
ROUTER_KINDS = ("Router", "Asym")
#: The modality sentence-transformers infers for text inputs, which route mappings may name.
TEXT_MODALITY = "text"


@dataclass(frozen=True)
class Routes:
    """A ``Router``/``Asym`` module, read from its folder: ``modules``, route name -> that route's whole module list
    (``modules.json`` entries, the Router replaced by the route's own modules, paths relative to the model folder);
    ``default_route``, ``route_mappings`` ((task, modality) -> route) and ``allow_empty_key`` as sentence-transformers
    saves them (``router_config.json``, or a legacy ``Asym``'s ``config.json``)."""

    modules: dict[str, list[dict]]
    default_route: str | None = None
    route_mappings: dict[tuple, str] = field(default_factory=dict)
    allow_empty_key: bool = True

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def resolve(self, task: str | None) -> str:
        """The route sentence-transformers takes for text with ``task`` (``encode(task=...)``: None for plain
        ``encode``, ``query`` for ``encode_query``, ``document`` for ``encode_document``), in its order: the route
        mappings of (task, text), (task, any), (any, text), (any, any); a route named like the task; a route named
        ``text``; the default route. A task that finds no route is an error listing the routes."""
        for key in ((task, TEXT_MODALITY), (task, None), (None, TEXT_MODALITY), (None, None)):
            if key in self.route_mappings:
                return self.route_mappings[key]
        if task and task in self.modules:
            return task
        if TEXT_MODALITY in self.modules:
            return TEXT_MODALITY
        if task is None and self.default_route is not None:
            return self.default_route
        raise ValueError(f"no route of this model for task {task!r}: its routes are {', '.join(self.names)}"
                         + (f" (mapped: {self.route_mappings})" if self.route_mappings else "")
                         + ("" if task is not None else "; it has no default route, so name one"))


def _route_key(text: str) -> tuple:
    """A saved route-mapping key, e.g. ``"('query', 'text')"``, as the (task, modality) tuple it stands for."""
    try:
        key = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        key = None
    if not (isinstance(key, tuple) and len(key) == 2):
        raise ValueError(f"route mapping key {text!r} is not a (task, modality) pair")
    task, modality = key
    return task, tuple(sorted(modality)) if isinstance(modality, tuple) else modality


def read_routes(folder: Path) -> Routes | None:
    """The routes of a folder whose ``modules.json`` has a ``Router`` or ``Asym`` module, or None without one.
    More than one router, or a router inside a route, is an error naming it."""
    modules = read_json(folder / "modules.json")
    if modules is None:
        return None
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    routers = [i for i, m in enumerate(modules) if str(m.get("type", "")).rsplit(".", 1)[-1] in ROUTER_KINDS]
    if not routers:
        return None
    if len(routers) > 1:
        raise ValueError(f"model {folder}: {len(routers)} Router/Asym modules; SimLens explains models with one")
    at = routers[0]
    path = str(modules[at].get("path", ""))
    config = read_json(folder / path / "router_config.json") or read_json(folder / path / "config.json")
    if not config or "types" not in config or "structure" not in config:
        raise ValueError(f"model {folder}: its {modules[at].get('type')} module has no router_config.json (or "
                         f"legacy config.json) with types and structure")
    types, parameters = config["types"], config.get("parameters") or {}
    routes: dict[str, list[dict]] = {}
    for name, ids in config["structure"].items():
        inner = [{"type": types[i], "path": str(Path(path, i)) if path else str(i)} for i in ids]
        nested = [m["type"] for m in inner if str(m["type"]).rsplit(".", 1)[-1] in ROUTER_KINDS]
        if nested:
            raise ValueError(f"model {folder}: route {name!r} has its own {nested[0]}; nested routers are not supported")
        flat = [*modules[:at], *inner, *modules[at + 1 :]]
        routes[name] = [{**m, "idx": i} for i, m in enumerate(flat)]
    if not routes:
        raise ValueError(f"model {folder}: its {modules[at].get('type')} module has no routes")
    mappings = {_route_key(k): v for k, v in (parameters.get("route_mappings") or {}).items()}
    unknown = sorted({v for v in mappings.values() if v not in routes}
                     | ({parameters["default_route"]} - set(routes) if parameters.get("default_route") else set()))
    if unknown:
        raise ValueError(f"model {folder}: its router names route(s) {', '.join(unknown)}, which it does not have "
                         f"({', '.join(routes)})")
    allow_empty = bool(parameters.get("allow_empty_key", True))
    default = parameters.get("default_route") or (next(iter(routes)) if allow_empty else None)
    return Routes(modules=routes, default_route=default, route_mappings=mappings, allow_empty_key=allow_empty)


def local_route_names(name_or_path: str) -> list[str]:
    """The routes of a model that is a local folder with a Router/Asym module, read without loading it; [] for
    others (and for a folder whose router cannot be read: loading it says why)."""
    folder = Path(str(name_or_path)).expanduser()
    if not folder.is_dir():
        return []
    try:
        routes = read_routes(folder)
    except (ValueError, OSError):
        return []
    return routes.names if routes is not None else []
