"""The nose tracker as a servable: an OpenCV DNN net (frozen TensorFlow graph).

Inputs (one kind per request):

* ``image`` BYTES [N]: encoded image files (JPEG, PNG, BMP, WebP, TIFF, GIF); outputs ``nose``
  FP32 [N, 2] (normalised x, y of the image as displayed), ``points`` FP32 [N, 5, 2] (nose,
  left eye, right eye, left and right mouth corner) and ``image_size`` INT32 [N, 2] (width,
  height in pixels, to map the points back);
* ``input`` FP32 [N, 3, 112, 112]: the raw model contract (``contract.preprocess``); output
  ``output`` FP32 [N, 10].

All items of a request run in one forward pass under the model's lock.
"""
from __future__ import annotations

import numpy as np

from ...config import Setting
from ...serving.errors import InvalidInput
from ...serving.imaging import REDUCED_MIN_SIDE, decode_base64_image, decode_image_scaled
from ...serving.servable import Servable, TensorSpec, group_of
from .contract import INPUT_SIZE, POINTS, preprocess

S = INPUT_SIZE


class NoseTrackerServable(Servable):
    frameworks = ("opencv",)
    platform = "opencv_dnn_tensorflow_graphdef"
    description = "Nose tip and four more face landmarks of a face photo (our CNN, run by OpenCV DNN)."
    settings = (
        Setting("IMAGE_REDUCED_DECODE", "1",
                "1: decode large JPEGs at 1/2, 1/4 or 1/8 scale (chosen from the header so both sides stay "
                ">= the model's 112 px input), which is faster; 0: always decode at full size.",
                group="nose_tracker", kind="bool"),
    )
    inputs = (
        TensorSpec("image", "BYTES", (-1,), "Encoded image files (JPEG, PNG, BMP, WebP, TIFF, GIF), each in base64.",
                   group="image"),
        TensorSpec("input", "FP32", (-1, 3, S, S), "The raw model input: BGR, pixel/255, NCHW.", group="tensor"),
    )
    outputs = (
        TensorSpec("nose", "FP32", (-1, 2), "Nose tip x, y normalised to the image width, height.", group="image"),
        TensorSpec("points", "FP32", (-1, len(POINTS), 2), "Nose, left eye, right eye, mouth left, mouth right.",
                   group="image"),
        TensorSpec("image_size", "INT32", (-1, 2), "Width, height of the image in pixels (EXIF applied).",
                   group="image"),
        TensorSpec("output", "FP32", (-1, 10), "The raw model output rows.", group="tensor"),
    )
    primary_artifact = "nose_tracker.pb"
    max_images = 64  # per request

    def load(self) -> None:
        from .model import NoseTracker
        self.model = NoseTracker.load(str(self.model_dir))

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, size=(S * 2, S * 2, 3), dtype=np.uint8)
        for _ in range(2):
            self.infer([("image", preprocess(img), (S * 2, S * 2))])

    def extra_metadata(self) -> dict:
        return {k: v for k, v in self.model.metadata.items() if k in ("input", "output", "framework", "size_bytes")}

    # --- request path ----------------------------------------------------------------
    def decode(self, data: bytes) -> tuple:
        """One encoded image -> its item ("image", blob, (width, height)); ApiError if bad."""
        min_side = REDUCED_MIN_SIDE if self.config["IMAGE_REDUCED_DECODE"] else None
        img, width, height = decode_image_scaled(data, self.context.core.max_image_pixels, min_side)
        return ("image", preprocess(img), (width, height))

    def preprocess(self, inputs, parameters) -> list:
        kind = group_of(self.inputs, list(inputs))
        if kind == "image":
            images = inputs["image"]
            if len(images) > self.max_images:
                raise InvalidInput(f"{len(images)} images in one request; the limit is {self.max_images}")
            return [self.decode(decode_base64_image(b)) for b in images]
        x = inputs["input"]
        return [("tensor", np.ascontiguousarray(x[i:i + 1], dtype=np.float32), None) for i in range(x.shape[0])]

    def infer(self, items: list) -> list:
        rows = self.model.rows(np.concatenate([blob for _, blob, _ in items]))
        return list(rows)

    def postprocess(self, results, parameters, request_items) -> dict:
        if request_items and request_items[0][0] == "tensor":
            return {"output": np.stack(results).astype(np.float32)}
        rows = np.clip(np.stack(results)[:, :2 * len(POINTS)].astype(np.float32), 0.0, 1.0)
        return {"nose": rows[:, :2], "points": rows.reshape(-1, len(POINTS), 2),
                "image_size": np.array([size for _, _, size in request_items], dtype=np.int32)}

    @classmethod
    def blueprint(cls):
        from .routes import bp
        return bp

    @classmethod
    def openapi_paths(cls, settings) -> dict:
        from .routes import openapi_paths
        return openapi_paths()
