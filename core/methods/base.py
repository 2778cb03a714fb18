"""The interface every attribution method implements, and the registry that finds methods by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from core.models import SimilarityModel, TokenBatch


@dataclass
class FactorBatch:
    """Factors of a padded batch of B sentences (S = padded length, D = embedding dims).

    ``factors`` (B, S, D): row t is token t's factor (zero for padding); ``targets`` (B, D): the vector each
    sentence's factor rows sum to (exactly, or in the limit of many steps); ``scales`` (B,): a pair's matrix
    and score are multiplied by scale_a * scale_b (1 / norm for cosine models, 1 otherwise); ``pooled``
    (B, D): the model's pooled sentence embeddings before any normalisation.
    The explained score of a pair is targets_a . targets_b * scale_a * scale_b.
    """

    factors: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    pooled: torch.Tensor


class AttributionMethod(ABC):
    """One attribution method: per-sentence factors whose products give token-pair relevances."""

    name: ClassVar[str]
    summary: ClassVar[str]
    uses_steps: ClassVar[bool] = False
    default_steps: ClassVar[int | None] = None

    def default_layer(self, model: SimilarityModel) -> int:
        """The layer attributed to when the caller gives none (0 = input embeddings)."""
        return 0

    @abstractmethod
    def factors(
        self, model: SimilarityModel, batch: TokenBatch, layer: int, steps: int | None, quadrature: str | None,
        autodiff: str, max_rows: int,
    ) -> FactorBatch:
        """Factors for every sentence of ``batch``, attributing to the hidden state after ``layer``."""


def cosine_scales(model: SimilarityModel, targets: torch.Tensor) -> torch.Tensor:
    """1 / |target| for models compared by cosine (or that normalise), else ones."""
    if model.similarity == "cosine" or model.normalize:
        return 1.0 / targets.norm(dim=-1)
    return torch.ones(targets.shape[0], dtype=targets.dtype, device=targets.device)


METHODS: dict[str, type[AttributionMethod]] = {}


def register(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator adding a method to ``METHODS`` under its ``name``."""
    if cls.name in METHODS:
        raise ValueError(f"attribution method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> AttributionMethod:
    """An instance of the method registered as ``name``; a miss lists the registered ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]()
