"""Decoding untrusted image bytes into RGB PIL images."""
from __future__ import annotations

import io
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000


def open_image(data: bytes | BinaryIO, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` into an RGB image with EXIF orientation applied.

    Only formats in :data:`ALLOWED_FORMATS` are accepted; animated images give their first
    frame; palette, grayscale, 16-bit, 32-bit float, CMYK and alpha images are converted to
    RGB (alpha is composited on white; float images must hold values in [0, 1], 1.0 white).

    Args:
        data: encoded image bytes, or a seekable binary file holding them from its current
            position (read, never closed; e.g. a spooled upload, so no copy sits in memory).
        name: the file name, used in error messages.
        max_pixels: largest width*height accepted (decompression-bomb guard).

    Returns:
        PIL image in mode ``"RGB"``, fully decoded.

    Raises:
        ImageError: empty, truncated, not an image, a format outside the allowlist, over
            `max_pixels`, or a float image with values outside [0, 1].
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        if not data:
            raise ImageError(f"{name}: file is empty")
        data = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(data, formats=ALLOWED_FORMATS)
            if img.width * img.height > max_pixels:
                raise ImageError(f"{name}: {img.width}x{img.height} pixels exceeds the limit of {max_pixels} pixels")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image is too large to decode safely (limit {max_pixels} pixels)") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a decodable image; allowed formats: {', '.join(ALLOWED_FORMATS)}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name}: image data is corrupt or truncated") from exc  # the decoder's text stays in __cause__
    return to_rgb(img, name)


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on a white background.

    16-bit integer images are scaled by 1/257; 32-bit float images (mode ``"F"``, e.g. a float
    TIFF) by 255, since 1.0 is white in float images. A float image with values outside
    [0, 1] (or NaN, infinity) is refused rather than guessed: clipping turned [0, 1] data black.
    32-bit integer images (mode ``"I"``) holding 16-bit values are scaled like 16-bit images;
    with values outside [0, 65535] they have no standard white and are refused.

    Raises:
        ImageError: a float image with values outside [0, 1], or a 32-bit integer image outside
            [0, 65535]; `name` is used in the message.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "F":
        return _float_to_l(img, name).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L"):
        img = img.point(lambda v: v / 257).convert("L")
    elif img.mode == "I":  # 32-bit integers: 16-bit data in a wide container is scaled, else refused
        pixels = np.asarray(img, dtype=np.int64)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ImageError(f"{name}: 32-bit integer image with values from {pixels.min()} to {pixels.max()}; "
                             "there is no standard white for it, so save it with 8 or 16 bits per channel")
        img = img.point(lambda v: v / 257).convert("L")
    return img.convert("RGB")


def _float_to_l(img: Image.Image, name: str) -> Image.Image:
    """Mode ``"F"`` with values in [0, 1] -> mode ``"L"`` (0..255, rounded); else ImageError."""
    pixels = np.asarray(img, dtype=np.float32)  # (H, W)
    if not np.isfinite(pixels).all():
        raise ImageError(f"{name}: 32-bit float image holds NaN or infinite values; float images must hold "
                         "values in [0, 1] (or save it with 8 or 16 bits per channel)")
    if pixels.size and (pixels.min() < 0.0 or pixels.max() > 1.0):
        raise ImageError(f"{name}: 32-bit float image with values from {float(pixels.min()):.9g} to "
                         f"{float(pixels.max()):.9g}; "
                         "float images must hold values in [0, 1] (or save it with 8 or 16 bits per channel)")
    return Image.fromarray(np.rint(pixels * 255.0).astype(np.uint8))
