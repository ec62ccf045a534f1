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


def _float_tiff(values) -> bytes:
    """A real 32-bit float TIFF (Pillow mode "F", SampleFormat 3) of `values`, rows x columns."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, dtype=np.float32)).save(buf, format="TIFF")
    return buf.getvalue()


def test_float_tiff_in_unit_range_is_scaled_to_8_bit():
    """1.0 is white in float images: [0, 1] used to be clipped to 0..1 of 255 (almost black)."""
    data = _float_tiff([[0.0, 0.25, 0.5, 1.0]] * 2)
    assert Image.open(io.BytesIO(data)).mode == "F"
    img = m.open_image(data, name="scan.tif")
    assert img.mode == "RGB"
    assert [img.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (64, 64, 64), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("values", [
    [[0.0, 2.0]],             # above 1: the range is not known, so it is not guessed
    [[-0.5, 0.5]],            # negative
    [[0.5, float("nan")]],
    [[0.5, float("inf")]],
])
def test_float_tiff_outside_unit_range_is_refused(values):
    with pytest.raises(m.ImageError, match=r"scan\.tif: .*float.*\[0, 1\]"):
        m.open_image(_float_tiff(values), name="scan.tif")


def test_a_value_just_above_one_is_shown_as_above_one():
    """The refusal names the real maximum (it printed 1.0000001 as '1', as if in range)."""
    with pytest.raises(m.ImageError, match=r"to 1\.0000001\d*;"):
        m.open_image(_float_tiff([[0.5, 1.0000001]]), name="scan.tif")


def _int32_tiff(values) -> bytes:
    """A real 32-bit signed integer TIFF (Pillow mode "I") of `values`."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, dtype=np.int32)).save(buf, format="TIFF")
    return buf.getvalue()


def test_int32_tiff_with_16_bit_values_is_scaled_like_16_bit():
    data = _int32_tiff([[0, 32896, 65535]])
    assert Image.open(io.BytesIO(data)).mode == "I"
    img = m.open_image(data, name="depth.tif")
    assert [img.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("values", [[[0, 1_000_000]], [[-5, 100]]])
def test_int32_tiff_beyond_16_bit_is_refused_not_whitened(values):
    """Values 0..1e6 used to decode almost white (v / 257 clipped at 255): no standard white exists
    for 32-bit integers, so the image is refused with the range it holds."""
    with pytest.raises(m.ImageError, match=r"depth\.tif: 32-bit integer image with values from -?\d+ to \d+"):
        m.open_image(_int32_tiff(values), name="depth.tif")
