"""Encoder architectures SimLens can explain: where a model keeps its embedding module and its layers.

Adding an architecture means adding one entry to ``ARCHITECTURES``; everything else (hidden states, the
rules context, the factor engine) works on these two accessors alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Architecture:
    """How to reach the parts of a Hugging Face encoder that attributions hook into.

    ``embeddings(model)`` returns the module whose output is hidden state 0 (token + position embeddings
    after their LayerNorm); ``layers(model)`` returns the encoder blocks, whose i-th output is hidden state i+1;
    ``score_projections(block)`` returns the query and key projections of a block, whose outputs only feed
    the attention softmax (under the LRP attention rule they carry no relevance, so BiLRP may skip their
    derivatives).
    """

    name: str
    embeddings: Callable[[nn.Module], nn.Module]
    layers: Callable[[nn.Module], nn.ModuleList]
    score_projections: Callable[[nn.Module], list[nn.Module]]

    def all_score_projections(self, model: nn.Module) -> list[nn.Module]:
        """The query and key projections of every block of ``model``."""
        return [proj for block in self.layers(model) for proj in self.score_projections(block)]


def _bert_like(name: str) -> Architecture:
    return Architecture(
        name=name, embeddings=lambda m: m.embeddings, layers=lambda m: m.encoder.layer,
        score_projections=lambda block: [block.attention.self.query, block.attention.self.key],
    )


#: Keyed by the ``model_type`` of a Hugging Face config.
ARCHITECTURES: dict[str, Architecture] = {
    "bert": _bert_like("bert"),
    "mpnet": Architecture(
        name="mpnet", embeddings=lambda m: m.embeddings, layers=lambda m: m.encoder.layer,
        score_projections=lambda block: [block.attention.attn.q, block.attention.attn.k],
    ),
    "roberta": _bert_like("roberta"),
    "xlm-roberta": _bert_like("xlm-roberta"),
}


def get_architecture(model_type: str) -> Architecture:
    """The architecture registered for a config's ``model_type``; a miss names it and lists what exists."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {model_type!r}: SimLens supports {', '.join(sorted(ARCHITECTURES))}"
        ) from None
