"""The ``callback_url`` of a new adaptation: a 422 naming the field for anything the webhook
rules refuse (syntax, length, SSRF; ``service/webhook_urls.py``)."""

from __future__ import annotations

from typing import Any

from api.problem import ProblemError
from service.settings import Settings
from service.webhook_urls import CallbackURLError, check_callback_url


def check_callback(value: Any, settings: Settings) -> str | None:
    """The checked callback URL, or None when absent or empty (blocking: resolves the host).

    Raises:
        ProblemError: 422 ``validation-error`` with field ``callback_url``.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProblemError(422, "callback_url must be a text field holding a URL",
                           kind="validation-error", field="callback_url")
    if not value.strip():
        return None
    try:
        check_callback_url(value.strip(), settings)
    except CallbackURLError as exc:
        raise ProblemError(422, str(exc), kind="validation-error", field="callback_url") from exc
    return value.strip()
