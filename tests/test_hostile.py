"""Hostile strings in URLs and in data are shown as text, never as Markdown or HTML (the dashboard under
Streamlit's AppTest; the real browser's check is in test_browser.py), and untrusted numbers accept ASCII
digits only."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from core import views
from core.safe_text import has_visible_character, literal, parse_ascii_decimal, parse_ascii_int, unliteral

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

#: Anything that Markdown or HTML would turn into a link, an image, markup, an emoji, an icon or a formula
#: (searched after removing the empty directives that ``literal`` puts around punctuation).
RAW_MARKUP = re.compile(r"(?<!\\)(?:\]\(|!\[|<img|<a |<b>|https?:|www\.|:smile:|:material/|:red\[|\$x|\*\*bold|__it__|->)")
SPLIT = ":gray[]"


def raw_markup(markdown: str) -> bool:
    return bool(RAW_MARKUP.search(markdown.replace(SPLIT, "")))


def hostile_sentences(port: int) -> list[str]:
    """Sentences that would fetch from, or link to, a listener on ``port`` if rendered as Markdown/HTML."""
    url = f"http://127.0.0.1:{port}"
    return [
        f"Click [here]({url}/link) for more.",
        f"Look ![pic]({url}/markdown-image.png) at this.",
        f"An <img src={url}/html-image.png> and <a href={url}/a>a link</a> and <b>bold</b>.",
        f"Visit www.example.com or {url}/autolink today.",
        "A **bold** claim, __it__ :smile: :material/home: :red[red] $x^2$ -> -- done.",
        f"[![badge]({url}/badge.svg)]({url}/badge-link) and # not a heading",
    ]


def hostile_rows(port: int, n: int = 14) -> pd.DataFrame:
    bad = hostile_sentences(port)
    rows = [{"sentence1": bad[k % len(bad)] if k % 2 == 0 else f"A plain sentence number {k}.",
             "sentence2": f"Another sentence, number {k}." if k % 2 == 0 else bad[k % len(bad)],
             "score": float(k % 6)} for k in range(n)]
    return pd.DataFrame(rows)


def build_hostile_store(root: Path, bert_folder: Path, port: int) -> dict:
    """A store whose sentences, dataset file name and model folder name are hostile: a bilrp and a predict run
    on 14 pairs. Returns {"path": store, "runs": {"bilrp": id, "predict": id}, "sentences": [...]}."""
    from core import load_model
    from core.datasets import load_dataset
    from precompute.runner import run

    root.mkdir(parents=True, exist_ok=True)
    model_folder = root / "m **b** _i_ :smile: [x] <b>"
    if not model_folder.exists():
        shutil.copytree(bert_folder, model_folder)
    data = root / "d [y](z) :red[w].tsv"
    frame = hostile_rows(port)
    frame.to_csv(data, sep="\t", index=False)
    store = root / "store"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(data, lang="en", gold_range=(0, 5))
        model = load_model(model_folder, device="cpu")
        ids = {method: run(model, ds, store, method=method, chunk_size=7, progress=False).run_id
               for method in ("bilrp", "predict")}
    return {"path": store, "runs": ids, "sentences": hostile_sentences(port), "frame": frame}


# --------------------------------------------------------------------------------------------------
# the helpers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [*hostile_sentences(8000), "back\\slash \\* x", "tab\there", "line\nbreak",
                                  "    indented code", "1. list", "> quote", "| a | b |", "&amp; &lt;"])
def test_literal_leaves_no_markup(text):
    out = literal(text).replace(SPLIT, "").replace("&#32;", " ")
    assert not raw_markup(out), out
    # every ASCII punctuation mark is backslash-escaped, and nothing else changed (but line breaks)
    assert unliteral(literal(text)).replace("  \n", "\n") == (text.expandtabs(4) if text[0] in " \t" else text)


@pytest.mark.parametrize("text,value", [("12", 12), (" 12 ", 12), ("-3", -3), ("+4", 4), ("١٢", None), ("1_2", None),
                                        ("１２", None), ("12a", None), ("", None), ("1.0", None), (None, None)])
def test_parse_ascii_int(text, value):
    assert parse_ascii_int(text) == value


@pytest.mark.parametrize("text,value", [("3", 3.0), ("0.5", 0.5), ("-1e-1", -0.1), ("0_5", None), ("٣", None),
                                        ("0x1", None), ("1e", None), ("", None)])
def test_parse_ascii_decimal(text, value):
    assert parse_ascii_decimal(text) == value


@pytest.mark.parametrize("text,visible", [("a", True), (" a ", True), ("\u200b\u200c\u200d\u2060\ufeff", False),
                                          ("\u3164\u2800 \u00a0\t\n", False), ("\u0301", False), ("é", True),
                                          ("日本", True), ("\U0001f600", True), ("", False)])
def test_has_visible_character(text, visible):
    assert has_visible_character(text) is visible


def test_explain_rejects_invisible_texts(tiny_models):
    from core import explain

    with pytest.raises(ValueError, match=r"text_b is empty or has no visible character"):
        explain(tiny_models["bert"], "A man.", "\u200b\u200d\ufeff")


# --------------------------------------------------------------------------------------------------
# the dashboard under AppTest
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory, tiny_folders) -> dict:
    return build_hostile_store(tmp_path_factory.mktemp("hostile"), tiny_folders["bert"], port=9)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def markdown_strings(at: AppTest) -> list[str]:
    """Every string the frontend would parse as Markdown: bodies of markdown, captions, alerts and headings,
    labels and help of widgets, metrics, expanders and status boxes."""
    out = []
    for node in _walk(at._tree):
        proto = getattr(node, "proto", None)
        if proto is None:
            continue
        for name in ("body", "label", "help", "value") if node.type in ("markdown", "caption", "title", "header",
                                                                        "subheader", "error", "warning", "info",
                                                                        "success") else ("label", "help"):
            value = getattr(proto, name, None)
            if isinstance(value, str) and value:
                out.append(value)
    return out


def open_page(monkeypatch, store: Path, page: str, **query) -> AppTest:
    monkeypatch.setenv(views.STORE_ENV, str(store))
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_no_markup(at: AppTest) -> list[str]:
    strings = markdown_strings(at)
    raw = [s for s in strings if raw_markup(s)]
    assert not raw, raw
    return strings


@pytest.mark.parametrize("run,pair", [
    ("[x](http://127.0.0.1:9/run) ![i](http://127.0.0.1:9/run.png)", "<img src=http://127.0.0.1:9/pair.png>"),
    ("**bold** :smile: $x^2$", "[12](http://127.0.0.1:9/pair)"),
])
def test_hostile_url_parameters_are_shown_as_text(monkeypatch, hostile_store, run, pair):
    at = open_page(monkeypatch, hostile_store["path"], "pages/5_Example.py", run=run, pair=pair)
    strings = assert_no_markup(at)
    warnings_shown = [w.value for w in at.warning]
    assert any(literal(run) in w for w in warnings_shown) and any(literal(pair) in w for w in warnings_shown), \
        warnings_shown
    assert any("Sentence 1" in s for s in strings)  # the page went on with another run


def test_non_ascii_pair_id_in_the_url_is_rejected(monkeypatch, hostile_store):
    run_id = hostile_store["runs"]["bilrp"]
    at = open_page(monkeypatch, hostile_store["path"], "pages/5_Example.py", run=run_id, pair="١٢")
    assert any("is not a pair id" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.selectbox(key="ex_pair").value != 12
    at = open_page(monkeypatch, hostile_store["path"], "pages/5_Example.py", run=run_id, pair="12")
    assert at.selectbox(key="ex_pair").value == 12 and not at.warning


@pytest.mark.parametrize("pair", range(6))
def test_hostile_sentences_of_the_example_page_are_text(monkeypatch, hostile_store, pair):
    at = open_page(monkeypatch, hostile_store["path"], "pages/5_Example.py", run=hostile_store["runs"]["bilrp"],
                   pair=str(pair))
    strings = assert_no_markup(at)
    row = hostile_store["frame"].iloc[pair]
    shown = "\n".join(strings)
    assert literal(row["sentence1"]) in shown and literal(row["sentence2"]) in shown
    assert literal("m **b** _i_ :smile: [x] <b>") in shown  # the model's folder name


@pytest.mark.parametrize("page", ["pages/1_Overview.py", "pages/2_POS_interactions.py", "pages/3_Compare.py",
                                  "pages/4_Failures.py", "pages/9_Faithfulness.py"])
def test_every_page_keeps_hostile_names_and_sentences_as_text(monkeypatch, hostile_store, page):
    at = open_page(monkeypatch, hostile_store["path"], page)
    assert_no_markup(at)


def test_failures_page_shows_hostile_sentences_as_text(monkeypatch, hostile_store):
    at = open_page(monkeypatch, hostile_store["path"], "pages/4_Failures.py")
    strings = assert_no_markup(at)
    shown = "\n".join(strings)
    assert any(literal(s) in shown for s in hostile_store["sentences"]), shown[:2000]


def test_search_page_shows_hostile_indexed_passages_as_text(monkeypatch, hostile_store, tmp_path):
    """Issue #21: indexed corpora are untrusted text: hit passages, expander titles and captions on the Search
    page are literal (every hostile sentence of the index is a hit of a query for it)."""
    from core import load_model
    from precompute.index import build_index, dataset_corpus

    model_folder = next(p for p in hostile_store["path"].parent.iterdir() if p.name.startswith("m **b**"))
    data_file = next(p for p in hostile_store["path"].parent.iterdir() if p.suffix == ".tsv")
    store = tmp_path / "search_store"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(model_folder, device="cpu")
        build_index(model, dataset_corpus([str(data_file)]), store, chunk_size=8, progress=False)
    at = open_page(monkeypatch, store, "pages/7_Search.py")
    at.text_input(key="sr_query").set_value(hostile_store["sentences"][0])
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    strings = assert_no_markup(at)
    titles = [unliteral(e.label) for e in at.expander if unliteral(e.label).startswith("#")]
    assert len(titles) == 5
    shown = "\n".join(strings)
    assert any(literal(s) in shown for s in hostile_store["sentences"]), shown[:2000]
