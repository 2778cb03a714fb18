"""SimLens core: attribution methods, model adapters, alignment, store and metrics.

The attribution API is imported lazily, so that modules which only read a store (the dashboard pages) do not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EngineOptions": "core.attribution",
    "Explanation": "core.attribution",
    "SentenceFactors": "core.attribution",
    "compute_factors": "core.attribution",
    "explain": "core.attribution",
    "explain_pairs": "core.attribution",
    "METHODS": "core.methods",
    "get_method": "core.methods",
    "DEFAULT_MODEL": "core.models",
    "SimilarityModel": "core.models",
    "load_model": "core.model_folders",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
