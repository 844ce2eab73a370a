"""The nose tracker's model contract, the one copy used by serving, training and tests.

* input: ``np.transpose(cv2.resize(img, (112, 112)) / 255, [2, 0, 1])[None]`` as float32,
  where ``img`` is the BGR image as decoded by OpenCV (N x 3 x 112 x 112, NCHW);
* output: one row of 10 values per image, the nose tip, left eye, right eye, left and right
  mouth corner, each ``x, y`` normalised to [0, 1] of the image width and height.
"""
from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE = 112
POINTS = ("nose", "left_eye", "right_eye", "mouth_left", "mouth_right")


def preprocess(img: np.ndarray) -> np.ndarray:
    """The model's input blob for a BGR uint8 image (exactly the training contract)."""
    # transposed as uint8 first: the contract's numbers, less work
    return (np.ascontiguousarray(np.transpose(cv2.resize(img, (INPUT_SIZE, INPUT_SIZE)), [2, 0, 1])[None]) / 255
            ).astype(np.float32)


def postprocess(row, width: int, height: int) -> dict:
    """Normalised x, y (clipped to [0, 1]) and pixel coordinates in a width x height image."""
    x = float(min(max(float(row[0]), 0.0), 1.0))
    y = float(min(max(float(row[1]), 0.0), 1.0))
    return {
        "x": round(x, 6),
        "y": round(y, 6),
        "x_px": round(x * width, 2),
        "y_px": round(y * height, 2),
        "width": int(width),
        "height": int(height),
    }
