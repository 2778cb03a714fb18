"""LRP propagation rules for transformers as a context manager (Ali et al. 2022; Vasileiou & Eberle 2024).

Inside ``lrp_rules()`` the forward pass computes the same values, but attention probabilities, the LayerNorm
denominator and the GeLU gate are detached, so gradients (reverse or forward mode) become LRP relevances:
  - attention head: y = sum_i h_i [p_ij].detach()
  - LayerNorm:      y = (h - E[h]) / [sqrt(eps + Var[h])].detach() * w + b
  - GeLU:           y = x * [gelu(x) / x].detach()
Every other layer keeps its plain gradient, which times the input is the LRP-0 rule. The detached quantities are
computed from detached inputs, so neither forward nor reverse mode spends work on derivatives it throws away.
The rewrite works on ``torch.nn.functional`` calls, so it is architecture-agnostic and cannot leak: leaving the
context (also through an exception) restores normal behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax}


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _layer_norm_rule(args: tuple, kwargs: dict) -> torch.Tensor:
    x, shape = args[0], _arg(args, kwargs, 1, "normalized_shape")
    weight, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = _arg(args, kwargs, 4, "eps", 1e-5)
    dims = tuple(range(-len(shape), 0))
    centred = x - x.mean(dims, keepdim=True)
    var = x.detach().var(dims, unbiased=False, keepdim=True)
    y = centred / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _gelu_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0]
    primal = x.detach()  # the gate is computed from values only: no wasted tangents or gradients
    zero = primal == 0
    gate = torch.where(zero, 0.5, func(primal, *args[1:], **kwargs) / torch.where(zero, 1.0, primal))
    return x * gate


class _LRPMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAX:
            return func(args[0].detach(), *args[1:], **kwargs)
        if func is F.layer_norm:
            return _layer_norm_rule(args, kwargs)
        if func is F.gelu:
            return _gelu_rule(func, args, kwargs)
        return func(*args, **kwargs)


@contextmanager
def lrp_rules() -> Iterator[None]:
    """Apply the attention-head, LayerNorm and GeLU LRP rules to every torch call inside the block."""
    with _LRPMode():
        yield


@contextmanager
def detached_inputs(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, ``modules`` see their inputs detached (no derivatives flow through them)."""

    def detach(_module: nn.Module, args: tuple) -> tuple:
        return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)

    handles = [module.register_forward_pre_hook(detach) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
