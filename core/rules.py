"""LRP propagation rules for transformers, exact or loud (Ali et al. 2022; Achtibat et al. 2024; Vasileiou &
Eberle 2024).

Inside ``lrp_rules()`` a head wrapped by ``traced`` computes the same values, but every nonlinearity on the
path from its input (the explained hidden state) to its output is rewritten so that gradients, in forward or
reverse mode, become LRP relevances:
  - attention:      y = [softmax(q k^T)].detach() v, for eager attention and F.scaled_dot_product_attention
  - LayerNorm, RMSNorm, F.normalize and every hand-written norm (pow/mean/rsqrt, var/sqrt, ...):
                    the denominator is detached, y = x / [sigma(x)].detach() * w
  - activations:    y = f(0) + x * [(f(x) - f(0)) / x].detach() (the gate rule) for functional calls
                    (F.gelu, F.silu, torch.tanh, ...) and for whole activation modules (transformers.activations,
                    torch.nn), whatever they compute inside (gelu_new's tanh form, QuickGELU's sigmoid, ...)
  - products of two quantities that both depend on the input (gated MLPs act(g) * u, GLUs):
                    the uniform rule y = (a * [b].detach() + [a].detach() * b) / 2 (AttnLRP), which conserves
Every other operation that touches the input must be linear or structural (an allow-list: additions, scaling
by constants, matrix products with weights, reshapes, indexing, ...): its plain gradient times the input is the
LRP-0 rule. Anything else (exp, sin, a division by the input, a new activation written by hand) raises
``UncoveredOperationError`` naming the operation and the module, instead of returning plain gradients under
BiLRP's name.

How it knows what depends on the input: ``traced`` tags the head's input, and the torch-function mode tags
each result computed from a tagged tensor, as LINEAR (a linear function of the input, carrying relevance) or
STATISTIC (a nonlinear function of it, computed from detached values, which may only scale or divide the
signal, as a norm's denominator does). Tensors that do not depend on the input (weights, masks, positions,
rotary tables) pass through untouched, so only the explained part of the network is checked.
The detached quantities are computed from detached inputs, so neither forward nor reverse mode spends work on
derivatives it throws away. Leaving the context (also through an exception) restores normal behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as nn_module
from torch.overrides import TorchFunctionMode

LINEAR, STATISTIC = "linear", "statistic"
_KIND, _ORIGIN = "_simlens_kind", "_simlens_origin"


class UncoveredOperationError(RuntimeError):
    """A nonlinear operation on the explained hidden state that no LRP rule covers."""


def _names(*groups: str) -> frozenset[str]:
    return frozenset(name for group in groups for name in group.split())


#: Linear or structural in the input: their plain gradient is the LRP-0 rule. Max/min and abs are piecewise
#: linear and positively homogeneous, so gradient x input reproduces them exactly (winner takes all).
_LINEAR = _names(
    "add __add__ __radd__ __iadd__ add_ sub __sub__ __rsub__ __isub__ sub_ rsub neg __neg__ negative neg_",
    "mul __mul__ __rmul__ __imul__ mul_ multiply div __truediv__ __itruediv__ div_ true_divide divide",
    "matmul __matmul__ __rmatmul__ mm bmm einsum linear addmm baddbmm addbmm conv1d conv2d",
    "sum mean nansum cumsum",
    "view view_as reshape reshape_as permute transpose transpose_ t T mT contiguous expand expand_as repeat",
    "repeat_interleave tile unsqueeze unsqueeze_ squeeze squeeze_ flatten unflatten split split_with_sizes",
    "tensor_split chunk unbind narrow select __getitem__ __setitem__ index_select gather take_along_dim",
    "masked_fill masked_fill_ where cat concat concatenate stack pad roll flip clone to type type_as float",
    "double half bfloat16 cpu cuda movedim moveaxis swapaxes swapdims diagonal tril triu copy_ index_put_",
    "dropout dropout_ alpha_dropout feature_alpha_dropout dropout1d dropout2d requires_grad_ retain_grad",
    "max amax min amin abs relu",
)
#: Results that do not depend on the values of their inputs (or cut the dependence on purpose).
_INDEPENDENT = _names(
    "detach detach_ data zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros",
    "new_ones new_empty new_full new_tensor zero_ fill_",
)
#: Nonlinear functions of the input that build a norm's denominator: computed from detached values.
_STATISTICS = _names("pow __pow__ float_power square sqrt rsqrt reciprocal var std var_mean std_mean norm",
                     "vector_norm linalg_vector_norm")
_ASSIGNMENTS = _names("__setitem__ __iadd__ __isub__ __imul__ __itruediv__")
_SCALING = _names("mul __mul__ __rmul__ __imul__ mul_ multiply")
_DIVISION = _names("div __truediv__ __itruediv__ div_ true_divide divide")
_PRODUCTS = _names("mul __mul__ __rmul__ multiply matmul __matmul__ __rmatmul__ mm bmm einsum linear addmm",
                   "baddbmm addbmm")
#: Leaving the tensor world: relevance cannot follow a Python number.
_DENIED = _names("item tolist numpy __float__ __int__")
_ACTIVATION_FUNCTIONS = _names(
    "gelu silu tanh sigmoid elu selu celu leaky_relu mish softplus hardswish hardsigmoid hardtanh relu6",
    "softsign tanhshrink logsigmoid",
)
_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.LogSigmoid, nn.PReLU,
    nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU, nn.Sigmoid, nn.SiLU, nn.Mish, nn.Softplus,
    nn.Softshrink, nn.Softsign, nn.Tanh, nn.Tanhshrink, nn.Threshold,
)


def _transformers_activations() -> tuple[type[nn.Module], ...]:
    """Every activation module class of ``transformers.activations`` (all elementwise)."""
    try:
        from transformers import activations
    except ImportError:
        return ()
    found = [getattr(activations, name) for name in dir(activations)]
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == activations.__name__)


def _kind(value: Any) -> str | None:
    return getattr(value, _KIND, None) if isinstance(value, torch.Tensor) else None


def _mark(value: Any, kind: str, origin: str | None = None) -> Any:
    """Tag every floating tensor in ``value`` (a tensor or a tuple/list of them) with ``kind``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            setattr(value, _KIND, kind)
            setattr(value, _ORIGIN, origin)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _mark(item, kind, origin)
    return value


def _leaves(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    out = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, (tuple, list)):
            out.extend(v for v in value if isinstance(v, torch.Tensor))
    return out


def _map(args: tuple, kwargs: dict, fn: Callable[[torch.Tensor], Any]) -> tuple[tuple, dict]:
    """``args``/``kwargs`` with ``fn`` applied to every tensor (also inside lists and tuples)."""

    def one(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return fn(value)
        if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
            return type(value)(fn(v) if isinstance(v, torch.Tensor) else v for v in value)
        return value

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _detached(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return _map(args, kwargs, lambda t: t.detach() if _kind(t) else t)


def _has_floats(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() or value.is_complex()
    if isinstance(value, (tuple, list)):
        return any(_has_floats(v) for v in value)
    return False


def _op_name(func: Callable) -> str:
    name = getattr(func, "__name__", repr(func))
    if name == "__get__":  # a tensor attribute such as .T or .data
        return getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _qualified(func: Callable) -> str:
    """A readable name of a torch function: torch.Tensor.pow, torch.nn.functional.gelu, torch.exp."""
    name = _op_name(func)
    if getattr(func, "__objclass__", None) in (torch.Tensor, torch._C.TensorBase) or (
            getattr(func, "__qualname__", "").startswith(("Tensor.", "TensorBase.")) or name != getattr(func, "__name__", name)):
        return f"torch.Tensor.{name}"
    if getattr(torch.nn.functional, name, None) is func:
        return f"torch.nn.functional.{name}"
    if getattr(torch, name, None) is func:
        return f"torch.{name}"
    return f"{getattr(func, '__module__', None) or 'torch'}.{name}"


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


# --- the rules ------------------------------------------------------------------------------------------------

def _layer_norm_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    x, shape = args[0], _arg(args, kwargs, 1, "normalized_shape")
    weight, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = _arg(args, kwargs, 4, "eps", 1e-5)
    dims = tuple(range(-len(shape), 0))
    scale = torch.rsqrt(x.detach().var(dims, unbiased=False, keepdim=True) + eps)  # detached: values only
    scale = scale * weight if weight is not None else scale  # one multiplier of the signal (fewer tangent ops)
    y = (x - x.mean(dims, keepdim=True)) * scale
    return y + bias if bias is not None else y


def _rms_norm_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    x, shape = args[0], _arg(args, kwargs, 1, "normalized_shape")
    weight, eps = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "eps")
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    dims = tuple(range(-len(shape), 0))
    y = x * torch.rsqrt(x.detach().pow(2).mean(dims, keepdim=True) + eps)
    return y * weight if weight is not None else y


def _normalize_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0]
    p, dim, eps = _arg(args, kwargs, 1, "p", 2.0), _arg(args, kwargs, 2, "dim", 1), _arg(args, kwargs, 3, "eps", 1e-12)
    return x / x.detach().norm(p, dim, keepdim=True).clamp_min(eps)


def _softmax_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    detached_args, detached_kwargs = _detached(args, kwargs)
    return func(*detached_args, **detached_kwargs)


def _sdpa_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    """Scaled dot-product attention as the math backend computes it, with the probabilities detached."""
    q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    mask, dropout = _arg(args, kwargs, 3, "attn_mask"), _arg(args, kwargs, 4, "dropout_p", 0.0)
    causal, scale = _arg(args, kwargs, 5, "is_causal", False), _arg(args, kwargs, 6, "scale")
    if dropout:
        raise UncoveredOperationError("scaled_dot_product_attention with dropout: explain a model in eval mode")
    q, k = q.detach(), k.detach()
    if _arg(args, kwargs, 7, "enable_gqa", False) and k.shape[-3] != q.shape[-3]:
        groups = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(groups, -3), v.repeat_interleave(groups, -3)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1)
    probs = probs.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)  # fully masked rows, as torch does
    # einsum rather than @: under vmap (forward mode's token tangents) the tangents fold into one product with
    # the shared probabilities instead of copying them once per tangent
    return torch.einsum("...qk,...kd->...qd", probs.to(v.dtype), v)


def _gate(func: Callable[..., torch.Tensor], x: torch.Tensor, *rest: Any, value: torch.Tensor | None = None,
          **kwargs: Any) -> torch.Tensor:
    """f(x) as f(0) + x * [(f(x) - f(0)) / x].detach() (f'(0) where x is 0), the gate computed from values only;
    ``value`` is f(x) when it is already known."""
    primal = x.detach()
    probe = torch.tensor([0.0, -1e-4, 1e-4], dtype=primal.dtype, device=primal.device)
    at_zero, below, above = func(probe, *rest, **kwargs).unbind()
    value = func(primal, *rest, **kwargs) if value is None else value.detach()
    zero = primal == 0
    gate = torch.where(zero, (above - below) / 2e-4, (value - at_zero) / torch.where(zero, 1.0, primal))
    return at_zero + x * gate


def _activation_rule(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    return _gate(func, *args, **kwargs)


def _uniform_product(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    """func multilinear in its n input-dependent operands: the mean of the n terms in which one of them keeps
    its derivative and the others are detached (AttnLRP's uniform rule; the value is unchanged)."""
    dependent = [t for t in _leaves(args, kwargs) if _kind(t) == LINEAR]
    total = None
    for keep in dependent:
        part_args, part_kwargs = _map(args, kwargs, lambda t, keep=keep: t if t is keep or _kind(t) != LINEAR else t.detach())
        part = func(*part_args, **part_kwargs)
        total = part if total is None else total + part
    return total / len(dependent)


_RULES: dict[str, Callable[[Callable, tuple, dict], torch.Tensor]] = {
    "layer_norm": _layer_norm_rule, "rms_norm": _rms_norm_rule, "normalize": _normalize_rule,
    "softmax": _softmax_rule, "scaled_dot_product_attention": _sdpa_rule,
    **dict.fromkeys(_ACTIVATION_FUNCTIONS, _activation_rule),
}
_UNMARKED_RULES = frozenset({"softmax"})  # their result carries no relevance


# --- the mode -------------------------------------------------------------------------------------------------

#: torch function -> its name (``_op_name``), resolved once per function rather than once per call
_NAMES: dict[Callable, str] = {}


def _name_of(func: Callable) -> str:
    try:
        return _NAMES[func]
    except KeyError:
        name = _NAMES[func] = _op_name(func)
        return name
    except TypeError:  # an unhashable callable: resolved every time
        return _op_name(func)


class _LRPMode(TorchFunctionMode):
    def __init__(self, names: dict[nn.Module, str]):
        super().__init__()
        self.names = names
        self.modules: list[nn.Module] = []  # the module call stack, for error messages
        self.depth = 0  # > 0 while a traced head runs
        self.activations = _ACTIVATION_MODULES + _transformers_activations()

    def where(self) -> str:
        if not self.modules:
            return "the head (outside any module)"
        module = self.modules[-1]
        name = self.names.get(module)
        return f"module {name or '<unnamed>'} ({type(module).__name__})"

    def uncovered(self, func: Callable, detail: str) -> UncoveredOperationError:
        return UncoveredOperationError(
            f"no LRP rule covers {_qualified(func)} in {self.where()}: {detail}. Without a rule BiLRP would "
            f"silently return plain gradients there; add a rule to core/rules.py (or explain with hxp/ij)"
        )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.depth:
            return func(*args, **kwargs)
        leaves = _leaves(args, kwargs)
        kinds = [getattr(t, _KIND, None) for t in leaves]
        if not any(kinds):
            return func(*args, **kwargs)
        name = _name_of(func)
        if name in _INDEPENDENT:
            out = func(*args, **kwargs)
            if name in ("zero_", "fill_", "detach_"):
                setattr(args[0], _KIND, None)
            return out
        if name in _DENIED:
            raise self.uncovered(func, "it turns the hidden state into Python numbers, which relevance cannot follow")
        statistic = next((t for t, kind in zip(leaves, kinds, strict=True) if kind == STATISTIC), None)
        origin = getattr(statistic, _ORIGIN, None)
        linear = kinds.count(LINEAR)
        if not linear:  # a function of statistics only: still a statistic, carrying no derivatives
            return self._in_place(name, args, _mark(func(*args, **kwargs), STATISTIC, origin))
        if statistic is not None:
            return self._scaled(func, name, args, kwargs, origin)
        if name in _RULES:
            out = _RULES[name](func, args, kwargs)
            return out if name in _UNMARKED_RULES else _mark(out, LINEAR)
        if name in _PRODUCTS and linear > 1:
            return _mark(_uniform_product(func, args, kwargs), LINEAR)
        if name in _DIVISION and _kind(_arg(args, kwargs, 1, "other")) == LINEAR:
            raise self.uncovered(func, "it divides by the hidden state")
        if name in _STATISTICS:
            detached_args, detached_kwargs = _detached(args, kwargs)
            return _mark(func(*detached_args, **detached_kwargs), STATISTIC, f"{_qualified(func)} in {self.where()}")
        if name == "__iter__":  # iterating over a tensor: its slices depend on the input like the tensor
            return iter(_mark(tuple(func(*args, **kwargs)), LINEAR))
        if name in _LINEAR:
            if name in ("mul_", "__imul__") and linear > 1:
                raise self.uncovered(func, "an in-place product of two input-dependent factors")
            return self._in_place(name, args, _mark(func(*args, **kwargs), LINEAR))
        out = func(*args, **kwargs)
        if _has_floats(out):
            raise self.uncovered(func, "it is not on the allow-list of linear and structural operations")
        return out  # comparisons, shapes, indices: no values flow on

    def _in_place(self, name: str, args: tuple, out: Any) -> Any:
        """In-place operations and item assignment tag the tensor they modify."""
        if args and isinstance(args[0], torch.Tensor) and (name in _ASSIGNMENTS
                                                           or (name.endswith("_") and not name.startswith("__"))):
            kinds = {_kind(t) for t in _leaves(args, {})} - {None}
            kind = LINEAR if LINEAR in kinds else STATISTIC
            if args[0].is_floating_point():
                setattr(args[0], _KIND, kind)
        return out

    def _scaled(self, func: Callable, name: str, args: tuple, kwargs: dict, origin: str | None) -> Any:
        """The signal times or divided by statistics of the input (a norm): LINEAR, with the statistics detached."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        divisor_ok = name in _DIVISION and _kind(args[0]) == LINEAR and len(tensors) == 2
        if name in _SCALING or divisor_ok:
            linear_factors = sum(_kind(t) == LINEAR for t in tensors)
            if linear_factors == 1:
                return self._in_place(name, args, _mark(func(*args, **kwargs), LINEAR))
        raise self.uncovered(func, f"it combines the hidden state with {origin}, a nonlinear function of it, other "
                                   f"than as a multiplier or divisor")

    def module_pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        self.modules.append(module)
        if self.depth and isinstance(module, self.activations) and args and _kind(args[0]) == LINEAR:
            module._simlens_input = args[0]
            return (args[0].detach(), *args[1:])  # the activation runs on values only; the hook gates the signal
        return None

    def module_hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if self.modules and self.modules[-1] is module:
            self.modules.pop()
        x = module.__dict__.pop("_simlens_input", None)
        if x is None or not isinstance(output, torch.Tensor):
            return None
        return _gate(module.forward, x, value=output)


@contextmanager
def lrp_rules(model: nn.Module | None = None) -> Iterator[None]:
    """Apply the LRP rules to every head wrapped by ``traced`` inside the block; ``model`` names modules in
    errors."""
    names = {module: name or type(module).__name__ for name, module in (model.named_modules() if model else [])}
    mode = _LRPMode(names)
    handles = [nn_module.register_module_forward_pre_hook(mode.module_pre_hook),
               nn_module.register_module_forward_hook(mode.module_hook, always_call=True)]
    _ACTIVE.append(mode)
    try:
        with mode:
            yield
    finally:
        _ACTIVE.remove(mode)
        for handle in handles:
            handle.remove()


_ACTIVE: list[_LRPMode] = []


def traced(head: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``head`` (hidden state -> sentence embedding) whose input, under ``lrp_rules()``, is the explained
    quantity: every operation computed from it is ruled, allowed as linear, or an error. Outside the rules it
    is ``head`` itself."""

    def run(hidden: torch.Tensor) -> torch.Tensor:
        if not _ACTIVE:
            return head(hidden)
        mode = _ACTIVE[-1]
        _mark(hidden, LINEAR)
        mode.depth += 1
        try:
            out = head(hidden)
        finally:
            mode.depth -= 1
        if _kind(out) == STATISTIC:
            raise UncoveredOperationError(
                f"the sentence embedding is {getattr(out, _ORIGIN, 'a statistic')}, a nonlinear function of the hidden "
                f"state that no LRP rule covers"
            )
        if _kind(out) != LINEAR:
            raise UncoveredOperationError(
                "the sentence embedding lost its dependence on the hidden state inside the LRP rules (an operation "
                "outside torch cut it); BiLRP would return zero relevance"
            )
        return out

    return run


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
