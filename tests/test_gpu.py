"""The engine on a CUDA GPU: the same factors as on the CPU for every registered method (both autodiff modes),
the memory bound held on the GPU (``torch.cuda.max_memory_allocated``), ``auto``'s choice, and autocast refused.
Marked ``gpu`` and skipped where CUDA is absent (``pytest -m gpu`` runs them on a machine with one). Autocast's
refusal is also checked on the CPU, here, unmarked."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import core
from core import compute_factors, explain, load_model
from core.memory import EncoderShape, cheaper_mode, parse_memory

TEXTS = ["A man is playing a guitar.", "Two dogs run through the snow!", "The cat sat."]
#: Every registered method, with a few integration steps for those that take steps.
SETTINGS = [(name, 3 if cls.uses_steps else None) for name, cls in sorted(core.METHODS.items())]
GRADIENT_SETTINGS = [(name, steps) for name, steps in SETTINGS if core.METHODS[name].reference.kind == "gradient"]
needs_cuda = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def pair_of_models(tiny_folders):
    """The tiny BERT in float32 on the CPU and on the GPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(tiny_folders["bert"], device="cpu"), load_model(tiny_folders["bert"], device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("autodiff", ["forward", "reverse"])
@pytest.mark.parametrize("method,steps", SETTINGS)
def test_gpu_factors_equal_cpu_factors(pair_of_models, method, steps, autodiff):
    cpu, gpu = pair_of_models
    on_cpu = compute_factors(cpu, TEXTS, method=method, steps=steps, autodiff=autodiff, batch_size=2)
    on_gpu = compute_factors(gpu, TEXTS, method=method, steps=steps, autodiff=autodiff, batch_size=2)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert a.tokens == b.tokens
        scale = np.abs(a.factor).max()
        np.testing.assert_allclose(b.factor, a.factor, rtol=1e-4, atol=1e-5 * scale)  # float32, other kernels


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method,autodiff,steps", [("bilrp", "auto", None), ("hxp", "forward", None),
                                                   ("hxp", "reverse", None), ("ij", "auto", 4)])
def test_gpu_memory_stays_under_its_bound(wide_model, method, autodiff, steps):
    """The peak GPU memory one long explanation allocates beyond the loaded model stays under ``max_memory``,
    and the matrix does not depend on the bound."""
    model = load_model(wide_model, device="cuda")
    words = " ".join(["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"] * 30).split()
    a, b = " ".join(words[:250]), " ".join(words[3:253])
    explain(model, "a short warm-up", "another one", method=method, steps=steps and 2, autodiff=autodiff)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    tight = explain(model, a, b, method=method, steps=steps, max_memory="96MiB", autodiff=autodiff)
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - before
    assert grown <= parse_memory("96MiB"), f"GPU peak grew by {grown / 2**20:.0f} MiB > 96 MiB"
    roomy = explain(model, a, b, method=method, steps=steps, max_memory="4GiB", autodiff=autodiff)
    np.testing.assert_allclose(tight.matrix, roomy.matrix, rtol=1e-4, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_auto_takes_the_planned_mode_and_its_factors(wide_model):
    model = load_model(wide_model, device="cuda")
    shape = EncoderShape.of(model.encoder.config, model.hidden_size)
    short, long = " ".join(["word"] * 40), " ".join(["word"] * 200)
    for text in (short, long):
        auto = compute_factors(model, [text], method="hxp")[0]
        assert auto.autodiff == cheaper_mode(shape, len(auto.tokens), model.num_layers)
        other = compute_factors(model, [text], method="hxp",
                                autodiff="reverse" if auto.autodiff == "forward" else "forward")[0]
        np.testing.assert_allclose(auto.factor, other.factor, rtol=1e-4, atol=1e-6 * np.abs(other.factor).max())


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method,steps", GRADIENT_SETTINGS)
def test_autocast_is_refused_or_exact(tiny_folders, device, dtype, method, steps):
    """Under ``torch.autocast`` a method either refuses, naming autocast, or returns float32's factors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(tiny_folders["bert"], device=device)
    plain = compute_factors(model, TEXTS[:2], method=method, steps=steps)
    with torch.autocast(device_type=device, dtype=dtype):
        try:
            cast = compute_factors(model, TEXTS[:2], method=method, steps=steps)
        except ValueError as exc:
            assert "autocast" in str(exc)
            return
    for a, b in zip(plain, cast, strict=True):
        np.testing.assert_allclose(b.factor, a.factor, rtol=1e-6, atol=1e-9)
