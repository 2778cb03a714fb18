"""Slow, obviously-correct factors: the reverse-mode gradient of every embedding dimension (one backward pass,
batched over the dimensions by autograd), one sentence and one integration point at a time, no padding,
forward mode or chunking. What to compute comes from each
method's ``ReferenceRecipe``, so a newly registered method is checked without touching this file."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from core.methods import METHODS
from core.quadrature import quadrature
from core.rules import lrp_rules


def reference_factor(model, text: str, method: str, layer: int, steps: int | None = None,
                     rule: str = "gauss-legendre", per_dimension: bool = False) -> np.ndarray:
    """(T, D) factor of ``text`` computed the slow way (D: the embedding's dimensions, after any truncate_dim);
    ``per_dimension``: one ``autograd.grad`` call per embedding dimension (the engine's reverse mode before it was
    vectorised) instead of one batched call."""
    recipe = METHODS[method].reference
    batch = model.tokenize([text])
    hidden = model.hidden_states(batch, layer)[0]
    if recipe.kind == "states":
        return model.truncate(hidden / hidden.shape[0]).numpy()
    if recipe.path == "reference":
        reference = model.hidden_states(model.reference_batch(batch), layer)[0]
        alphas, weights = quadrature(rule, steps)
        points = [reference + float(a) * (hidden - reference) for a in alphas]
        direction = hidden - reference
    else:
        points, weights, direction = [hidden], [1.0], hidden
    head = model.head(batch, layer, normalize=recipe.normalize)
    rules = lrp_rules(model.encoder) if recipe.lrp_rules else contextlib.nullcontext()
    factor = torch.zeros(hidden.shape[0], model.dim, dtype=torch.float64)
    for point, weight in zip(points, weights, strict=True):
        x = point.clone().requires_grad_(True)
        with rules, torch.enable_grad():
            embedding = model.truncate(head(x[None])[0])
            if per_dimension:
                grads = torch.stack([torch.autograd.grad(embedding[k], x, retain_graph=True)[0]
                                     for k in range(embedding.shape[0])])
            else:
                dims = torch.eye(embedding.shape[0], dtype=embedding.dtype)
                (grads,) = torch.autograd.grad(embedding, x, grad_outputs=dims, is_grads_batched=True)  # (D, T, H)
        factor = factor + float(weight) * torch.einsum("dth,th->td", grads.double(), direction.double())
    return factor.numpy()
