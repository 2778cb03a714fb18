"""BiLRP (Vasileiou & Eberle 2024) and Hessian x Product: relevance of each input token to each embedding
dimension, R_k[t] = sum_i x[t, i] * dE_k/dx[t, i], with LRP rules (BiLRP) or plain gradients (H x P)."""

from __future__ import annotations

import contextlib

import torch

from core.factors import token_factors
from core.methods.base import AttributionMethod, FactorBatch, ReferenceRecipe, cosine_scales, register
from core.models import SimilarityModel, TokenBatch
from core.rules import detached_inputs, lrp_rules


class _GradientTimesInput(AttributionMethod):
    use_lrp_rules = False

    def factors(self, model: SimilarityModel, batch: TokenBatch, layer: int, steps, quadrature, autodiff, max_rows):
        hidden = model.hidden_states(batch, layer)
        rules = contextlib.ExitStack()
        if self.use_lrp_rules:
            rules.enter_context(lrp_rules(model.encoder))
            rules.enter_context(detached_inputs(model.architecture.all_score_projections(model.encoder)))
        with rules:
            result = token_factors(
                lambda n: model.head(batch.repeat(n), layer, normalize=False), hidden[:, None], hidden,
                torch.ones(1, dtype=hidden.dtype, device=hidden.device), autodiff=autodiff, max_rows=max_rows,
            )
        pooled = result.outputs  # the head's output at the input itself: the pooled embedding
        return FactorBatch(factors=result.factors, targets=pooled, scales=cosine_scales(model, pooled), pooled=pooled)


@register
class BiLRP(_GradientTimesInput):
    name = "bilrp"
    summary = ("BiLRP: LRP with rules for attention, norms, activations and gated products (an error where no "
               "rule covers an operation), second-order R_a R_b^T")
    reference = ReferenceRecipe("gradient", lrp_rules=True)
    use_lrp_rules = True


@register
class HessianProduct(_GradientTimesInput):
    name = "hxp"
    summary = "Hessian x Product: gradient x input factors with plain gradients"
    reference = ReferenceRecipe("gradient")
