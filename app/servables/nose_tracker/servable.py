"""The nose tracker as a servable: a two-model pipeline.  Our face detector (the
``face_detector`` model, run through the registry: its own lock, version and metrics) finds
every face; our landmark net (a frozen TensorFlow graph run by OpenCV DNN) then runs on a
crop of each face (``faces.py``), all crops of a request in one forward pass.  An image with
no face found (or a server without the ``face_detector`` model) gets the legacy answer: the
landmark net on the whole image squashed to 112x112.

Inputs (one kind per request):

* ``image`` BYTES [N]: encoded image files (JPEG, PNG, BMP, WebP, TIFF, GIF); outputs ``nose``
  FP32 [N, 2] and ``points`` FP32 [N, 5, 2] (nose, left eye, right eye, left and right mouth
  corner; of the most prominent face (``faces.prominent``), else of the whole image; normalised x, y of the image
  as displayed), ``image_size`` INT32 [N, 2] (width, height in pixels), and every face:
  ``face_count`` INT32 [N], ``face_boxes`` FP32 [N, K, 4] (x, y, width, height in pixels),
  ``face_scores`` FP32 [N, K], ``face_points`` FP32 [N, K, 5, 2] (pixels), padded with zeros
  to the most faces K of any image; parameters ``min_score``, ``max_faces``;
* ``input`` FP32 [N, 3, 112, 112]: the raw landmark-net contract (``contract.preprocess``);
  output ``output`` FP32 [N, 10].
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...config import Setting
from ...serving.errors import InvalidInput
from ...serving.imaging import REDUCED_MIN_SIDE, decode_base64_image, decode_image_scaled
from ...serving.servable import Servable, TensorSpec, group_of
from ..face_detector.servable import MAX_FACES_LIMIT, detection_decode, parse_detection_parameters
from .contract import INPUT_SIZE, POINTS, preprocess
from .faces import CROP_MARGIN, FaceCrop, WholeImage, crop_blob, crop_points, crop_source, prominent


class Detection(NamedTuple):
    """A request's face detection: the detector servable (None when this server has none),
    the score threshold and the most faces wanted (0: none, the whole-image answer)."""
    detector: object | None
    min_score: float
    max_faces: int

    @property
    def runs(self) -> bool:
        return self.detector is not None and self.max_faces > 0


S = INPUT_SIZE


class NoseTrackerServable(Servable):
    frameworks = ("opencv",)
    platform = "opencv_dnn_tensorflow_graphdef"
    description = "Nose tip and four more face landmarks of a face photo (our CNN, run by OpenCV DNN)."
    settings = (
        Setting("IMAGE_REDUCED_DECODE", "1",
                "1: decode large JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling, chosen from the header): "
                "for face detection the longer side stays >= FACE_DETECT_SIZE and each face crop is cut from a "
                "decode with >= 112 px across it (decoded again, larger, for small faces); without detection "
                "both sides stay >= the landmark net's 112 px. 0: always decode at full size.",
                group="nose_tracker", kind="bool"),
    )
    inputs = (
        TensorSpec("image", "BYTES", (-1,), "Encoded image files (JPEG, PNG, BMP, WebP, TIFF, GIF), each in base64.",
                   group="image"),
        TensorSpec("input", "FP32", (-1, 3, S, S), "The raw model input: BGR, pixel/255, NCHW.", group="tensor"),
    )
    outputs = (
        TensorSpec("nose", "FP32", (-1, 2), "Nose tip x, y normalised to the image width, height (the most "
                   "prominent face's; without a face, the whole-image net's).", group="image"),
        TensorSpec("points", "FP32", (-1, len(POINTS), 2), "Nose, left eye, right eye, mouth left, mouth right.",
                   group="image"),
        TensorSpec("image_size", "INT32", (-1, 2), "Width, height of the image in pixels (EXIF applied).",
                   group="image"),
        TensorSpec("face_count", "INT32", (-1,), "Faces found in each image.", group="image"),
        TensorSpec("face_boxes", "FP32", (-1, -1, 4), "Each face's box x, y, width, height in pixels, largest "
                   "first (zeros pad to the most faces of any image).", group="image"),
        TensorSpec("face_scores", "FP32", (-1, -1), "Each face's detector score.", group="image"),
        TensorSpec("face_points", "FP32", (-1, -1, len(POINTS), 2), "Each face's five points in pixels.",
                   group="image"),
        TensorSpec("output", "FP32", (-1, 10), "The raw model output rows.", group="tensor"),
    )
    primary_artifact = "nose_tracker.pb"
    max_images = 64  # per request
    #: the model that finds the faces (optional: without it, the whole-image answer)
    detector_model = "face_detector"
    def load(self) -> None:
        from .model import NoseTracker
        self.model = NoseTracker.load(str(self.model_dir))

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, size=(S * 2, S * 2, 3), dtype=np.uint8)
        blob, inv = crop_blob(img, (40, 40, 100, 120), 1.0)
        for _ in range(2):
            self.infer([("image", preprocess(img), WholeImage(0, (S * 2, S * 2))),
                        ("face", blob, FaceCrop(0, (S * 2, S * 2), (40, 40, 100, 120), 1.0, inv))])

    def extra_metadata(self) -> dict:
        out = {k: v for k, v in self.model.metadata.items() if k in ("input", "output", "framework", "size_bytes")}
        out["pipeline"] = [self.detector_model, self.name]
        out["crop_margin"] = CROP_MARGIN
        return out

    # --- the face detector ---------------------------------------------------------------
    def detector(self):
        """The face detector servable when this server has it enabled (ModelNotReady while it
        loads), else None."""
        reg = self.context.registry
        if reg is None:
            return None
        h = reg.handles.get(self.detector_model)
        if h is None or h.status == "disabled" or self.detector_model not in reg.cfg.enabled_models:
            return None
        return reg.ready_handle(self.detector_model).servable

    def detection(self, parameters) -> "Detection":
        """The request's face detection, resolved once: the detector (None without one) and
        min_score / max_faces from the parameters (400 for bad ones, before any decoding)."""
        det = self.detector()
        default = det.min_score if det is not None else 0.5
        min_score, max_faces = parse_detection_parameters(parameters or {}, default)
        return Detection(det, min_score, max_faces)

    # --- request path ----------------------------------------------------------------
    def decode_upload(self, data: bytes, detection: "Detection", full_size: bool = False):
        """One encoded image -> (decoded BGR image, width, height as displayed); ApiError if bad.
        A large JPEG is decoded at reduced scale: for the detector's input size when faces are
        looked for (``face_detector.servable.detection_decode``; the crops may decode it again, larger), else
        down to the whole-image net's 112 px."""
        max_pixels = self.context.core.max_image_pixels
        if full_size or not self.config["IMAGE_REDUCED_DECODE"]:
            return decode_image_scaled(data, max_pixels)
        if detection.runs:
            return detection_decode(data, max_pixels, detection.detector.size)
        return decode_image_scaled(data, max_pixels, REDUCED_MIN_SIDE)

    def image_items(self, index: int, img: np.ndarray, width: int, height: int, detection: "Detection",
                    data: bytes | None = None) -> list:
        """The landmark-net items of one decoded image: one per face found (largest first), or
        the whole image when none is. With the encoded ``data``, a face too small for the decoded
        pixels is cropped from a larger decode (``faces.crop_source``)."""
        det = detection.detector
        boxes, scores = np.zeros((0, 4)), np.zeros(0)
        if detection.runs:
            pred = self.context.registry.run(self.detector_model, items=[det.item(img, width, height)],
                                             outputs=False)
            boxes, scores = det.faces(pred.results[0], pred.items[0], detection.min_score, MAX_FACES_LIMIT)
        if not len(boxes):
            return [("image", preprocess(img), WholeImage(index, (width, height)))]
        # the largest max_faces faces, largest first
        order = sorted(range(len(boxes)), key=lambda k: (-float(boxes[k][2] * boxes[k][3]), -float(scores[k])))
        chosen = [tuple(float(v) for v in boxes[k]) for k in order[:detection.max_faces]]
        if data is not None:
            img = crop_source(data, img, width, chosen, self.context.core.max_image_pixels)
        scale = img.shape[1] / width
        items = []
        for k, box in zip(order, chosen):
            blob, inv = crop_blob(img, box, scale)
            items.append(("face", blob, FaceCrop(index, (width, height), box, round(float(scores[k]), 4), inv)))
        return items

    def decode(self, data: bytes, parameters=None) -> list:
        """One encoded image -> its items (see image_items)."""
        detection = self.detection(parameters)
        img, width, height = self.decode_upload(data, detection)
        return self.image_items(0, img, width, height, detection, data)

    def preprocess(self, inputs, parameters) -> list:
        kind = group_of(self.inputs, list(inputs))
        if kind == "image":
            images = inputs["image"]
            if len(images) > self.max_images:
                raise InvalidInput(f"{len(images)} images in one request; the limit is {self.max_images}")
            detection = self.detection(parameters)  # bad parameters: 400 before any decoding
            items = []
            for i, b in enumerate(images):
                data = decode_base64_image(b)
                img, width, height = self.decode_upload(data, detection)
                items.extend(self.image_items(i, img, width, height, detection, data))
            return items
        x = inputs["input"]
        return [("tensor", np.ascontiguousarray(x[i:i + 1], dtype=np.float32), None) for i in range(x.shape[0])]

    def infer(self, items: list) -> list:
        rows = self.model.rows(np.concatenate([blob for _, blob, _ in items]))
        return list(rows)

    def images(self, results, request_items) -> list[dict]:
        """Per image of the request: {"size", "faces": [{"box", "score", "points"}], "points"
        (the legacy answer, normalised: the most prominent face's, else the whole image's)}."""
        out: dict[int, dict] = {}
        for row, (kind, _, info) in zip(results, request_items):
            if kind == "image":
                out[info.image] = {"size": info.size, "faces": [],
                                   "points": np.clip(np.asarray(row[:10], np.float64).reshape(5, 2), 0, 1)}
            else:
                d = out.setdefault(info.image, {"size": info.size, "faces": []})
                d["faces"].append({"box": info.box, "score": info.score, "points": crop_points(row, info.inverse)})
        for d in out.values():
            if d["faces"]:
                w, h = d["size"]
                best = d["faces"][prominent([f["box"] for f in d["faces"]], [f["score"] for f in d["faces"]])]
                d["points"] = np.clip(best["points"] / [w, h], 0, 1)
        return [out[k] for k in sorted(out)]

    def postprocess(self, results, parameters, request_items) -> dict:
        if request_items and request_items[0][0] == "tensor":
            return {"output": np.stack(results).astype(np.float32)}
        imgs = self.images(results, request_items)
        n = len(imgs)
        k = max(len(d["faces"]) for d in imgs) if imgs else 0
        boxes = np.zeros((n, k, 4), np.float32)
        scores = np.zeros((n, k), np.float32)
        fpts = np.zeros((n, k, len(POINTS), 2), np.float32)
        legacy = np.zeros((n, len(POINTS), 2), np.float32)
        for i, d in enumerate(imgs):
            for j, f in enumerate(d["faces"]):
                boxes[i, j], scores[i, j], fpts[i, j] = f["box"], f["score"], f["points"]
            legacy[i] = d["points"]
        return {"nose": legacy[:, 0].copy(), "points": legacy,
                "image_size": np.array([d["size"] for d in imgs], dtype=np.int32).reshape(n, 2),
                "face_count": np.array([len(d["faces"]) for d in imgs], np.int32),
                "face_boxes": boxes, "face_scores": scores, "face_points": fpts}

    @classmethod
    def blueprint(cls):
        from .routes import bp
        return bp

    @classmethod
    def openapi_paths(cls, settings) -> dict:
        from .routes import openapi_paths
        return openapi_paths()
