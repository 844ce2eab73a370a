"""Nose-tip tracker: a frozen TensorFlow graph run with OpenCV's DNN module.

The model contract (input blob, output row) is in ``contract.py``, shared with training.
One ``cv2.dnn.Net`` is shared by all threads of a worker; ``setInput`` and ``forward`` are
not thread-safe together, so both run under one lock (the registry serialises ``infer``
too; this lock keeps direct users such as the benchmark and the evaluation safe).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ...serving.artifacts import read_metadata, sha256_file
from .contract import INPUT_SIZE, postprocess, preprocess

log = logging.getLogger(__name__)

MODEL_FILE = "nose_tracker.pb"
METADATA_FILE = "metadata.json"


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
        meta = read_metadata(os.path.join(model_dir, METADATA_FILE))
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
        """Output rows (N x 10) of an N x 3 x 112 x 112 float32 blob."""
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
        row = self.rows(blob)[0]
        ms = (time.perf_counter() - t0) * 1000
        p = postprocess(row, w, h)
        return NosePrediction(inference_ms=round(ms, 3), **p)

    def rows(self, blob: np.ndarray) -> np.ndarray:
        """forward() checked: one finite row of >= 2 values per input."""
        out = self.forward(blob)
        rows = np.asarray(out).reshape(out.shape[0], -1)
        if rows.shape[0] != blob.shape[0] or rows.shape[1] < 2 or not np.all(np.isfinite(rows[:, :2])):
            raise RuntimeError(f"unexpected nose model output shape {out.shape}")
        return rows

    def warmup(self, runs: int = 2) -> None:
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, size=(INPUT_SIZE * 2, INPUT_SIZE * 2, 3), dtype=np.uint8)
        for _ in range(runs):
            self.predict(img)
