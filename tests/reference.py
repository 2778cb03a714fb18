"""Slow, obviously-correct factors: one reverse-mode backward pass per embedding dimension, one sentence and
one integration point at a time, no batching, padding, vmap or chunking. What to compute comes from each
method's ``ReferenceRecipe``, so a newly registered method is checked without touching this file."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from core.methods import METHODS
from core.quadrature import quadrature
from core.rules import lrp_rules


def reference_factor(model, text: str, method: str, layer: int, steps: int | None = None,
                     rule: str = "gauss-legendre") -> np.ndarray:
    """(T, D) factor of ``text`` computed the slow way."""
    recipe = METHODS[method].reference
    batch = model.tokenize([text])
    hidden = model.hidden_states(batch, layer)[0]
    if recipe.kind == "states":
        return (hidden / hidden.shape[0]).numpy()
    if recipe.path == "reference":
        reference = model.hidden_states(model.reference_batch(batch), layer)[0]
        alphas, weights = quadrature(rule, steps)
        points = [reference + float(a) * (hidden - reference) for a in alphas]
        direction = hidden - reference
    else:
        points, weights, direction = [hidden], [1.0], hidden
    head = model.head(batch, layer, normalize=recipe.normalize)
    rules = lrp_rules(model.encoder) if recipe.lrp_rules else contextlib.nullcontext()
    factor = None
    for point, weight in zip(points, weights, strict=True):
        x = point.clone().requires_grad_(True)
        with rules, torch.enable_grad():
            embedding = head(x[None])[0]
            if factor is None:
                factor = torch.zeros(hidden.shape[0], embedding.shape[0], dtype=torch.float64)
            for k in range(embedding.shape[0]):
                (grad,) = torch.autograd.grad(embedding[k], x, retain_graph=True)
                factor[:, k] += float(weight) * (grad * direction).sum(-1).double()
    return factor.numpy()
