"""The owner's ``name`` and ``metadata`` of an adaptation: limits, parsing, listing filters.

The rule follows what payment APIs made familiar for metadata: a flat JSON object of string keys
and string values, so that a filter compares text with text on SQLite and PostgreSQL alike.

- ``name``: 1..``NAME_MAX_CHARS`` characters after trimming, none of the characters
  :mod:`api.text` refuses (control, invisible format characters such as U+200B or U+202E, lone
  surrogates);
- ``metadata``: at most ``METADATA_MAX_KEYS`` keys, each matching ``KEY_PATTERN`` (letters,
  digits, ``_ . -``; 1..40 characters) and given once, each value a string of at most
  ``VALUE_MAX_CHARS`` characters under the same character rule as ``name``; nested objects,
  lists, numbers, booleans and null are refused (send ``"3"``, not ``3``). ``{}`` and an absent
  field both mean no metadata.

Every refusal is a 422 ``validation-error`` naming the field (``metadata.<key>`` for a value).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement

from api.bounds import loads_bounded
from api.problem import ProblemError
from api.text import describe, unsafe_char
from service.models import Adaptation

NAME_MAX_CHARS = 100
METADATA_MAX_KEYS = 50
VALUE_MAX_CHARS = 500
KEY_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
# The JSON text of a metadata field: what METADATA_MAX_KEYS keys of the longest values can take,
# escapes included, refused before parsing.
METADATA_MAX_BYTES = 64 * 1024


def _refuse(detail: str, field: str) -> ProblemError:
    return ProblemError(422, detail, kind="validation-error", field=field)


def check_text(text: str, field: str) -> None:
    """422 naming ``field`` when ``text`` holds a character :func:`api.text.unsafe_char`
    refuses (control, invisible format character, lone surrogate)."""
    bad = unsafe_char(text)
    if bad is not None:
        raise _refuse(f"{field} must not contain control, invisible formatting or unencodable "
                      f"characters (found {describe(bad)})", field)


def check_name(value: Any) -> str | None:
    """The trimmed ``name`` (None when absent).

    Raises:
        ProblemError: 422 (field ``name``) unless a string of 1..NAME_MAX_CHARS characters
        without control characters.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refuse("name must be a string", "name")
    name = value.strip()
    if not name or len(name) > NAME_MAX_CHARS:
        raise _refuse(f"name must be 1..{NAME_MAX_CHARS} characters", "name")
    check_text(name, "name")
    return name


def check_metadata(value: Any) -> dict[str, str] | None:
    """``metadata`` as a dict of strings (None when absent or empty); a ``str`` is parsed as JSON
    (the multipart field).

    Raises:
        ProblemError: 422 naming ``metadata`` (or ``metadata.<key>``) for anything but a flat
        object of at most METADATA_MAX_KEYS KEY_PATTERN keys, each given once, and string
        values of at most VALUE_MAX_CHARS characters passing :func:`check_text`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if len(value.encode()) > METADATA_MAX_BYTES:
            raise _refuse(f"metadata is larger than {METADATA_MAX_BYTES} bytes", "metadata")
        value = loads_bounded(value, "metadata") if value.strip() else {}
    if not isinstance(value, dict):
        raise _refuse("metadata must be a JSON object of string values", "metadata")
    if len(value) > METADATA_MAX_KEYS:
        raise _refuse(f"metadata has {len(value)} keys; at most {METADATA_MAX_KEYS}", "metadata")
    for key, item in value.items():
        if not KEY_PATTERN.fullmatch(key):
            raise _refuse(f"metadata key {key[:50]!r} must be 1..40 letters, digits, '_', '.' or "
                          "'-'", "metadata")
        if not isinstance(item, str):
            raise _refuse(f"metadata.{key} must be a string (got {type(item).__name__}); "
                          "values are strings, not nested objects, lists, numbers or booleans",
                          f"metadata.{key}")
        if len(item) > VALUE_MAX_CHARS:
            raise _refuse(f"metadata.{key} must be at most {VALUE_MAX_CHARS} characters",
                          f"metadata.{key}")
        check_text(item, f"metadata.{key}")
    return dict(value) or None


def form_fields(form: Any) -> tuple[str | None, dict[str, str] | None]:
    """(name, metadata) from the multipart text fields ``name`` and ``metadata`` (JSON).

    Raises:
        ProblemError: 422 naming the field: a file part, a repeated field, or an invalid value.
    """
    values = []
    for field in ("name", "metadata"):
        parts = form.getlist(field)
        if len(parts) > 1 or any(not isinstance(p, str) for p in parts):
            raise _refuse(f"send {field} once, as a text field", field)
        values.append(parts[0] if parts else None)
    return check_name(values[0]), check_metadata(values[1])


def list_filters(name: str | None, metadata: list[str]) -> list[ColumnElement[bool]]:
    """WHERE clauses of ``GET /adaptations?name=...&metadata=key:value`` (all must hold).

    ``name`` matches exactly; each ``key:value`` matches adaptations whose metadata maps ``key``
    to exactly ``value`` (text comparison: ``->>`` on PostgreSQL, ``json_extract`` on SQLite).

    Raises:
        ProblemError: 422 (field ``metadata``) for a filter without ``:`` or with a bad key.
    """
    where: list[ColumnElement[bool]] = []
    if name is not None:
        where.append(Adaptation.name == name)
    for item in metadata:
        key, sep, value = item.partition(":")
        if not sep or not KEY_PATTERN.fullmatch(key):
            raise _refuse(f"metadata filter {item[:80]!r} must be key:value with a key of 1..40 "
                          "letters, digits, '_', '.' or '-'", "metadata")
        where.append(Adaptation.user_metadata[key].as_string() == value)
    return where


class AdaptationPatch(BaseModel):
    """JSON body of ``PATCH /adaptations/{id}``: the members sent replace the stored ones;
    ``null`` clears one (``{}`` clears metadata too)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(default=None, description=f"1..{NAME_MAX_CHARS} characters")
    metadata: dict[str, Any] | None = Field(
        default=None, description=f"at most {METADATA_MAX_KEYS} keys (1..40 of [A-Za-z0-9_.-]), "
                                  f"string values of at most {VALUE_MAX_CHARS} characters")
