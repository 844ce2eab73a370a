"""The published API contract: OpenAPI 3 at /openapi.json, Swagger UI at /docs.

The document is built from the running configuration (limits, whether API keys
are required), so it describes this deployment exactly. Swagger UI is served
from local files (app/static/swagger/, vendored from the swagger-ui-dist npm
package, see its VERSION file): nothing is loaded from a CDN, and its
initializer is a static script, so the strict Content-Security-Policy holds.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

from .. import __version__
from .helpers import endpoint
from .libretranslate import openapi_paths as libretranslate_paths

bp = Blueprint("docs", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}
V2_ERROR = {"$ref": "#/components/schemas/V2Error"}

_TEXTS = {
    400: "Bad request: malformed JSON, missing or invalid field, not an image, bad base64, bad tensor.",
    401: "Missing or invalid API key (only when the server has API keys configured).",
    403: "The credential is valid but may not do this (an environment key belongs to no user).",
    404: "Unknown path, model or version.",
    405: "Method not allowed.",
    413: "Body over the limit (nginx or the app) or image with too many pixels.",
    415: "Wrong Content-Type.",
    422: "Valid request over a limit: text too long, too many texts, too much text.",
    429: "Rate limit of this client address exceeded (nginx).",
    502: "The application server is not reachable (nginx).",
    503: "Model not ready or busy; retry after the Retry-After header.",
    504: "The application server did not answer in time (nginx).",
}


def _protected() -> bool:
    from .security import credentials_required
    return credentials_required()


def _responses(ok_schema: dict | None, ok_type: str, errors, error_schema: dict = ERROR) -> dict:
    out: dict = {"200": {"description": "OK"}}
    if ok_schema is not None:
        out["200"]["content"] = {ok_type: {"schema": ok_schema}}
    for code in errors:
        out[str(code)] = {"description": _TEXTS[code], "content": {"application/json": {"schema": error_schema}}}
    return out


def operation(summary: str, op_id: str, ok_schema: dict | None, errors=(), body: dict | None = None,
              secured: bool = True, tags=("models",), ok_type: str = "application/json",
              error_schema: dict = ERROR, parameters: list | None = None) -> dict:
    """One OpenAPI operation with the errors every route can answer (rate limit, body limit,
    nginx's 502/504, and 401 when API keys are on) and the deployment's security."""
    protected = _protected()
    common = (413, 429, 502, 504) + ((401,) if protected and secured else ())
    o = {"summary": summary, "operationId": op_id, "tags": list(tags),
         "responses": _responses(ok_schema, ok_type, sorted(set(errors) | set(common)), error_schema)}
    if parameters:
        o["parameters"] = parameters
    if body is not None:
        o["requestBody"] = body
    if protected:
        o["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}] if secured else []
    return o


def _core_paths() -> dict:
    obj = {"type": "object", "additionalProperties": True}
    health = ("health",)
    return {
        "/healthz": {"get": operation("Liveness of the answering worker", "healthz",
                                      {"type": "object", "required": ["status", "pid"],
                                       "properties": {"status": {"type": "string", "enum": ["ok"]},
                                                      "pid": {"type": "integer"}}},
                                      secured=False, tags=health)},
        "/readyz": {"get": operation("Readiness: the answering worker has loaded and warmed its models", "readyz",
                                     obj, (503,), secured=False, tags=health)},
        "/version": {"get": operation("App, worker and model versions", "version", obj, tags=health)},
        "/api/stats": {"get": operation("The dashboard's numbers (all workers)", "stats", obj, tags=health)},
        "/api/stats/history": {"get": operation(
            "Per-minute requests, errors by status and per-model throughput and p50/p99 (all workers)",
            "statsHistory", obj, (400,), tags=health,
            parameters=[{"name": "minutes", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1440, "default": 60}}])},
        "/metrics": {"get": operation("Prometheus metrics (all workers)", "metrics", {"type": "string"},
                                      tags=health, ok_type="text/plain")},
    }


def _v2_paths(models: list[str], versions: list[str]) -> dict:
    """The Open Inference Protocol routes, with the served model names as the enum of {model}."""
    tags = ("open inference protocol",)
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "enum": models or [""]}}
    version = {"name": "version", "in": "path", "required": True,
               "schema": {"type": "string", "enum": versions or [""]}}
    obj = {"type": "object", "additionalProperties": True}
    infer_body = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Request"}}}}
    kw = dict(tags=tags, error_schema=V2_ERROR)
    out = {
        "/v2": {"get": operation("Server metadata", "v2ServerMetadata", obj, secured=False, **kw)},
        "/v2/health/live": {"get": operation("Server liveness", "v2Live", obj, secured=False, **kw)},
        "/v2/health/ready": {"get": operation("Server readiness (every model ready)", "v2Ready", obj, (503,),
                                              secured=False, **kw)},
        "/v2/repository/index": {"post": operation("Every model and version of the repository and its state",
                                                   "v2RepositoryIndex", {"type": "array", "items": obj}, **kw)},
    }
    for suffix, params, op in (("", [model], ""), ("/versions/{version}", [model, version], "Version")):
        base = "/v2/models/{model}" + suffix
        out[base] = {"get": operation("Model metadata: inputs and outputs", f"v2ModelMetadata{op}", obj, (404,),
                                      parameters=params, **kw)}
        out[base + "/ready"] = {"get": operation("Model readiness", f"v2ModelReady{op}", obj, (404, 503),
                                                 parameters=params, **kw)}
        out[base + "/infer"] = {"post": operation("Inference with JSON tensors", f"v2Infer{op}",
                                                  {"$ref": "#/components/schemas/V2Response"},
                                                  (400, 404, 422, 503), infer_body, parameters=params, **kw)}
    return out


_SCALAR = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
_PARAMETERS = {"type": "object", "additionalProperties": _SCALAR}
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "additionalProperties": False,
           "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                          "datatype": {"type": "string"}, "parameters": _PARAMETERS,
                          "data": {"type": "array", "items": _SCALAR,
                                   "description": "The elements in row-major order (flat), or nested by the shape."}}}

_SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": True,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "request_id": {"type": "string"}},
        }},
    },
    "V2Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "V2Tensor": _TENSOR,
    "V2Request": {"type": "object", "required": ["inputs"], "additionalProperties": False,
                  "properties": {"id": {"type": "string"},
                                 "parameters": {**_PARAMETERS, "description": "e.g. the translator's beam"},
                                 "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/V2Tensor"}},
                                 "outputs": {"type": "array", "items": {
                                     "type": "object", "required": ["name"], "additionalProperties": False,
                                     "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS}}}}},
    "V2Response": {"type": "object", "required": ["model_name", "outputs"],
                   "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                                  "id": {"type": "string"},
                                  "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}}}},
}


def build_spec() -> dict:
    """The document of this deployment: the core routes, every served model's own routes
    (``Servable.openapi_paths``) and the Open Inference Protocol routes."""
    reg = current_app.extensions["models"]
    paths = _core_paths()
    schemas = dict(_SCHEMAS)
    for name, h in reg.handles.items():
        if h.cls is None:
            continue
        own = dict(h.cls.openapi_paths(h.settings))
        schemas.update(own.pop("components", {}))
        paths.update(own)
    paths.update(_v2_paths(sorted(reg.handles), sorted({h.version for h in reg.handles.values() if h.version})))
    paths.update(libretranslate_paths())
    if "accounts" in current_app.extensions:
        from .auth import openapi_paths as auth_paths
        paths.update(auth_paths())
    if "history" in current_app.extensions:
        from .inference_history import openapi_paths as history_paths
        paths.update(history_paths())
    models = ", ".join(sorted(reg.handles)) or "none"
    spec = {
        "openapi": "3.0.3",
        "info": {
            "title": "Model server API",
            "version": __version__,
            "description": f"Models served: {models}; each also through the Open Inference Protocol (/v2). "
                           "Every error is JSON: `{\"error\": {\"code\": ..., \"message\": ..., "
                           "\"request_id\": ...}}` (under /v2: `{\"error\": \"...\"}`).",
        },
        "paths": paths,
        "components": {"schemas": schemas},
        "tags": [{"name": "models"}, {"name": "open inference protocol"}, {"name": "health"}],
    }
    if _protected():
        spec["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return spec


@bp.get("/openapi.json")
@endpoint("openapi", public=True)
def openapi():
    return jsonify(build_spec())


@bp.get("/docs")
@endpoint("docs", html=True, public=True)
def ui():
    return render_template("docs.html")
