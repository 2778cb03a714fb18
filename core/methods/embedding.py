"""Token-embedding similarity baseline: each token's hidden state divided by the number of tokens, so that
for mean-pooled models the rows sum to the sentence embedding and the matrix to its similarity."""

from __future__ import annotations

from core.methods.base import AttributionMethod, FactorBatch, ReferenceRecipe, cosine_scales, register
from core.models import SimilarityModel, TokenBatch


@register
class EmbeddingSimilarity(AttributionMethod):
    name = "embedding"
    summary = "Token-embedding similarity baseline (mean-pooled token embeddings)"
    reference = ReferenceRecipe("states")

    default_layer_text = "the last layer (the model's own token embeddings)"

    def default_layer(self, model: SimilarityModel) -> int:
        return model.num_layers

    def factors(self, model: SimilarityModel, batch: TokenBatch, layer: int, steps, quadrature, autodiff, max_rows):
        states = model.encode_states(batch, layer)
        hidden = states.hidden
        mask = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)
        factors = hidden * mask / mask.sum(1, keepdim=True)
        targets = factors.sum(1)
        return FactorBatch(factors=factors, targets=targets, scales=cosine_scales(model, targets), pooled=states.pooled)
