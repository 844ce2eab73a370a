"""Nose-tip tracker: a frozen TensorFlow graph run with OpenCV's DNN module.

Model contract (set by the training side, models/nose_tracker/):

* input: ``np.transpose(cv2.resize(img, (112, 112)) / 255, [2, 0, 1])[None]``
  as float32, where ``img`` is the BGR image as decoded by OpenCV;
* output: row 0 begins with the nose tip ``x, y`` normalised to [0, 1]
  relative to the image width and height.

One ``cv2.dnn.Net`` is shared by all threads of a worker; ``setInput`` and
``forward`` are not thread-safe together, so both run under one lock.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = "nose_tracker.pb"
METADATA_FILE = "metadata.json"
INPUT_SIZE = 112


def preprocess(img: np.ndarray) -> np.ndarray:
    """The model's input blob for a BGR uint8 image (exactly the training contract)."""
    return np.transpose(cv2.resize(img, (INPUT_SIZE, INPUT_SIZE)) / 255, [2, 0, 1])[None].astype(np.float32)


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


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class NosePrediction:
    x: float
    y: float
    x_px: float
    y_px: float
    width: int
    height: int
    inference_ms: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class NoseTracker:
    """Loaded nose model. Thread-safe: every forward pass runs under ``self._lock``."""

    def __init__(self, net, metadata: dict):
        self._net = net
        self._lock = threading.Lock()
        self.metadata = metadata

    @classmethod
    def load(cls, model_dir: str) -> "NoseTracker":
        t0 = time.perf_counter()
        pb = os.path.join(model_dir, MODEL_FILE)
        if not os.path.isfile(pb):
            raise FileNotFoundError(f"nose model not found: {pb}")
        net = cv2.dnn.readNetFromTensorflow(pb)
        meta: dict = {}
        meta_path = os.path.join(model_dir, METADATA_FILE)
        if os.path.isfile(meta_path):
            try:
                with open(meta_path, encoding="utf-8") as fh:
                    loaded = json.load(fh)
                if isinstance(loaded, dict):
                    meta.update(loaded)
            except (OSError, ValueError) as exc:  # a broken metadata file must not stop serving
                log.warning("ignoring unreadable %s: %s", meta_path, exc)
        sha = sha256_file(pb)
        meta.setdefault("name", "nose_tracker")
        meta.setdefault("version", f"sha256:{sha[:12]}")
        meta["version"] = str(meta["version"])
        declared = meta.get("sha256")
        if declared and declared != sha:
            log.warning("%s: metadata sha256 %s does not match the file's %s", pb, declared, sha)
            meta["metadata_sha256_mismatch"] = True
        meta["sha256"] = sha
        meta["file"] = MODEL_FILE
        meta["size_bytes"] = os.path.getsize(pb)
        meta["load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return cls(net, meta)

    @property
    def version(self) -> str:
        return self.metadata["version"]

    def forward(self, blob: np.ndarray) -> np.ndarray:
        with self._lock:
            self._net.setInput(blob)
            out = self._net.forward()
            return np.array(out, copy=True)

    def predict(self, img: np.ndarray, size: tuple[int, int] | None = None) -> NosePrediction:
        """Nose tip of a decoded BGR image (H x W x 3, uint8).

        size: (width, height) of the original image when ``img`` was decoded at reduced
        scale; pixel coordinates then refer to the original image."""
        if img is None or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("expected a BGR image of shape (H, W, 3)")
        h, w = img.shape[:2]
        if size is not None:
            w, h = size
        blob = preprocess(img)
        t0 = time.perf_counter()
        out = self.forward(blob)
        ms = (time.perf_counter() - t0) * 1000
        row = np.asarray(out).reshape(out.shape[0], -1)[0]
        if row.shape[0] < 2 or not np.all(np.isfinite(row[:2])):
            raise RuntimeError(f"unexpected nose model output shape {out.shape}")
        p = postprocess(row, w, h)
        return NosePrediction(inference_ms=round(ms, 3), **p)

    def warmup(self, runs: int = 2) -> None:
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, size=(INPUT_SIZE * 2, INPUT_SIZE * 2, 3), dtype=np.uint8)
        for _ in range(runs):
            self.predict(img)
