"""LRP propagation rules for transformers as a context manager (Ali et al. 2022; Vasileiou & Eberle 2024).

Inside ``lrp_rules()`` the forward pass computes the same values, but attention probabilities, the LayerNorm
denominator and the GeLU gate are detached, so gradients (reverse or forward mode) become LRP relevances:
  - attention head: y = sum_i h_i [p_ij].detach()
  - LayerNorm:      y = (h - E[h]) / [sqrt(eps + Var[h])].detach() * w + b
  - GeLU:           y = x * [gelu(x) / x].detach()
Every other layer keeps its plain gradient, which times the input is the LRP-0 rule.
The rewrite works on ``torch.nn.functional`` calls, so it is architecture-agnostic and cannot leak: leaving the
context (also through an exception) restores normal behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
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
    var = centred.pow(2).mean(dims, keepdim=True)
    y = centred / torch.sqrt(var + eps).detach()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _gelu_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0]
    y = func(*args, **kwargs)
    safe_x = torch.where(x == 0, torch.ones_like(x), x)
    gate = torch.where(x == 0, torch.full_like(x, 0.5), y / safe_x)
    return x * gate.detach()


class _LRPMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAX:
            return func(*args, **kwargs).detach()
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
