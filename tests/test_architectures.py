"""Every registered architecture, explained exactly: a tiny random model of each family, saved as a
sentence-transformers folder and loaded with core.load_model, against the slow reference, conservation,
completeness, sentence-transformers' own scores and the model's own hidden states; the LRP rules one by one;
and the loud error where no rule covers an operation. Parametrised over ARCHITECTURES and METHODS, so adding
either adds its tests."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from reference import reference_factor
from st_folders import DenseSpec, Pipeline, save_st_folder, sentence_transformer
from test_engine import assert_close
from tiny_models import TINY_CONFIGS, save_sentence_transformer, tiny_encoder

import core
from core import compute_factors, explain
from core.architectures import ARCHITECTURES, get_architecture
from core.methods import METHODS
from core.rules import UncoveredOperationError, lrp_rules, traced
from core.sentence_pipeline import POOLING_MODES

KINDS = sorted(ARCHITECTURES)
TEXTS = ["A man is playing a guitar.", "The cat sat 🍕!"]
#: texts of distinct lengths, so that batches of two pad (on the family's own side)
PIPELINE_TEXTS = ["A man is playing a guitar.", "The cat sat 🍕!", "Two dogs run.", "I love pizza and a long walk."]
#: a short text between two longer neighbours, so that a batch of the three pads the short one
NEIGHBOURS = ["Two men play guitars on stage.", "The cat sat 🍕!", "A dog runs in the green park."]


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build(kind, zero_bias=False): a loaded tiny model of ``kind`` in float64 (so that exactness tests see
    the algorithm, not rounding), made once per session."""
    base = tmp_path_factory.mktemp("arch")
    cache: dict = {}

    def get(kind: str, zero_bias: bool = False):
        key = (kind, zero_bias)
        if key not in cache:
            folder = base / f"{kind}-{int(zero_bias)}"
            if not folder.exists():
                save_sentence_transformer(folder, kind, zero_bias=zero_bias)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = core.load_model(folder, device="cpu")
            model.encoder.double()
            cache[key] = model
        return cache[key]

    return get


def test_every_architecture_has_a_tiny_model():
    assert set(TINY_CONFIGS) == set(ARCHITECTURES)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("kind", KINDS)
def test_factors_equal_slow_reference(build, kind, method):
    """Batched, padded, forward-mode factors against the one-sentence reference: the first text attributed to
    layer 0, the second to a middle layer."""
    model = build(kind)
    steps = 2 if METHODS[method].uses_steps else None
    for index, layer in enumerate((0, model.num_layers // 2)):
        got = compute_factors(model, TEXTS, method=method, layer=layer, steps=steps, batch_size=2)[index]
        assert_close(got.factor, reference_factor(model, TEXTS[index], method, layer, steps))


@pytest.mark.parametrize("kind", KINDS)
def test_bilrp_conserves_exactly_without_biases_and_hxp_does_not(build, kind):
    """From layer 0 the explained path runs through every block, the final norm and the head, so every rule
    of the family is on it."""
    model = build(kind, zero_bias=True)
    exp = explain(model, *TEXTS, method="bilrp", layer=0)
    assert exp.score == pytest.approx(exp.model_score, rel=1e-6)
    assert abs(exp.residual) <= 1e-5 * abs(exp.score), (exp.residual, exp.score)
    hxp = explain(model, *TEXTS, method="hxp", layer=0)  # plain gradients do not conserve
    assert abs(hxp.residual) > 1e-3 * abs(hxp.score)


@pytest.mark.parametrize("kind", KINDS)
def test_ij_complete_at_layer_zero_and_a_middle_layer(build, kind):
    model = build(kind)
    for layer in (0, model.num_layers // 2):
        exp = explain(model, *TEXTS, method="ij", layer=layer, steps=16)
        assert abs(exp.residual) <= 1e-3 * abs(exp.score), (layer, exp.residual, exp.score)


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_at_last_layer_sums_to_the_model_score(build, kind):
    model = build(kind)
    exp = explain(model, *TEXTS, method="embedding")
    assert exp.layer == model.num_layers
    assert exp.score == pytest.approx(exp.model_score, rel=1e-6)  # float32 RMSNorms inside some, padded batches
    assert abs(exp.residual) <= 1e-6 * abs(exp.score)  # factors are stored in float32


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    """pipeline_folder(kind): a tiny ``kind`` model behind every pooling mode at once (concatenated, the prompt
    excluded), a Tanh Dense and a Normalize, with a default prompt, on the family's own padding side;
    pipeline_folder(kind, "left"): the same, left-padded."""
    base = tmp_path_factory.mktemp("arch-pipeline")
    cache: dict = {}

    def get(kind: str, padding_side: str | None = None):
        side = padding_side or get_architecture(kind).padding_side
        if (kind, side) not in cache:
            pipe = Pipeline(pooling=list(POOLING_MODES), include_prompt=False, prompts={"query": "query: "},
                            default_prompt_name="query", dense=[DenseSpec(out_features=12)], normalize=True,
                            padding_side=side)
            cache[kind, side] = save_st_folder(base / f"{kind}-{side}", kind, pipe)
        return cache[kind, side]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_model_score_equals_sentence_transformers_through_prompt_pooling_dense(pipeline_folder, kind):
    """Every pooling mode, an excluded default prompt, Dense and Normalize, left padding where the family pads
    left: SimLens' embeddings (batched) and model score are sentence-transformers' own encode of each text alone;
    each row of a padded batch holds the text's real tokens and offsets; BiLRP through all of it equals the slow
    reference for the longer and the padded text alike."""
    folder = pipeline_folder(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, st = core.load_model(folder, device="cpu"), sentence_transformer(folder)
    assert model.tokenizer.padding_side == get_architecture(kind).padding_side
    # batches of two texts of different lengths: both sides pad the same batches the same way
    np.testing.assert_allclose(model.embed(PIPELINE_TEXTS, batch_size=2), st.encode(PIPELINE_TEXTS, batch_size=1),
                               rtol=1e-4, atol=1e-5)
    ea, eb = st.encode(TEXTS, convert_to_tensor=True, batch_size=1)
    expected = float(st.similarity(ea[None], eb[None])[0, 0])
    assert explain(model, *TEXTS, method="embedding").model_score == pytest.approx(expected, abs=1e-5)
    batch = model.tokenize(PIPELINE_TEXTS)
    for row, text in enumerate(PIPELINE_TEXTS):  # the real tokens, whatever the padding side
        alone = model.tokenize([text])
        assert batch.tokens[row] == alone.tokens[0] and batch.offsets[row] == alone.offsets[0]
        assert batch.prompts[row] == "query: "
    model.encoder.double()
    factors = compute_factors(model, PIPELINE_TEXTS[:2], method="bilrp", layer=1, batch_size=2)
    longer, padded = sorted(range(2), key=lambda i: -len(factors[i].tokens))
    for factor in factors:
        assert factor.factor.shape == (len(factor.tokens), 12) and any(factor.prompt)
    for row in (longer, padded):
        assert_close(factors[row].factor, reference_factor(model, PIPELINE_TEXTS[row], "bilrp", 1))


def _left_padded_model(pipeline_folder, kind: str):
    """(SimLens model, sentence-transformers model) of the left-padded pipeline folder of ``kind``."""
    folder = pipeline_folder(kind, "left")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, st = core.load_model(folder, device="cpu"), sentence_transformer(folder)
    assert model.tokenizer.padding_side == "left"
    return model, st


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_text_is_the_text_alone(pipeline_folder, kind):
    """Every family, left-padded between longer neighbours: a text's embedding, model score and every method's
    factor are what it gets alone, and its embedding and score are sentence-transformers' encode of it alone.
    Absolute positions are counted over the mask (``positions="absolute"``); the other families need nothing
    (``test_left_padding_reaches_only_absolute_positions``)."""
    model, st = _left_padded_model(pipeline_folder, kind)
    short = NEIGHBOURS[1]
    batch = model.tokenize(NEIGHBOURS)
    assert int(batch.first[1]) > 0, "the short text must be padded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = st.encode([short], convert_to_tensor=True)
        np.testing.assert_allclose(model.embed(NEIGHBOURS, batch_size=3)[1], alone[0].numpy(), rtol=1e-4, atol=1e-5)
        other = st.encode([NEIGHBOURS[0]], convert_to_tensor=True)
        expected = float(st.similarity(alone, other)[0, 0])
        assert explain(model, short, NEIGHBOURS[0], method="embedding").model_score == pytest.approx(expected, abs=1e-5)
        model.encoder.double()
        np.testing.assert_allclose(model.embed(NEIGHBOURS, batch_size=3)[1], model.embed([short])[0], atol=1e-6)
        for method in sorted(METHODS):
            steps = 2 if METHODS[method].uses_steps else None
            for layer in (0, model.num_layers // 2):
                padded = compute_factors(model, NEIGHBOURS, method=method, layer=layer, steps=steps, batch_size=3)[1]
                single = compute_factors(model, [short], method=method, layer=layer, steps=steps)[0]
                assert padded.tokens == single.tokens
                assert_close(padded.factor, single.factor)
                np.testing.assert_allclose(padded.embedding, single.embedding, rtol=1e-6, atol=1e-7)  # float32


@pytest.mark.parametrize("kind", KINDS)
def test_fine_tuning_embeds_like_the_model(pipeline_folder, kind):
    """Fine-tuning's differentiable embeddings are the model's own: its position ids under left padding and
    its pooling without the excluded prompt, so a left-padded text trains on what it is scored with alone."""
    from core.finetune import training_embeddings

    model, _ = _left_padded_model(pipeline_folder, kind)
    model.encoder.double().requires_grad_(True)  # as fine-tuning trains it
    trained = training_embeddings(model, NEIGHBOURS, shifted=False, normalize=True)
    assert trained.requires_grad
    np.testing.assert_allclose(trained.detach().numpy(), model.embed(NEIGHBOURS, batch_size=3), atol=1e-6)
    np.testing.assert_allclose(trained[1].detach().numpy(), model.embed([NEIGHBOURS[1]])[0], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_reaches_only_absolute_positions(pipeline_folder, kind):
    """Why ``positions`` is data: run without position ids, a left-padded row equals the text alone exactly
    for rotary, relative and padding-aware positions (Llama, Qwen, Mistral, Gemma, ModernBERT, T5, DeBERTa's
    relative attention, RoBERTa, MPNet), and differs where learned absolute positions count from the first
    column; for the left-padding decoders among those (GPT-2, GPT-Neo) that is what sentence-transformers'
    own batched encode computes, so its result depends on the batch."""
    model, st = _left_padded_model(pipeline_folder, kind)
    model.encoder.double()
    batch, single = model.tokenize(NEIGHBOURS), model.tokenize([NEIGHBOURS[1]])
    real = batch.real(1)

    def last(b, position_ids: bool):
        arguments = model.architecture.run_arguments(b.attention_mask) if position_ids else model.architecture.run_kwargs
        with torch.no_grad():
            return model.encoder(input_ids=b.input_ids, attention_mask=b.attention_mask, **arguments).last_hidden_state

    alone = last(single, position_ids=False)[0]
    # float64 weights; some families compute RoPE and RMSNorm in float32 inside, whose rounding moves with a shift
    torch.testing.assert_close(last(batch, position_ids=True)[1, real], alone, rtol=1e-6, atol=1e-6)
    shifted = (last(batch, position_ids=False)[1, real] - alone).abs().max().item()
    learned = model.architecture.positions == "absolute" and getattr(model.encoder.config, "position_biased_input", True)
    if not learned:
        assert shifted <= 1e-6, (kind, model.architecture.positions, shifted)
        return
    assert shifted > 1e-4, (kind, shifted)
    if get_architecture(kind).padding_side == "left":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st_batched = st.encode(NEIGHBOURS, batch_size=3)[1]
            st_alone = st.encode([NEIGHBOURS[1]])[0]
        assert np.abs(st_batched - st_alone).max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_hidden_states_are_the_model_own(build, kind):
    """Hidden state i < L is the input of block i; hidden state L is the model's output, final norm included;
    from every layer the head reproduces the model's sentence embeddings."""
    model = build(kind)
    arch = model.architecture
    batch = model.tokenize(TEXTS)
    blocks = arch.blocks(model.encoder)
    inputs, outputs = [], []
    handles = [b.register_forward_pre_hook(lambda _m, a, k: inputs.append(a[0] if a else k["hidden_states"]),
                                           with_kwargs=True) for b in blocks]
    handles += [b.register_forward_hook(lambda _m, _a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
                for b in blocks]
    try:
        with torch.no_grad():
            last = model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 **arch.run_arguments(batch.attention_mask)).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    final = arch.final_norm(model.encoder) if arch.final_norm else torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(final(outputs[-1]), last)  # the entry names the model's real final norm
        own = model.sentence_embeddings(batch)
        for layer in range(model.num_layers + 1):
            hidden = model.hidden_states(batch, layer)
            torch.testing.assert_close(hidden, inputs[layer] if layer < model.num_layers else last)
            torch.testing.assert_close(model.head(batch, layer, normalize=True)(hidden), own)


@pytest.mark.parametrize("kind", KINDS)
def test_rules_keep_the_forward_values(build, kind):
    model = build(kind)
    batch = model.tokenize(TEXTS)
    hidden = model.hidden_states(batch, 0)
    head = model.head(batch, 0, normalize=False)
    with torch.no_grad():
        plain = head(hidden)
        with lrp_rules(model.encoder):
            ruled = head(hidden.clone())
    torch.testing.assert_close(ruled, plain)


# --- the rules, one nonlinearity at a time --------------------------------------------------------------------

def _relevance(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), its gradient x input under the rules), for an elementwise-output fn of x."""
    x = x.clone().requires_grad_(True)
    with lrp_rules(), torch.enable_grad():
        y = traced(fn)(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), grad * x.detach()


def _activation_modules() -> list[tuple[str, torch.nn.Module]]:
    from transformers.activations import ACT2FN

    names = ["gelu", "gelu_new", "gelu_fast", "quick_gelu", "gelu_pytorch_tanh", "gelu_accurate", "silu", "mish",
             "relu", "relu2", "tanh", "sigmoid", "leaky_relu", "laplace"]
    return [(n, ACT2FN[n]) for n in names] + [("nn.GELU(tanh)", torch.nn.GELU(approximate="tanh")),
                                               ("nn.SiLU", torch.nn.SiLU()), ("nn.Softplus", torch.nn.Softplus())]


@pytest.mark.parametrize("name,module", _activation_modules(), ids=[n for n, _ in _activation_modules()])
def test_every_activation_module_follows_the_gate_rule(name, module):
    """Relevance x * [(f(x) - f(0)) / x]: gradient x input equals f(x) - f(0), however f is written inside."""
    x = torch.randn(4, 7, dtype=torch.float64)
    y, relevance = _relevance(module, x)
    f0 = module(torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(y, module(x))
    torch.testing.assert_close(relevance, y - f0)


@pytest.mark.parametrize("fn", [torch.nn.functional.gelu, torch.nn.functional.silu, torch.tanh, torch.sigmoid,
                                lambda x: torch.nn.functional.gelu(x, approximate="tanh")],
                         ids=["F.gelu", "F.silu", "torch.tanh", "torch.sigmoid", "F.gelu(tanh)"])
def test_functional_activations_follow_the_gate_rule(fn):
    x = torch.randn(3, 5, dtype=torch.float64)
    y, relevance = _relevance(fn, x)
    torch.testing.assert_close(relevance, y - fn(torch.zeros(1, dtype=torch.float64)))


def _norms() -> list[tuple[str, torch.nn.Module]]:
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    norms = [("LayerNorm", torch.nn.LayerNorm(6, bias=False)), ("RMSNorm", torch.nn.RMSNorm(6)),
             ("LlamaRMSNorm", LlamaRMSNorm(6)), ("T5LayerNorm", T5LayerNorm(6)), ("GemmaRMSNorm", GemmaRMSNorm(6))]
    for _, norm in norms:
        with torch.no_grad():
            norm.weight.add_(0.3 * torch.randn_like(norm.weight))
    return [(n, m.double()) for n, m in norms]


@pytest.mark.parametrize("name,norm", _norms(), ids=[n for n, _ in _norms()])
def test_norms_detach_their_denominator(name, norm):
    """Any norm, however written, is linear in x once the denominator is detached: relevance conserves."""
    x = torch.randn(3, 6, dtype=torch.float64)
    y, relevance = _relevance(norm, x)
    torch.testing.assert_close(y, norm(x).detach())
    # each row's relevance sums to its output (centring is linear too); some compute the variance in float32
    torch.testing.assert_close(relevance.sum(-1), y.sum(-1), rtol=1e-6, atol=1e-6)


def test_gated_product_splits_relevance_uniformly():
    """act(g) * u with both factors input-dependent: the uniform rule gives each half, which conserves."""
    w1, w2 = torch.randn(5, 5, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64)
    x = torch.randn(2, 5, dtype=torch.float64)
    y, relevance = _relevance(lambda h: (h @ w1) * (h @ w2), x)
    torch.testing.assert_close(relevance.sum(), y.sum())  # plain gradients would give twice the output
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        (plain,) = torch.autograd.grad(((xg @ w1) * (xg @ w2)).sum(), xg)
    torch.testing.assert_close((plain * x).sum(), 2 * y.sum())


@pytest.mark.parametrize("causal,mask", [(False, None), (True, None), (False, "bool"), (False, "float")])
def test_sdpa_rule_is_attention_with_detached_probabilities(causal, mask):
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64) for _ in range(3))
    attn_mask = None
    if mask == "bool":
        attn_mask = torch.rand(2, 1, 5, 5) > 0.3
        attn_mask[..., 0] = True
    elif mask == "float":
        attn_mask = torch.randn(2, 1, 5, 5, dtype=torch.float64)

    def attention(value):
        return torch.nn.functional.scaled_dot_product_attention(q, k, value, attn_mask=attn_mask, is_causal=causal)

    y, relevance = _relevance(attention, v)
    torch.testing.assert_close(y, attention(v))
    torch.testing.assert_close(relevance.sum(), y.sum())  # linear in v with the probabilities fixed


# --- no silent misses ------------------------------------------------------------------------------------------

class SinActivation(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x) * 2


class CubicActivation(torch.nn.Module):
    def forward(self, x):
        return x + 0.05 * x.pow(3)


class MeanAbsNorm(torch.nn.Module):
    def forward(self, x):
        return x / x.abs().mean(-1, keepdim=True)


@pytest.mark.parametrize("module,op", [(SinActivation, r"torch\.sin"), (CubicActivation, r"torch\.Tensor\.pow"),
                                       (MeanAbsNorm, r"torch\.Tensor\.div")])
def test_uncovered_nonlinearity_raises_naming_the_operation_and_module(module, op):
    """A made-up architecture (BERT with an unusual activation) fails loudly under BiLRP, and still works
    with plain gradients."""
    encoder, tokenizer = tiny_encoder("bert")
    for block in encoder.encoder.layer:
        block.intermediate.intermediate_act_fn = module()
    model = core.models.from_parts("made-up", core.models.Path("made-up"), encoder, tokenizer, device="cpu")
    with pytest.raises(UncoveredOperationError, match="no LRP rule covers") as info:
        explain(model, *TEXTS, method="bilrp")
    assert re.search(op, str(info.value)), str(info.value)
    assert f"module encoder.layer.0.intermediate.intermediate_act_fn ({module.__name__})" in str(info.value)
    assert math.isfinite(explain(model, *TEXTS, method="hxp").score)
    explain(model, *TEXTS, method="bilrp", layer=model.num_layers)  # above the block: nothing uncovered runs
