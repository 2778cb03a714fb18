"""The factor engine shared by all attribution methods.

Every method reduces to a per-sentence factor F (tokens x embedding dims) with
    F[t, k] = sum_n w_n * sum_i d[t, i] * d e_k(x_n) / d x[t, i]
for integration points x_n with weights w_n and a direction d (the input itself for BiLRP and H x P, the
input minus its reference for integrated Jacobians). A pair's token-token matrix is F_a @ F_b.T times a
scalar. Forward mode computes a whole row F[t, :] in one Jacobian-vector product, and ``vmap`` runs the rows
of many tokens together: its cost grows with the number of tokens. Reverse mode runs one vector-Jacobian product
per embedding dimension over a graph kept for all tokens, the dimensions' one-hot cotangents vectorised into one
backward pass (``is_grads_batched``) as far as the bound allows: its cost grows with the number of dimensions.
``autodiff="auto"`` takes, per batch, the mode whose estimated cost is lower: ``core.memory.plan_batch``
resolves it (``cheaper_mode``) before the factors are computed here.

How many rows one pass carries comes from ``core.memory.plan_batch`` (a ``max_memory`` bound); the factors
do not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import jvp, vmap

from core.memory import DEFAULT_MAX_ROWS

MODES = ("forward", "reverse")
#: On the CPU, reverse mode's chunk of cotangents is also kept to this many gradient elements (chunk x B*N x S x H):
#: larger chunks ran slower than one cotangent at a time once their tensors left the cache (bench/bench_lengths.py,
#: docs/engine-benchmarks.md: MiniLM at 128 tokens, all 384 dimensions in 4 chunks 0.90x the loop, chunks of 16
#: faster than it). A GPU takes as many as the memory bound allows.
CPU_CHUNK_ELEMENTS = 1 << 20


def check_no_autocast() -> None:
    """Refuse to run under ``torch.autocast``: it would compute the factors' products in half or bfloat16 behind
    the model's dtype (load the model in that dtype instead, which the factors then honour exactly)."""
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            raise ValueError(f"factors are not computed under torch.autocast ({device}, "
                             f"{torch.get_autocast_dtype(device)}): they would silently lose precision; run "
                             "outside autocast (or load the model in the dtype wanted)")


def _check_shapes(points: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor) -> None:
    if points.dim() != 4 or directions.shape != (points.shape[0], *points.shape[2:]):
        raise ValueError(f"points must be (B, N, S, H) and directions (B, S, H); got {tuple(points.shape)}, "
                         f"{tuple(directions.shape)}")
    if weights.shape != (points.shape[1],):
        raise ValueError(f"weights must have one entry per point, got {tuple(weights.shape)}")


@dataclass
class TokenFactors:
    """``factors`` (B, S, D): one row per token; ``outputs`` (B, D): the head's outputs at the points,
    weighted like the integrand (for a single point with weight 1, the sentence embeddings themselves)."""

    factors: torch.Tensor
    outputs: torch.Tensor


def token_factors(
    head_for: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
    points: torch.Tensor,
    directions: torch.Tensor,
    weights: torch.Tensor,
    autodiff: str = "forward",
    max_rows: int = DEFAULT_MAX_ROWS,
) -> TokenFactors:
    """Factors (B, S, D) of a padded batch, and the head's weighted outputs (B, D).

    ``head_for(n)`` returns the map from hidden states (B*n, S, H) (each sentence's n points consecutive) to
    sentence embeddings (B*n, D); ``points`` is (B, N, S, H), ``directions`` (B, S, H), ``weights`` (N,).
    ``max_rows`` bounds how many rows one pass carries (points x token tangents in forward mode; in reverse mode
    one point's B sequences per pass, each with up to ``max_rows // B`` cotangents), which bounds memory (see
    ``plan_batch``); results do not depend on it.
    ``autodiff`` is ``forward`` or ``reverse`` (``auto`` is resolved by ``core.memory.plan_batch``).
    """
    _check_shapes(points, directions, weights)
    check_no_autocast()
    if autodiff not in MODES:
        raise ValueError(f"autodiff must be forward or reverse here (plan_batch resolves auto), got {autodiff!r}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    batch, n_points, seq, _ = points.shape
    if autodiff == "forward":
        steps_per_chunk = max(1, min(n_points, max_rows // (batch * min(seq, max(1, max_rows // batch)))))
    else:  # one point per pass (its graph held once), the rows spent on cotangents
        steps_per_chunk = 1
    factors, outputs = None, None
    compute = _forward_factors if autodiff == "forward" else _reverse_factors
    for start in range(0, n_points, steps_per_chunk):
        stop = min(n_points, start + steps_per_chunk)
        chunk = points[:, start:stop].reshape(batch * (stop - start), *points.shape[2:])
        part_factors, part_outputs = compute(head_for(stop - start), chunk, directions, weights[start:stop], max_rows)
        factors = part_factors if factors is None else factors + part_factors
        outputs = part_outputs if outputs is None else outputs + part_outputs
    return TokenFactors(factors=factors, outputs=outputs)


def _weighted_outputs(out: torch.Tensor, batch: int, weights: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bnd,n->bd", out.reshape(batch, weights.shape[0], -1), weights.to(out.dtype))


def _forward_factors(head, x: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor, max_rows: int):
    """Token tangents in chunks of ``max_rows // (B*N)`` (at least one), each chunk's rows summed over the
    points at once, so that no (S, B*N, D) tensor is ever held."""
    batch, seq, _ = directions.shape
    n_points = weights.shape[0]
    d = directions.repeat_interleave(n_points, 0)
    w = weights.to(x.dtype)

    def tangent(onehot: torch.Tensor) -> torch.Tensor:
        return jvp(head, (x,), (d * onehot[None, :, None],))[1]

    tokens_per_pass = max(1, min(seq, max_rows // x.shape[0]))
    eye = torch.eye(seq, dtype=x.dtype, device=x.device)
    factors = None
    with torch.no_grad():
        outputs = head(x)
        for start in range(0, seq, tokens_per_pass):
            rows = vmap(tangent)(eye[start : start + tokens_per_pass])  # (s, B*N, D)
            part = torch.einsum("sbnd,n->bsd", rows.reshape(rows.shape[0], batch, n_points, -1), w)
            if factors is None:
                factors = torch.empty(batch, seq, part.shape[-1], dtype=part.dtype, device=part.device)
            factors[:, start : start + part.shape[1]] = part
    return factors, _weighted_outputs(outputs, batch, weights)


def _reverse_factors(head, x: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor, max_rows: int):
    """One backward pass per chunk of ``max_rows // (B*N)`` (at least one; on the CPU also at most
    ``CPU_CHUNK_ELEMENTS`` gradient elements) embedding dimensions: their one-hot
    cotangents run through the graph together (``is_grads_batched``, a vmapped VJP), so that no Python loop over
    the dimensions remains and no gradient larger than (chunk, B*N, S, H) is held."""
    batch, seq, _ = directions.shape
    n_points = weights.shape[0]
    weighted = (directions.repeat_interleave(n_points, 0)
                * weights.to(x.dtype).repeat(batch)[:, None, None]).reshape(batch, n_points, seq, -1)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = head(x)  # (B*N, D)
        dims = out.shape[1]
        per_pass = max_rows // x.shape[0]
        if x.device.type == "cpu":
            per_pass = min(per_pass, CPU_CHUNK_ELEMENTS // x.numel())
        per_pass = max(1, min(dims, per_pass))
        eye = torch.eye(dims, dtype=out.dtype, device=out.device)
        factors = torch.empty(batch, seq, dims, dtype=x.dtype, device=x.device)
        for start in range(0, dims, per_pass):
            stop = min(dims, start + per_pass)
            cotangents = eye[start:stop, None, :].expand(stop - start, out.shape[0], dims)
            (grads,) = torch.autograd.grad(out, x, grad_outputs=cotangents, retain_graph=stop < dims,
                                           is_grads_batched=True)  # (c, B*N, S, H)
            grads = grads.reshape(stop - start, batch, n_points, seq, -1)
            factors[:, :, start:stop] = torch.einsum("cbnsh,bnsh->bsc", grads, weighted)
    return factors.detach(), _weighted_outputs(out.detach(), batch, weights)
