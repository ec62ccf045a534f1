"""Bounds on the numbers a client can send (issue 12 A.4).

Every integer a user sends is bounded before the code, torch or a database sees it:

- query parameters carry explicit ``le=`` bounds (``INT32_MAX`` at most: the range of a
  PostgreSQL ``INTEGER`` and far inside SQLite's 64-bit one);
- JSON bodies and the ``config`` form field are parsed with :func:`loads_bounded`, which refuses
  any integer outside ``±JSON_INT_MAX`` (RFC 7493 I-JSON: exactly representable as a double, so
  no later ``float()`` can overflow) with a 422 naming the key as the client wrote it. Python's
  own parser would raise a bare ``ValueError`` past 4,300 digits, and pydantic's answers
  "number out of range" without naming the key. The same parse refuses a member name given
  twice in one object (``{"a": "1", "a": "2"}`` would otherwise keep the last silently) and any
  string or member name holding a lone surrogate (the escape ``"\\ud800"``: text without a
  UTF-8 form, which could be neither stored nor answered), each naming its key path.

Config values are then range-checked field by field by ``AdapterConfig``/``TrainConfig``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from api.problem import ProblemError
from api.text import has_surrogate

if TYPE_CHECKING:
    from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound="BaseModel")

INT32_MAX = 2**31 - 1  # the largest value of a PostgreSQL INTEGER column or parameter
JSON_INT_MAX = 2**53 - 1  # the largest integer a double holds exactly (RFC 7493 section 2.2)


class _Oversized:
    """Placeholder for an integer literal outside ``±JSON_INT_MAX`` (keeps its first digits)."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _parse_int(literal: str) -> int | _Oversized:
    if len(literal.lstrip("-")) > len(str(JSON_INT_MAX)):  # never int() a 5,000-digit string
        return _Oversized(literal)
    value = int(literal)
    return value if abs(value) <= JSON_INT_MAX else _Oversized(literal)


class _Pairs(dict):
    """A parsed JSON object that remembers the first member name it was given twice."""

    duplicate: str | None = None


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs()
    for key, value in pairs:
        if key in obj and obj.duplicate is None:
            obj.duplicate = key
        obj[key] = value
    return obj


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """(key path, complaint) of the first oversized integer, repeated member name or string
    with a lone surrogate in ``value``, or None."""
    if isinstance(value, _Oversized):
        shown = value.literal if len(value.literal) <= 24 else value.literal[:20] + "..."
        return path, f"{shown} is out of range; integers must lie within +-{JSON_INT_MAX}"
    if isinstance(value, str):
        return (path, "holds a lone surrogate (text without a UTF-8 form)") \
            if has_surrogate(value) else None
    if isinstance(value, _Pairs) and value.duplicate is not None:
        return _join(path, value.duplicate), "is given twice in the same object"
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and has_surrogate(key):
            return path, (f"member name {ascii(key)[:60]} holds a lone surrogate (text without "
                          "a UTF-8 form)")
        sub = _join(path, key)
        found = _find_bad(item, sub)
        if found is not None:
            return found
    return None


def loads_bounded(raw: str | bytes, field: str, kind: str = "validation-error") -> Any:
    """``json.loads(raw)`` refusing integers outside ``±JSON_INT_MAX``.

    Args:
        raw: the JSON text.
        field: the problem ``field`` of the whole document (``config``, or ``""`` for a body);
            an oversized number is named ``<field>.<key path>``.
        kind: problem kind of the refusals.

    Returns:
        The parsed value (ints, floats, strings, lists, dicts).

    Raises:
        ProblemError: 422 naming ``field`` for invalid or too deeply nested JSON, or the key
            path of an integer outside the bounds, of a member name given twice, or of a string
            holding a lone surrogate.
    """
    try:
        data = json.loads(raw, parse_int=_parse_int, object_pairs_hook=_pairs)
        found = _find_bad(data, field)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ProblemError(422, f"{field or 'body'} is not valid JSON: {msg}{where}", kind=kind,
                           field=field or "body") from exc
    except RecursionError as exc:  # [[[[...]]]] deeper than the parser's (or our walk's) stack
        raise ProblemError(422, f"{field or 'body'} is nested too deeply", kind=kind,
                           field=field or "body") from exc
    if found is not None:
        path, complaint = found
        raise ProblemError(422, f"{path or 'body'}: {complaint}", kind=kind,
                           field=path or "body")
    return data


def parse_json_body(raw: str | bytes, model: type[ModelT]) -> ModelT:
    """A JSON request body parsed by :func:`loads_bounded` and validated by the pydantic
    ``model``.

    Raises:
        ProblemError: 422 ``validation-error`` naming the first wrong member as a path
            (``class_names[1]``, ``images[3].label``; ``body`` for the whole document).
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(loads_bounded(raw, ""))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                        for p in err.get("loc", ())).lstrip(".") or "body"
        raise ProblemError(422, f"{field}: {err.get('msg')}", kind="validation-error",
                           field=field) from exc
