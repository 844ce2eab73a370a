"""The nose tracker's own routes (kept for existing clients): ``POST /image-64`` (base64 in
JSON) and ``POST /image-bin`` (multipart upload). Thin: decode the upload, run the servable
through the registry, answer the legacy fields."""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, render_template, request

from ...serving.errors import ApiError
from ...serving.imaging import decode_base64_image
from ...web.helpers import core_config, endpoint, registry, require_json
from .contract import postprocess
from .draw import annotate_png

bp = Blueprint("nose_tracker", __name__, template_folder="templates")
MODEL = "nose_tracker"
#: request fields besides the image (form fields, JSON fields or the query string)
OPTIONS = ("max_faces", "min_score", "annotate")


def _options(fields, json_body: bool = False) -> dict:
    """The options of a request: its own fields first, then the query string. JSON fields must
    be JSON numbers (as the OpenAPI document says), form fields and the query string are text."""
    if json_body:
        for k in OPTIONS:
            v = fields.get(k)
            if k in fields and (v is None or isinstance(v, bool) or not isinstance(v, (int, float))
                                  or (k != "min_score" and not float(v).is_integer())):
                raise ApiError(400, "invalid_parameter", f"'{k}' must be a JSON number")
    out = {}
    for k in OPTIONS:
        v = fields.get(k) if k in fields else request.args.get(k)
        if v is not None:
            out[k] = v
    unknown = sorted(set(request.args) - set(OPTIONS))
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown query parameter(s) {unknown}; known: {list(OPTIONS)}")
    a = out.pop("annotate", 0)
    if isinstance(a, float) and a.is_integer():
        a = int(a)
    if isinstance(a, bool) or str(a).strip() not in ("0", "1"):
        raise ApiError(400, "invalid_parameter", "'annotate' must be 0 or 1")
    out["annotate"] = str(a).strip() == "1"
    return out


def face_json(f: dict) -> dict:
    x, y, w, h = f["box"]
    p = f["points"]
    names = ("nose", "left_eye", "right_eye", "mouth_left", "mouth_right")
    pts = {n: [round(float(p[i][0]), 2), round(float(p[i][1]), 2)] for i, n in enumerate(names)}
    return {"box": {"x": round(float(x), 2), "y": round(float(y), 2), "width": round(float(w), 2),
                    "height": round(float(h), 2)},
            "score": round(float(f["score"]), 4),
            "landmarks": {k: pts[k] for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")}}


def _nose_response(data: bytes, options: dict):
    reg = registry()
    reg.ready_handle(MODEL)  # 503 before any decoding when the model is not ready
    sv = reg.servable(MODEL)
    annotate = options.pop("annotate")
    detection = sv.detection(options)  # 400 for bad options before decoding
    img, width, height = sv.decode_upload(data, detection)
    items = sv.image_items(0, img, width, height, detection, data)
    pred = reg.run(MODEL, items=items, outputs=False)
    d = sv.images(pred.results, items)[0]
    if annotate:  # the same answer as without annotate=1, drawn on the full-size picture
        canvas = sv.decode_upload(data, detection, full_size=True)[0]
        png = annotate_png(canvas, d["faces"], canvas.shape[1] / width)
        return Response(png, mimetype="image/png", headers={
            "X-Faces": str(len(d["faces"])), "X-Request-ID": g.request_id, "Cache-Control": "no-store"})
    body = postprocess(d["points"].reshape(-1), width, height)
    body["face_found"] = bool(d["faces"])
    body["faces"] = [face_json(f) for f in d["faces"]]
    body["inference_ms"] = pred.inference_ms
    body["model_version"] = reg.handle(MODEL).version
    body["face_detector_version"] = reg.handle(sv.detector_model).version if detection.detector is not None else None
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
    options = _options(payload, json_body=True)
    data = decode_base64_image(payload["image"])
    return _nose_response(data, options)


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
    options = _options(request.form)
    data = f.read(core_config().max_body_bytes + 1)
    return _nose_response(data, options)


@bp.get("/nose")
@endpoint("nose_page", html=True)
def nose_page():
    """Choose or drop a photo and see every face; or track the nose live from a camera."""
    from ...web.security import credentials_required
    from ..face_detector.servable import MAX_FACES_LIMIT
    reg = registry()
    h = reg.handle(MODEL)
    det = None
    try:
        det = reg.servable(MODEL).detector() if h.servable is not None else None
    except ApiError:
        det = None
    return render_template("nose_tracker/nose.html", version=h.version,
                           detector_version=reg.handle(h.servable.detector_model).version if det else None,
                           min_score=det.min_score if det else 0.5, max_faces_limit=MAX_FACES_LIMIT,
                           keys_required=credentials_required())


#: An 8x8 PNG, the example image of /image-64.
EXAMPLE_PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8Ma2CARtgwio6aCUAcusB5mqnDk8AAAAA"
                   "SUVORK5CYII=")


def openapi_paths() -> dict:
    """The OpenAPI path items of these routes (``docs.operation`` adds responses and security)."""
    from ...web.docs import operation
    from ..face_detector.servable import MAX_FACES_LIMIT
    result = {"$ref": "#/components/schemas/NoseResult"}
    options = {
        "max_faces": {"type": "integer", "minimum": 0, "maximum": MAX_FACES_LIMIT, "default": 10,
                      "description": "At most this many faces (largest first); 0: no face detection."},
        "min_score": {"type": "number", "minimum": 0.01, "maximum": 1,
                      "description": "The detector score a face must reach (default: the model's calibrated "
                                     "threshold, GET /v2/models/face_detector: min_score)."},
        "annotate": {"type": "integer", "enum": [0, 1], "default": 0,
                     "description": "1: answer with the picture (PNG), every face's box and points drawn."},
    }
    image_64_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {
            "type": "string", "example": EXAMPLE_PNG_B64,
            "description": "The image file (JPEG, PNG, BMP, WebP, TIFF, GIF) in base64 (standard or URL-safe "
                           "alphabet; whitespace ignored), optionally as a data:image/...;base64, URL."},
            **options}}}}}
    image_bin_body = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary",
                                 "description": "The image file (JPEG, PNG, BMP, WebP, TIFF, GIF)."}, **options}}}}}
    paths = {
        "/image-64": {"post": operation("Every face and its nose tip in a base64-encoded image", "noseBase64", result,
                                        (400, 415, 503), image_64_body)},
        "/image-bin": {"post": operation("Every face and its nose tip in an uploaded image file", "noseBinary", result,
                                         (400, 415, 503), image_bin_body)},
    }
    for item in paths.values():  # annotate=1 answers a PNG
        item["post"]["responses"]["200"]["content"]["image/png"] = {"schema": {"type": "string", "format": "binary"}}
    point = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
    face = {"type": "object", "required": ["box", "score", "landmarks"], "properties": {
        "box": {"type": "object", "required": ["x", "y", "width", "height"],
                "properties": {k: {"type": "number"} for k in ("x", "y", "width", "height")},
                "description": "Pixels of the image as displayed (EXIF applied)."},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "landmarks": {"type": "object", "required": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
                      "properties": {k: point for k in ("left_eye", "right_eye", "nose", "mouth_left",
                                                        "mouth_right")},
                      "description": "[x, y] in pixels; left and right as seen in the image."}}}
    paths["components"] = {"NoseResult": {
        "type": "object",
        "required": ["x", "y", "x_px", "y_px", "width", "height", "face_found", "faces", "inference_ms",
                     "model_version"],
        "properties": {
            "x": {"type": "number", "minimum": 0, "maximum": 1,
                  "description": "Nose tip of the most prominent face (the largest box area x score^2), fraction of the width "
                                 "(as displayed: EXIF applied); with no face found, the whole-image estimate."},
            "y": {"type": "number", "minimum": 0, "maximum": 1},
            "x_px": {"type": "number"}, "y_px": {"type": "number"},
            "width": {"type": "integer", "minimum": 1, "description": "The image's width in pixels."},
            "height": {"type": "integer", "minimum": 1},
            "face_found": {"type": "boolean"},
            "faces": {"type": "array", "items": face, "description": "Every face found, largest first."},
            "inference_ms": {"type": "number"}, "model_version": {"type": "string"},
            "face_detector_version": {"type": "string", "nullable": True,
                                      "description": "null when this server has no face detector."},
            "request_id": {"type": "string"},
        },
    }}
    return paths
