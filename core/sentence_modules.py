"""A sentence-transformers folder read as SimLens honours it: ``read_pipeline`` builds the
``core.sentence_pipeline.SentencePipeline`` of ``modules.json`` (and the prompts, similarity and truncation of
``config_sentence_transformers.json``) without importing sentence-transformers, and every file and key it reads is
checked against one table (``FOLDER_KEYS``, ``HF_CONFIG_KEYS``, ``MODULE_TYPES``): honoured, ignored because it
cannot change outputs, or refused naming the key and the file. docs/models.md renders the table.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.model_files import read_json
from core.sentence_pipeline import (
    LEGACY_POOLING_KEYS,
    SENTENCE,
    SIMILARITY_NAMES,
    TOKENS,
    Dense,
    Normalize,
    Pooling,
    SentencePipeline,
    pooling_mode,
)

_TRANSFORMER = "Transformer"


def _pooling(config: dict) -> Pooling:
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [name for key, name in LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
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


# ---- Folder keys and module types: what SimLens honours, ignores or refuses (one table) -------------------------
# Every key of every configuration file read here is in ``FOLDER_KEYS`` (honoured, possibly for some values only,
# or ignored because it cannot change outputs); any other key is a ValueError naming the key and the file, since it
# may change what the model computes. Module types are ``MODULE_TYPES``. docs/models.md renders these tables.


@dataclass(frozen=True)
class Key:
    """A key SimLens honours: ``meaning`` says how; ``allowed`` (None: every value) tells the values it honours,
    described by ``allowed_text``; another value is refused."""

    meaning: str
    allowed: Callable[[object], bool] | None = None
    allowed_text: str = ""


@dataclass(frozen=True)
class FileKeys:
    """The keys of one configuration file: ``honoured`` (key -> Key) and ``ignored`` (key -> why it cannot
    change outputs)."""

    honoured: dict[str, Key]
    ignored: dict[str, str] = field(default_factory=dict)

    def check(self, config: dict, where: Path | str) -> dict:
        """``config`` itself when every key is honoured (with a value honoured) or ignored; else a ValueError
        naming the key and ``where`` (the file)."""
        if not isinstance(config, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(config).__name__}")
        for key, value in config.items():
            if key in self.ignored:
                continue
            if key not in self.honoured:
                raise ValueError(
                    f"{where}: key {key!r} is not supported: SimLens cannot tell whether it changes the model's "
                    f"output, so it refuses the model (honoured keys: {', '.join(self.honoured) or 'none'}; ignored "
                    f"keys: {', '.join(self.ignored) or 'none'}; see docs/models.md)")
            spec = self.honoured[key]
            if spec.allowed is not None and not spec.allowed(value):
                raise ValueError(f"{where}: {key} = {json.dumps(value)} is not supported: SimLens honours "
                                 f"{spec.allowed_text}")
        return config


def _is(*values: object) -> Callable[[object], bool]:
    return lambda value: value in values


def _never(value: object) -> bool:
    return False


def _empty(value: object) -> bool:
    return not value


def _positive_int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


_TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
_VERSION_STAMP = "version stamps of the libraries that saved the model"
_IO_NAMES = {
    "module_input_name": Key("the features entry the module reads"),
    "module_output_name": Key("the features entry the module writes"),
}
_HF_KWARGS = ("arguments sentence-transformers passes to transformers' model, tokenizer or config loaders "
              "(they can change the weights' dtype, the tokenizer or the architecture)")
_TRANSFORMER_KEYS = FileKeys(
    honoured={
        "max_seq_length": Key("the truncation length (tokens)", _positive_int_or_none, "a positive integer"),
        "do_lower_case": Key("lower-cases the text before tokenising (a Lowercase normalizer, as "
                             "sentence-transformers adds it)", _is(True, False), "true or false"),
        "transformer_task": Key("what the Transformer computes", _is("feature-extraction"),
                                "feature-extraction (token embeddings) only"),
        "modality_config": Key("the input modality", lambda v: v in ({}, _TEXT_ONLY),
                               f"text read by forward into last_hidden_state only ({json.dumps(_TEXT_ONLY)})"),
        "module_output_name": Key("the features entry the Transformer writes", _is(TOKENS), f"{TOKENS!r} only"),
        "query_length": Key("multi-vector query length", _is(None), "null only (multi-vector models are not "
                            "explained)"),
        "document_length": Key("multi-vector document length", _is(None), "null only"),
        "query_expansion": Key("multi-vector query expansion", _is(None), "null only"),
        **{name: Key(_HF_KWARGS, _empty, "an empty object only") for name in (
            "processing_kwargs", "model_args", "model_kwargs", "tokenizer_args", "processor_kwargs",
            "config_args", "config_kwargs")},
    },
    ignored={"unpad_inputs": "unpadding for flash attention: an execution strategy computing the same values",
             "cache_dir": "where the hub cache lives", "backend": "torch is the only backend SimLens runs; "
             "onnx/openvino exports of the same weights are other files"},
)
#: File name (or module type) -> its keys.
FOLDER_KEYS: dict[str, FileKeys] = {
    "modules.json": FileKeys(
        honoured={"idx": Key("the module's position"), "name": Key("the module's name"),
                  "path": Key("the module's folder"), "type": Key("the module's class (see MODULE_TYPES)")},
        ignored={"kwargs": "forward keyword arguments a caller of encode may pass (e.g. task); SimLens passes "
                           "none, as encode without them"},
    ),
    "config_sentence_transformers.json": FileKeys(
        honoured={
            "model_type": Key("the kind of model", _is("SentenceTransformer"),
                              "SentenceTransformer (bi-encoders) only: CrossEncoder, SparseEncoder and "
                              "MultiVectorEncoder models are not explained yet"),
            "prompts": Key("named prompts prepended to the text"),
            "default_prompt_name": Key("the prompt used when the caller names none"),
            "similarity_fn_name": Key("the similarity function", lambda v: v is None or v in SIMILARITY_NAMES,
                                      f"one of {', '.join(sorted(SIMILARITY_NAMES))}"),
            "truncate_dim": Key("the embedding is cut to its first truncate_dim dimensions after the modules run "
                                "(Matryoshka); similarity is computed on the cut vectors", _positive_int_or_none,
                                "a positive integer"),
        },
        ignored={"__version__": _VERSION_STAMP,
                 "requirements": "library version requirements checked at load time (they do not change values)"},
    ),
    "sentence_bert_config.json": _TRANSFORMER_KEYS,
    "simlens.json": FileKeys(honoured={"shifted_embeddings": Key(
        "SimLens' exact-attribution models: the embedding is e(x) - e(padding reference), compared by dot product",
        _is(True, False), "true or false")}),
    "Pooling": FileKeys(
        honoured={
            "pooling_mode": Key("the pooling mode(s), concatenated in order"),
            "include_prompt": Key("whether the prompt's tokens are pooled", _is(True, False), "true or false"),
            **{key: Key(f"legacy flag for {mode} pooling (used when pooling_mode is absent)", _is(True, False),
                        "true or false") for key, mode in LEGACY_POOLING_KEYS.items()},
        },
        ignored={"embedding_dimension": "the input width, recorded for information (pooling reads the tensor)",
                 "word_embedding_dimension": "the legacy name of embedding_dimension"},
    ),
    "Dense": FileKeys(honoured={
        "in_features": Key("the input width"), "out_features": Key("the output width"),
        "bias": Key("whether the layer has a bias"), "activation_function": Key("the activation (a torch.nn class)"),
        "use_residual": Key("adds the input (or its projection) to the output"), **_IO_NAMES}),
    "Normalize": FileKeys(honoured=_IO_NAMES),
    "Dropout": FileKeys(honoured={}, ignored={"dropout": "dropout is the identity in eval mode, which is how "
                                                         "sentence-transformers encodes"}),
    "router_config.json": FileKeys(honoured={
        "types": Key("each routed module's class (see MODULE_TYPES)"),
        "structure": Key("route name -> its modules, in order"),
        "parameters": Key("the Router's settings (see Router parameters)"),
    }),
    "Router parameters": FileKeys(honoured={
        "default_route": Key("the route of plain encode (no task)"),
        "route_mappings": Key("(task, modality) -> route, tried before route names"),
        "allow_empty_key": Key("whether a missing task falls back to the default route", _is(True, False),
                               "true or false"),
    }),
}
#: Legacy names of sentence_bert_config.json, in the order sentence-transformers tries them.
TRANSFORMER_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json",
                            "sentence_distilbert_config.json", "sentence_camembert_config.json",
                            "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
                            "sentence_xlnet_config.json")
_ST_PACKAGE = "sentence_transformers."


def module_config(folder: Path, kind: str) -> dict:
    """The checked ``config.json`` of a module folder of ``kind`` ({} when there is none)."""
    path = folder / "config.json"
    return FOLDER_KEYS[kind].check(read_json(path) or {}, path)


def _build_pooling(folder: Path) -> Pooling:
    return _pooling(module_config(folder, "Pooling"))


def _build_dense(folder: Path) -> Dense:
    return _dense(folder, module_config(folder, "Dense"))


def _build_normalize(folder: Path) -> Normalize:
    config = module_config(folder, "Normalize")
    source = config.get("module_input_name", SENTENCE)
    return Normalize(source=source, target=config.get("module_output_name") or source)


def _build_dropout(folder: Path) -> None:
    module_config(folder, "Dropout")  # the identity at inference: nothing is added to the pipeline


#: Module class name -> builder from its folder (None: a module that is the identity at inference). Types are
#: sentence-transformers' own (``sentence_transformers.`` import paths); the first module is the Transformer.
MODULE_TYPES: dict[str, Callable[[Path], Pooling | Dense | Normalize | None]] = {
    "Pooling": _build_pooling, "Dense": _build_dense, "Normalize": _build_normalize, "Dropout": _build_dropout,
}


def module_kind(spec: dict, folder: Path) -> str:
    """The class name of a modules.json entry; a type outside sentence-transformers (custom module code) or one
    without an entry in ``MODULE_TYPES`` is a ValueError naming it."""
    type_name = str(spec.get("type", ""))
    kind = type_name.rsplit(".", 1)[-1]
    if not type_name.startswith(_ST_PACKAGE):
        raise ValueError(f"model {folder}: module {type_name} ({spec.get('path') or spec.get('name')}) is custom "
                         f"code, not a sentence-transformers module; SimLens does not run custom modules")
    if kind not in MODULE_TYPES and kind != _TRANSFORMER:
        raise ValueError(f"model {folder}: module {type_name} ({spec.get('path') or spec.get('name')}) is not "
                         f"supported; SimLens explains a Transformer followed by "
                         f"{', '.join(MODULE_TYPES)} modules (see docs/models.md)")
    return kind


def transformer_config(folder: Path) -> dict:
    """The Transformer's checked ``sentence_bert_config.json`` (or a legacy name of it), {} when absent."""
    for name in TRANSFORMER_CONFIG_FILES:
        path = folder / name
        if path.exists():
            return FOLDER_KEYS["sentence_bert_config.json"].check(read_json(path), path)
    return {}


def model_config(folder: Path) -> dict:
    """The checked ``config_sentence_transformers.json`` of a folder ({} when absent); a model type other than
    SentenceTransformer is refused saying what it is."""
    path = folder / "config_sentence_transformers.json"
    config = read_json(path) or {}
    kind = config.get("model_type", "SentenceTransformer") if isinstance(config, dict) else None
    if kind == "CrossEncoder":
        raise ValueError(f"model {folder} is a CrossEncoder ({path.name}: model_type CrossEncoder): it scores a "
                         f"pair jointly with one forward pass, not by comparing two sentence embeddings; SimLens "
                         f"explains bi-encoders (SentenceTransformer models) only, cross-encoders are not supported "
                         f"yet")
    return FOLDER_KEYS["config_sentence_transformers.json"].check(config, path)


#: Keys of a Transformer's ``config.json`` that SimLens itself acts on; every other key goes to transformers' config
#: class for the architecture, exactly as sentence-transformers passes it (the same class reads it the same way).
HF_CONFIG_KEYS: dict[str, Key] = {
    "model_type": Key("the architecture (an entry of core/architectures.py)"),
    "dtype": Key("the weights' dtype: explanations run in float32 unless load_model(dtype='native')"),
    "torch_dtype": Key("the older name of dtype"),
    "quantization_config": Key("quantized weights", _never,
                               "no quantization (quantized weights are not explained; load a float checkpoint)"),
    "position_embedding_type": Key("position embeddings", _is("absolute"),
                                   "absolute only: transformers' model classes no longer read other values, so "
                                   "relative position embeddings would be silently dropped"),
}
#: Heads that make a plain Hugging Face checkpoint a cross-encoder (one score per pair, not a sentence encoder).
CROSS_ENCODER_HEADS = ("ForSequenceClassification",)


def check_hf_config(config: dict, path: Path, plain: bool) -> dict:
    """``config`` (a Transformer's ``config.json``) when SimLens honours it: each key of ``HF_CONFIG_KEYS`` with an
    honoured value, and for a ``plain`` Hugging Face folder (no modules.json) an architecture that is not a
    cross-encoder head; else a ValueError naming the key and the file."""
    for key, spec in HF_CONFIG_KEYS.items():
        if key in config and spec.allowed is not None and not spec.allowed(config[key]):
            raise ValueError(f"{path}: {key} = {json.dumps(config[key])} is not supported: SimLens honours "
                             f"{spec.allowed_text}")
    heads = [a for a in config.get("architectures") or [] if str(a).endswith(CROSS_ENCODER_HEADS)]
    if plain and heads:
        raise ValueError(f"model {path.parent} is a cross-encoder ({path.name}: architectures {', '.join(heads)}): it "
                         f"scores a pair jointly with a classification head, not by comparing two sentence "
                         f"embeddings; SimLens explains bi-encoders only, cross-encoders are not supported yet")
    return config


def _status(spec: Key) -> str:
    if spec.allowed is _never:
        return f"refused: {spec.allowed_text}"
    return "honoured" if spec.allowed is None else f"honoured: {spec.allowed_text}"


def folder_keys_markdown() -> str:
    """The key tables (``FOLDER_KEYS``, ``HF_CONFIG_KEYS``) and module types as markdown: docs/models.md holds this
    text, and a test checks that it is current."""
    lines = ["| file | key | SimLens | how, or why it cannot change outputs |", "|---|---|---|---|"]
    for name, table in FOLDER_KEYS.items():
        where = name if name.endswith(".json") else f"{name} module config.json"
        lines += [f"| {where} | `{key}` | {_status(spec)} | {spec.meaning} |" for key, spec in table.honoured.items()]
        lines += [f"| {where} | `{key}` | ignored | {why} |" for key, why in table.ignored.items()]
        lines.append(f"| {where} | any other key | refused | it may change the output |")
    lines += [f"| config.json | `{key}` | {_status(spec)} | {spec.meaning} |" for key, spec in HF_CONFIG_KEYS.items()]
    lines.append("| config.json | any other key | passed to transformers | read by the architecture's config class, "
                 "as sentence-transformers passes it |")
    modules = ", ".join(f"`{kind}`" for kind in MODULE_TYPES)
    return "\n".join(lines) + (f"\n\nModule types after the Transformer: {modules} (sentence-transformers' own "
                               f"classes); any other type, or a class outside sentence_transformers, is refused.\n")


def read_pipeline(folder: Path, modules: list[dict] | None = None) -> SentencePipeline | None:
    """The pipeline of a sentence-transformers folder, or None for a plain Hugging Face model (no modules.json).
    ``modules``: the module list to read instead of ``modules.json``'s (one route of a Router, see ``read_routes``;
    paths relative to ``folder``).

    Every file and key is checked against ``FOLDER_KEYS`` and every module type against ``MODULE_TYPES``: what
    SimLens does not honour is a ValueError naming it.
    """
    path = folder / "modules.json"
    modules = read_json(path) if modules is None else modules
    if modules is None:
        return None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{path}: expected a list of module entries")
    modules = sorted((FOLDER_KEYS["modules.json"].check(m, path) for m in modules), key=lambda m: int(m.get("idx", 0)))
    kinds = [module_kind(m, folder) for m in modules]
    if not kinds or kinds[0] != _TRANSFORMER or _TRANSFORMER in kinds[1:]:
        raise ValueError(f"model {folder}: its first module must be a Transformer (and no other); found "
                         f"{', '.join(kinds) or 'none'}")
    st_config = model_config(folder)
    pipeline: list[Pooling | Dense | Normalize] = []
    for spec, kind in zip(modules[1:], kinds[1:], strict=True):
        module = MODULE_TYPES[kind](folder / spec.get("path", ""))
        if module is not None:
            pipeline.append(module)
    if not any(isinstance(m, Pooling) for m in pipeline):
        pipeline.insert(0, Pooling(("mean",)))  # sentence-transformers adds mean pooling to a bare Transformer
    normalize = bool(pipeline) and isinstance(pipeline[-1], Normalize) and pipeline[-1].target == SENTENCE
    if normalize:
        pipeline.pop()
    similarity = st_config.get("similarity_fn_name") or "cosine"
    prompts = {str(k): str(v or "") for k, v in (st_config.get("prompts") or {}).items()}
    default = st_config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"model {folder}: default_prompt_name {default!r} is not one of its prompts "
                         f"({', '.join(prompts) or 'none'})")
    transformer = modules[0].get("path", "")
    bert_config = transformer_config(folder / transformer) or transformer_config(folder)
    return SentencePipeline(modules=pipeline, normalize=normalize, similarity=SIMILARITY_NAMES[similarity],
                            prompts=prompts, default_prompt_name=default,
                            max_seq_length=bert_config.get("max_seq_length"), transformer_path=transformer,
                            truncate_dim=st_config.get("truncate_dim"),
                            do_lower_case=bool(bert_config.get("do_lower_case", False)))
