"""Image validation and decoding (no server)."""
from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from app.serving import imaging
from app.serving.errors import ApiError
from conftest import synthetic_face


def _status(fn, *a):
    with pytest.raises(ApiError) as ei:
        fn(*a)
    return ei.value.status, ei.value.code


def test_base64_variants():
    data = synthetic_face(64, 48)
    plain = base64.b64encode(data).decode()
    assert imaging.decode_base64_image(plain) == data
    assert imaging.decode_base64_image("data:image/jpeg;base64," + plain) == data
    assert imaging.decode_base64_image("DATA:image/png;base64," + plain) == data
    wrapped = "\n".join(plain[i:i + 76] for i in range(0, len(plain), 76))
    assert imaging.decode_base64_image(wrapped) == data
    assert imaging.decode_base64_image(base64.urlsafe_b64encode(data).decode()) == data


@pytest.mark.parametrize("value,code", [
    ("", "invalid_base64"),
    ("   ", "invalid_base64"),
    ("abc$", "invalid_base64"),
    ("abcde", "invalid_base64"),
    (None, "invalid_field"),
    (["x"], "invalid_field"),
    ("data:text/html;base64,PGI+", "not_an_image"),
])
def test_base64_rejects(value, code):
    assert _status(imaging.decode_base64_image, value) == (400, code)


def test_decode_formats_to_bgr():
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    for ext in (".png", ".bmp", ".jpg", ".webp", ".tiff"):
        ok, buf = cv2.imencode(ext, img)
        out = imaging.decode_image(buf.tobytes(), 10_000)
        assert out.shape == (30, 40, 3) and out.dtype == np.uint8
        assert out[..., 2].mean() > 200 and out[..., 0].mean() < 50, ext


def test_grey_alpha_and_16bit_become_bgr_uint8():
    grey = cv2.imencode(".png", np.full((10, 12), 128, np.uint8))[1].tobytes()
    rgba = io.BytesIO()
    Image.new("RGBA", (12, 10), (0, 255, 0, 128)).save(rgba, "PNG")
    deep = cv2.imencode(".png", np.full((10, 12, 3), 40000, np.uint16))[1].tobytes()
    for data in (grey, rgba.getvalue(), deep):
        out = imaging.decode_image(data, 1000)
        assert out.shape == (10, 12, 3) and out.dtype == np.uint8


def test_pixel_limit_checked_from_header_before_decoding(monkeypatch):
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) < 100_000  # a tiny file claiming 25 Mpx

    def boom(*a, **k):
        raise AssertionError("cv2.imdecode must not run for an oversized image")

    monkeypatch.setattr(imaging.cv2, "imdecode", boom)
    assert _status(imaging.decode_image, data, 24_999_999) == (413, "image_too_large")
    fmt, w, h = imaging.image_size(data)
    assert (fmt, w, h) == ("PNG", 5000, 5000)


def test_pixel_limit_boundary():
    data = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes()
    assert imaging.decode_image(data, 100).shape == (10, 10, 3)
    assert _status(imaging.decode_image, data, 99)[0] == 413


def test_exif_orientation_applied():
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)  # left half red (RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", exif=exif.tobytes())
    out = imaging.decode_image(buf.getvalue(), 10_000)
    assert out.shape == (60, 40, 3)  # portrait as displayed
    assert out[:25, :, 2].mean() > 200 and out[-25:, :, 2].mean() < 50  # the red half is now on top


@pytest.mark.parametrize("data", [b"", b"plain text, not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
                                  b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"])
def test_not_images(data):
    assert _status(imaging.decode_image, data, 10**6) == (400, "not_an_image")


def test_truncated_jpeg_is_400_or_decoded():
    data = synthetic_face(200, 100)
    for n in (20, 200, len(data) // 2):
        try:
            out = imaging.decode_image(data[:n], 10**6)
        except ApiError as e:
            assert e.status == 400
        else:
            assert out.shape == (100, 200, 3)
