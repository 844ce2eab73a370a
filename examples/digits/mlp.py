"""The digits MLP in plain NumPy: the one definition of the input scaling, the forward pass
and the weights file, shared by ``train.py`` and ``servable.py`` (so training and serving
cannot drift apart).

Input: 8x8 images with pixel values 0..16 (scikit-learn's digits: the count of "on" pixels
in each 4x4 block of a 32x32 bitmap, ink high). Scaled to 0..1 and flattened to 64 values,
then ``hidden = relu(x @ W1 + b1)``, ``logits = hidden @ W2 + b2``, softmax over 10 digits.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

SIDE = 8           # images are SIDE x SIDE
PIXEL_MAX = 16.0   # pixel values are 0..PIXEL_MAX
CLASSES = 10
WEIGHTS = ("W1", "b1", "W2", "b2")
#: Ink below this (0..255 away from the background colour): a blank image.
MIN_INK = 32
#: Fraction of the strongest ink that marks the digit's bounding box.
BOX_THRESHOLD = 0.1


def scale(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) pixel values 0..16 -> (N, 64) float32 in 0..1: the network's input."""
    return (np.asarray(images, dtype=np.float32).reshape(len(images), SIDE * SIDE) / np.float32(PIXEL_MAX))


def digit_from_image(img: np.ndarray) -> np.ndarray:
    """(8, 8) float32 pixel values 0..16 of a decoded image of any size (BGR or grey uint8),
    made as NIST's normalisation made the training data: grey; ink measured from the
    background (the median colour of the border), so dark on light and light on dark both
    work; cropped to the ink; centred on a square (the longer side fills the frame, aspect
    ratio kept); averaged down to 8x8 (``INTER_AREA``: the share of ink in each block) and
    scaled so that the strongest block is 16. ValueError if the image is blank."""
    import cv2
    grey = (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img).astype(np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    ink = np.clip((background - grey) if background >= 128 else (grey - background), 0, None)
    peak = float(ink.max())
    if peak < MIN_INK:
        raise ValueError("is blank: no strokes that differ from the background")
    ink /= peak
    rows = np.flatnonzero(ink.max(axis=1) > BOX_THRESHOLD)
    cols = np.flatnonzero(ink.max(axis=0) > BOX_THRESHOLD)
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = ink
    small = cv2.resize(square, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    return (small * (PIXEL_MAX / max(float(small.max()), 1e-6))).astype(np.float32)


def render(image: np.ndarray, scale: int = 4) -> np.ndarray:
    """A grey uint8 picture (dark ink on white) of an 8x8 0..16 image, ``scale`` pixels per block:
    how the tests and ``train.py`` exercise the encoded-image path."""
    grey = np.rint(255 - np.asarray(image, np.float64) * (255 / PIXEL_MAX)).astype(np.uint8)
    return np.kron(grey, np.ones((scale, scale), np.uint8))


def forward(params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hidden activations, logits) of scaled inputs ``x`` (N, 64)."""
    hidden = np.maximum(x @ params["W1"] + params["b1"], 0)
    return hidden, hidden @ params["W2"] + params["b2"]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities(params: dict, images: np.ndarray) -> np.ndarray:
    """(N, 10) float32 class probabilities of (N, 8, 8) images with values 0..16."""
    return softmax(forward(params, scale(images))[1]).astype(np.float32)


def save_weights(params: dict, path: Path) -> None:
    """An .npz (readable by ``np.load``) with fixed zip timestamps, so that the same weights
    always give the same file and sha256."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in WEIGHTS:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(params[name], dtype=np.float32),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_weights(path: Path) -> dict:
    """The parameters of a weights file, checked (ValueError if the shapes do not fit)."""
    with np.load(path, allow_pickle=False) as npz:
        missing = [n for n in WEIGHTS if n not in npz.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        params = {n: np.asarray(npz[n], dtype=np.float32) for n in WEIGHTS}
    w1, b1, w2, b2 = (params[n] for n in WEIGHTS)
    hidden = w1.shape[1] if w1.ndim == 2 else -1
    if (w1.shape != (SIDE * SIDE, hidden) or b1.shape != (hidden,) or w2.shape != (hidden, CLASSES)
            or b2.shape != (CLASSES,)):
        raise ValueError(f"{path}: unexpected shapes {[params[n].shape for n in WEIGHTS]}")
    if not all(np.all(np.isfinite(p)) for p in params.values()):
        raise ValueError(f"{path}: weights are not finite")
    return params
