"""Safe image decoding for the nose endpoints.

Order of checks (cheapest first, nothing big is decoded blindly):

1. base64 (for /image-64): strict alphabet, optional ``data:image/...;base64,`` prefix;
2. header only: Pillow's ``Image.open`` reads the format and the size lazily,
   without decoding pixels; unknown format -> 400, width*height over the limit -> 413;
3. full decode with ``cv2.imdecode(..., IMREAD_COLOR)``, which returns BGR
   uint8 with 3 channels (grey/alpha/16-bit inputs converted) and applies the
   EXIF orientation, so coordinates refer to the image as a viewer shows it.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

import cv2
import numpy as np
from PIL import Image

from .errors import ApiError

# We do our own pixel-limit check; Pillow's own bomb check would raise on open.
Image.MAX_IMAGE_PIXELS = None

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.I)
_WS = re.compile(r"\s+")

#: Formats both Pillow (header) and OpenCV (pixels) understand.
SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "PPM", "JPEG2000"}


def decode_base64_image(value) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", "field 'image' must be a base64 string")
    m = _DATA_URL.match(value)
    if m:
        mime = (m.group("mime") or "").lower()
        if mime and not mime.startswith("image/"):
            raise ApiError(400, "not_an_image", f"data URL has media type {mime!r}, expected image/*")
        value = value[m.end():]
    value = _WS.sub("", value)
    if not value:
        raise ApiError(400, "invalid_base64", "field 'image' is empty")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # accept the URL-safe alphabet too
        return base64.b64decode(value, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", "field 'image' is not valid base64") from None


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header only; ApiError 400 if not an image."""
    if not data:
        raise ApiError(400, "not_an_image", "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "?"
                w, h = im.size
    except Exception:
        raise ApiError(400, "not_an_image", "the upload is not a recognised image (JPEG, PNG, BMP, WebP, TIFF)") \
            from None
    if fmt not in SUPPORTED_FORMATS:
        raise ApiError(400, "not_an_image", f"unsupported image format {fmt}")
    return fmt, int(w), int(h)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decoded BGR uint8 image, after the header-only size check."""
    fmt, w, h = image_size(data)
    if w <= 0 or h <= 0:
        raise ApiError(400, "not_an_image", "the image has no pixels")
    if w * h > max_pixels:
        raise ApiError(413, "image_too_large",
                       f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ApiError(400, "not_an_image", f"the {fmt} image could not be decoded (truncated or corrupt?)")
    if img.ndim == 2:  # defensive: IMREAD_COLOR always yields 3 channels
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img
