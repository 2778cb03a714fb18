"""The interface every attribution method implements, and the registry that finds methods by name."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from core.models import SimilarityModel, TokenBatch
from core.quadrature import AutoSteps


@dataclass
class FactorBatch:
    """Factors of a padded batch of B sentences (S = padded length, D = embedding dims).

    ``factors`` (B, S, D): row t is token t's factor (zero for padding); ``targets`` (B, D): the vector each
    sentence's factor rows sum to (exactly, or in the limit of many steps); ``scales`` (B,): a pair's matrix
    and score are multiplied by scale_a * scale_b (1 / norm for cosine models, 1 otherwise); ``pooled``
    (B, D): the model's pooled sentence embeddings before any normalisation; ``steps`` (B,) long: the
    integration steps each sentence's factor took (None for step-free methods); ``capped`` (B,) bool: under
    ``steps="auto"``, the sentences whose integral stopped short of its tolerance (at the step cap).
    The explained score of a pair is targets_a . targets_b * scale_a * scale_b.
    """

    factors: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    pooled: torch.Tensor
    steps: torch.Tensor | None = None
    capped: torch.Tensor | None = None


@dataclass(frozen=True)
class ReferenceRecipe:
    """How the tests' slow reference (one sentence, one point, one backward pass per embedding dimension)
    computes a method's factor at hidden state h (T tokens) of a sentence.

    ``kind``: "states" (row t is h[t] / T, no derivatives) or "gradient" (row t is the sum over integration
    points x_n with weights w_n of sum_i d[t, i] * d e(x_n) / d x[t, i]); ``path``: "point" (the single point
    x = h, direction d = h) or "reference" (the quadrature points on the straight line from the hidden state r
    of the padding reference to h, direction d = h - r); ``lrp_rules``: the gradients run under
    ``core.rules.lrp_rules``; ``normalize``: the head normalises the embedding as the model does.
    """

    kind: str
    path: str = "point"
    lrp_rules: bool = False
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("states", "gradient") or self.path not in ("point", "reference"):
            raise ValueError(f"bad reference recipe {self}")


class AttributionMethod(ABC):
    """One attribution method: per-sentence factors whose products give token-pair relevances."""

    name: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[ReferenceRecipe]
    uses_steps: ClassVar[bool] = False
    default_steps: ClassVar[int | str | None] = None
    #: :meth:`default_layer` in words, for help texts shown before a model is loaded.
    default_layer_text: ClassVar[str] = "0 (the input embeddings)"

    def default_layer(self, model: SimilarityModel) -> int:
        """The layer attributed to when the caller gives none (0 = input embeddings)."""
        return 0

    @abstractmethod
    def factors(
        self, model: SimilarityModel, batch: TokenBatch, layer: int, steps: int | AutoSteps | None,
        quadrature: str | None, autodiff: str, max_rows: int,
    ) -> FactorBatch:
        """Factors for every sentence of ``batch``, attributing to the hidden state after ``layer``; ``steps``:
        a fixed number of integration steps, or :class:`core.quadrature.AutoSteps` (a tolerance)."""


def cosine_scales(model: SimilarityModel, targets: torch.Tensor) -> torch.Tensor:
    """The scale of each sentence's pre-normalisation ``targets`` (B, D), whole (before any truncation): for
    cosine models 1 / |the truncated target| (cosine renormalises the cut vectors); for dot-product models that
    normalise 1 / |target| (the whole vector is normalised, then cut); else ones."""
    if model.similarity == "cosine":
        return 1.0 / model.truncate(targets).norm(dim=-1)
    if model.normalize:
        return 1.0 / targets.norm(dim=-1)
    return torch.ones(targets.shape[0], dtype=targets.dtype, device=targets.device)


def truncated(model: SimilarityModel, out: FactorBatch) -> FactorBatch:
    """``out`` with factors and targets cut to the model's ``truncate_dim`` (the embedding's first dimensions are
    its last operation, so their factors are the first columns); scales and pooled embeddings stay."""
    return dataclasses.replace(out, factors=model.truncate(out.factors), targets=model.truncate(out.targets))


METHODS: dict[str, type[AttributionMethod]] = {}


def register(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator adding a method to ``METHODS`` under its ``name``."""
    if cls.name in METHODS:
        raise ValueError(f"attribution method {cls.name!r} is registered twice")
    if not isinstance(getattr(cls, "reference", None), ReferenceRecipe):
        raise ValueError(f"attribution method {cls.name!r} declares no ReferenceRecipe for the tests' reference")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> AttributionMethod:
    """An instance of the method registered as ``name``; a miss lists the registered ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]()
