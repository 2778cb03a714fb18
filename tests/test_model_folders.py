"""Model folders, exact or loud: every key sentence-transformers writes is honoured or listed as ignored, any other
key or module is refused naming it, and each honoured setting (truncate_dim, do_lower_case, half-precision weights,
Dropout) gives sentence-transformers' own score; cross-encoders and zero integrated-Jacobians references are refused
saying what they are."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from st_folders import Pipeline, save_st_folder, sentence_transformer
from test_sentence_modules import PAIRS, TEXTS, st_scores
from tiny_models import save_sentence_transformer, tiny_encoder

from core import explain, explain_pairs, load_model
from core.sentence_modules import FOLDER_KEYS, MODULE_TYPES, TRANSFORMER_CONFIG_FILES

CASED = ["A Man Is Playing A GUITAR.", "two dogs RUN through the Snow!", "The Cat sat.", "I LOVE pizza 🍕!"]


def _load(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(folder, device="cpu", **kwargs)


def _scores(model, pairs=PAIRS) -> np.ndarray:
    return np.array([e.model_score for e in explain_pairs(model, pairs, method="embedding")])


def _st_modules(base_folder, with_dense: bool = True):
    """A Transformer, Pooling, Dense, Dropout and Normalize pipeline built by sentence-transformers itself."""
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Dropout, Pooling

    torch.manual_seed(3)
    transformer = Transformer(str(base_folder))
    width = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(width, pooling_mode="mean")]
    if with_dense:
        modules.append(Dense(width, 24, activation_function=torch.nn.Tanh()))
    return [*modules, Dropout(0.3), Normalize()]


@pytest.fixture(scope="module")
def st_saved(tmp_path_factory):
    """A folder sentence-transformers saves itself: Dense, Dropout and Normalize modules, prompts, truncate_dim."""
    from sentence_transformers import SentenceTransformer

    base = tmp_path_factory.mktemp("saved")
    tiny = save_sentence_transformer(base / "tiny", "bert", normalize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = SentenceTransformer(modules=_st_modules(tiny), device="cpu", truncate_dim=12,
                                 prompts={"query": "query: ", "document": ""})
        st.save(str(base / "saved"))
    return base / "saved"


def _saved_files(folder):
    """(file, keys table) of every configuration file in a saved folder."""
    modules = json.loads((folder / "modules.json").read_text())
    yield folder / "config_sentence_transformers.json", FOLDER_KEYS["config_sentence_transformers.json"]
    for spec in modules:
        kind = spec["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            path = next(folder / spec["path"] / n for n in TRANSFORMER_CONFIG_FILES if (folder / spec["path"] / n).exists())
            yield path, FOLDER_KEYS["sentence_bert_config.json"]
        elif (folder / spec["path"] / "config.json").exists():
            yield folder / spec["path"] / "config.json", FOLDER_KEYS[kind]
    for spec in modules:
        yield spec, FOLDER_KEYS["modules.json"]


def test_every_key_sentence_transformers_saves_is_honoured_or_ignored(st_saved):
    for where, table in _saved_files(st_saved):
        data = where if isinstance(where, dict) else json.loads(where.read_text())
        unknown = set(data) - set(table.honoured) - set(table.ignored)
        assert not unknown, (where, unknown)
    kinds = {m["type"].rsplit(".", 1)[-1] for m in json.loads((st_saved / "modules.json").read_text())}
    assert kinds == {"Transformer", "Pooling", "Dense", "Dropout", "Normalize"}


def test_every_config_key_of_each_module_class_is_in_the_table():
    """Keys sentence-transformers omits at their defaults (use_residual, query_length, ...) are covered too."""
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Dropout, Pooling

    classes = {"sentence_bert_config.json": Transformer, "Pooling": Pooling, "Dense": Dense, "Normalize": Normalize,
               "Dropout": Dropout}
    assert set(MODULE_TYPES) == set(classes) - {"sentence_bert_config.json"}
    for name, cls in classes.items():
        table = FOLDER_KEYS[name]
        renamed = set(getattr(cls, "config_key_renames", {}))
        assert set(cls.config_keys) | renamed <= set(table.honoured) | set(table.ignored), name


def test_saved_folder_gives_sentence_transformers_scores_and_bilrp_conserves(st_saved):
    st = sentence_transformer(st_saved)
    model = _load(st_saved)
    assert model.truncate_dim == 12 and model.dim == 12 and "truncate_dim=12" in model.variant
    assert model.pipeline.description == "Pooling(mean) > Dense(32->24, Tanh) > Normalize"  # Dropout: identity
    np.testing.assert_allclose(_scores(model), st_scores(st, PAIRS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.embed(TEXTS), st.encode(TEXTS), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("where, key", [
    ("1_Pooling/config.json", "frobnicate"),
    ("2_Dense/config.json", "scale"),
    ("config_sentence_transformers.json", "query_transform"),
    ("sentence_bert_config.json", "strip_accents"),
])
def test_an_unknown_key_is_refused_naming_key_and_file(st_saved, tmp_path, where, key):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(st_saved, folder)
    config = json.loads((folder / where).read_text())
    config[key] = 1
    (folder / where).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{where}: key '{key}' is not supported"):
        _load(folder)


@pytest.mark.parametrize("where, key, value, honoured", [
    ("sentence_bert_config.json", "transformer_task", "text-generation", "feature-extraction"),
    ("sentence_bert_config.json", "model_kwargs", {"dtype": "float16"}, "an empty object only"),
    ("config_sentence_transformers.json", "similarity_fn_name", "manhattan", "one of cosine, dot"),
    ("config.json", "quantization_config", {"bits": 4}, "no quantization"),
])
def test_an_unhonoured_value_is_refused_naming_it(st_saved, tmp_path, where, key, value, honoured):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(st_saved, folder)
    config = json.loads((folder / where).read_text())
    config[key] = value
    (folder / where).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{where}: {key} = .* is not supported: SimLens honours {honoured}"):
        _load(folder)


def test_custom_and_unknown_module_types_are_refused(st_saved, tmp_path):
    import shutil

    for type_name, message in [("mypackage.modules.Gate", "is custom code"),
                               ("sentence_transformers.sentence_transformer.modules.LayerNorm", "is not supported")]:
        folder = tmp_path / type_name
        shutil.copytree(st_saved, folder)
        modules = json.loads((folder / "modules.json").read_text())
        modules.append({"idx": len(modules), "name": "x", "path": "", "type": type_name})
        (folder / "modules.json").write_text(json.dumps(modules))
        with pytest.raises(ValueError, match=rf"module {type_name}.*{message}"):
            _load(folder)


@pytest.fixture(scope="module")
def bias_free(tmp_path_factory):
    """Tiny BERT folders without biases: cosine + Normalize, and dot + Normalize (where the cut vectors are not
    renormalised, so the whole vector's norm scales the score)."""
    base = tmp_path_factory.mktemp("nobias")
    return {sim: save_sentence_transformer(base / sim, "bert", similarity=sim, zero_bias=True)
            for sim in ("cosine", "dot")}


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_truncate_dim_option_explains_the_truncated_score(bias_free, similarity):
    folder = bias_free[similarity]
    model, full = _load(folder, truncate_dim=10), _load(folder)
    st = sentence_transformer(folder, truncate_dim=10)
    assert model.dim == 10 and model.model_id != full.model_id
    np.testing.assert_allclose(_scores(model), st_scores(st, PAIRS), rtol=1e-5, atol=1e-6)
    assert not np.allclose(_scores(model), _scores(full), atol=1e-4)  # the cut changes the score
    model.encoder.double()
    exp = explain(model, TEXTS[0], TEXTS[1], method="bilrp", layer=0)
    assert exp.score == pytest.approx(exp.model_score, rel=1e-6)
    assert abs(exp.residual) <= 1e-5 * abs(exp.score)
    ij = explain(model, TEXTS[0], TEXTS[1], method="ij", steps=16)
    assert np.isfinite(ij.matrix).all() and abs(ij.residual) < 0.05 * abs(ij.score) + 1e-3
    assert _load(folder, truncate_dim=10_000).variant == ""  # at or past the full dimension: nothing is cut
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer"):
        _load(folder, truncate_dim=0)


def test_do_lower_case_lower_cases_the_text_before_tokenising(tmp_path):
    folder = save_st_folder(tmp_path / "m", "roberta", Pipeline(pooling="mean"))  # a cased byte-level BPE
    plain = _load(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24, "do_lower_case": True}))
    model = _load(folder)
    st = sentence_transformer(folder)
    pairs = [(CASED[0], CASED[1]), (CASED[2], CASED[3])]
    np.testing.assert_allclose(_scores(model, pairs), st_scores(st, pairs), rtol=1e-5, atol=1e-6)
    assert not np.allclose(_scores(model, pairs), _scores(plain, pairs), atol=1e-4)
    batch = model.tokenize([CASED[0]])
    assert batch.tokens[0] == st.tokenizer.convert_ids_to_tokens(st.tokenize([CASED[0]])["input_ids"][0])
    assert batch.tokens[0] == plain.tokenize([CASED[0].lower()]).tokens[0]  # the model's (lower-case) tokens
    words = [CASED[0][s:e] for s, e in batch.offsets[0] if e > s]
    assert "".join(words).replace(" ", "") == CASED[0].replace(" ", "")  # offsets still point into the text


def test_cross_encoders_are_refused_saying_what_they_are(tmp_path):
    import transformers
    from sentence_transformers import CrossEncoder

    _, tokenizer = tiny_encoder("bert")
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, num_labels=1)
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="is a cross-encoder .*BertForSequenceClassification.*not supported yet"):
        _load(tmp_path / "plain")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CrossEncoder(str(tmp_path / "plain"), device="cpu").save(str(tmp_path / "st"))
    with pytest.raises(ValueError, match="is a CrossEncoder .*model_type CrossEncoder.*not supported yet"):
        _load(tmp_path / "st")


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    """A tiny BERT folder (no biases) whose weights are saved in float16."""
    base = tmp_path_factory.mktemp("half")
    folder = save_sentence_transformer(base / "f16", "bert", zero_bias=True)
    model, _ = tiny_encoder("bert", zero_bias=True)
    model.half().save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    return folder


def test_half_precision_weights_run_in_float32_by_default(half):
    model = _load(half)
    assert next(model.encoder.parameters()).dtype == torch.float32 and model.variant == ""
    st = sentence_transformer(half, model_kwargs={"dtype": torch.float32})
    np.testing.assert_allclose(_scores(model), st_scores(st, PAIRS), rtol=1e-5, atol=1e-6)
    exp = explain(model, TEXTS[0], TEXTS[1], method="bilrp", layer=0)
    assert abs(exp.residual) <= 1e-4 * abs(exp.score)  # float32 conserves


def test_dtype_native_keeps_half_precision_and_shows_its_conservation_error(half):
    native, default = _load(half, dtype="native"), _load(half)
    assert next(native.encoder.parameters()).dtype == torch.float16 and native.variant == "dtype=float16"
    assert native.model_id != default.model_id
    st = sentence_transformer(half)  # sentence-transformers computes in the checkpoint's dtype
    np.testing.assert_allclose(_scores(native), st_scores(st, PAIRS), rtol=2e-3, atol=2e-3)
    exp = explain(native, TEXTS[0], TEXTS[1], method="bilrp", layer=0)
    assert np.isfinite(exp.residual) and exp.residual == pytest.approx(exp.score - exp.matrix.sum(), abs=1e-9)
    with pytest.raises(ValueError, match="dtype must be one of float32, native"):
        _load(half, dtype="float16")


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_ij_refuses_a_zero_reference_instead_of_nan(tmp_path, kind):
    """A padding row of zeros and no biases: the reference's pooled embedding is exactly zero."""
    folder = save_sentence_transformer(tmp_path / kind, kind, zero_bias=True)
    model = _load(folder)
    with torch.no_grad():
        model.encoder.get_input_embeddings().weight[model.tokenizer.pad_token_id] = 0
    text = "cat sat on mat"  # no special token survives into the reference
    reference = model.reference_batch(model.tokenize([text]))
    if reference.special.any():
        pytest.skip(f"{kind}'s tiny tokenizer adds special tokens, the reference is not all padding")
    assert model.encode_states(reference, model.num_layers).pooled.abs().max() == 0
    with pytest.raises(ValueError, match="its reference .*has a zero sentence embedding.*another method"):
        explain(model, text, "the dog ran", method="ij", steps=8)
    exp = explain(model, text, "the dog ran", method="bilrp")  # other methods are unaffected
    assert np.isfinite(exp.matrix).all() and np.isfinite(exp.score)
    model.pipeline.normalize = False  # without normalisation a zero reference is an ordinary point
    ij = explain(model, text, "the dog ran", method="ij", steps=8)
    assert np.isfinite(ij.matrix).all() and np.isfinite(ij.score)


def test_cli_truncate_dim_and_dtype_make_their_own_runs(tmp_path, bias_free, capsys):
    from test_precompute import write_pairs

    from core.store import Store
    from precompute.cli import main

    pairs, store, folder = write_pairs(tmp_path / "pairs.tsv", 6), tmp_path / "store", str(bias_free["dot"])
    common = ["predict", "--model", folder, "--dataset", str(pairs), "--store", str(store), "--device", "cpu"]
    for extra in ([], ["--truncate-dim", "10"], ["--truncate-dim", "10", "--dtype", "native"]):
        assert main([*common, *extra]) == 0, capsys.readouterr().err
    runs = Store(store).runs()
    assert len(runs) == 2  # float32 weights: --dtype native is the same variant as the default, a skipped rerun
    assert "already done" in capsys.readouterr().out
    model = _load(folder, truncate_dim=10)
    run_id = runs.set_index("model_id").loc[model.model_id, "run_id"]
    preds = Store(store).predictions(run_id).sort_values("pair_id")
    source = pd.read_csv(pairs, sep="\t")
    emb = model.embed(source["sentence1"].tolist()), model.embed(source["sentence2"].tolist())
    np.testing.assert_allclose(preds["model_score"], model.similarity_of(*emb), rtol=1e-5)


def test_docs_list_every_key_and_module_type_from_the_registry():
    from conftest import ROOT

    from core.sentence_modules import folder_keys_markdown

    doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    generated = doc.split("<!-- folder-keys:start -->\n", 1)[1].split("<!-- folder-keys:end -->", 1)[0]
    assert generated == folder_keys_markdown(), "rewrite the block between the folder-keys markers with folder_keys_markdown()"


@pytest.mark.parametrize("method, steps", [("bilrp", None), ("hxp", None), ("ij", 4), ("embedding", None)])
def test_truncated_factors_equal_the_slow_reference(bias_free, method, steps):
    from reference import reference_factor
    from test_engine import assert_close

    from core import compute_factors

    model = _load(bias_free["dot"], truncate_dim=10)
    model.encoder.double()
    layer = model.num_layers if method == "embedding" else 1
    for text, got in zip(TEXTS[:2], compute_factors(model, TEXTS[:2], method, layer=layer, steps=steps), strict=True):
        assert got.factor.shape[1] == 10
        assert_close(got.factor, reference_factor(model, text, method, layer, steps))


def test_ij_refuses_factors_that_are_not_finite(bias_free, monkeypatch):
    """The last guard: whatever makes the integrand NaN or infinite is an error naming the text, never a matrix."""
    model = _load(bias_free["cosine"])
    head = model.head
    monkeypatch.setattr(model, "head", lambda *args, **kwargs: (lambda h: head(*args, **kwargs)(h) / 0.0))
    with pytest.raises(ValueError, match="integrated Jacobians of '.+' with .* are not finite"):
        explain(model, TEXTS[0], TEXTS[1], method="ij", steps=2)
