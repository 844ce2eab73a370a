"""The face pipeline's geometry: a face box -> the landmark net's 112x112 crop, and the net's
points on the crop -> pixels of the image.

The landmark net was trained with 50% face crops of 1.05-3x the annotated face box (and
whole photos), so a square crop of ``CROP_MARGIN`` x the box's longer side, centred on the
box, is inside what it knows.  The crop is an affine warp of the decoded image (edge pixels
replicated where the crop leaves the image, as in training); its inverse maps the points back.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...serving.imaging import decode_image_scaled
from .contract import INPUT_SIZE, POINTS

#: crop side / face-box side, chosen on the dev scenes and photos (face_detector's model card:
#: 1.3 against 1.6 and 2.0, with and without a second, re-centred pass)
CROP_MARGIN = 1.3


@dataclass
class FaceCrop:
    """One face of one image: its box and score in image pixels and the crop's inverse map."""
    image: int                 # index of the image in the request
    size: tuple                # the image's width, height (as displayed)
    box: tuple                 # x, y, width, height (pixels of the image as displayed)
    score: float
    inverse: np.ndarray        # 2x3: crop pixel (corner origin) -> image pixel (as displayed)


@dataclass
class WholeImage:
    """The whole image (no face found): the legacy contract's squashed 112x112 input."""
    image: int
    size: tuple                # width, height


def crop_blob(img: np.ndarray, box, scale: float, margin: float = CROP_MARGIN):
    """(1x3x112x112 float32 blob, inverse 2x3) of a face box (x, y, w, h in pixels of the image as
    displayed); ``scale``: decoded pixels per displayed pixel (reduced JPEG decoding)."""
    x, y, w, h = (float(v) * scale for v in box)
    side = max(w, h) * margin
    cx, cy = x + w / 2, y + h / 2
    s = INPUT_SIZE / max(side, 1e-3)
    # corner-origin coordinates: crop = s * (img - (c - side/2)); cv2 uses pixel centres
    M = np.array([[s, 0, -s * (cx - side / 2) + 0.5 * s - 0.5],
                  [0, s, -s * (cy - side / 2) + 0.5 * s - 0.5]])
    crop = cv2.warpAffine(img, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    blob = (np.ascontiguousarray(np.transpose(crop, [2, 0, 1])[None]) / 255).astype(np.float32)  # uint8 first: faster
    inv = np.array([[1 / s, 0, cx - side / 2], [0, 1 / s, cy - side / 2]]) / scale
    return blob, inv


def crop_factor(boxes) -> int:
    """The largest JPEG decode factor (8, 4, 2 or 1) at which the crop of every box (x, y, w, h
    in pixels as displayed) still has at least the landmark net's 112 px a side."""
    side = min(max(float(b[2]), float(b[3])) for b in boxes) * CROP_MARGIN
    f = 8
    while f > 1 and side / f < INPUT_SIZE:
        f //= 2
    return f


def crop_source(data: bytes, img: np.ndarray, width: int, boxes, max_pixels: int) -> np.ndarray:
    """The image the crops of ``boxes`` are cut from: ``img`` (decoded from ``data``, ``width``
    px wide as displayed) when it has the pixels, else ``data`` decoded again at the largest
    scale that has them (a small face in a large photo: never a crop upsampled from a reduced
    decode)."""
    if not len(boxes):
        return img
    need = crop_factor(boxes)
    if width / img.shape[1] <= need * 1.05:  # 1.05: a reduced decode rounds odd sizes up
        return img
    return decode_image_scaled(data, max_pixels, 1, max_factor=need)[0]


def crop_points(row, inverse: np.ndarray) -> np.ndarray:
    """(5, 2) image pixels of the net's output row (normalised to the crop)."""
    p = np.asarray(row[:2 * len(POINTS)], np.float64).reshape(len(POINTS), 2) * INPUT_SIZE
    return p @ inverse[:, :2].T + inverse[:, 2]


def prominent(boxes, scores) -> int:
    """The most prominent face: the largest area x score^2 (a big face the detector is sure of;
    chosen on the dev photos over the largest box, the best score and area x score), the first
    on a tie; -1 without faces."""
    v = [float(b[2]) * float(b[3]) * float(s) ** 2 for b, s in zip(boxes, scores)]
    return int(np.argmax(v)) if v else -1


def recentred(box, points):
    """The box moved to be centred on the face's points (eye and mouth midpoints' mean), for
    a second, re-centred pass of the landmark net."""
    x, y, w, h = (float(v) for v in box)
    p = np.asarray(points, np.float64)
    c = ((p[1] + p[2]) / 2 + (p[3] + p[4]) / 2) / 2
    return (c[0] - w / 2, c[1] - h / 2, w, h)
