"""Safe image decoding for the nose endpoints.

Order of checks (cheapest first, nothing big is decoded blindly):

1. base64 (for /image-64): standard or URL-safe alphabet (not mixed), whitespace
   ignored, padding optional, optional ``data:image/...;base64,`` prefix;
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
#: (GIF: the first frame of an animation.)
SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "PPM", "JPEG2000", "GIF"}


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
    # padding may be left out (as URL-safe encoders often do), but '=' only at the end
    value = value.rstrip("=")
    if len(value) % 4 == 1:
        raise ApiError(400, "invalid_base64", "field 'image' is not valid base64 (bad length)")
    value += "=" * (-len(value) % 4)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    if "+" in value or "/" in value:  # not the URL-safe alphabet either (or a mix of both)
        raise ApiError(400, "invalid_base64", "field 'image' is not valid base64")
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
        raise ApiError(400, "not_an_image", "the upload is not a recognised image (JPEG, PNG, BMP, WebP, TIFF, GIF)") \
            from None
    if fmt not in SUPPORTED_FORMATS:
        raise ApiError(400, "not_an_image", f"unsupported image format {fmt}")
    return fmt, int(w), int(h)


#: JPEG decoding at reduced scale (libjpeg's DCT-domain scaling), largest factor first.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
#: Smallest side a reduced decode may leave: the nose model's 112 px input. On 1,203 held-out
#: dev faces as 640x480 JPEGs, 1/4 decoding (160x120) scored the same NME as a full decode
#: (0.0669 both; 1/2 decoding 0.0665) and saved 0.3 ms per image (bench/nose_reduced_decode.py).
REDUCED_MIN_SIDE = 112


def reduced_flag(fmt: str, w: int, h: int, min_side: int = REDUCED_MIN_SIDE, min_long: int = 0,
                 max_factor: int = 8) -> tuple[int, int]:
    """(factor, imdecode flag): the largest JPEG scale-down (at most ``max_factor``) keeping both
    sides >= min_side and the longer side >= min_long."""
    if fmt == "JPEG":
        for factor, flag in _REDUCED:
            if factor <= max_factor and min(w, h) // factor >= min_side and max(w, h) // factor >= min_long:
                return factor, flag
    return 1, cv2.IMREAD_COLOR


def decode_image_scaled(data: bytes, max_pixels: int, min_side: int | None = None, min_long: int = 0,
                        max_factor: int = 8) -> tuple[np.ndarray, int, int]:
    """(BGR uint8 image, width, height) after the header-only size check.

    With ``min_side`` a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (both sides stay
    >= min_side, the longer >= min_long, the factor <= max_factor), which is much cheaper; width
    and height are always those of the full image as a viewer shows it (EXIF orientation
    applied), so coordinates can be scaled back.
    """
    fmt, w, h = image_size(data)
    if w <= 0 or h <= 0:
        raise ApiError(400, "not_an_image", "the image has no pixels")
    if w * h > max_pixels:
        raise ApiError(413, "image_too_large",
                       f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels")
    factor, flag = reduced_flag(fmt, w, h, min_side, min_long, max_factor) if min_side else (1, cv2.IMREAD_COLOR)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if img is None or img.size == 0:
        raise ApiError(400, "not_an_image", f"the {fmt} image could not be decoded (truncated or corrupt?)")
    if img.ndim == 2:  # defensive: IMREAD_COLOR always yields 3 channels
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    ih, iw = img.shape[:2]
    if factor == 1:
        return img, iw, ih
    # the header's size is before EXIF rotation: a quarter turn swaps the sides
    if (iw >= ih) == (w >= h) or w == h:
        return img, w, h
    return img, h, w


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decoded BGR uint8 image at full size, after the header-only size check."""
    return decode_image_scaled(data, max_pixels)[0]
