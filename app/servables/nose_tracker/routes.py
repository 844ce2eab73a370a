"""The nose tracker's own routes (kept for existing clients): ``POST /image-64`` (base64 in
JSON) and ``POST /image-bin`` (multipart upload). Thin: decode the upload, run the servable
through the registry, answer the legacy fields."""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from ...serving.errors import ApiError
from ...serving.imaging import decode_base64_image
from ...web.helpers import core_config, endpoint, registry, require_json
from .contract import postprocess

bp = Blueprint("nose_tracker", __name__)
MODEL = "nose_tracker"


def _nose_response(data: bytes):
    reg = registry()
    reg.ready_handle(MODEL)  # 503 before any decoding when the model is not ready
    item = reg.servable(MODEL).decode(data)
    pred = reg.run(MODEL, items=[item], outputs=False)
    width, height = item[2]
    body = postprocess(pred.results[0], width, height)
    body["inference_ms"] = pred.inference_ms
    body["model_version"] = reg.handle(MODEL).version
    body["request_id"] = g.request_id
    return jsonify(body)


@bp.post("/image-64")
@endpoint("image_64", "Nose, base64 (POST /image-64)", model=MODEL)
def image_64():
    payload = require_json()
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "expected a JSON object {\"image\": \"<base64>\"}")
    if "image" not in payload:
        raise ApiError(400, "missing_field", "missing field 'image'")
    data = decode_base64_image(payload["image"])
    return _nose_response(data)


@bp.post("/image-bin")
@endpoint("image_bin", "Nose, binary (POST /image-bin)", model=MODEL)
def image_bin():
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"expected multipart/form-data with a file field 'image', got {request.mimetype or 'none'}")
    f = request.files.get("image")
    if f is None:
        if "image" in request.form:
            raise ApiError(400, "invalid_field", "field 'image' must be a file upload (with a filename)")
        raise ApiError(400, "missing_field", "missing file field 'image'")
    data = f.read(core_config().max_body_bytes + 1)
    return _nose_response(data)


#: An 8x8 PNG, the example image of /image-64.
EXAMPLE_PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8Ma2CARtgwio6aCUAcusB5mqnDk8AAAAA"
                   "SUVORK5CYII=")


def openapi_paths() -> dict:
    """The OpenAPI path items of these routes (``docs.operation`` adds responses and security)."""
    from ...web.docs import operation
    result = {"$ref": "#/components/schemas/NoseResult"}
    image_64_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {
            "type": "string", "example": EXAMPLE_PNG_B64,
            "description": "The image file (JPEG, PNG, BMP, WebP, TIFF, GIF) in base64 (standard or URL-safe "
                           "alphabet; whitespace ignored), optionally as a data:image/...;base64, URL."}}}}}}
    image_bin_body = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary",
                                 "description": "The image file (JPEG, PNG, BMP, WebP, TIFF, GIF)."}}}}}}
    return {
        "/image-64": {"post": operation("Nose tip of a base64-encoded image", "noseBase64", result,
                                        (400, 415, 503), image_64_body)},
        "/image-bin": {"post": operation("Nose tip of an uploaded image file", "noseBinary", result,
                                         (400, 415, 503), image_bin_body)},
        "components": {"NoseResult": {
            "type": "object",
            "required": ["x", "y", "x_px", "y_px", "width", "height", "inference_ms", "model_version"],
            "properties": {
                "x": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "Nose tip, fraction of the width (as displayed: EXIF applied)."},
                "y": {"type": "number", "minimum": 0, "maximum": 1},
                "x_px": {"type": "number"}, "y_px": {"type": "number"},
                "width": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1},
                "inference_ms": {"type": "number"}, "model_version": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }},
    }
