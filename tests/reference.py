"""Slow, obviously-correct factors: one reverse-mode backward pass per embedding dimension, one sentence and
one integration point at a time, no batching, padding, vmap or chunking."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from core.quadrature import quadrature
from core.rules import lrp_rules


def reference_factor(model, text: str, method: str, layer: int, steps: int | None = None,
                     rule: str = "gauss-legendre") -> np.ndarray:
    """(T, D) factor of ``text`` computed the slow way."""
    batch = model.tokenize([text])
    hidden = model.hidden_states(batch, layer)[0]
    if method == "embedding":
        return (hidden / hidden.shape[0]).numpy()
    if method == "ij":
        reference = model.hidden_states(model.reference_batch(batch), layer)[0]
        alphas, weights = quadrature(rule, steps)
        points = [reference + float(a) * (hidden - reference) for a in alphas]
        direction, normalize = hidden - reference, True
    else:
        points, weights, direction, normalize = [hidden], [1.0], hidden, False
    head = model.head(batch, layer, normalize=normalize)
    rules = lrp_rules() if method == "bilrp" else contextlib.nullcontext()
    factor = torch.zeros(hidden.shape[0], model.dim, dtype=torch.float64)
    for point, weight in zip(points, weights, strict=True):
        x = point.clone().requires_grad_(True)
        with rules, torch.enable_grad():
            embedding = head(x[None])[0]
            for k in range(embedding.shape[0]):
                (grad,) = torch.autograd.grad(embedding[k], x, retain_graph=True)
                factor[:, k] += float(weight) * (grad * direction).sum(-1).double()
    return factor.numpy()
