"""One rule for the text a client stores or sends back to itself (names, metadata, key names,
class names, JSON strings), and the scrubbing of stored text on its way out.

Refused everywhere (422 naming the field):

- lone surrogates (Unicode category ``Cs``, e.g. the JSON escape ``"\\ud800"``): such text has
  no UTF-8 form, so it could be neither stored faithfully nor answered;
- control characters (``Cc``: NUL, tab, newline, ESC...);
- invisible format characters (``Cf``: zero-width space U+200B, bidi overrides and isolates
  U+202A..U+202E, U+2066..U+2069, byte-order mark U+FEFF, soft hyphen...), which make two names
  look alike or reorder a listing's text. The zero-width joiner U+200D is the one exception:
  emoji sequences (``👩‍💻``) need it, and it reorders nothing;
- line and paragraph separators (``Zl``, ``Zp``: U+2028, U+2029), which break a name across
  lines, and the Hangul fillers U+115F, U+1160, U+3164, U+FFA0: letters by category that
  Unicode lists as default-ignorable, so a name made of them shows as blank.

Responses never fail on stored text: :class:`ScrubbedModel` replaces any lone surrogate a row
may hold (written before these checks, or by another tool) with U+FFFD.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pydantic import BaseModel, field_validator

ZWJ = "\u200d"
_REFUSED_CATEGORIES = ("Cs", "Cc", "Cf", "Zl", "Zp")
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_SURROGATE = re.compile("[\ud800-\udfff]")


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` this module's rule refuses (``Cs``, ``Cc``, ``Zl``,
    ``Zp``, ``Cf`` other than U+200D, or a Hangul filler), or None."""
    if text.isascii():  # O(1) in CPython; only Cc can occur
        return next((ch for ch in text if ch < " " or ch == "\x7f"), None)
    return next((ch for ch in text if (unicodedata.category(ch) in _REFUSED_CATEGORIES
                                       and ch != ZWJ) or ch in _BLANK_LETTERS), None)


def describe(ch: str) -> str:
    """``U+200B (ZERO WIDTH SPACE)``: a refused character, for a problem detail."""
    name = unicodedata.name(ch, "") or ("lone surrogate" if _SURROGATE.match(ch) else
                                        "control character")
    return f"U+{ord(ch):04X} ({name})"


def has_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (cannot be encoded as UTF-8)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (dict keys included, nested lists and
    dicts walked) replaced by U+FFFD; other values unchanged."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if has_surrogate(value) else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


class ScrubbedModel(BaseModel):
    """Base of the response models that carry stored client text: every field's input is
    :func:`scrub`-bed, so a row holding unencodable text is answered (with U+FFFD) instead of
    failing the response's JSON serialisation with a 500."""

    @field_validator("*", mode="before")
    @classmethod
    def _scrub(cls, value: Any) -> Any:
        return scrub(value)
