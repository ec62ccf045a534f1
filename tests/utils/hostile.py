"""Hostile and odd image files for the issue-5 tests, built in memory (no fixtures on disk)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """``img`` encoded as ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 30000) -> bytes:
    """A PNG header declaring ``side`` x ``side`` 1-bit pixels, a few KB of zero rows (a bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    rows = zlib.compress((b"\0" * (1 + side // 8)) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + \
        _chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    """A 1x1 GIF whose logical screen claims 65535 x 65535 pixels."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def tiff_bomb() -> bytes:
    """A small TIFF whose width/length tags claim 60000 x 60000 pixels."""
    data = bytearray(encode(Image.new("L", (4, 4)), "TIFF"))
    assert data[:2] == b"II"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for n in range(count):
        off = ifd + 2 + 12 * n
        tag, typ = struct.unpack_from("<HH", data, off)
        if tag in (256, 257):
            if typ == 3:
                struct.pack_into("<H", data, off + 8, 60000)
            else:
                struct.pack_into("<I", data, off + 8, 60000)
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG (left half red) with EXIF orientation 6 (display rotated 90 degrees)."""
    img = Image.new("RGB", (40, 20), "blue")
    img.paste(Image.new("RGB", (20, 20), "red"), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    """A two-frame GIF: red, then green."""
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def accepted_images() -> dict[str, bytes]:
    """Odd but valid images the service must accept (name -> bytes)."""
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    return {
        "one_pixel.png": encode(Image.new("RGB", (1, 1), "red"), "PNG"),
        "sixteen_bit.png": encode(Image.new("I;16", (16, 16), 40000), "PNG"),
        "palette_transparent.png": encode(pal, "PNG", transparency=0),
        "rgba.png": encode(Image.new("RGBA", (16, 16), (0, 0, 255, 128)), "PNG"),
        "cmyk.jpg": encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"),
        "gray.png": encode(Image.new("L", (16, 16), 128), "PNG"),
        "animated.gif": animated_gif(),
        "rotated.jpg": exif_rotated_jpeg(),
        "image.webp": encode(Image.new("RGB", (16, 16), "green"), "WEBP"),
        "float32.tif": encode(Image.new("F", (16, 16), 0.8), "TIFF"),  # values in [0, 1]: 0.8 is light grey
    }


def rejected_images() -> dict[str, tuple[bytes, str, int]]:
    """Hostile or unsupported files: name -> (bytes, content type, expected status)."""
    png = encode(Image.new("RGB", (64, 64), "red"), "PNG")
    jpg = encode(Image.new("RGB", (64, 64), "red"), "JPEG")
    return {
        "empty.png": (b"", "image/png", 422),
        "truncated.png": (png[: len(png) // 2], "image/png", 422),
        "truncated.jpg": (jpg[: len(jpg) // 2], "image/jpeg", 422),
        "text.png": (b"hello, I am not an image at all", "image/png", 422),
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                        b'<rect width="10" height="10"/></svg>', "image/svg+xml", 422),
        "page.jpg": (b"<!DOCTYPE html><html><body>hi</body></html>", "image/jpeg", 422),
        "float_over_one.tif": (encode(Image.new("F", (16, 16), 7.5), "TIFF"), "image/tiff", 422),
        "int32_wide.tif": (encode(Image.new("I", (16, 16), 1_000_000), "TIFF"), "image/tiff", 422),
        "photo.heic": (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "image/heic", 422),
        "bomb.png": (png_bomb(), "image/png", 413),
        "bomb.gif": (gif_bomb(), "image/gif", 413),
        "bomb.tif": (tiff_bomb(), "image/tiff", 413),
    }


PROBLEM = "application/problem+json"


def assert_problem(resp, status: int, field: str | None = None) -> dict:
    """Check a problem+json answer of ``status`` whose ``field`` contains ``field``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    if field is not None:
        assert field in (body.get("field") or ""), body
    return body


def assert_nothing_stored(stack, client, tenant_id: str) -> None:
    """The tenant has no adaptation row and no blob; the server is healthy."""
    assert client.get("/adaptations").json()["total"] == 0
    assert not list((stack.blob_root / "tenants" / tenant_id).rglob("*"))
    assert client.get("/healthz").status_code == 200
