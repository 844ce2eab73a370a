"""The published API contract: OpenAPI 3 at /openapi.json, Swagger UI at /docs.

The document is built from the running configuration (limits, whether API keys
are required), so it describes this deployment exactly. Swagger UI is served
from local files (app/static/swagger/, vendored from the swagger-ui-dist npm
package, see its VERSION file): nothing is loaded from a CDN, and its
initializer is a static script, so the strict Content-Security-Policy holds.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

from . import __version__

bp = Blueprint("docs", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}

#: An 8x8 PNG, the example image of /image-64.
EXAMPLE_PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8Ma2CARtgwio6aCUAcusB5mqnDk8AAAAA"
                   "SUVORK5CYII=")


def _err(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _responses(ok_schema: dict | None, ok_type: str, *errors: int) -> dict:
    texts = {
        400: "Bad request: malformed JSON, missing or invalid field, not an image, bad base64.",
        401: "Missing or invalid API key (only when the server has API keys configured).",
        404: "Unknown path.",
        405: "Method not allowed.",
        413: "Body over the limit (nginx or the app) or image with too many pixels.",
        415: "Wrong Content-Type.",
        422: "Valid request over a limit: text too long, too many texts, too much text.",
        429: "Rate limit of this client address exceeded (nginx).",
        502: "The application server is not reachable (nginx).",
        503: "Model not ready or busy; retry after the Retry-After header.",
        504: "The application server did not answer in time (nginx).",
    }
    out: dict = {"200": {"description": "OK"}}
    if ok_schema is not None:
        out["200"]["content"] = {ok_type: {"schema": ok_schema}}
    for code in errors:
        out[str(code)] = _err(texts[code])
    return out


def build_spec() -> dict:
    cfg = current_app.extensions["config"]
    max_chars, _ = current_app.extensions["models"].translator_limits()
    protected = bool(cfg.api_keys)
    security = [{"bearerAuth": []}, {"apiKeyHeader": []}] if protected else []
    common = (413, 429, 502, 504) + ((401,) if protected else ())

    def op(summary: str, op_id: str, responses: dict, body: dict | None = None, secured: bool = True,
           tags=("models",)) -> dict:
        o = {"summary": summary, "operationId": op_id, "tags": list(tags), "responses": responses}
        if body is not None:
            o["requestBody"] = body
        if secured and protected:
            o["security"] = security
        elif protected:
            o["security"] = []
        return o

    image_64_body = {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["image"],
            "properties": {"image": {
                "type": "string",
                "example": EXAMPLE_PNG_B64,
                "description": "The image file (JPEG, PNG, BMP, WebP, TIFF, GIF) in base64 (standard or URL-safe "
                               "alphabet; whitespace ignored), optionally as a data:image/...;base64, URL.",
            }},
        }}},
    }
    image_bin_body = {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary",
                                     "description": "The image file (JPEG, PNG, BMP, WebP, TIFF, GIF)."}},
        }}},
    }
    beam = {"type": "integer", "minimum": 1, "maximum": cfg.max_beam, "default": cfg.default_beam,
            "description": "Beam width (1 = greedy)."}
    text = {"type": "string", "maxLength": max_chars}
    translate_body = {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            {"type": "object", "required": ["text"], "additionalProperties": False,
             "properties": {"text": text, "beam": beam}, "example": {"text": "The house is green.", "beam": 1}},
            {"type": "object", "required": ["texts"], "additionalProperties": False,
             "properties": {"texts": {"type": "array", "items": text, "minItems": 1,
                                      "maxItems": cfg.max_batch_texts,
                                      "description": f"At most {cfg.max_total_chars} characters in all."},
                            "beam": beam}},
        ]}}},
    }
    status_obj = {"type": "object", "additionalProperties": True}
    paths = {
        "/image-64": {"post": op(
            "Nose tip of a base64-encoded image", "noseBase64",
            _responses({"$ref": "#/components/schemas/NoseResult"}, "application/json", 400, 415, 503, *common),
            image_64_body)},
        "/image-bin": {"post": op(
            "Nose tip of an uploaded image file", "noseBinary",
            _responses({"$ref": "#/components/schemas/NoseResult"}, "application/json", 400, 415, 503, *common),
            image_bin_body)},
        "/api/translate": {"post": op(
            "Translate English to Spanish", "translate",
            _responses({"$ref": "#/components/schemas/TranslateResult"}, "application/json",
                       400, 415, 422, 503, *common),
            translate_body)},
        "/healthz": {"get": op("Liveness of the answering worker", "healthz",
                               _responses({"type": "object", "required": ["status", "pid"],
                                           "properties": {"status": {"type": "string", "enum": ["ok"]},
                                                          "pid": {"type": "integer"}}},
                                          "application/json", 429, 502, 504),
                               secured=False, tags=("health",))},
        "/readyz": {"get": op("Readiness: the answering worker has loaded and warmed its models", "readyz",
                              _responses(status_obj, "application/json", 503, 429, 502, 504),
                              secured=False, tags=("health",))},
        "/version": {"get": op("App, worker and model versions", "version",
                               _responses(status_obj, "application/json", *common), tags=("health",))},
        "/api/stats": {"get": op("The dashboard's numbers (all workers)", "stats",
                                 _responses(status_obj, "application/json", *common), tags=("health",))},
        "/metrics": {"get": op("Prometheus metrics (all workers)", "metrics",
                               _responses({"type": "string"}, "text/plain", *common), tags=("health",))},
    }
    spec = {
        "openapi": "3.0.3",
        "info": {
            "title": "Model server API",
            "version": __version__,
            "description": "Nose-tip tracking and English to Spanish translation. Every error is JSON: "
                           "`{\"error\": {\"code\": ..., \"message\": ..., \"request_id\": ...}}`.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                       "request_id": {"type": "string"}},
                        "additionalProperties": True,
                    }},
                },
                "NoseResult": {
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
                },
                "TranslateResult": {
                    "type": "object",
                    "required": ["translations", "beam", "inference_ms"],
                    "properties": {
                        "translations": {"type": "array", "items": {"type": "string"}},
                        "translation": {"type": "string", "description": "Only when 'text' was given."},
                        "beam": {"type": "integer"}, "model_version": {"type": "string", "nullable": True},
                        "inference_ms": {"type": "number"}, "request_id": {"type": "string"},
                    },
                },
            },
        },
        "tags": [{"name": "models"}, {"name": "health"}],
    }
    if protected:
        spec["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return spec


@bp.get("/openapi.json")
def openapi():
    return jsonify(build_spec())


@bp.get("/docs")
def ui():
    return render_template("docs.html")
