"""Training uploads as JSON: ``{"images": [{"data": <base64>, "label": ...}], ...}`` (issue 11).

A JSON body becomes the multipart form it stands for: each image is decoded into a spooled
file (in memory up to 1 MiB, then a temporary file) as an ``images`` part with its ``labels``
field, and ``class_names``, ``config`` and ``metadata`` become their JSON texts. The form then
goes through the one upload path (``api/routes/adaptations.py``), so the checks, limits
(counting decoded bytes), error kinds and the Idempotency-Key request hash are those of
multipart. The JSON's own faults name the member: ``images[3].data`` for bad base64,
``images[3].label`` for an empty label, any wrong type by its path (``images[0].label``).
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile

from starlette.datastructures import FormData, UploadFile

from api.bounds import parse_json_body
from api.problem import ProblemError
from api.schemas import AdaptationJSON
from api.uploads import SPOOL_MAX
from service.settings import Settings

_TEXT_MEMBERS = ("name", "callback_url")  # sent as they are, like the form's text fields
_JSON_MEMBERS = ("class_names", "config", "metadata")  # sent as JSON text, like the form's


def json_form(raw: bytes, settings: Settings) -> FormData:
    """The multipart form equivalent to the JSON body ``raw``; the caller closes it (its
    ``close()`` removes the spooled images).

    Raises:
        ProblemError: 422 ``validation-error`` naming the member (wrong types, unknown or
            missing members, an empty label), 422 ``invalid-image`` for bad base64, 413
            ``too-large`` past ``upload_max_files`` or ``upload_max_file_bytes`` (decoded).
    """
    body = parse_json_body(raw, AdaptationJSON)
    if len(body.images) > settings.upload_max_files:
        raise ProblemError(413, f"{len(body.images)} images is more than the limit of "
                           f"{settings.upload_max_files}", kind="too-large", field="images")
    for n, image in enumerate(body.images):
        if not image.label.strip():
            raise ProblemError(422, f"images[{n}].label is empty", kind="validation-error",
                               field=f"images[{n}].label")
    fields: list[tuple[str, str | UploadFile]] = []
    try:
        for n, image in enumerate(body.images):
            fields.append(("images", _spooled(image.data, image.filename, n, settings)))
            fields.append(("labels", image.label))
    except BaseException:
        for _, part in fields:
            if isinstance(part, UploadFile):
                part.file.close()
        raise
    values = body.model_dump(include=set(_TEXT_MEMBERS + _JSON_MEMBERS), exclude_none=True)
    fields += [(key, value if key in _TEXT_MEMBERS else json.dumps(value))
               for key, value in values.items()]
    return FormData(fields)


def _spooled(text: str, filename: str | None, n: int, settings: Settings) -> UploadFile:
    """``images[n].data`` decoded into a spooled file part; 422/413 naming ``images[n].data``."""
    field = f"images[{n}].data"
    if len(text) // 4 * 3 > settings.upload_max_file_bytes + 2:  # decoded size, before decoding
        raise ProblemError(413, f"{field} is larger than the limit of "
                           f"{settings.upload_max_file_bytes} bytes (decoded)", kind="too-large",
                           field=field)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProblemError(422, f"{field} is not valid base64", kind="invalid-image",
                           field=field) from exc
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)
    spool.write(data)
    spool.seek(0)
    return UploadFile(spool, size=len(data), filename=filename)
