"""sentence-transformers modules: every pooling mode, Dense, Normalize and the pooling of plain Hugging Face models
give exactly sentence-transformers' own scores, every method's factor still equals the slow reference through
them, and anything else is a clear error."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from reference import reference_factor
from st_folders import DenseSpec, Pipeline, add_module, save_st_folder, sentence_transformer
from test_engine import assert_close

from core import compute_factors, explain_pairs, load_model
from core.sentence_modules import read_pipeline
from core.sentence_pipeline import POOLING_MODES, plain_pipeline, pooling_mode

TEXTS = ["A man is playing a guitar.", "Two dogs run through the snow!", "The cat sat.", "I love pizza 🍕!",
         "A child rides a bicycle in the park."]
PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3]), (TEXTS[4], TEXTS[0])]

PIPELINES = {
    **{f"pool-{mode}": Pipeline(pooling=mode) for mode in POOLING_MODES},
    "legacy-weightedmean": Pipeline(pooling="weightedmean", legacy=True),
    "cls+mean": Pipeline(pooling=["cls", "mean"]),
    "max+dense-tanh+normalize": Pipeline(pooling="max", dense=[DenseSpec(out_features=16)], normalize=True),
    "cls+dense-identity-dot": Pipeline(pooling="cls", similarity="dot",
                                       dense=[DenseSpec(activation="torch.nn.modules.linear.Identity")]),
    "mean+2-dense": Pipeline(pooling="mean", dense=[DenseSpec(out_features=24),
                                                    DenseSpec(out_features=12, activation="torch.nn.modules.activation.GELU",
                                                              seed=2)]),
    "lasttoken+normalize": Pipeline(pooling="lasttoken", normalize=True),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("st")
    return {name: save_st_folder(base / name, "bert", pipe) for name, pipe in PIPELINES.items()}


def _load(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(folder, device="cpu", **kwargs)


def st_scores(st, pairs, batch_size=32, prompt_a=None, prompt_b=None) -> np.ndarray:
    ea = st.encode([a for a, _ in pairs], batch_size=batch_size, convert_to_tensor=True, **(prompt_a or {}))
    eb = st.encode([b for _, b in pairs], batch_size=batch_size, convert_to_tensor=True, **(prompt_b or {}))
    return st.similarity_pairwise(ea, eb).double().numpy()


@pytest.mark.parametrize("name", list(PIPELINES))
def test_model_score_equals_sentence_transformers(folders, name):
    st = sentence_transformer(folders[name])
    model = _load(folders[name])
    ours = model.embed(TEXTS, batch_size=2)
    theirs = st.encode(TEXTS, batch_size=2)
    assert ours.shape == theirs.shape == (len(TEXTS), model.dim)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    scores = [e.model_score for e in explain_pairs(model, PAIRS, method="hxp")]
    np.testing.assert_allclose(scores, st_scores(st, PAIRS), rtol=1e-5, atol=1e-6)


def test_pipeline_reads_the_folder(folders):
    pipe = read_pipeline(folders["max+dense-tanh+normalize"])
    assert pipe.normalize and pipe.pooling.modes == ("max",)
    assert pipe.description == "Pooling(max) > Dense(32->16, Tanh) > Normalize"
    assert read_pipeline(folders["cls+mean"]).output_dim(32) == 64
    assert read_pipeline(folders["legacy-weightedmean"]).pooling.modes == ("weightedmean",)
    model = _load(folders["mean+2-dense"])
    assert (model.pooling, model.dim, model.hidden_size, model.normalize) == ("mean", 12, 32, False)


MODULE_CASES = ["max+dense-tanh+normalize", "cls+dense-identity-dot", "mean+2-dense", "pool-weightedmean",
                "pool-lasttoken", "pool-mean_sqrt_len_tokens"]


@pytest.fixture(scope="module")
def double_models(folders):
    models = {name: _load(folders[name]) for name in MODULE_CASES}
    for model in models.values():  # float64, so that exactness sees the algorithm, not rounding
        model.encoder.double()
    return models


@pytest.mark.parametrize("name", MODULE_CASES)
@pytest.mark.parametrize("method,steps", [("bilrp", None), ("hxp", None), ("ij", 2)])
def test_factors_equal_slow_reference_through_modules(double_models, name, method, steps):
    model = double_models[name]
    got = compute_factors(model, TEXTS[:3], method=method, layer=1, steps=steps, batch_size=2)
    for text, factor in zip(TEXTS[:3], got, strict=True):
        assert factor.factor.shape == (len(factor.tokens), model.dim)
        assert_close(factor.factor, reference_factor(model, text, method, 1, steps))


@pytest.mark.parametrize("name", ["pool-max", "pool-cls", "pool-lasttoken", "pool-weightedmean", "mean+2-dense"])
def test_hxp_is_complete_for_linear_heads_at_the_last_layer(folders, name):
    """At the last layer, every pooling is linear in the token embeddings (max with its winners fixed), so
    gradient x input rows sum exactly to the pooled embedding when no Dense follows; with Dense they do not."""
    model = _load(folders[name])
    model.encoder.double()
    factor = compute_factors(model, [TEXTS[0]], method="hxp", layer=model.num_layers)[0]
    residual = np.abs(factor.factor.sum(0) - factor.target).max() / np.abs(factor.target).max()
    if name == "mean+2-dense":
        assert residual > 1e-3  # tanh/gelu Dense layers are not homogeneous: H x P does not conserve
    else:
        assert residual < 1e-6  # factors are stored as float32


def test_max_pooling_sends_relevance_to_the_winner_only(folders):
    model = _load(folders["pool-max"])
    model.encoder.double()
    batch = model.tokenize([TEXTS[0]])
    last = model.hidden_states(batch, model.num_layers)
    factor = compute_factors(model, [TEXTS[0]], method="bilrp", layer=model.num_layers)[0].factor
    winners = last[0].argmax(0).numpy()  # per dimension, the token holding the maximum
    expected = np.zeros_like(factor)
    expected[winners, np.arange(factor.shape[1])] = last[0].numpy()[winners, np.arange(factor.shape[1])]
    np.testing.assert_allclose(factor, expected, atol=1e-12)


def test_dense_activation_goes_through_the_gate_rule(folders):
    """With biases and a Tanh Dense, BiLRP at the last layer gives each token z_t-proportional shares of the
    gated output: the rows sum to the Dense output where H x P (plain tanh gradient) does not."""
    model = _load(folders["max+dense-tanh+normalize"])
    model.encoder.double()
    with torch.no_grad():
        model.pipeline.modules[1].linear.bias.zero_()  # the gate rule conserves exactly when the Dense has no bias
    bilrp = compute_factors(model, [TEXTS[1]], method="bilrp", layer=model.num_layers)[0]
    hxp = compute_factors(model, [TEXTS[1]], method="hxp", layer=model.num_layers)[0]
    scale = np.abs(bilrp.target).max()
    assert np.abs(bilrp.factor.sum(0) - bilrp.target).max() / scale < 1e-6  # float32 factors
    assert np.abs(hxp.factor.sum(0) - hxp.target).max() / scale > 1e-3


def test_unsupported_module_is_a_clear_error(tmp_path):
    folder = add_module(save_st_folder(tmp_path / "m", "bert", Pipeline()), "sentence_transformers.models.LayerNorm")
    with pytest.raises(ValueError, match=r"module sentence_transformers\.models\.LayerNorm \(2_Extra\) is not supported"):
        _load(folder)


def test_unknown_pooling_mode_and_untrusted_activation(tmp_path):
    with pytest.raises(ValueError, match="unknown pooling 'median': choose one of cls, max, mean"):
        pooling_mode("median")
    assert pooling_mode("mean_sqrt_len") == "mean_sqrt_len_tokens"
    folder = save_st_folder(tmp_path / "m", "bert", Pipeline(dense=[DenseSpec(activation="mypackage.Swish")]))
    with pytest.warns(UserWarning, match="falls back to Tanh"):
        pipe = read_pipeline(folder)
    assert type(pipe.modules[1].activation).__name__ == "Tanh"
    st = sentence_transformer(folder)  # sentence-transformers does the same
    np.testing.assert_allclose(_load(folder).embed(TEXTS[:2]), st.encode(TEXTS[:2]), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory):
    """A plain Hugging Face model folder: no modules.json, no sentence-transformers configs."""
    folder = save_st_folder(tmp_path_factory.mktemp("plain") / "bert", "bert", Pipeline())
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    shutil.rmtree(folder / "1_Pooling")
    return folder


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "lasttoken"])
def test_plain_hugging_face_model_takes_a_pooling(plain_folder, pooling):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    model = _load(plain_folder, pooling=pooling)
    assert model.pooling == pooling and model.similarity == "cosine" and not model.normalize
    st = SentenceTransformer(modules=[Transformer(str(plain_folder)), Pooling(32, pooling_mode=pooling)], device="cpu")
    np.testing.assert_allclose(model.embed(TEXTS, batch_size=2), st.encode(TEXTS, batch_size=2), rtol=1e-4, atol=1e-5)
    scores = [e.model_score for e in explain_pairs(model, PAIRS, method="embedding")]
    np.testing.assert_allclose(scores, st_scores(st, PAIRS), rtol=1e-5, atol=1e-6)


def test_plain_model_pooling_default_ids_and_conflicts(plain_folder, folders):
    default, cls = _load(plain_folder), _load(plain_folder, pooling="cls")
    assert default.pooling == "mean" and default.model_id == _load(plain_folder, pooling="mean").model_id
    assert cls.model_id != default.model_id  # a store keeps the two poolings apart
    with pytest.raises(ValueError, match="sentence-transformers model with cls pooling"):
        _load(folders["pool-cls"], pooling="mean")
    assert _load(folders["pool-cls"], pooling="cls").pooling == "cls"
    assert plain_pipeline("cls_token").pooling.modes == ("cls",)


def test_modules_json_must_start_with_a_transformer(tmp_path):
    folder = save_st_folder(tmp_path / "m", "bert", Pipeline())
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules[1:]))
    with pytest.raises(ValueError, match="first module must be a Transformer"):
        _load(folder)


@pytest.fixture(scope="module")
def left_padded(tmp_path_factory):
    base = tmp_path_factory.mktemp("left")
    pipe = dict(pooling="lasttoken", prompts={"query": "query: "}, default_prompt_name="query", include_prompt=False)
    return (save_st_folder(base / "left", "bert", Pipeline(padding_side="left", **pipe)),
            save_st_folder(base / "right", "bert", Pipeline(**pipe)))


def test_left_padding_gives_the_real_tokens_offsets_and_last_token(left_padded):
    left, right = (_load(folder) for folder in left_padded)
    assert left.tokenizer.padding_side == "left" and right.tokenizer.padding_side == "right"
    lb, rb = left.tokenize(TEXTS), right.tokenize(TEXTS)
    assert lb.tokens == rb.tokens and lb.offsets == rb.offsets and lb.word_ids == rb.word_ids
    assert not lb.attention_mask[:, -1].eq(0).any() and lb.attention_mask[:, 0].eq(0).any()  # padded on the left
    for row in range(len(TEXTS)):
        real = lb.real(row)
        assert lb.input_ids[row, real].tolist() == rb.input_ids[row, rb.real(row)].tolist()
        assert lb.prompt[row, real].tolist() == rb.prompt[row, rb.real(row)].tolist()
    st = sentence_transformer(left_padded[0])  # one text per batch: no padding for absolute positions to shift
    np.testing.assert_allclose(left.embed(TEXTS, batch_size=1), st.encode(TEXTS, batch_size=1), rtol=1e-4, atol=1e-5)
    last = left.hidden_states(lb, left.num_layers)
    pooled = left.pool(last, lb)
    for row in range(len(TEXTS)):  # lasttoken = the last real token, here the final [SEP]
        np.testing.assert_allclose(pooled[row].numpy(), last[row, -1].numpy())


def test_left_padded_factors_equal_slow_reference(left_padded):
    model = _load(left_padded[0])
    model.encoder.double()
    got = compute_factors(model, TEXTS[:2], method="bilrp", layer=1, batch_size=1)
    for text, factor in zip(TEXTS[:2], got, strict=True):
        assert factor.prompt_text == "query: " and factor.tokens[-1] == "[SEP]"
        assert_close(factor.factor, reference_factor(model, text, "bilrp", 1))
