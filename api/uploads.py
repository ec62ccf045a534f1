"""Validation of uploaded training data: image files and class-folder zip archives.

Every check raises ``ProblemError`` (413 for size limits, 422 for bad content), never a 500.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import json
import logging
import stat
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from api.problem import ProblemError
from api.text import describe, unsafe_char
from service.settings import Settings

logger = logging.getLogger(__name__)

_FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                  "TIFF": ".tif"}
_MAX_RATIO = 200  # uncompressed / compressed size above which an entry is a zip bomb
_SKIP_NAMES = ("__MACOSX/", ".DS_Store", "Thumbs.db")
_CHUNK = 256 * 1024  # bytes read at a time while hashing and copying uploads
SPOOL_MAX = 1024 * 1024  # a spooled copy moves from memory to a temporary file past this size


@dataclass
class ImageItem:
    """One validated training image, never held whole in memory.

    ``open()`` is a context manager giving a fresh binary stream of its bytes from the start
    (the spooled multipart part, or the zip entry), read in chunks by the blob store's
    ``put_stream``. ``size`` is its byte count, ``sha256`` the 32-byte digest of those bytes
    (for the Idempotency-Key request hash), ``suffix`` the file suffix of its format, ``label``
    its class and ``filename`` its original name.
    """

    open: Callable[[], AbstractContextManager[BinaryIO]]
    size: int
    sha256: bytes
    suffix: str
    label: str
    filename: str


@dataclass
class _Scanned:
    size: int
    sha256: bytes
    head: bytes  # the first bytes (a nested zip's magic)


@contextmanager
def rewound(fh: BinaryIO) -> Iterator[BinaryIO]:
    """``fh`` seeked to its start, left open afterwards (it belongs to the form or a spool)."""
    fh.seek(0)
    yield fh


def _scan(src: IO[bytes], name: str, limit: int, copy_to: IO[bytes] | None = None) -> _Scanned:
    """Read ``src`` in chunks: byte count and SHA-256, optionally copying it to ``copy_to``.

    413 naming ``name`` as soon as more than ``limit`` bytes have come.
    """
    digest, size, head = hashlib.sha256(), 0, b""
    while chunk := src.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"{name} is larger than the limit of {limit} bytes",
                               kind="too-large", field=name)
        head = head or chunk[:8]
        digest.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return _Scanned(size, digest.digest(), head)


def file_item(fh: BinaryIO, name: str, label: str, filename: str, settings: Settings) -> ImageItem:
    """An item of the seekable file ``fh`` (a spooled multipart part): hashed in chunks and
    checked by :func:`decode_image`; 413/422 naming ``name``."""
    fh.seek(0)
    scanned = _scan(fh, name, settings.upload_max_file_bytes)
    return _checked_item(fh, scanned, name, label, filename, settings, open_=functools.partial(rewound, fh))


def check_total(items: list[ImageItem], settings: Settings) -> None:
    """413 ``too-large`` (field ``images``) when the items hold more than ``upload_max_bytes``."""
    if sum(item.size for item in items) > settings.upload_max_bytes:
        raise ProblemError(413, f"uploads exceed {settings.upload_max_bytes} bytes",
                           kind="too-large", field="images")


def _checked_item(fh: BinaryIO, scanned: _Scanned, name: str, label: str, filename: str,
                  settings: Settings, open_: Callable[[], AbstractContextManager[BinaryIO]]) -> ImageItem:
    if scanned.size == 0:
        raise ProblemError(422, f"{name} is empty (0 bytes)", kind="invalid-image", field=name)
    fh.seek(0)
    suffix = check_image(fh, name, settings)
    return ImageItem(open_, scanned.size, scanned.sha256, suffix, label, filename)


async def read_form(request: Any, max_images: int, max_fields: int, fields_name: str,
                    known: frozenset[str]) -> Any:
    """The multipart form of ``request``, parsed with caps of ``max_images + 1`` files and ``max_fields`` fields.

    A part whose name is not in ``known`` is a 422 naming it (and the closest known name): a
    typo such as ``train_config`` for ``config`` would otherwise train with the defaults.

    The one place every route parses a form, so each "too many" gets the same answer: past the
    parser's caps it is 413 ``too-large`` (field ``images`` for files, ``fields_name`` for text
    fields, e.g. the labels that go with the images), as the routes' own count checks answer just
    over the limit. Any other parse failure is 400 ``bad-multipart``; a body over the byte limit
    stays its 413.
    """
    try:
        form = await request.form(max_files=max_images + 1, max_fields=max_fields)
    except ProblemError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's errors (HTTPException, MultiPartException)
        detail = str(getattr(exc, "detail", exc))
        if detail.startswith("Too many files"):
            raise ProblemError(413, f"more than the limit of {max_images} images", kind="too-large",
                               field="images") from exc
        if detail.startswith("Too many fields"):
            raise ProblemError(413, f"more than the limit of {max_fields} form fields", kind="too-large",
                               field=fields_name) from exc
        raise ProblemError(getattr(exc, "status_code", 400), f"malformed multipart body: {detail}",
                           kind="bad-multipart") from exc
    unknown = sorted(set(form.keys()) - known)
    if unknown:
        await form.close()
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProblemError(422, f"unknown form field {unknown[0][:60]!r}{hint}; this route takes "
                           f"{', '.join(sorted(known))}", kind="validation-error",
                           field=unknown[0][:60])
    return form


def read_limited(fh: IO[bytes], limit: int, name: str) -> bytes:
    """Read at most ``limit`` bytes from ``fh``; 413 naming ``name`` if there are more."""
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(413, f"{name} is larger than the limit of {limit} bytes",
                           kind="too-large", field=name)
    return data


def check_image(data: bytes | BinaryIO, name: str, settings: Settings) -> str:
    """Check that ``data`` decodes as an image within the pixel limit; returns its suffix."""
    return decode_image(data, name, settings)[0]


def decode_image(data: bytes | BinaryIO, name: str, settings: Settings) -> tuple[str, Image.Image]:
    """Check and fully decode ``data`` once: its file suffix and the decoded PIL image.

    ``data`` is the image's bytes or a seekable binary file positioned at its start (read from
    there, not closed). The header is read first (format, size, decompression bombs: 413/422
    naming ``name``), then the pixels are decoded by :func:`mmlop_core.open_image` (which also
    scales float and 16-bit images); a decoder error is a 422.
    """
    fh = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    start = fh.tell()
    if not fh.read(1):
        raise ProblemError(422, f"{name} is empty (0 bytes)", kind="invalid-image", field=name)
    fh.seek(start)
    try:
        with Image.open(fh) as img:
            width, height = img.size
            fmt = img.format or ""
    except Image.DecompressionBombError as exc:
        raise ProblemError(413, f"{name} declares more pixels than can be decoded safely "
                           f"(limit {settings.upload_max_pixels})", kind="too-large",
                           field=name) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ProblemError(422, f"{name} is not a readable image: not an image file, or a corrupt one; allowed "
                           f"formats: {', '.join(_FORMAT_SUFFIX)}", kind="invalid-image", field=name) from exc
    if fmt not in _FORMAT_SUFFIX:
        raise ProblemError(422, f"{name} is {fmt or 'an unknown format'}; allowed formats: "
                           f"{', '.join(_FORMAT_SUFFIX)}", kind="invalid-image", field=name)
    if width * height > settings.upload_max_pixels:
        raise ProblemError(413, f"{name} has {width}x{height} pixels, more than the limit of "
                           f"{settings.upload_max_pixels}", kind="too-large", field=name)
    from mmlop_core import ImageError, open_image

    fh.seek(start)
    try:
        image = open_image(fh, name=name, max_pixels=settings.upload_max_pixels)
    except ImageError as exc:  # its message starts with `name` and says what is wrong
        raise ProblemError(422, str(exc), kind="invalid-image", field=name) from exc
    except Exception as exc:  # noqa: BLE001 - a decoder error: no library text reaches the user
        logger.info("%s: decoder error %s: %s", name, type(exc).__name__, exc)
        raise ProblemError(422, f"{name} cannot be decoded: its image data is corrupt or truncated",
                           kind="invalid-image", field=name) from exc
    return _FORMAT_SUFFIX.get(fmt, ".img"), image


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ProblemError(422, f"archive entry {name!r} is a symbolic link", kind="invalid-archive",
                           field="archive")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ProblemError(422, f"archive entry {name!r} has an absolute or Windows path",
                           kind="invalid-archive", field="archive")
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in parts):
        raise ProblemError(422, f"archive entry {name!r} escapes the archive (..)",
                           kind="invalid-archive", field="archive")
    return parts


def read_archive(fh: IO[bytes], settings: Settings) -> list[ImageItem]:
    """Images of a zip with one folder per class (optionally under one top folder).

    Rejects path traversal, absolute paths, symlinks, nested archives and zip bombs (declared
    or actual uncompressed size above the limits, or an extreme compression ratio). Entries
    are streamed: each is decompressed in chunks into a spooled copy (hashed, size-checked,
    decoded once, then dropped) and its item reopens the entry for storing, so neither the
    archive nor its images sit whole in memory. ``fh`` (seekable) must stay open until the
    items are stored; the zip holds no other resource.
    """
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ProblemError(422, f"archive is not a valid zip file: {exc}", kind="invalid-archive",
                           field="archive") from exc
    entries, strip = _archive_entries(zf, settings)
    items: list[ImageItem] = []
    actual = 0
    for info, parts in entries:
        name = f"archive:{info.filename}"
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX) as spool:
            try:
                with zf.open(info) as member:
                    scanned = _scan(member, name, settings.upload_max_file_bytes, copy_to=spool)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise ProblemError(422, f"archive entry {info.filename!r} cannot be extracted: "
                                   "its data is corrupt or uses an unsupported compression",
                                   kind="invalid-archive", field="archive") from exc
            actual += scanned.size
            if actual > settings.upload_max_bytes:
                raise ProblemError(413, f"archive expands to more than {settings.upload_max_bytes} "
                                   "bytes", kind="too-large", field="archive")
            if scanned.head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
                raise ProblemError(422, f"archive entry {info.filename!r} is a nested archive",
                                   kind="invalid-archive", field="archive")
            item = _checked_item(spool, scanned, name, parts[strip], info.filename, settings,
                                 open_=functools.partial(zf.open, info))
        items.append(item)
    return items


def _archive_entries(zf: zipfile.ZipFile, settings: Settings
                     ) -> tuple[list[tuple[zipfile.ZipInfo, tuple[str, ...]]], int]:
    """The image entries of ``zf`` with their path parts, and how many leading parts to strip
    (1 under one top folder); checks names, kinds and declared sizes (413/422 ``archive``)."""
    entries: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    total = 0
    for info in zf.infolist():
        parts = _entry_parts(info)
        if info.is_dir() or not parts:
            continue
        if any(info.filename.startswith(s) or parts[-1] == s for s in _SKIP_NAMES) or \
                parts[-1].startswith("."):
            continue
        if parts[-1].lower().endswith((".zip", ".tar", ".gz", ".tgz", ".7z", ".rar")):
            raise ProblemError(422, f"archive entry {info.filename!r} is a nested archive",
                               kind="invalid-archive", field="archive")
        if info.file_size > settings.upload_max_file_bytes:
            raise ProblemError(413, f"archive entry {info.filename!r} is larger than "
                               f"{settings.upload_max_file_bytes} bytes", kind="too-large",
                               field="archive")
        if info.compress_size and info.file_size > 1_000_000 and \
                info.file_size / info.compress_size > _MAX_RATIO:
            raise ProblemError(413, f"archive entry {info.filename!r} has a compression ratio "
                               "typical of a zip bomb", kind="too-large", field="archive")
        total += info.file_size
        if total > settings.upload_max_bytes:
            raise ProblemError(413, f"archive expands to more than {settings.upload_max_bytes} "
                               "bytes", kind="too-large", field="archive")
        entries.append((info, parts))
    if len(entries) > settings.upload_max_files:
        raise ProblemError(413, f"archive holds {len(entries)} files, more than the limit of "
                           f"{settings.upload_max_files}", kind="too-large", field="archive")
    if not entries:
        raise ProblemError(422, "archive holds no images; expected <class>/<image> entries",
                           kind="invalid-archive", field="archive")
    depths = {len(p) for _, p in entries}
    roots = {p[0] for _, p in entries}
    strip = 1 if depths == {3} and len(roots) == 1 else 0
    if {d - strip for d in depths} != {2}:
        raise ProblemError(422, "archive must hold one folder per class: <class>/<image> "
                           "(optionally inside one top folder)", kind="invalid-archive",
                           field="archive")
    return entries, strip


# ---- class names -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _bpe() -> Any:
    """open_clip's CLIP BPE tokenizer (the text encoders' vocabulary), loaded once."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


TEXT_CONTEXT = 77  # CLIP's text context in tokens, start and end of text included


def text_tokens(text: str) -> int:
    """Number of CLIP BPE tokens of ``text``, without the start and end tokens."""
    return len(_bpe().encode(text))


def check_names_read_apart(class_names: list[str], field: str = "class_names") -> None:
    """422 when two names reach the text encoder as the same token ids.

    CLIP's tokenizer lowercases and cleans text, and the library reads ``_`` as a space
    (:func:`mmlop_core.features.text_name`), so ``Bag``/``bag`` or ``ankle_boot``/``ankle boot``
    would be two classes with identical text features (every score split evenly).
    """
    seen: dict[tuple[int, ...], int] = {}
    for n, name in enumerate(class_names):
        key = tuple(_bpe().encode(name.replace("_", " ")))
        if key in seen:
            m = seen[key]
            raise ProblemError(422, f"{field}[{m}] {class_names[m][:60]!r} and {field}[{n}] {name[:60]!r} read the "
                               "same to the text encoder (case, '_' and spacing are ignored); rename one",
                               kind="invalid-class-name", field=f"{field}[{n}]")
        seen[key] = n


def check_class_names(class_names: list[str], settings: Settings, field: str = "class_names") -> None:
    """Reject unusable class names with a 422 naming the entry; the same checks for training
    uploads and open-vocabulary classify (issue 12, A.1).

    Names must be non-empty, distinct, free of control characters, at most
    ``class_name_max_chars`` characters and ``class_name_max_tokens`` CLIP BPE tokens (longer
    names would be cut by the 77-token text context; we refuse rather than truncate), and must
    not read the same to the text encoder (:func:`check_names_read_apart`). Unicode and emoji
    are accepted.
    """
    seen: set[str] = set()
    for n, name in enumerate(class_names):
        entry = f"{field}[{n}]"
        if not isinstance(name, str):
            raise ProblemError(422, f"{entry} must be a string, not {json.dumps(name)[:40]}",
                               kind="invalid-class-name", field=entry)
        if not name.strip():
            raise ProblemError(422, f"{entry} is empty", kind="invalid-class-name", field=entry)
        if name in seen:
            raise ProblemError(422, f"{entry} {name[:60]!r} is a duplicate", kind="invalid-class-name",
                               field=entry)
        seen.add(name)
        bad = unsafe_char(name)
        if bad is not None:
            raise ProblemError(422, f"{entry} holds {describe(bad)}: control, invisible "
                               "formatting and unencodable characters are refused",
                               kind="invalid-class-name", field=entry)
        if len(name) > settings.class_name_max_chars:
            raise ProblemError(422, f"{entry} has {len(name)} characters, more than the limit of "
                               f"{settings.class_name_max_chars}", kind="invalid-class-name",
                               field=entry)
        tokens = len(_bpe().encode(name))
        if tokens > settings.class_name_max_tokens:
            raise ProblemError(422, f"{entry} is {tokens} text tokens long, more than the limit of "
                               f"{settings.class_name_max_tokens} (the text encoder's context is "
                               "77 tokens, shared with the prompt)", kind="invalid-class-name",
                               field=entry)
    check_names_read_apart(class_names, field)


def check_classes(items: list[ImageItem], class_names: list[str], settings: Settings) -> None:
    """Reject unusable class names (:func:`check_class_names`) and classes without images
    (422 naming the field)."""
    check_class_names(class_names, settings)
    counts = Counter(item.label for item in items)
    for n, name in enumerate(class_names):
        if counts.get(name, 0) == 0:
            raise ProblemError(422, f"class_names[{n}] {name[:60]!r} has no images",
                               kind="validation-error", field=f"class_names[{n}]")


# ---- request body limit ------------------------------------------------------------------------

class BodyTooLarge(ProblemError):
    """The request body passed the byte limit while it was being received (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes",
                         kind="too-large", field="body")

    @property
    def status_code(self) -> int:
        """413 (read by handlers that map parser errors by ``status_code``)."""
        return self.status


class BodyLimitMiddleware:
    """ASGI middleware: refuse request bodies over ``limit`` bytes while streaming.

    A declared ``Content-Length`` above the limit is answered 413 before any byte of the body
    is read; a chunked or lying body is counted as it arrives and the read that crosses the
    limit raises ``BodyTooLarge`` (answered 413 problem+json by the one handler), so at most
    ``limit`` bytes plus one chunk are ever held.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Wrap ``receive`` of HTTP requests with the byte counter."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                declared = value.decode("latin-1").strip()
                if not declared.isdigit() or int(declared) > self.limit:
                    from starlette.requests import Request

                    from api.problem import problem_response

                    response = problem_response(
                        Request(scope), 413 if declared.isdigit() else 400,
                        f"request body is larger than the limit of {self.limit} bytes"
                        if declared.isdigit() else "malformed Content-Length header",
                        kind="too-large" if declared.isdigit() else "bad-request", field="body",
                        headers={"Connection": "close"})
                    await response(scope, receive, send)
                    return
        received = 0
        limit = self.limit

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
