"""Untrusted text (URL parameters, dataset sentences, file and model names): shown literally, parsed strictly.

Streamlit renders the strings given to ``st.markdown``, ``st.caption``, alerts, headers and widget labels as
GitHub-flavoured Markdown with extensions: links, images, autolinked ``www.``/``http://``/e-mail literals,
emoji and icon shortcodes (``:smile:``, ``:material/home:``), colour directives (``:red[...]``), LaTeX
(``$...$``) and typographic replacements (``->``, ``--``). Backslash escapes stop the parser-level syntax but
not the shortcode, autolink and typographic rewrites, which run on the parsed text afterwards; ``literal``
therefore also splits the text around every punctuation mark with an empty directive (which renders nothing),
so that no rewrite sees its pattern. The browser test renders hostile strings through every page and checks
that the text shown is the text given, with no link, image or outgoing request.

Numbers from untrusted text accept ASCII digits only: Python's ``int``/``float`` also take ``١٢`` (Arabic-
Indic digits), ``٣`` and ``0_5``, which would silently become 12, 3.0 and 5.0.
"""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCTUATION = frozenset(string.punctuation)
#: An empty colour directive: splits Markdown text nodes and renders as nothing.
_SPLIT = ":gray[]"
_LINE_START_SPACE = re.compile(r"^[ \t]+", re.MULTILINE)
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: Unicode categories that put nothing visible on the screen: controls, formats (zero-width space and
#: joiners, BOM, bidi marks), separators (spaces), unassigned and private-use code points.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
#: Visible-looking code points that render blank all the same (Hangul fillers, braille blank, combining
#: grapheme joiner and the variation selectors, which are marks).
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")


def literal(text: object) -> str:
    """Markdown that Streamlit renders as exactly ``str(text)``: nothing in it becomes a link, an image,
    markup, an emoji, an icon, a colour, a formula or a typographic symbol. Line breaks stay line breaks;
    runs of spaces collapse, as in any HTML text."""
    out = []
    for ch in str(text):
        if ch in _PUNCTUATION:
            out.append(f"{_SPLIT}\\{ch}{_SPLIT}")
        elif ch == "\r":
            continue
        elif ch == "\n":
            out.append("  \n")
        else:
            out.append(ch)
    return _LINE_START_SPACE.sub(lambda m: "&#32;" * len(m.group().expandtabs(4)), "".join(out))


def unliteral(markdown: str) -> str:
    """The text a reader sees of ``literal``'s output (its inverse, line breaks aside); static Markdown around it
    is left as it is. For tests that look for a value in what a page renders."""
    plain = markdown.replace(_SPLIT, "").replace("&#32;", " ")
    return _ESCAPED.sub(r"\1", plain)


def parse_ascii_int(text: object) -> int | None:
    """The integer written in ASCII digits (optional sign, surrounding spaces allowed), else None."""
    if not isinstance(text, str) or not _ASCII_INT.fullmatch(text.strip()):
        return None
    return int(text.strip())


def parse_ascii_decimal(text: str) -> float | None:
    """The finite or infinite number written in ASCII (``3``, ``-0.5``, ``2.5e1``, ``inf``, ``nan``), else None;
    no underscores, no non-ASCII digits."""
    stripped = text.strip()
    if _ASCII_DECIMAL.fullmatch(stripped) or stripped.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        return float(stripped)
    return None


#: control characters a text may hold: tab and line breaks (line feed, carriage return)
TEXT_CONTROLS = frozenset("\t\n\r")


def control_character(text: str) -> str | None:
    """The first control character of ``text`` (Unicode category Cc: NUL, escape, DEL, C1 controls ...) other
    than :data:`TEXT_CONTROLS`, written as ``U+0000``; None when it has none."""
    for ch in text:
        if unicodedata.category(ch) == "Cc" and ch not in TEXT_CONTROLS:
            return f"U+{ord(ch):04X}"
    return None


def has_visible_character(text: str) -> bool:
    """Whether ``text`` holds at least one character that shows on screen (not only spaces, zero-width and
    other format or control characters)."""
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES and ch not in _BLANK
               and not unicodedata.category(ch).startswith("M") for ch in text)
