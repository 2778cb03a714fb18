"""Prompts: the model's default prompt and per-side prompts are applied exactly as sentence-transformers applies
them (with include_prompt both ways), prompt tokens are flagged, and the factors stay exact."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import reference_factor
from st_folders import Pipeline, save_st_folder, sentence_transformer
from test_engine import assert_close
from test_sentence_modules import PAIRS, TEXTS, st_scores

from core import compute_factors, explain, explain_pairs, load_model

PROMPTS = {"query": "query: ", "passage": "passage: ", "empty": ""}


def _pipeline(pooling: str, include_prompt: bool, default: str | None = "query") -> Pipeline:
    return Pipeline(pooling=pooling, include_prompt=include_prompt, prompts=PROMPTS, default_prompt_name=default,
                    normalize=True)


CASES = {f"{kind}-{pooling}-{'incl' if incl else 'excl'}": (kind, _pipeline(pooling, incl))
         for kind in ("bert", "roberta") for pooling in ("mean", "cls", "lasttoken", "weightedmean")
         for incl in (True, False)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("prompts")
    return {name: save_st_folder(base / name, kind, pipe) for name, (kind, pipe) in CASES.items()}


def _load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(folder, device="cpu")


@pytest.mark.parametrize("name", list(CASES))
def test_default_prompt_equals_sentence_transformers(folders, name):
    model, st = _load(folders[name]), sentence_transformer(folders[name])
    np.testing.assert_allclose(model.embed(TEXTS, batch_size=2), st.encode(TEXTS, batch_size=2), rtol=1e-4,
                               atol=1e-5)
    scores = [e.model_score for e in explain_pairs(model, PAIRS, method="hxp")]
    np.testing.assert_allclose(scores, st_scores(st, PAIRS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bert-mean-excl", "bert-cls-excl", "roberta-mean-incl", "roberta-weightedmean-excl"])
def test_per_side_prompts_equal_sentence_transformers(folders, name):
    model, st = _load(folders[name]), sentence_transformer(folders[name])
    cases = [  # (our prompt_a, prompt_b), (sentence-transformers' encode arguments for each side)
        (("query", "passage"), ({"prompt_name": "query"}, {"prompt_name": "passage"})),
        (("Represent this: ", ""), ({"prompt": "Represent this: "}, {"prompt": ""})),
        (("empty", None), ({"prompt_name": "empty"}, {})),
    ]
    for (pa, pb), (sa, sb) in cases:
        scores = [e.model_score for e in explain_pairs(model, PAIRS, method="hxp", prompt_a=pa, prompt_b=pb)]
        np.testing.assert_allclose(scores, st_scores(st, PAIRS, prompt_a=sa, prompt_b=sb), rtol=1e-5, atol=1e-6)
    ours = model.embed(TEXTS[:3], prompts=["query", "passage", ""])
    theirs = np.stack([st.encode([TEXTS[0]], prompt_name="query")[0], st.encode([TEXTS[1]], prompt_name="passage")[0],
                       st.encode([TEXTS[2]], prompt="")[0]])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_prompt_tokens_are_flagged_and_offsets_point_into_the_text(folders):
    model = _load(folders["bert-mean-excl"])
    exp = explain(model, "The cat sat.", "A dog ran.", method="hxp", prompt_b="passage")
    assert exp.prompt_text_a == "query: " and exp.prompt_text_b == "passage: "
    assert [t for t, p in zip(exp.tokens_a, exp.prompt_a, strict=True) if p] == ["query", ":"]
    assert [t for t, p in zip(exp.tokens_b, exp.prompt_b, strict=True) if p] == ["passage", ":"]
    assert exp.special_a[0] and not exp.prompt_a[0]  # [CLS] stays a special token
    for token, (start, end), special, prompt in zip(exp.tokens_a, exp.offsets_a, exp.special_a, exp.prompt_a,
                                                    strict=True):
        if not special and not prompt:
            assert exp.text_a[start:end].lower() == token.removeprefix("##")
    words = exp.to_words()
    assert words.tokens_a[:3] == ["[CLS]", "query", ":"] and words.prompt_a[:3] == [False, True, True]
    assert words.tokens_a[3:6] == ["The", "cat", "sat"]
    assert abs(words.matrix.sum() - exp.matrix.sum()) < 1e-9
    none = explain(model, "The cat sat.", "A dog ran.", method="hxp", prompt_a="", prompt_b="")
    assert not any(none.prompt_a) and none.tokens_a[1] == "the"


def test_bpe_prompt_offsets(folders):
    model = _load(folders["roberta-mean-excl"])
    batch = model.tokenize(["Il pleut sur la ville."], "passage")
    prompt = batch.prompt[0, batch.real(0)].tolist()
    assert sum(prompt) == model.prompt_length("passage: ") - 1  # ST counts the leading <s> as part of the prompt
    text = batch.texts[0]
    spans = [text[s:e] for (s, e), p, sp in zip(batch.offsets[0], prompt, batch.special[0].tolist(), strict=True)
             if not p and not sp]
    assert "".join(spans).replace(" ", "") == text.replace(" ", "")


@pytest.mark.parametrize("name", ["bert-mean-excl", "bert-cls-excl", "roberta-lasttoken-incl"])
@pytest.mark.parametrize("method,steps", [("bilrp", None), ("ij", 2)])
def test_factors_with_default_prompt_equal_slow_reference(folders, name, method, steps):
    model = _load(folders[name])
    model.encoder.double()
    got = compute_factors(model, TEXTS[:3], method=method, layer=1, steps=steps, batch_size=2)
    for text, factor in zip(TEXTS[:3], got, strict=True):
        assert factor.prompt_text == "query: " and sum(factor.prompt) == 2 if name.startswith("bert") else True
        assert_close(factor.factor, reference_factor(model, text, method, 1, steps))


def test_same_text_with_two_prompts_is_two_sentences(folders):
    model = _load(folders["bert-mean-incl"])
    out = compute_factors(model, [TEXTS[0], TEXTS[0]], method="embedding", prompts=["query", "passage"])
    assert out[0].prompt_text == "query: " and out[1].prompt_text == "passage: "
    assert not np.allclose(out[0].embedding, out[1].embedding)


def test_prompt_arguments_are_checked(folders):
    model = _load(folders["bert-mean-incl"])
    with pytest.raises(ValueError, match="got 1 prompts for 2 texts"):
        model.embed(TEXTS[:2], prompts=["query"])
    with pytest.raises(ValueError, match="a prompt must be a prompt name or text"):
        explain(model, "a", "b", prompt_a=3)
    with pytest.warns(UserWarning, match="'queries' is not one of the model's prompts"):
        model.embed(TEXTS[:1], prompts="queries")


def test_cli_prompts_per_side_pooling_and_tagger_warning(folders, tmp_path, capsys):
    import pandas as pd

    from core.store import Store
    from precompute.cli import main

    pairs = tmp_path / "pairs.tsv"
    pd.DataFrame({"sentence1": [a for a, _ in PAIRS], "sentence2": [b for _, b in PAIRS],
                  "score": [1.0, 2.0, 3.0]}).to_csv(pairs, sep="\t", index=False)
    store = tmp_path / "store"
    common = ["--model", str(folders["bert-mean-excl"]), "--dataset", str(pairs), "--store", str(store),
              "--gold-range", "0,5", "--lang", "sw"]
    assert main(["attribute", *common, "--method", "hxp", "--prompt-a", "query",
                 "--prompt-b", "passage"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("warning:")]
    assert warning == ["warning: no POS tagger for language 'sw': POS tags will be NULL; spaCy publishes no trained "
                       "pipeline for 'sw'; pass --tagger NAME_OR_PATH with one you trained"], err
    assert main(["predict", *common, "--prompt", "passage", "--prompt-a", "query"]) == 0  # same prompts
    assert main(["predict", *common]) == 0  # the default prompt on both sides: another run, another model id
    reader = Store(store)
    runs = reader.runs().set_index("method")
    st = sentence_transformer(folders["bert-mean-excl"])
    expected = st_scores(st, PAIRS, prompt_a={"prompt_name": "query"}, prompt_b={"prompt_name": "passage"})
    default = st_scores(st, PAIRS)
    predict_runs = reader.runs()[lambda r: r["method"] == "predict"]
    assert len(predict_runs) == 2 and predict_runs["model_id"].nunique() == 2
    attribute_model = runs.loc["hxp", "model_id"]
    for run_id, model_id in zip(predict_runs["run_id"], predict_runs["model_id"], strict=True):
        scores = reader.predictions(run_id).sort_values("pair_id")["model_score"].to_numpy()
        np.testing.assert_allclose(scores, expected if model_id == attribute_model else default, rtol=1e-5)
    names = set(reader.models()["name"])
    assert any("prompts=" in name and "passage: " in name for name in names)
    tokens = reader.tokens(runs.loc["hxp", "run_id"], 0)
    side_b = tokens[tokens["side"] == "b"]
    assert side_b.loc[side_b["is_prompt"], "token"].tolist() == ["passage", ":"]
    assert set(side_b.loc[side_b["is_prompt"], "pos"]) == {"[PROMPT]"}
    hidden = reader.pair_matrix(runs.loc["hxp", "run_id"], 0, include_special=False)
    assert not hidden["token_a"].isin(["query", ":", "[CLS]"]).any()
    assert main(["predict", *common, "--pooling", "cls"]) == 2
    assert "sentence-transformers model with mean pooling" in capsys.readouterr().err


def test_explain_page_prompts_per_side_pooling_and_hiding(folders, tmp_path, monkeypatch):
    from test_app import charts_of, encoding, metric, ok, open_app

    folder = folders["bert-cls-excl"]
    at = open_app(monkeypatch, tmp_path / "no-store", "explain")
    at.selectbox(key="xp_model_choice").set_value("Other (folder path or hub id)…")
    ok(at)
    at.text_input(key="xp_model_path").input(str(folder))
    ok(at)
    assert at.selectbox(key="xp_prompt_a").options == ["default prompt", *PROMPTS, "no prompt", "custom text…"]
    at.selectbox(key="xp_prompt_b").set_value("passage")
    at.selectbox(key="xp_method").set_value("hxp")
    at.text_area(key="xp_text_a").input("The cat sat.")
    at.text_area(key="xp_text_b").input("A dog ran.")
    at.button(key="xp_go").click()
    ok(at)
    exp = explain(_load(folder), "The cat sat.", "A dog ran.", method="hxp", prompt_b="passage")
    assert metric(at, "model score") == f"{exp.model_score:.4f}"
    assert metric(at, "prompt of text 2") == repr("passage: ")
    assert encoding(charts_of(at)[0])["x"]["sort"] == [f"{j}:{t}" for j, t in enumerate(exp.tokens_b)]
    at.toggle(key="xp_prompt_tokens").set_value(False)
    ok(at)
    shown = [f"{j}:{t}" for j, (t, p) in enumerate(zip(exp.tokens_b, exp.prompt_b, strict=True)) if not p]
    assert encoding(charts_of(at)[0])["x"]["sort"] == shown
    at.selectbox(key="xp_prompt_a").set_value("custom text…")
    ok(at)
    at.text_input(key="xp_prompt_a_text").input("Represent this: ")
    at.selectbox(key="xp_pooling").set_value("mean")  # not this model's own pooling: a clear message
    at.button(key="xp_go").click()
    at.run()
    from core.safe_text import unliteral

    assert any("sentence-transformers model with cls pooling" in unliteral(e.value) for e in at.error)
