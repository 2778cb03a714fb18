"""Tiny random sentence-transformers folders with any module pipeline, prompts and padding side, written in the
on-disk format sentence-transformers reads (``modules.json``, ``1_Pooling``, ``2_Dense``, ...), for tests that
compare SimLens with ``SentenceTransformer(folder)`` itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tiny_models import save_sentence_transformer

_TYPES = {"Pooling": "sentence_transformers.models.Pooling", "Dense": "sentence_transformers.models.Dense",
          "Normalize": "sentence_transformers.models.Normalize", "Transformer": "sentence_transformers.models.Transformer"}


@dataclass
class DenseSpec:
    """A Dense module: ``out_features``, ``activation`` (an import path, as sentence-transformers saves it)."""

    out_features: int = 16
    activation: str = "torch.nn.modules.activation.Tanh"
    bias: bool = True
    seed: int = 1


@dataclass
class Pipeline:
    """The modules after the Transformer: ``pooling`` (a mode or a list of modes), ``legacy`` (write the old
    ``pooling_mode_*`` booleans instead of ``pooling_mode``), ``dense``, ``normalize``, prompts."""

    pooling: str | list[str] = "mean"
    include_prompt: bool = True
    legacy: bool = False
    dense: list[DenseSpec] = field(default_factory=list)
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity: str = "cosine"
    padding_side: str = "right"


_LEGACY = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
           "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
           "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def save_st_folder(folder: Path, kind: str, pipeline: Pipeline, seed: int = 0) -> Path:
    """A tiny random ``kind`` model (see ``tiny_models``) saved with ``pipeline``; returns ``folder``."""
    save_sentence_transformer(folder, kind, normalize=False, similarity=pipeline.similarity, seed=seed)
    modes = [pipeline.pooling] if isinstance(pipeline.pooling, str) else list(pipeline.pooling)
    from transformers import AutoConfig

    hidden = AutoConfig.from_pretrained(folder).hidden_size  # the family's own (d_model, n_embd, ...)
    pooling = {"word_embedding_dimension": hidden, "include_prompt": pipeline.include_prompt}
    if pipeline.legacy:
        pooling.update({key: mode in modes for mode, key in _LEGACY.items()})
    else:
        pooling["pooling_mode"] = modes[0] if len(modes) == 1 else modes
    _write(folder / "1_Pooling" / "config.json", pooling)
    modules = [{"idx": 0, "name": "0", "path": "", "type": _TYPES["Transformer"]},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": _TYPES["Pooling"]}]
    width = len(modes) * hidden
    for spec in pipeline.dense:
        idx = len(modules)
        path = folder / f"{idx}_Dense"
        torch.manual_seed(spec.seed)
        linear = torch.nn.Linear(width, spec.out_features, bias=spec.bias)
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        state = {f"linear.{k}": v.detach().clone().contiguous() for k, v in linear.state_dict().items()}
        save_file(state, path / "model.safetensors")
        _write(path / "config.json", {"in_features": width, "out_features": spec.out_features, "bias": spec.bias,
                                      "activation_function": spec.activation})
        modules.append({"idx": idx, "name": str(idx), "path": path.name, "type": _TYPES["Dense"]})
        width = spec.out_features
    if pipeline.normalize:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": _TYPES["Normalize"]})
        (folder / f"{idx}_Normalize").mkdir(exist_ok=True)
    _write(folder / "modules.json", modules)
    st_config = {"similarity_fn_name": pipeline.similarity, "prompts": pipeline.prompts,
                 "default_prompt_name": pipeline.default_prompt_name}
    _write(folder / "config_sentence_transformers.json", st_config)
    if pipeline.padding_side != "right":
        tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        tok_config["padding_side"] = pipeline.padding_side
        _write(folder / "tokenizer_config.json", tok_config)
    return folder


def add_module(folder: Path, type_name: str) -> Path:
    """Append a module of ``type_name`` (e.g. ``sentence_transformers.models.LayerNorm``) to modules.json."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    idx = len(modules)
    modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Extra", "type": type_name})
    _write(folder / "modules.json", modules)
    return folder


def sentence_transformer(folder: Path, **options):
    """sentence-transformers' own model of ``folder`` on the CPU (the reference every score is checked against);
    ``options``: SentenceTransformer's own (truncate_dim, model_kwargs, ...)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True, **options)
