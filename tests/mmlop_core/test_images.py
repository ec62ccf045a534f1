"""Decoding untrusted image bytes."""
from __future__ import annotations

import io

import pytest
from PIL import Image

import mmlop_core as m


def _png(mode="RGB", size=(8, 8), **kw):
    buf = io.BytesIO()
    Image.new(mode, size, **kw).save(buf, format="PNG")
    return buf.getvalue()


def test_modes_become_rgb():
    for mode in ("L", "RGBA", "P", "I;16", "LA"):
        assert m.open_image(_png(mode)).mode == "RGB"


def test_alpha_is_composited_on_white():
    img = m.open_image(_png("RGBA", color=(0, 0, 0, 0)))
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.new("RGB", (20, 10)).save(buf, format="JPEG", exif=exif)
    assert m.open_image(buf.getvalue()).size == (10, 20)


@pytest.mark.parametrize("data, fragment", [
    (b"", "file is empty"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a decodable image"),
    (None, "corrupt or truncated"),
])
def test_bad_bytes_are_image_errors(data, fragment):
    if data is None:  # a real photo-like PNG cut in half
        buf = io.BytesIO()
        Image.effect_noise((64, 64), 50).save(buf, format="PNG")
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
    with pytest.raises(m.ImageError, match=fragment):
        m.open_image(data, name="x.png")


def test_pixel_limit():
    with pytest.raises(m.ImageError, match="exceeds the limit of 100 pixels"):
        m.open_image(_png(size=(20, 20)), max_pixels=100)
