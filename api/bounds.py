"""Bounds on the numbers a client can send (issue 12 A.4).

Every integer a user sends is bounded before the code, torch or a database sees it:

- query parameters carry explicit ``le=`` bounds (``INT32_MAX`` at most: the range of a
  PostgreSQL ``INTEGER`` and far inside SQLite's 64-bit one);
- JSON bodies and the ``config`` form field are parsed with :func:`loads_bounded`, which refuses
  any integer outside ``±JSON_INT_MAX`` (RFC 7493 I-JSON: exactly representable as a double, so
  no later ``float()`` can overflow) with a 422 naming the key as the client wrote it. Python's
  own parser would raise a bare ``ValueError`` past 4,300 digits, and pydantic's answers
  "number out of range" without naming the key.

Config values are then range-checked field by field by ``AdapterConfig``/``TrainConfig``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from api.problem import ProblemError

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


def _find_oversized(value: Any, path: str) -> tuple[str, _Oversized] | None:
    if isinstance(value, _Oversized):
        return path, value
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
        found = _find_oversized(item, sub)
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
            path of an integer outside the bounds.
    """
    try:
        data = json.loads(raw, parse_int=_parse_int)
        found = _find_oversized(data, field)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ProblemError(422, f"{field or 'body'} is not valid JSON: {msg}{where}", kind=kind,
                           field=field or "body") from exc
    except RecursionError as exc:  # [[[[...]]]] deeper than the parser's (or our walk's) stack
        raise ProblemError(422, f"{field or 'body'} is nested too deeply", kind=kind,
                           field=field or "body") from exc
    if found is not None:
        path, number = found
        shown = number.literal if len(number.literal) <= 24 else number.literal[:20] + "..."
        raise ProblemError(422, f"{path or 'body'}: {shown} is out of range; integers must lie "
                           f"within +-{JSON_INT_MAX}", kind=kind, field=path or "body")
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
