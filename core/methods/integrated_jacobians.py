"""Integrated Jacobians (Möller et al. 2023): exact pair attributions of the shifted dot-product score
(e(a) - e(r_a)) . (e(b) - e(r_b)), with r a reference of padding tokens of the same length (special tokens
kept), integrated along the straight path from the reference's hidden state to the input's."""

from __future__ import annotations

import torch

from core.factors import token_factors
from core.methods.base import AttributionMethod, FactorBatch, ReferenceRecipe, register
from core.models import SimilarityModel, TokenBatch
from core.quadrature import DEFAULT_QUADRATURE, quadrature


@register
class IntegratedJacobians(AttributionMethod):
    name = "ij"
    summary = "Integrated Jacobians: exact attributions of the shifted dot product, N integration steps"
    reference = ReferenceRecipe("gradient", path="reference", normalize=True)
    uses_steps = True
    default_steps = 64

    def factors(self, model: SimilarityModel, batch: TokenBatch, layer: int, steps, quadrature_rule, autodiff,
                max_rows):
        states = model.encode_states(batch, layer)
        hidden = states.hidden
        reference_states = model.encode_states(model.reference_batch(batch), layer)
        reference = reference_states.hidden
        _check_reference(model, batch, states.pooled, reference_states.pooled)
        alphas, weights = quadrature(quadrature_rule or DEFAULT_QUADRATURE, steps)
        alphas = torch.as_tensor(alphas, dtype=hidden.dtype, device=hidden.device)
        direction = hidden - reference
        points = reference[:, None] + alphas[None, :, None, None] * direction[:, None]
        result = token_factors(
            lambda n: model.head(batch.repeat(n), layer, normalize=True), points, direction,
            torch.as_tensor(weights, dtype=hidden.dtype, device=hidden.device), autodiff=autodiff, max_rows=max_rows,
        )
        bad = torch.nonzero(~torch.isfinite(result.factors).all(dim=(1, 2))).flatten().tolist()
        if bad:
            raise ValueError(f"integrated Jacobians of {batch.texts[bad[0]]!r} with {model.display_name} are not "
                             f"finite: the path from its reference passes through a point where the model's function "
                             f"has no finite derivative (a zero embedding that the model normalises, or an overflow "
                             f"in half precision); explain it with another method (bilrp, hxp)")
        targets = model.normalized(states.pooled) - model.normalized(reference_states.pooled)
        return FactorBatch(factors=result.factors, targets=targets, scales=torch.ones_like(targets[:, 0]),
                           pooled=states.pooled)


def _check_reference(model: SimilarityModel, batch: TokenBatch, pooled: torch.Tensor, reference: torch.Tensor) -> None:
    """Refuse a reference whose pooled embedding (B, D) is zero (within rounding of the input's) when the model
    normalises: its normalised embedding is 0/0 and the normalised path jumps there, so no quadrature can
    integrate it and the explained score would be NaN or wrong."""
    if not model.normalize:
        return
    tolerance = torch.finfo(pooled.dtype).eps * pooled.norm(dim=-1)
    zero = torch.nonzero(reference.norm(dim=-1) <= tolerance).flatten().tolist()
    if zero:
        raise ValueError(
            f"integrated Jacobians cannot explain {batch.texts[zero[0]]!r} with {model.display_name}: its reference (every "
            f"token replaced by the padding token {model.tokenizer.pad_token!r}) has a zero sentence embedding (as "
            f"when the padding token's embedding row is zero, e.g. in Llama, Qwen2, Qwen3 and Mistral checkpoints), "
            f"and the model normalises embeddings: the reference's normalised embedding is 0/0 and the path from it "
            f"jumps, so no integration is exact. Explain it with another method (bilrp, hxp), or with a model whose "
            f"padding embedding is not zero: the integrated-Jacobians reference is always the padding sequence")
