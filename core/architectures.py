"""Architectures SimLens can explain, as data: where a Hugging Face model keeps its parts and its conventions.

Adding an architecture means adding one entry to ``ARCHITECTURES`` (keyed by the config's ``model_type``);
the adapter in ``core.models``, the LRP rules and the tests work on these fields alone.

Hidden state ``i`` of a model with L blocks is the input of block i for i < L, and for i = L the hidden state
the model really outputs (``last_hidden_state``, after the final norm of pre-norm models), so attributing to
layer L explains the sentence embedding itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Accessor = Callable[[nn.Module], nn.Module]


def _path(dotted: str) -> Accessor:
    """An accessor following attribute names, e.g. ``_path("encoder.layer")``."""

    def get(module: nn.Module) -> nn.Module:
        for part in dotted.split("."):
            module = getattr(module, part)
        return module

    get.__name__ = get.__qualname__ = dotted
    return get


def _projections(*dotted: str) -> Callable[[nn.Module], list[nn.Module]]:
    accessors = [_path(d) for d in dotted]
    return lambda block: [get(block) for get in accessors]


def _no_projections(_block: nn.Module) -> list[nn.Module]:
    return []  # fused query/key/value projection: the scores stay differentiable, the softmax rule cuts them


def _position_limit(config: object) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


#: How a family's position information reacts to left padding (``Architecture.positions``):
#: ``absolute``: learned positions that the model counts from the first column, padding included, unless it is
#: given position ids, so SimLens passes ids counted over the attention mask (``mask_position_ids``);
#: ``from_ids``: the model counts positions over the non-padding ids itself (RoBERTa's ``pad_token_id``; MPNet's
#: padding index, fixed at 1 as in MPNet's own tokenizer);
#: ``relative``: rotary embeddings or relative position biases, which see only the distance between two tokens,
#: so a left-padded row computes what the text alone computes;
#: ``own``: an architecture without an entry (``discover_architecture``), whose forward places positions as its
#: code says: SimLens passes it no position ids, as sentence-transformers does.
POSITION_KINDS = ("absolute", "from_ids", "relative", "own")


def mask_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, S) counted over the real tokens of each row, 0 on padding (as Hugging Face's generation
    computes them for left-padded batches): a row's real tokens get 0, 1, ... whatever its padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0) * attention_mask.long()


def _padding_idx_offset(config: object) -> int:
    """RoBERTa-style position ids start after the padding index."""
    return (getattr(config, "pad_token_id", 0) or 0) + 1


@dataclass(frozen=True)
class Architecture:
    """Everything the adapter needs about one family of Hugging Face models.

    ``embeddings(model)``: the module that embeds token ids; ``blocks(model)``: the transformer blocks, whose
    i-th input is hidden state i; ``final_norm(model)``: the norm after the last block (None for post-norm
    models), included in hidden state L; ``score_projections(block)``: the query and key projections, whose
    outputs only feed the attention softmax (under the LRP attention rule they carry no relevance, so BiLRP
    skips their derivatives; empty for fused q/k/v projections); ``max_positions(config)`` and
    ``position_offset(config)``: how many tokens the position embeddings allow (None for relative positions);
    ``positions``: how its positions react to left padding (one of ``POSITION_KINDS``; ``absolute``: the
    adapter passes position ids counted over the attention mask, so a row's result does not depend on its
    padding);
    ``padding_side``: the family's padding convention when the tokenizer states none; ``special_tokens``:
    the family's template of added tokens (``cls``/``sep``/``bos``/``eos`` around the text ``A``);
    ``encoder_class``: the transformers class that loads the encoder (None: ``AutoModel``); ``run_kwargs``:
    extra keyword arguments of the encoder's forward (decoders: no key/value cache); ``causal``: decoder
    attention.
    """

    name: str
    embeddings: Accessor
    blocks: Accessor
    score_projections: Callable[[nn.Module], list[nn.Module]]
    final_norm: Accessor | None = None
    max_positions: Callable[[object], int | None] = _position_limit
    position_offset: Callable[[object], int] = lambda _config: 0
    positions: str = "absolute"
    padding_side: str = "right"
    special_tokens: str = "cls A sep"
    encoder_class: str | None = None
    run_kwargs: dict = field(default_factory=dict)
    causal: bool = False

    def __post_init__(self) -> None:
        if self.positions not in POSITION_KINDS:
            raise ValueError(f"{self.name}: positions must be one of {', '.join(POSITION_KINDS)}, got {self.positions!r}")

    def run_arguments(self, attention_mask: torch.Tensor) -> dict:
        """Keyword arguments of the encoder's forward beyond ids and mask: ``run_kwargs``, and for absolute
        positions the position ids counted over ``attention_mask``."""
        if self.positions == "absolute":
            return {**self.run_kwargs, "position_ids": mask_position_ids(attention_mask)}
        return self.run_kwargs

    def all_score_projections(self, model: nn.Module) -> list[nn.Module]:
        """The query and key projections of every block of ``model``."""
        return [proj for block in self.blocks(model) for proj in self.score_projections(block)]

    def check(self, model: nn.Module) -> None:
        """A clear error if ``model`` does not have the parts this entry names."""
        try:
            parts = [self.embeddings(model), *self.all_score_projections(model)]
            blocks = self.blocks(model)
            if self.final_norm is not None:
                parts.append(self.final_norm(model))
        except AttributeError as exc:
            raise ValueError(f"{type(model).__name__} does not have the parts of a {self.name!r} model: {exc}") from None
        if not len(blocks) or not all(isinstance(p, nn.Module) for p in parts):
            raise ValueError(f"{type(model).__name__} does not have the blocks of a {self.name!r} model")


def _bert_like(name: str, **extra) -> Architecture:
    return Architecture(
        name=name, embeddings=_path("embeddings"), blocks=_path("encoder.layer"),
        score_projections=_projections("attention.self.query", "attention.self.key"), **extra,
    )


def _decoder(name: str, special_tokens: str = "bos A", **extra) -> Architecture:
    """Llama-style decoders: embed_tokens, layers, a final RMSNorm, separate q/k/v projections."""
    return Architecture(
        name=name, embeddings=_path("embed_tokens"), blocks=_path("layers"), final_norm=_path("norm"),
        score_projections=_projections("self_attn.q_proj", "self_attn.k_proj"), padding_side="left",
        special_tokens=special_tokens, run_kwargs={"use_cache": False}, causal=True, positions="relative", **extra,
    )


_ENTRIES = [
    _bert_like("bert"),
    _bert_like("electra"),
    _bert_like("roberta", position_offset=_padding_idx_offset, special_tokens="bos A eos", positions="from_ids"),
    _bert_like("xlm-roberta", position_offset=_padding_idx_offset, special_tokens="bos A eos", positions="from_ids"),
    Architecture(
        name="mpnet", embeddings=_path("embeddings"), blocks=_path("encoder.layer"),
        score_projections=_projections("attention.attn.q", "attention.attn.k"), special_tokens="bos A eos",
        positions="from_ids",  # plus a relative position bias
    ),
    Architecture(
        name="distilbert", embeddings=_path("embeddings"), blocks=_path("transformer.layer"),
        score_projections=_projections("attention.q_lin", "attention.k_lin"),
    ),
    Architecture(  # relative attention, and absolute positions where the config has position_biased_input
        name="deberta-v2", embeddings=_path("embeddings"), blocks=_path("encoder.layer"),
        score_projections=_projections("attention.self.query_proj", "attention.self.key_proj"),
    ),
    Architecture(
        name="modernbert", embeddings=_path("embeddings"), blocks=_path("layers"), final_norm=_path("final_norm"),
        score_projections=_no_projections, positions="relative",
    ),
    Architecture(
        name="gpt2", embeddings=_path("wte"), blocks=_path("h"), final_norm=_path("ln_f"),
        score_projections=_no_projections, padding_side="left", special_tokens="A",
        run_kwargs={"use_cache": False}, causal=True,
    ),
    Architecture(
        name="gpt_neo", embeddings=_path("wte"), blocks=_path("h"), final_norm=_path("ln_f"),
        score_projections=_projections("attn.attention.q_proj", "attn.attention.k_proj"), padding_side="left",
        special_tokens="A", run_kwargs={"use_cache": False}, causal=True,
    ),
    _decoder("llama"),
    _decoder("mistral"),
    _decoder("qwen2", special_tokens="A"),
    _decoder("qwen3", special_tokens="A"),
    _decoder("gemma"),
    _decoder("gemma3_text"),  # EmbeddingGemma: bidirectional attention when its config says so
    Architecture(
        name="t5", embeddings=_path("shared"), blocks=_path("encoder.block"),
        final_norm=_path("encoder.final_layer_norm"),
        score_projections=_projections("layer.0.SelfAttention.q", "layer.0.SelfAttention.k"),
        max_positions=lambda _config: None, special_tokens="A eos", encoder_class="T5EncoderModel",
        positions="relative",
    ),
]

#: Keyed by the ``model_type`` of a Hugging Face config.
ARCHITECTURES: dict[str, Architecture] = {entry.name: entry for entry in _ENTRIES}


def get_architecture(model_type: str) -> Architecture:
    """The architecture registered for a config's ``model_type``; a miss names it and lists what exists."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {model_type!r}: SimLens supports {', '.join(sorted(ARCHITECTURES))}"
        ) from None


# --- architectures without an entry: found from the module structure ------------------------------------------
_NORM_WORDS = ("norm", "ln_f")


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _is_norm(name: str, module: nn.Module) -> bool:
    label = f"{name.rsplit('.', 1)[-1]} {type(module).__name__}".lower()
    return any(word in label for word in _NORM_WORDS) and not list(module.children())


def _called_after(model: nn.Module, blocks_path: str, run_kwargs: dict) -> list[str]:
    """The norms outside the blocks that run after the last block, in one forward pass of three tokens."""
    blocks = _path(blocks_path)(model)
    norms = [(name, m) for name, m in model.named_modules()
             if _is_norm(name, m) and _size(m) and not name.startswith(blocks_path + ".")]
    calls: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _a, _o, name=name: calls.append(name))
               for name, m in [*norms, ("", blocks[-1])]]
    try:
        device = next(model.parameters()).device
        ids = torch.ones((1, 3), dtype=torch.long, device=device)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), **run_kwargs)
    except Exception as exc:  # noqa: BLE001  (any failure of foreign code: say which model)
        raise ValueError(f"{type(model).__name__}: cannot run it on input_ids and attention_mask to find its parts "
                         f"({type(exc).__name__}: {exc})") from None
    finally:
        for handle in handles:
            handle.remove()
    last = len(calls) - 1 - calls[::-1].index("") if "" in calls else len(calls)
    return list(dict.fromkeys(calls[last + 1 :]))


def discover_architecture(model: nn.Module, model_type: str) -> Architecture:
    """An entry for a model that has none (custom code, a new family), found from its module structure:

    the blocks are the ``nn.ModuleList`` of modules of one class holding the most parameters; the embeddings, the
    module that owns ``get_input_embeddings()`` (the embedding itself when the model owns it directly); the final
    norm, the parameterised norm (``*Norm*``, ``ln_f``) outside the blocks that runs after the last block (seen
    in one short forward pass; None for post-norm models). Positions are the model's ``own`` (no position ids
    passed) and no query/key projections are cut (the softmax rule detaches the scores), so the LRP rules
    (``core.rules``) see everything the custom code computes, and an operation they do not cover is an error. A
    model without such blocks is a ValueError naming its class."""
    cls = type(model).__name__
    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) and len({type(b) for b in m}) == 1]
    if not lists:
        raise ValueError(f"{cls} ({model_type!r}, no entry in core/architectures.py): cannot find its blocks (no "
                         f"nn.ModuleList of modules of one class)")
    blocks_path = max(lists, key=lambda item: _size(item[1]))[0]
    names = {m: name for name, m in model.named_modules()}
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding is None or embedding not in names:
        raise ValueError(f"{cls} ({model_type!r}): cannot find its input embeddings (get_input_embeddings)")
    embed_path = names[embedding]
    owner = embed_path.rpartition(".")[0] or embed_path
    use_cache = "use_cache" in inspect.signature(model.forward).parameters
    run_kwargs = {"use_cache": False} if use_cache else {}
    norms = _called_after(model, blocks_path, run_kwargs)
    if len(norms) > 1:
        raise ValueError(f"{cls} ({model_type!r}): cannot tell its final norm among {', '.join(norms)}")
    arch = Architecture(
        name=f"{model_type} ({cls}, found by structure)", embeddings=_path(owner), blocks=_path(blocks_path),
        final_norm=_path(norms[0]) if norms else None, score_projections=_no_projections, positions="own",
        run_kwargs=run_kwargs,
        causal=bool(getattr(getattr(model, "config", None), "is_decoder", False)),
    )
    arch.check(model)
    return arch
