"""The translator's own routes (kept for existing clients): ``POST /api/translate`` (JSON)
and the HTML form (``GET /``, ``GET /index``, ``POST /result``). Thin: shape checks of the
request, then the servable's own validation (``prepare``) and the registry's run."""
from __future__ import annotations

import time

from flask import Blueprint, g, jsonify, render_template, request

from ...serving.errors import ApiError, ModelBusy, ModelNotReady
from ...web.helpers import endpoint, registry, require_json

bp = Blueprint("translator", __name__, template_folder="templates")
MODEL = "translator"
FIELD = "English"  # form field name; kept for existing clients


def servable():
    return registry().servable(MODEL)


def _translate(items: list) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    pred = registry().run(MODEL, items=items, outputs=False)
    return pred.results, time.perf_counter() - t0


@bp.post("/api/translate")
@endpoint("translate_api", "Translation API (POST /api/translate)", model=MODEL)
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
    items = servable().prepare(texts, payload.get("beam"), where=lambda i: "'text'" if single else f"texts[{i}]")
    out, seconds = _translate(items)
    sv = servable()
    body = {
        "translations": [str(t) for t in out],
        "confidences": [t.confidence for t in out],
        "sentences": [sv.sentences(t) for t in out],
        "low_confidence_threshold": sv.low_confidence,
        "beam": items[0][1],
        "model_version": registry().handle(MODEL).version,
        "inference_ms": round(seconds * 1000, 3),
        "request_id": g.request_id,
    }
    if single:
        body["translation"] = str(out[0])
        body["confidence"] = out[0].confidence
    return jsonify(body)


def _form(message: str | None = None, text: str = "", status: int = 200):
    return render_template("translator/index.html", message=message, text=text,
                           max_chars=servable().max_chars), status


@bp.get("/")
@bp.get("/index")
@endpoint("index", html=True)
def index():
    return _form()


@bp.post("/result")
@endpoint("translate_form", "Translation form (POST /result)", html=True, model=MODEL)
def result():
    if not request.form and request.content_length and request.mimetype in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        # Werkzeug drops form data that is not valid UTF-8
        return _form("The form data could not be read: it must be UTF-8 encoded.", "", 400)
    text = request.form.get(FIELD, "")
    sv = servable()
    if not text.strip():
        return _form("Please enter an English sentence to translate.", text, 400)
    try:
        items = sv.prepare([text], None)  # the servable's own checks, as for the JSON API
    except ApiError as exc:
        message = (f"The text is too long: {len(text)} characters, the limit is {sv.max_chars}."
                   if exc.code == "text_too_long" else exc.message)
        return _form(message, text, 400)
    if registry().handle(MODEL).status != "ready":
        return _form("The translator is not ready yet. Please try again in a moment.", text, 503)
    try:
        (translation,), seconds = _translate(items)
    except (ModelNotReady, ModelBusy):
        return _form("The translator is busy or not ready. Please try again in a moment.", text, 503)
    except ApiError as exc:
        return _form(exc.message, text, 400)
    low = sv.low_confidence
    return render_template("translator/result.html", source=text, translation=translation, low=low,
                           flagged=sum(s.confidence < low for s in translation.sentences),
                           model_version=registry().handle(MODEL).version, inference_ms=round(seconds * 1000, 1))


def openapi_paths(settings) -> dict:
    from ...web.docs import operation
    from .servable import MAX_CHARS
    beam = {"type": "integer", "minimum": 1, "maximum": settings["MAX_BEAM"], "default": settings["DEFAULT_BEAM"],
            "description": "Beam width (1 = greedy)."}
    text = {"type": "string", "maxLength": MAX_CHARS}
    body = {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["text"], "additionalProperties": False,
         "properties": {"text": text, "beam": beam}, "example": {"text": "The house is green.", "beam": 1}},
        {"type": "object", "required": ["texts"], "additionalProperties": False,
         "properties": {"texts": {"type": "array", "items": text, "minItems": 1,
                                  "maxItems": settings["MAX_BATCH_TEXTS"],
                                  "description": f"At most {settings['MAX_TOTAL_CHARS']} characters in all."},
                        "beam": beam}},
    ]}}}}
    return {
        "/api/translate": {"post": operation("Translate English to Spanish", "translate",
                                             {"$ref": "#/components/schemas/TranslateResult"},
                                             (400, 415, 422, 503), body)},
        "components": {"TranslateResult": {
            "type": "object",
            "required": ["translations", "confidences", "sentences", "beam", "inference_ms"],
            "properties": {
                "translations": {"type": "array", "items": {"type": "string"}},
                "translation": {"type": "string", "description": "Only when 'text' was given."},
                "confidences": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1},
                                "description": "Per text, the lowest confidence of its sentences."},
                "confidence": {"type": "number", "description": "Only when 'text' was given."},
                "sentences": {"type": "array", "description": "Per text, its sentences.", "items": {
                    "type": "array", "items": {"$ref": "#/components/schemas/TranslatedSentence"}}},
                "low_confidence_threshold": {"type": "number",
                                             "description": "Sentences below it have low_confidence true."},
                "beam": {"type": "integer"}, "model_version": {"type": "string", "nullable": True},
                "inference_ms": {"type": "number"}, "request_id": {"type": "string"},
            },
        }, "TranslatedSentence": {
            "type": "object", "required": ["source", "translation", "confidence", "low_confidence"],
            "properties": {
                "source": {"type": "string"}, "translation": {"type": "string"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1, "description":
                               "exp of the length-normalised log-probability of the model's output "
                               "(the geometric mean of its token probabilities)."},
                "low_confidence": {"type": "boolean"},
            },
        }},
    }
