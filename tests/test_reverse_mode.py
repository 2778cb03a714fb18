"""Vectorised reverse mode (one backward pass for many embedding dimensions, ``is_grads_batched``) equals the old
loop of one ``autograd.grad`` call per dimension, for every registered method that takes gradients (BiLRP's
rules included), whatever the memory bound's chunks of cotangents; and the chunks follow the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import reference_factor

import core
from core import compute_factors

TEXTS = ["A man is playing a guitar.", "Two dogs run through the snow!", "The cat sat."]
#: Every registered method that takes derivatives (the others have no reverse mode to check).
GRADIENT_METHODS = [(name, 3 if cls.uses_steps else None) for name, cls in sorted(core.METHODS.items())
                    if cls.reference.kind == "gradient"]


def test_the_registry_has_gradient_methods():
    assert {"bilrp", "hxp", "ij"} <= {name for name, _ in GRADIENT_METHODS}


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
@pytest.mark.parametrize("method,steps", GRADIENT_METHODS)
def test_vectorised_reverse_mode_equals_the_loop(tiny_models, kind, method, steps):
    model = tiny_models[kind]
    # max_rows 5 of 2 sentences: chunks of 2 cotangents (and a last one of 1 or 2), so chunk edges are crossed
    got = compute_factors(model, TEXTS[:2], method=method, layer=1, steps=steps, autodiff="reverse", batch_size=2,
                          max_rows=5)
    for text, factor in zip(TEXTS[:2], got, strict=True):
        assert factor.autodiff == "reverse"
        expected = reference_factor(model, text, method, 1, steps, per_dimension=True)
        np.testing.assert_allclose(factor.factor, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("max_rows,cpu_elements", [(1, None), (6, None), (2048, None), (2048, 5000)])
def test_cotangents_come_in_chunks_of_the_bound(tiny_models, monkeypatch, max_rows, cpu_elements):
    """Each backward pass carries at most ``max_rows`` rows (sentences x cotangents) and, on the CPU, at most
    ``CPU_CHUNK_ELEMENTS`` gradient elements: ceil(D / chunk) passes per point, each one batched call, and the
    factors do not depend on the chunks."""
    import core.factors

    model = tiny_models["bert"]
    calls, real = [], torch.autograd.grad

    def spy(outputs, inputs, grad_outputs=None, **kwargs):
        assert kwargs.get("is_grads_batched") and grad_outputs.dim() == 3
        calls.append((grad_outputs.shape[0], inputs.shape[0], inputs.numel()))
        return real(outputs, inputs, grad_outputs=grad_outputs, **kwargs)

    if cpu_elements:
        monkeypatch.setattr(core.factors, "CPU_CHUNK_ELEMENTS", cpu_elements)
    monkeypatch.setattr(core.factors.torch.autograd, "grad", spy)
    got = compute_factors(model, TEXTS, method="hxp", autodiff="reverse", batch_size=3, max_rows=max_rows)
    monkeypatch.undo()
    numel = calls[0][2]
    per_pass = max(1, min(model.dim, max_rows // 3, core.factors.CPU_CHUNK_ELEMENTS // numel,
                          (cpu_elements or numel * model.dim) // numel))
    assert len(calls) == math.ceil(model.dim / per_pass)
    assert all(chunk * sentences <= max(max_rows, sentences) for chunk, sentences, _ in calls)
    if cpu_elements:
        assert 1 < per_pass < model.dim and all(chunk * size <= cpu_elements for chunk, _, size in calls)
    assert sum(chunk for chunk, _, _ in calls) == model.dim
    roomy = compute_factors(model, TEXTS, method="hxp", autodiff="reverse", batch_size=3)
    for a, b in zip(got, roomy, strict=True):
        np.testing.assert_allclose(a.factor, b.factor, rtol=1e-10, atol=1e-14)
