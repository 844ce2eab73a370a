"""The face detector as a servable: our centre-heat-map CNN (a frozen TensorFlow graph run
by OpenCV DNN), trained on composed scenes (training/face_detector).

Inputs: ``image`` BYTES [N] (encoded image files).  Outputs, padded to the most faces of any
image of the request: ``boxes`` FP32 [N, K, 4] (x, y, width, height in pixels of the image
as displayed), ``scores`` FP32 [N, K] (0 for padding), ``count`` INT32 [N].  Parameters:
``min_score`` and ``max_faces``.

The nose tracker runs this model first (a two-model pipeline: its own lock, version and
metrics here) and its landmark net on each face found.
"""
from __future__ import annotations

import os
import threading

import cv2
import numpy as np

from ...config import Setting
from ...serving.artifacts import read_metadata
from ...serving.errors import InvalidInput
from ...serving.imaging import REDUCED_MIN_SIDE, decode_base64_image, decode_image_scaled
from ...serving.servable import Servable, TensorSpec
from .contract import decode, preprocess

MODEL_FILE = "face_detector.pb"
MAX_FACES_LIMIT = 50


def _number(parameters, name, default, lo, hi, integer: bool):
    v = parameters.get(name, default)
    bad = InvalidInput(f"parameter {name!r} must be {'an integer' if integer else 'a number'} from {lo} to {hi}")
    if isinstance(v, str):
        try:
            v = int(v.strip()) if integer else float(v.strip())
        except ValueError:
            raise bad from None
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad
    elif integer and isinstance(v, float):
        if not v.is_integer():
            raise bad
        v = int(v)
    if not (lo <= v <= hi):  # NaN fails too
        raise bad
    return v


def detection_decode(data: bytes, max_pixels: int, detect_size: int):
    """(image, width, height as displayed) decoded for face detection: a large JPEG at the
    largest 1/2, 1/4 or 1/8 scale whose longer side keeps the detector's input size (a 640x480
    photo decodes to 320x240, what the detector sees anyway: ~1.3 ms less than a full decode).
    The nose tracker's face crops take their pixels from this image or from a larger decode of the
    same bytes (nose_tracker/faces.py: crop_source)."""
    return decode_image_scaled(data, max_pixels, REDUCED_MIN_SIDE, min_long=detect_size)


def parse_detection_parameters(parameters, default_score: float, default_max: int = 10) -> tuple[float, int]:
    """(min_score, max_faces) from request parameters, checked (InvalidInput when bad)."""
    return (float(_number(parameters, "min_score", default_score, 0.01, 1.0, False)),
            int(_number(parameters, "max_faces", default_max, 0, MAX_FACES_LIMIT, True)))


class FaceDetectorServable(Servable):
    frameworks = ("opencv",)
    platform = "opencv_dnn_tensorflow_graphdef"
    description = "Every face of a photo: box and score (our CNN, run by OpenCV DNN)."
    settings = (
        Setting("FACE_DETECT_SIZE", "320",
                "Longer side, in pixels, the image is resized to for face detection (a multiple of 32). "
                "Larger finds smaller faces and costs more (see the model card).",
                group="face_detector", kind="int", minimum=128),
        Setting("FACE_MIN_SCORE", "",
                "Default score a face must reach (0-1); empty: the threshold calibrated on the dev scenes, "
                "from the model's metadata.json. Requests may set min_score.",
                group="face_detector"),
        Setting("FACE_NMS_IOU", "0.4", "Non-maximum suppression: overlap (IoU) above which the lower-scored "
                "of two boxes is dropped.", group="face_detector", kind="float", minimum=0.05),
    )
    inputs = (
        TensorSpec("image", "BYTES", (-1,), "Encoded image files (JPEG, PNG, BMP, WebP, TIFF, GIF)."),
    )
    outputs = (
        TensorSpec("boxes", "FP32", (-1, -1, 4), "Face boxes x, y, width, height in image pixels, best first."),
        TensorSpec("scores", "FP32", (-1, -1), "Face scores (0 for padding)."),
        TensorSpec("count", "INT32", (-1,), "Faces found in each image."),
    )
    primary_artifact = MODEL_FILE
    max_images = 16

    def load(self) -> None:
        pb = os.path.join(self.model_dir, MODEL_FILE)
        if not os.path.isfile(pb):
            raise FileNotFoundError(f"face detector model not found: {pb}")
        size = self.config["FACE_DETECT_SIZE"]
        if size % 32:
            raise ValueError(f"FACE_DETECT_SIZE must be a multiple of 32, got {size}")
        self.net = cv2.dnn.readNetFromTensorflow(pb)
        self._lock = threading.Lock()
        self.metadata = read_metadata(os.path.join(self.model_dir, "metadata.json"))
        raw = (self.config["FACE_MIN_SCORE"] or "").strip()
        try:
            self.min_score = float(raw) if raw else float(self.metadata.get("min_score", 0.5))
        except ValueError:
            raise ValueError(f"FACE_MIN_SCORE must be a number, got {raw!r}") from None
        if not 0.01 <= self.min_score <= 1:
            raise ValueError(f"FACE_MIN_SCORE must be from 0.01 to 1, got {self.min_score}")
        self.size = size
        self.nms_iou = self.config["FACE_NMS_IOU"]

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        for _ in range(2):
            self.infer([self.item(img, 640, 480)])

    def extra_metadata(self) -> dict:
        out = {k: v for k, v in self.metadata.items() if k in ("input", "output", "framework", "size_bytes")}
        out.update(detect_size=self.size, min_score=self.min_score, nms_iou=self.nms_iou)
        return out

    # --- request path ----------------------------------------------------------------
    def item(self, img: np.ndarray, width: int, height: int) -> tuple:
        """A decoded image (possibly at reduced scale) of width x height pixels as displayed ->
        its detector item: ("image", blob, (scale from the original to the net's input, width, height))."""
        blob, s = preprocess(img, self.size)
        return ("image", blob, (s * img.shape[1] / width, width, height))

    def batch_key(self, item):
        return item[1].shape  # images of one size share a forward pass

    def preprocess(self, inputs, parameters) -> list:
        images = inputs["image"]
        if len(images) > self.max_images:
            raise InvalidInput(f"{len(images)} images in one request; the limit is {self.max_images}")
        parse_detection_parameters(parameters, self.min_score)
        out = []
        for b in images:
            img, w, h = detection_decode(decode_base64_image(b), self.context.core.max_image_pixels, self.size)
            out.append(self.item(img, w, h))
        return out

    def infer(self, items: list) -> list:
        """The raw output map (5 x H/8 x W/8) of each item."""
        blob = np.concatenate([b for _, b, _ in items])
        with self._lock:
            self.net.setInput(blob)
            out = np.array(self.net.forward(), copy=True)
        if out.shape[0] != len(items) or out.shape[1] != 5 or not np.all(np.isfinite(out)):
            raise RuntimeError(f"unexpected face detector output shape {out.shape}")
        return list(out)

    def faces(self, result, item, min_score: float, max_faces: int):
        """(boxes (n, 4) x, y, w, h in image pixels, scores (n,)) of one item's result."""
        scale, w, h = item[2]
        if max_faces == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return decode(result, scale, min_score=min_score, nms_iou=self.nms_iou, max_faces=max_faces,
                      image_wh=(w, h))

    def postprocess(self, results, parameters, request_items) -> dict:
        min_score, max_faces = parse_detection_parameters(parameters, self.min_score)
        found = [self.faces(r, it, min_score, max_faces) for r, it in zip(results, request_items)]
        k = max([len(s) for _, s in found] + [0])
        boxes = np.zeros((len(found), k, 4), np.float32)
        scores = np.zeros((len(found), k), np.float32)
        for i, (b, s) in enumerate(found):
            boxes[i, :len(s)], scores[i, :len(s)] = b, s
        return {"boxes": boxes, "scores": scores, "count": np.array([len(s) for _, s in found], np.int32)}
