"""The memory plan that bounds the factor engine (``core.factors``), and the choice of its autodiff mode.

Memory: one *row* is one sequence carried through the layers above the attributed one: a point with one token
tangent in forward mode, a point's sequence with one cotangent (one embedding dimension) in a reverse-mode backward
pass, whose graph (``graph_bytes``) each sentence holds once per pass. ``plan_batch`` turns a ``max_memory``
bound into rows per pass from a per-row estimate (``row_bytes``) and into sentences per batch from a
per-sentence estimate (``sentence_bytes``, plus the graph in reverse mode); ``token_factors`` never carries more
rows at once. The estimates are
upper bounds calibrated on MiniLM and MPNet with peak RSS (``bench/bench_memory.py``; ``tests/test_memory.py``
checks the bound in a subprocess).

Time: forward mode costs one Jacobian-vector product per token and sequence, reverse mode one vector-Jacobian
product per embedding dimension (all of them, or as many as the bound allows, vectorised into one backward pass);
``mode_seconds`` estimates both from the work each pass does (dense layers grow with
the tokens, attention with their square, and every backward pass has a fixed cost per layer), with rates fitted
by ``bench/bench_modes.py``, and ``cheaper_mode`` takes the smaller.
This module imports no torch, so that the command line can parse sizes cheaply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

AUTODIFF_MODES = ("auto", "forward", "reverse")
#: Working memory one batch of factors may take beyond the loaded model: 1 GiB keeps a whole explanation
#: (Python, torch, the model and this) under about 2 GB for any input MiniLM or MPNet accept.
DEFAULT_MAX_MEMORY = 1 << 30
#: The least ``max_memory`` accepted: below it no realistic model fits even one row.
MIN_MEMORY = 64 << 20
#: Held back from every bound for what does not scale with rows or sentences (kernels' scratch space, the
#: allocator's slack at a new sequence length).
FIXED_BYTES = 32 << 20
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_MEMORY = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")

# Per-row live tensors, in units of (sequence x width) elements, fitted to peak RSS (see the module docstring):
# forward mode keeps one layer's tangents alive at a time; reverse mode keeps every layer's saved tensors.
_FORWARD_PER_LAYER = {"hidden": 12.0, "intermediate": 4.0, "scores": 8.0}
_REVERSE_PER_LAYER = {"hidden": 12.0, "intermediate": 4.0, "scores": 4.0}
#: CPU seconds per unit of work (one thread), fitted by least squares on this CPU to ``bench/bench_modes.py``
#: runs of MiniLM (8-512 tokens) and random BERTs 128 and 256 wide (2 layers), and checked on one 768 wide
#: (README "Forward vs reverse mode against length"). Units, per layer: ``DENSE``, one token through one
#: multiply-add of the layer's dense weights (4 h^2 + 2 h i of them: attention projections and MLP);
#: ``ATTENTION``, one (query, key) pair times one hidden unit (the score and mixing products, the softmax);
#: ``PASS``, one pass's fixed cost (its operations' dispatch, whatever the sizes): forward mode vectorises all
#: its token tangents into one pass, reverse mode runs one backward pass per embedding dimension.
FORWARD_PASS_S = 0.016
FORWARD_DENSE_S = 2.9e-11
FORWARD_ATTENTION_S = 6.3e-10
REVERSE_DENSE_S = 3.1e-11
REVERSE_ATTENTION_S = 9.1e-11
REVERSE_PASS_S = 9.6e-4
#: Sequences per forward pass when no plan says otherwise (a cap that callers such as Ray workers halve on a
#: GPU's out-of-memory error).
DEFAULT_MAX_ROWS = 2048


def parse_memory(value: int | float | str) -> int:
    """Bytes from an integer or a size such as ``"2GB"``, ``"1.5 GiB"``, ``"800MB"`` (K/M/G/T = 1000^n,
    KiB/MiB/GiB/TiB = 1024^n); at least ``MIN_MEMORY``."""
    if isinstance(value, bool):
        raise ValueError(f"max_memory must be a number of bytes or a size like '2GB', got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str) and (match := _MEMORY.fullmatch(value)) and match.group(2).lower() in _UNITS:
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"max_memory must be a number of bytes or a size like '2GB' or '512MiB', got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"max_memory must be finite, got {value!r}")
    size = int(number * _UNITS[unit])
    if size < MIN_MEMORY:
        raise ValueError(f"max_memory must be at least {MIN_MEMORY >> 20} MiB, got {value!r}")
    return size


def format_memory(size: int) -> str:
    """``1.0 GiB``, ``512 MiB``."""
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.0f} MiB"


@dataclass(frozen=True)
class EncoderShape:
    """The sizes the memory and cost estimates need: widths of the hidden state, the MLP and the output, the
    number of attention heads, and bytes per element."""

    hidden: int
    intermediate: int
    heads: int
    dims: int
    element_bytes: int = 4

    @classmethod
    def of(cls, config, dims: int | None = None, dtype=None) -> EncoderShape:
        """From a Hugging Face config (``hidden_size`` and ``num_attention_heads`` resolve through each
        config's attribute map; the MLP width is ``intermediate_size``, ``d_ff``, ``hidden_dim`` or
        ``n_inner``, else 4 x hidden); ``dtype``: the weights' torch dtype (default float32)."""
        hidden = int(config.hidden_size)
        intermediate = next((int(v) for name in ("intermediate_size", "d_ff", "hidden_dim", "n_inner")
                             if isinstance(v := getattr(config, name, None), int) and v > 0), 4 * hidden)
        heads = int(getattr(config, "num_attention_heads", 0) or 1)
        return cls(hidden, intermediate, heads, int(dims or hidden), 4 if dtype is None else dtype.itemsize)


def _layer_elements(shape: EncoderShape, seq: int, mode: str) -> float:
    per = _FORWARD_PER_LAYER if mode == "forward" else _REVERSE_PER_LAYER
    return (per["hidden"] * seq * shape.hidden + per["intermediate"] * seq * shape.intermediate
            + per["scores"] * shape.heads * seq * seq)


def row_bytes(shape: EncoderShape, seq: int, mode: str) -> int:
    """Estimated peak bytes of one row: in forward mode one sequence of ``seq`` tokens with one token tangent
    (one layer's tangents live at a time); in reverse mode one cotangent of one sequence in a backward pass (one
    layer's gradients live at a time; the graph it runs through is ``graph_bytes``, held per sentence)."""
    return int(_layer_elements(shape, seq, mode) * shape.element_bytes)


def graph_bytes(shape: EncoderShape, seq: int, layers: int) -> int:
    """Estimated bytes of the reverse-mode graph of one sequence through ``layers`` layers (every layer's saved
    tensors), which all of a backward pass's cotangents share."""
    return int(_layer_elements(shape, seq, "reverse") * max(layers, 1) * shape.element_bytes)


def sentence_bytes(shape: EncoderShape, seq: int, n_points: int) -> int:
    """Estimated bytes one sentence holds for its whole batch: its integration points (N x S x hidden), hidden
    states, directions and references, and its factor being accumulated (S x dims, twice)."""
    return int((n_points * seq * shape.hidden + 6 * seq * shape.hidden + 3 * seq * shape.dims)
               * shape.element_bytes)


def mode_seconds(shape: EncoderShape, seq: int, layers: int, rows: int = 1) -> dict[str, float]:
    """Estimated seconds of the factors of ``rows`` sequences (sentences x integration points) of ``seq`` tokens
    through ``layers`` layers, per mode. Forward mode: one Jacobian-vector product per token and row, each a
    pass over all ``seq`` tokens (dense work ~ seq, attention ~ seq^2), all in one vectorised pass with its
    fixed cost. Reverse mode: one backward pass per embedding dimension over all rows at once: the same two
    terms per row, plus a fixed cost per pass."""
    dense = seq * (4 * shape.hidden**2 + 2 * shape.hidden * shape.intermediate)
    attention = seq * seq * shape.hidden
    layers = max(layers, 1)
    forward = layers * (FORWARD_PASS_S + rows * seq * (FORWARD_DENSE_S * dense + FORWARD_ATTENTION_S * attention))
    reverse = shape.dims * layers * (REVERSE_PASS_S + rows * (REVERSE_DENSE_S * dense + REVERSE_ATTENTION_S * attention))
    return {"forward": forward, "reverse": reverse}


def cheaper_mode(shape: EncoderShape, seq: int, layers: int, rows: int = 1) -> str:
    """The mode ``mode_seconds`` estimates faster (``forward`` on a tie)."""
    seconds = mode_seconds(shape, seq, layers, rows)
    return "forward" if seconds["forward"] <= seconds["reverse"] else "reverse"


@dataclass(frozen=True)
class BatchPlan:
    """How to run one batch within a memory bound: the autodiff ``mode``, ``max_rows`` rows per pass (points x
    token tangents in forward mode, sentences x cotangents in reverse mode), at most ``max_sentences`` sentences per batch, and the ``estimate`` of
    its peak bytes."""

    mode: str
    max_rows: int
    max_sentences: int
    estimate: int


def plan_batch(shape: EncoderShape, seq: int, layers: int, n_points: int, autodiff: str = "auto",
               max_memory: int = DEFAULT_MAX_MEMORY) -> BatchPlan:
    """Rows per pass and sentences per batch for sentences of up to ``seq`` tokens, attributed ``layers``
    below the output with ``n_points`` integration points, so that the estimate stays under ``max_memory``.
    ``auto`` takes the cheaper mode (``cheaper_mode``, for one sentence's ``n_points`` rows), or the other one
    when only that fits (forward mode keeps one layer's
    tensors, reverse mode every layer's). Raises ValueError when not even one row of one sentence fits."""
    if autodiff not in AUTODIFF_MODES:
        raise ValueError(f"autodiff must be one of {', '.join(AUTODIFF_MODES)}, got {autodiff!r}")
    mode = cheaper_mode(shape, seq, layers, n_points) if autodiff == "auto" else autodiff
    max_memory -= FIXED_BYTES

    def per_sentence(mode: str) -> int:  # reverse mode: each sentence also holds one point's graph per pass
        return sentence_bytes(shape, seq, n_points) + (graph_bytes(shape, seq, layers) if mode == "reverse" else 0)

    def fits(mode: str) -> bool:
        return row_bytes(shape, seq, mode) + per_sentence(mode) <= max_memory

    other = "forward" if mode == "reverse" else "reverse"
    if autodiff == "auto" and not fits(mode) and fits(other):
        mode = other
    per_row, sentence = row_bytes(shape, seq, mode), per_sentence(mode)
    if not fits(mode):
        raise ValueError(
            f"max_memory={format_memory(max_memory + FIXED_BYTES)} is too small for one sequence of {seq} tokens in "
            f"{mode} mode (about {format_memory(FIXED_BYTES + per_row + sentence)} needed): raise max_memory or "
            "shorten the text")
    # sentences take at most half the bound; rows get what is left
    max_sentences = max(1, min(max_memory // 2, max_memory - per_row) // sentence)
    max_rows = max(1, (max_memory - sentence * max_sentences) // per_row)
    max_sentences = min(max_sentences, max_rows)  # every sentence needs at least one row per pass
    estimate = FIXED_BYTES + sentence * max_sentences + per_row * max_rows
    return BatchPlan(mode=mode, max_rows=int(max_rows), max_sentences=int(max_sentences), estimate=int(estimate))
