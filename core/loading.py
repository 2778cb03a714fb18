"""A model or a dataset given by name or as an object: every entry point (runs, evaluations, fine-tuning,
the demo store) accepts both and resolves them here."""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

from core.datasets import PairDataset, load_dataset
from core.model_folders import load_model
from core.models import SimilarityModel


def as_model(model: SimilarityModel | str | os.PathLike, device: str | None = None,
             quiet: bool = False, pooling: str | None = None, **loading) -> SimilarityModel:
    """``model`` itself when it is a loaded :class:`SimilarityModel`, else :func:`core.model_folders.load_model` of
    that name or folder on ``device`` (``pooling`` for a plain Hugging Face model; ``loading``: load_model's
    ``trust_remote_code``, ``truncate_dim`` and ``dtype``); ``quiet`` hides the loader's warnings."""
    if isinstance(model, SimilarityModel):
        defaults = {k: p.default for k, p in inspect.signature(load_model).parameters.items()}
        changed = [k for k, v in loading.items() if k not in defaults or v != defaults[k]]
        if changed:
            raise ValueError(f"{', '.join(changed)} apply when a model is loaded; {model.display_name} is loaded "
                             f"already")
        return model
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return load_model(model, device=device, pooling=pooling, **loading)


def as_dataset(dataset: PairDataset | str | Path, data_dir: str | Path | None = None, **options) -> PairDataset:
    """``dataset`` itself when it is a loaded :class:`PairDataset`, else :func:`core.datasets.load_dataset`
    of that spec or file (``data_dir``: the folder laid out like shared/data; ``options``: how to read a user's
    file, e.g. columns, lang, gold_range)."""
    return dataset if isinstance(dataset, PairDataset) else load_dataset(dataset, data_dir=data_dir, **options)


def model_name(model: SimilarityModel | str | os.PathLike) -> str:
    """The name of a loaded model, or the name/folder given."""
    return model.name if isinstance(model, SimilarityModel) else str(model)
