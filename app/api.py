"""JSON API blueprint: nose tracking, translation, health, version, metrics."""
from __future__ import annotations

import json
import os
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import metrics
from .errors import ApiError
from .imaging import REDUCED_MIN_SIDE, decode_base64_image, decode_image_scaled
from .models import NOSE, TRANSLATOR, ModelBusy, ModelNotReady
from .runtime import runtime_info

bp = Blueprint("api", __name__)


def registry():
    return current_app.extensions["models"]


def cfg():
    return current_app.extensions["config"]


def require_model(name: str):
    model = registry().get(name)
    if model is None:
        st = registry().states[name]
        msg = f"model {name} is not ready ({st.status})"
        raise ApiError(503, "not_ready", msg, model=name, model_status=st.status)
    return model


def require_json() -> object:
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"expected Content-Type application/json, got {request.mimetype or 'none'}")
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "invalid_json", "request body is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body is nested too deeply") from None


def _nose_response(data: bytes):
    model = require_model(NOSE)
    # large JPEGs are decoded at 1/2..1/8 scale (the model only sees 112x112; IMAGE_REDUCED_DECODE)
    img, width, height = decode_image_scaled(data, cfg().max_image_pixels,
                                             REDUCED_MIN_SIDE if cfg().image_reduced_decode else None)
    pred = model.predict(img, size=(width, height))
    metrics.INFERENCE.labels(NOSE).observe(pred.inference_ms / 1000)
    metrics.ITEMS.labels(NOSE).inc()
    body = pred.as_dict()
    body["model_version"] = model.version
    body["request_id"] = g.request_id
    return jsonify(body)


@bp.post("/image-64")
def image_64():
    payload = require_json()
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "expected a JSON object {\"image\": \"<base64>\"}")
    if "image" not in payload:
        raise ApiError(400, "missing_field", "missing field 'image'")
    data = decode_base64_image(payload["image"])
    return _nose_response(data)


@bp.post("/image-bin")
def image_bin():
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"expected multipart/form-data with a file field 'image', got {request.mimetype or 'none'}")
    f = request.files.get("image")
    if f is None:
        if "image" in request.form:
            raise ApiError(400, "invalid_field", "field 'image' must be a file upload (with a filename)")
        raise ApiError(400, "missing_field", "missing file field 'image'")
    data = f.read(cfg().max_body_bytes + 1)
    return _nose_response(data)


def _parse_beam(payload: dict) -> int:
    beam = payload.get("beam", cfg().default_beam)
    if isinstance(beam, bool) or not isinstance(beam, int):
        raise ApiError(400, "invalid_field", "field 'beam' must be an integer")
    if not 1 <= beam <= cfg().max_beam:
        raise ApiError(400, "invalid_field", f"field 'beam' must be between 1 and {cfg().max_beam}")
    return beam


@bp.post("/api/translate")
def translate():
    payload = require_json()
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "expected a JSON object {\"text\": \"...\"} or {\"texts\": [...]}")
    if ("text" in payload) == ("texts" in payload):
        raise ApiError(400, "missing_field", "give exactly one of 'text' (a string) or 'texts' (a list of strings)")
    unknown = sorted(set(payload) - {"text", "texts", "beam"})
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; "
                       "expected 'text' or 'texts', and optionally 'beam'")
    single = "text" in payload
    texts = [payload["text"]] if single else payload["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "invalid_field",
                       "'text' must be a string" if single else "'texts' must be a list of strings")
    if not texts:
        raise ApiError(400, "invalid_field", "'texts' is empty")
    if len(texts) > cfg().max_batch_texts:
        raise ApiError(422, "too_many_texts",
                       f"{len(texts)} texts in one request; the limit is {cfg().max_batch_texts}")
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            where = "'text'" if single else f"texts[{i}]"
            raise ApiError(400, "invalid_field", f"{where} is not valid Unicode (lone surrogate)") from None
    beam = _parse_beam(payload)
    max_chars, input_too_long = registry().translator_limits()
    for i, t in enumerate(texts):
        if len(t) > max_chars:
            where = "'text'" if single else f"texts[{i}]"
            raise ApiError(422, "text_too_long", f"{where} has {len(t)} characters; the limit is {max_chars}")
    total = sum(len(t) for t in texts)
    if total > cfg().max_total_chars:
        raise ApiError(422, "too_much_text",
                       f"{total} characters in one request; the limit is {cfg().max_total_chars} (split the batch)")
    model = require_model(TRANSLATOR)
    t0 = time.perf_counter()
    try:
        out = registry().translate(texts, beam)
    except input_too_long as exc:
        raise ApiError(422, "text_too_long", str(exc)) from None
    except ModelNotReady as exc:
        raise ApiError(503, "not_ready", str(exc), model=exc.name, model_status=exc.status) from None
    except ModelBusy as exc:
        raise ApiError(503, "busy", str(exc), model=exc.name) from None
    seconds = time.perf_counter() - t0
    metrics.INFERENCE.labels(TRANSLATOR).observe(seconds)
    metrics.ITEMS.labels(TRANSLATOR).inc(len(texts))
    body = {
        "translations": list(out),
        "beam": beam,
        "model_version": model.metadata.get("version"),
        "inference_ms": round(seconds * 1000, 3),
        "request_id": g.request_id,
    }
    if single:
        body["translation"] = out[0]
    return jsonify(body)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
def readyz():
    reg = registry()
    body = {"pid": os.getpid(), "models": reg.status()}
    if reg.ready:
        return jsonify({"status": "ready", **body})
    missing = reg.not_ready() or ["(no model enabled)"]
    raise ApiError(503, "not_ready", "models not ready: " + ", ".join(missing), **body)


@bp.get("/version")
def version():
    from . import __version__
    reg = registry()
    models = {}
    for name, st in reg.states.items():
        m = {"status": st.status, "version": st.metadata.get("version"), "sha256": st.metadata.get("sha256"),
             "load_ms": st.load_ms, "warmup_ms": st.warmup_ms, "ready_ms": st.ready_ms}
        if st.error:
            m["error"] = st.error
        models[name] = m
    return jsonify({
        "app": {"name": "modelserver", "version": __version__, "revision": cfg().revision},
        "worker": runtime_info(),
        "models": models,
        "threads": reg.threads,
    })


@bp.get("/metrics")
def metrics_endpoint():
    data, ctype = metrics.exposition()
    return Response(data, content_type=ctype)


@bp.get("/api/stats")
def stats():
    """The dashboard's numbers as JSON."""
    from .pages import dashboard_data
    return jsonify(dashboard_data())
