"""Request bodies built from local files: the training upload of ``create_adaptation`` and the
images of ``classify``, plus the content-derived ``Idempotency-Key``.

A folder of class folders is sent as one zip (entries ``<class>/<image>``, stored uncompressed in
a spooled temporary file: one open file whatever the number of photos); a ``.zip`` path is sent
as it is; ``(path, label)`` pairs as ``images`` + parallel ``labels``.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from .errors import MMLoPInputError

# The suffixes the library's folder loader reads (mmlop_core.data.IMAGE_SUFFIXES); other files
# and hidden entries in a class folder are skipped, as the library skips them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

PathLike = Union[str, Path]
TrainingSource = Union[PathLike, Sequence[tuple[PathLike, str]]]
ImageInput = Union[PathLike, bytes, tuple[str, bytes]]

_SPOOL_BYTES = 64 * 1024 * 1024  # a folder's zip stays in memory up to this size, then on disk


@dataclass
class TrainingUpload:
    """Multipart ``files`` and ``data`` of ``POST /adaptations`` and its derived idempotency key.

    Holds open files: ``close()`` (or ``with``) releases them. httpx rewinds file parts before
    each send, so one upload serves every retry.
    """

    files: list[tuple[str, tuple[str, Any, str]]]
    data: dict[str, Any]
    idempotency_key: str
    _open: list[IO[bytes]] = field(default_factory=list)

    def close(self) -> None:
        """Close the files this upload opened."""
        for fh in self._open:
            fh.close()
        self._open.clear()

    def __enter__(self) -> "TrainingUpload":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise MMLoPInputError(f"{root} has no class folders (expected {root}/<class name>/<images>)")
    out = []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MMLoPInputError(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        out.append((folder.name, files))
    return out


def _folder_zip(root: Path, digest: Any) -> IO[bytes]:
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed by the upload
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as zf:
        for label, files in _class_folders(root):
            for path in files:
                data = path.read_bytes()
                digest.update(f"{label}\0{path.name}\0".encode() + hashlib.sha256(data).digest())
                zf.writestr(f"{label}/{path.name}", data)
    spool.seek(0)
    return spool


def training_upload(source: TrainingSource, config: dict[str, Any] | None,
                    class_names: Sequence[str] | None,
                    callback_url: str | None = None) -> TrainingUpload:
    """Build the upload of ``create_adaptation``.

    Args:
        source: a folder of class folders (``DIR/<class>/<image>``), a ``.zip`` file with that
            layout, or a sequence of ``(image path, label)`` pairs.
        config: the adaptation config (``{"adapter": {...}, "train": {...}}`` or flat
            ``{"preset": ..., "epochs": ...}``), sent as JSON; None for the server's defaults.
        class_names: the class order (default: the server sorts the labels).
        callback_url: the webhook URL of the adaptation's terminal event (None: none).

    Returns:
        The upload; its ``idempotency_key`` is a SHA-256 of every image's bytes and label, the
        config, the class names and the callback URL, so the same call repeated gives the same
        key.

    Raises:
        MMLoPInputError: a path is missing, a folder has no class folders or a class folder no
            image, ``source`` is empty, or ``config`` is not JSON-serialisable.
    """
    digest = hashlib.sha256()
    opened: list[IO[bytes]] = []
    data: dict[str, Any] = {}
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            opened.append(_folder_zip(path, digest))
            files = [("archive", (f"{path.name or 'photos'}.zip", opened[0], "application/zip"))]
        elif path.is_file():
            fh = path.open("rb")
            opened.append(fh)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            fh.seek(0)
            files = [("archive", (path.name, fh, "application/zip"))]
        else:
            raise MMLoPInputError(f"{path} does not exist (expected a folder of class folders or a .zip)")
    else:
        pairs = list(source)
        if not pairs:
            raise MMLoPInputError("no training images given")
        files, labels = [], []
        for item in pairs:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise MMLoPInputError(f"expected (path, label) pairs, got {item!r}")
            img_path, label = Path(item[0]), str(item[1])
            try:
                content = img_path.read_bytes()
            except OSError as exc:
                raise MMLoPInputError(f"{img_path}: {exc.strerror or exc}") from exc
            digest.update(f"{label}\0{img_path.name}\0".encode() + hashlib.sha256(content).digest())
            files.append(("images", (img_path.name, content, _mime(img_path.name))))
            labels.append(label)
        data["labels"] = labels
    try:
        if config is not None:
            data["config"] = json.dumps(config, sort_keys=True)
        if class_names is not None:
            data["class_names"] = json.dumps(list(class_names))
    except (TypeError, ValueError) as exc:
        for fh in opened:
            fh.close()
        raise MMLoPInputError(f"config is not JSON-serialisable: {exc}") from exc
    digest.update(json.dumps([data.get("config"), data.get("class_names")]).encode())
    if callback_url is not None:  # calls without one keep their key
        data["callback_url"] = callback_url
        digest.update(json.dumps({"callback_url": callback_url}).encode())
    return TrainingUpload(files=files, data=data, idempotency_key="mmlop-client-" + digest.hexdigest(),
                          _open=opened)


def image_parts(images: ImageInput | Iterable[ImageInput]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart ``images`` parts of ``classify`` from paths, raw bytes or ``(name, bytes)``.

    Raises:
        MMLoPInputError: no image, or a path cannot be read.
    """
    if isinstance(images, (str, Path, bytes)) or (isinstance(images, tuple) and len(images) == 2
                                                   and isinstance(images[1], bytes)):
        images = [images]  # type: ignore[list-item]
    parts = []
    for n, image in enumerate(images):  # type: ignore[arg-type]
        if isinstance(image, bytes):
            name, content = f"image{n}", image
        elif isinstance(image, tuple):
            name, content = str(image[0]), image[1]
        else:
            path = Path(image)
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise MMLoPInputError(f"{path}: {exc.strerror or exc}") from exc
            name = path.name
        parts.append(("images", (name, content, _mime(name))))
    if not parts:
        raise MMLoPInputError("no images given")
    return parts
