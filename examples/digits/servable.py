"""Handwritten digits (8x8) as a servable: a NumPy MLP brought as a user's own model.

This folder is a complete model for a model repository (``MODEL_REPOSITORY/digits/``):
``model.json`` names ``servable:DigitsClassifier`` (this file), ``1/`` holds the weights that
``train.py`` wrote, ``mlp.py`` the forward pass both share. Nothing under ``app/`` knows it.

Inputs (one kind per request):

* ``image`` FP32 [N, 8, 8]: pixel values 0..16, ink high, the digit filling the frame
  (scikit-learn's ``load_digits().images``);
* ``png`` BYTES [N]: base64 encoded images (PNG, JPEG, BMP, WebP, ...) of any size, dark ink on
  a light background or the reverse, brought to the training data's form by
  ``mlp.digit_from_image`` (as NIST's normalisation made it: cropped to the ink, centred, the
  longer side filling the frame, averaged down to 8x8, scaled to 0..16).

Outputs: ``label`` INT32 [N] (the most probable digit), ``probabilities`` FP32 [N, 10].

Requests go through the dynamic batcher (``DIGITS_BATCH_MAX`` items per ``infer`` call).
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from app.config import Setting
from app.serving.errors import ApiError, InvalidInput, OverLimit, TooLarge
from app.serving.servable import Servable, TensorSpec, group_of

from .mlp import CLASSES, PIXEL_MAX, SIDE, digit_from_image, load_weights, probabilities

G = "digits"


class DigitsClassifier(Servable):
    frameworks = ("numpy", "opencv")
    platform = "numpy"
    description = "Handwritten digit (8x8, 0..16) classifier: a NumPy MLP trained on scikit-learn's digits."
    primary_artifact = "weights.npz"
    settings = (
        Setting("DIGITS_BATCH_MAX", "64",
                "Dynamic batching of the digits model: most images in one infer call, collected from "
                "concurrent requests of a worker (0: no batching, one request at a time under a lock).",
                G, "int", 0),
        Setting("DIGITS_BATCH_WAIT_MS", "2",
                "Dynamic batching of the digits model: longest wait (ms) of the oldest queued request "
                "for others to join its batch.", G, "int", 0),
        Setting("DIGITS_MAX_IMAGES", "1024", "Most images in one digits request (more: 422).", G, "int", 1),
    )
    inputs = (
        TensorSpec("image", "FP32", (-1, SIDE, SIDE),
                   "8x8 images, pixel values 0..16, ink high (scikit-learn's digits).", group="image"),
        TensorSpec("png", "BYTES", (-1,),
                   "Encoded images (PNG, JPEG, BMP, WebP...) of any size, each in base64; converted to 8x8.",
                   group="png"),
    )
    outputs = (
        TensorSpec("label", "INT32", (-1,), "The most probable digit of each image."),
        TensorSpec("probabilities", "FP32", (-1, CLASSES), "Probability of each digit 0..9."),
    )

    def __init__(self, context):
        super().__init__(context)
        self.max_batch_size = self.config["DIGITS_BATCH_MAX"]
        self.batch_wait_ms = float(self.config["DIGITS_BATCH_WAIT_MS"])
        self.max_images = self.config["DIGITS_MAX_IMAGES"]
        self.metadata: dict = {}

    # --- lifecycle ---------------------------------------------------------------------
    def load(self) -> None:
        weights = self.model_dir / "weights.npz"
        meta_path = self.model_dir / "metadata.json"
        if meta_path.is_file():
            self.metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = self.metadata.get("sha256", {}).get("weights.npz")
        if expected:  # a corrupt or swapped weights file must not serve
            with open(weights, "rb") as fh:
                actual = hashlib.sha256(fh.read()).hexdigest()
            if actual != expected:
                raise ValueError(f"{weights}: sha256 {actual} does not match metadata.json ({expected})")
        self.params = load_weights(weights)

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        for n in (1, 8):
            self.infer(list(rng.uniform(0, PIXEL_MAX, size=(n, SIDE, SIDE)).astype(np.float32)))

    def extra_metadata(self) -> dict:
        m = self.metadata
        out = {"accuracy": {k.replace("_accuracy", ""): v for k, v in m.get("metrics", {}).items()
                            if k in ("dev_accuracy", "test_accuracy")}}
        for k in ("architecture", "parameters"):
            if k in m:
                out[k] = m[k]
        if "data" in m:
            out["data"] = {k: m["data"][k] for k in ("name", "licence", "split") if k in m["data"]}
        return out

    # --- request path --------------------------------------------------------------------
    def preprocess(self, inputs, parameters) -> list:
        kind = group_of(self.inputs, list(inputs))
        images = self._images(inputs["image"]) if kind == "image" else self._pngs(inputs["png"])
        return list(images)

    def _count(self, n: int, name: str) -> None:
        if n == 0:
            raise InvalidInput(f"input {name!r} holds no images")
        if n > self.max_images:
            raise OverLimit(f"{n} images in one request; the limit is {self.max_images} (DIGITS_MAX_IMAGES)",
                            code="too_many_images")

    def _images(self, x) -> np.ndarray:
        try:
            arr = np.asarray(x)
            if arr.dtype.kind not in "biuf":
                raise TypeError(arr.dtype)
            arr = arr.astype(np.float32)
        except (TypeError, ValueError):
            raise InvalidInput("input 'image' must be numbers (FP32), shape [N, 8, 8]") from None
        if arr.ndim != 3 or arr.shape[1:] != (SIDE, SIDE):
            hint = " (one image: add the batch dimension)" if arr.shape == (SIDE, SIDE) else ""
            raise InvalidInput(f"input 'image' has shape {list(arr.shape)}; expected [N, {SIDE}, {SIDE}]{hint}")
        self._count(len(arr), "image")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InvalidInput(f"input 'image': image {int(np.argwhere(bad)[0][0])} holds NaN or infinity")
        low, high = arr.min(axis=(1, 2)), arr.max(axis=(1, 2))
        out = np.flatnonzero((low < 0) | (high > PIXEL_MAX))
        if len(out):
            i = int(out[0])
            raise InvalidInput(f"input 'image': pixel values must be 0..{PIXEL_MAX:g} (scikit-learn's digits); "
                               f"image {i} has values {low[i]:g}..{high[i]:g} (scale 0..255 pixels by "
                               f"16/255, or send encoded images as 'png')")
        return arr

    def _pngs(self, values) -> list:
        from app.serving.imaging import decode_base64_image, decode_image_scaled
        values = list(values)
        self._count(len(values), "png")
        out = []
        for i, v in enumerate(values):
            try:
                if isinstance(v, bytes):
                    try:
                        v = v.decode("ascii")
                    except UnicodeDecodeError:
                        raise InvalidInput("is not base64 text") from None
                img, _, _ = decode_image_scaled(decode_base64_image(v), self.context.core.max_image_pixels)
                try:
                    out.append(digit_from_image(img))
                except ValueError as exc:
                    raise InvalidInput(str(exc), code="blank_image") from None
            except ApiError as exc:
                # name the element (the imaging helpers speak of "field 'image'") and raise the
                # servable error of the status (they raise plain ApiError(400 | 413, ...))
                msg = re.sub(r"^field 'image' ", "", exc.message)
                msg = f"png[{i}]" + (" " if msg != exc.message or msg.startswith("is ") else ": ") + msg
                cls = {400: InvalidInput, 413: TooLarge, 422: OverLimit}.get(exc.status)
                raise (cls(msg, code=exc.code) if cls else ApiError(exc.status, exc.code, msg)) from None
        return out

    def infer(self, items: list) -> list:
        return list(probabilities(self.params, np.stack(items)))

    def postprocess(self, results, parameters, request_items) -> dict:
        p = np.stack(results).astype(np.float32)
        return {"label": p.argmax(axis=1).astype(np.int32), "probabilities": p}
