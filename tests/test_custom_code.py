"""Custom code (a config's ``auto_map``): refused by default with a message naming it, loaded with
``trust_remote_code``; its architecture, which has no entry in ``core.architectures``, is found from its module
structure and runs under the same LRP rules: scores equal sentence-transformers', factors equal the slow
reference, BiLRP conserves without biases, and an operation no rule covers is an ``UncoveredOperationError``."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from custom_code import save_custom_model
from reference import reference_factor
from test_engine import assert_close
from tiny_models import TINY_CONFIGS, tiny_encoder

from core import compute_factors, explain, explain_pairs, load_model
from core.architectures import ARCHITECTURES, discover_architecture
from core.rules import UncoveredOperationError
from core.safe_text import unliteral

TEXTS = ["A man is playing a guitar.", "Two dogs run through the snow!", "The cat sat.", "A child rides a bike."]
PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3])]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("custom")
    return {"plain": save_custom_model(base / "alibi"), "zero": save_custom_model(base / "alibi-zero", zero_bias=True),
            "exp": save_custom_model(base / "alibi-exp", exp_gate=True)}


def _load(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(folder, device="cpu", trust_remote_code=True, **kwargs)


def _st(folder):
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=True)


def test_custom_code_is_refused_without_trust_remote_code(folders, tmp_path):
    with pytest.raises(ValueError, match=r"auto_map.*modeling_alibi\.AlibiBertModel.*trust_remote_code=True"):
        load_model(folders["plain"], device="cpu")
    # the jina-v2 pattern: a stock model_type (bert) with an auto_map; transformers alone would load BertModel
    jina = tmp_path / "jina-like"
    shutil.copytree(folders["plain"], jina)
    config = json.loads((jina / "config.json").read_text())
    (jina / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match=r"auto_map.*AlibiBertModel"):
        load_model(jina, device="cpu")


def test_custom_model_scores_equal_sentence_transformers(folders):
    model, st = _load(folders["plain"]), _st(folders["plain"])
    assert type(model.encoder).__name__ == "AlibiBertModel" and model.architecture.positions == "own"
    assert "found by structure" in model.architecture.name
    np.testing.assert_allclose(model.embed(TEXTS, batch_size=2), st.encode(TEXTS, batch_size=2), rtol=1e-4, atol=1e-5)
    ea = st.encode([a for a, _ in PAIRS], convert_to_tensor=True)
    eb = st.encode([b for _, b in PAIRS], convert_to_tensor=True)
    scores = [e.model_score for e in explain_pairs(model, PAIRS, method="bilrp")]
    np.testing.assert_allclose(scores, st.similarity_pairwise(ea, eb).double().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["bilrp", "hxp", "ij"])
def test_custom_model_factors_equal_the_slow_reference(folders, method):
    model = _load(folders["plain"])
    model.encoder.double()
    steps = 2 if method == "ij" else None
    for index, layer in enumerate((0, 1)):
        got = compute_factors(model, TEXTS[:3], method=method, layer=layer, steps=steps, batch_size=2)[index]
        assert_close(got.factor, reference_factor(model, TEXTS[index], method, layer, steps))


def test_bilrp_conserves_on_custom_code_without_biases(folders):
    model = _load(folders["zero"])
    model.encoder.double()
    for pair in PAIRS:
        exp = explain(model, *pair, method="bilrp", layer=0)
        assert exp.score == pytest.approx(exp.model_score, rel=1e-6)
        assert abs(exp.residual) <= 1e-6 * np.abs(exp.matrix).sum(), (exp.residual, exp.score)
        hxp = explain(model, *pair, method="hxp", layer=0)  # plain gradients do not conserve
        assert abs(hxp.residual) > 1e-4 * np.abs(hxp.matrix).sum()


def test_an_uncovered_operation_in_custom_code_is_an_error(folders):
    model = _load(folders["exp"])
    with pytest.raises(UncoveredOperationError, match=r"torch\.exp in module layers\.0 \(AlibiLayer\)"):
        explain(model, *PAIRS[0], method="bilrp")
    exp = explain(model, *PAIRS[0], method="hxp")  # gradient methods need no rule
    assert np.isfinite(exp.matrix).all() and exp.model_score == pytest.approx(
        float(model.similarity_of(*(model.embed([t]) for t in PAIRS[0]))[0]), rel=1e-5)


@pytest.mark.parametrize("kind", sorted(TINY_CONFIGS))
def test_structure_discovery_finds_what_the_registry_names(kind):
    """The generic discovery agrees with every hand-written entry: blocks, final norm and embeddings."""
    model, _ = tiny_encoder(kind)
    found, entry = discover_architecture(model, kind), ARCHITECTURES[kind]
    assert found.blocks(model) is entry.blocks(model)
    assert (found.final_norm and found.final_norm(model)) is (entry.final_norm and entry.final_norm(model))
    assert found.embeddings(model) is entry.embeddings(model)


def test_a_model_without_blocks_is_refused_naming_its_class():
    from torch import nn

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)

        def get_input_embeddings(self):
            return self.embed

    with pytest.raises(ValueError, match=r"Flat \('flat'.*cannot find its blocks"):
        discover_architecture(Flat(), "flat")


def test_precompute_takes_trust_remote_code(folders, tmp_path, capsys):
    from test_precompute import write_pairs

    from core.store import Store
    from precompute.cli import main

    pairs = write_pairs(tmp_path / "pairs.tsv", 3)
    common = ["predict", "--model", str(folders["plain"]), "--dataset", str(pairs), "--store", str(tmp_path / "s"),
              "--gold-range", "0,5"]
    assert main(common) == 2
    assert "auto_map" in capsys.readouterr().err
    assert main([*common, "--trust-remote-code"]) == 0
    runs = Store(tmp_path / "s").runs()
    assert len(runs) == 1 and runs.loc[0, "status"] == "done"


def test_explain_page_runs_custom_code_only_when_trusted(folders, monkeypatch, tmp_path):
    from test_routes import explain_page, page_metric

    at = explain_page(monkeypatch, tmp_path, folders["plain"])
    at.button(key="xp_go").click()
    at.run()
    assert any("auto_map" in unliteral(e.value) for e in at.error), [e.value for e in at.error]
    at.checkbox(key="xp_trust_remote_code").check()
    at.button(key="xp_go").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    st = _st(folders["plain"])
    a, b = st.encode(PAIRS[0][:1]), st.encode(PAIRS[0][1:])
    assert page_metric(at, "model score") == f"{float(st.similarity(a, b)[0, 0]):.4f}"


def test_a_custom_dense_activation_is_refused_with_trust_remote_code(tmp_path):
    """sentence-transformers imports a non-torch Dense activation only with trust_remote_code: SimLens refuses
    to run that code rather than give another function."""
    from st_folders import DenseSpec, Pipeline, save_st_folder

    folder = save_st_folder(tmp_path / "dense", "bert", Pipeline(dense=[DenseSpec(activation="my_pkg.MyAct")]))
    with pytest.raises(ValueError, match=r"Dense module 2_Dense has activation_function 'my_pkg\.MyAct'"):
        load_model(folder, device="cpu", trust_remote_code=True)


def test_a_family_without_an_entry_is_found_generically(tmp_path):
    """megatron-bert (pre-norm BERT with a final norm, a stock transformers class) has no entry in
    core/architectures.py: it is found from its structure, scores equal sentence-transformers', BiLRP conserves."""
    import torch
    import transformers
    from tiny_models import minilm_tokenizer

    tokenizer = minilm_tokenizer()
    torch.manual_seed(0)
    config = transformers.MegatronBertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=32, max_position_embeddings=64)
    assert config.model_type not in ARCHITECTURES
    encoder = transformers.MegatronBertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif "LayerNorm" in name or name.endswith("ln.weight"):
                param.add_(0.1 * torch.randn_like(param))
    folder = tmp_path / "megatron"
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16,
                                                                  "pooling_mode": "mean"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(folder, device="cpu")
    assert model.architecture.final_norm(model.encoder) is model.encoder.encoder.ln
    st = _st(folder)
    np.testing.assert_allclose(model.embed(TEXTS), st.encode(TEXTS), rtol=1e-4, atol=1e-5)
    model.encoder.double()
    exp = explain(model, *PAIRS[0], method="bilrp", layer=0)
    assert exp.score == pytest.approx(exp.model_score, rel=1e-6)
    assert abs(exp.residual) <= 1e-6 * np.abs(exp.matrix).sum()
