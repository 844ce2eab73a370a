"""Reduced-scale JPEG decoding (IMAGE_REDUCED_DECODE): the right scale, the full image's size
(EXIF orientation included) in the answer, and the same prediction as a full decode."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from app.serving.imaging import REDUCED_MIN_SIDE, decode_image, decode_image_scaled, reduced_flag
from conftest import synthetic_face


def _jpeg(w, h, orientation=None, seed=3):
    arr = cv2.cvtColor(cv2.imdecode(np.frombuffer(synthetic_face(w, h, seed), np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    buf = io.BytesIO()
    kw = {"quality": 92}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_scale_is_the_largest_that_keeps_both_sides_above_the_minimum():
    assert REDUCED_MIN_SIDE == 112
    assert reduced_flag("JPEG", 640, 480)[0] == 4
    assert reduced_flag("JPEG", 1280, 960)[0] == 8
    assert reduced_flag("JPEG", 4000, 3000)[0] == 8
    assert reduced_flag("JPEG", 400, 400)[0] == 2
    assert reduced_flag("JPEG", 200, 200)[0] == 1
    assert reduced_flag("PNG", 4000, 3000)[0] == 1  # only JPEG has DCT scaling


def test_reduced_decode_reports_full_size_and_orientation():
    img, w, h = decode_image_scaled(_jpeg(1280, 960), 10 ** 8, REDUCED_MIN_SIDE)
    assert img.shape == (120, 160, 3) and (w, h) == (1280, 960)
    rot, w, h = decode_image_scaled(_jpeg(1280, 960, orientation=6), 10 ** 8, REDUCED_MIN_SIDE)
    assert rot.shape == (160, 120, 3) and (w, h) == (960, 1280)  # as displayed, not as stored
    full = decode_image(_jpeg(1280, 960, orientation=6), 10 ** 8)
    assert full.shape == (1280, 960, 3)


def test_image_bin_large_jpeg_same_answer_as_full_decode(stack):
    data = _jpeg(1280, 960, seed=11)
    # max_faces=0: the whole-image path, where reduced decoding goes down to 112 px
    r = stack.post("/image-bin?max_faces=0", files={"image": ("big.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (1280, 960)
    assert abs(body["x_px"] - body["x"] * 1280) < 0.01 and abs(body["y_px"] - body["y"] * 960) < 0.01
    # the same picture already at 160x120 (what a 1/8 decode sees) gives nearly the same point
    small = cv2.imencode(".png", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8))[1]
    r2 = stack.post("/image-bin?max_faces=0", files={"image": ("small.png", small.tobytes(), "image/png")})
    assert r2.status_code == 200, r2.text
    assert abs(r2.json()["x"] - body["x"]) < 1e-4 and abs(r2.json()["y"] - body["y"]) < 1e-4
