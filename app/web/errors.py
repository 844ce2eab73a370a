"""Uniform errors: ``{"error": {"code": ..., "message": ...}}`` for the API.

HTML pages (routes marked ``@endpoint(..., html=True)``, and unknown paths asked for by a
browser) get a small HTML error page instead. Paths under a prefix with an error shape of
its own (the Open Inference Protocol's ``{"error": "..."}`` under ``/v2``) get that shape.
"""
from __future__ import annotations

import logging

from flask import Flask, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from ..serving.errors import ApiError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "not_ready",
}

#: path prefix -> function(status, code, message, **extra) -> JSON body
_SHAPES: dict = {}


def register_error_shape(prefix: str, body_fn) -> None:
    _SHAPES[prefix] = body_fn


def error_body(status: int, code: str, message: str, **extra) -> dict:
    for prefix, fn in _SHAPES.items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return fn(status, code, message, **extra)
    err = {"code": code, "message": message}
    rid = getattr(g, "request_id", None)
    if rid:
        err["request_id"] = rid
    err.update(extra)
    return {"error": err}


def json_prefixes(app: Flask) -> tuple:
    """The static start of every JSON route ('/api/translate', '/v2/models/', ...): an
    unknown path under one of them answers JSON too. Derived from the routes, once."""
    cached = app.extensions.get("json_prefixes")
    if cached is None:
        out = set(_SHAPES)
        for rule in app.url_map.iter_rules():
            fn = app.view_functions.get(rule.endpoint)
            if rule.endpoint == "static" or getattr(fn, "html_page", False) or rule.rule == "/":
                continue
            static = rule.rule.split("<", 1)[0]
            out.add(static if "<" in rule.rule else static.rstrip("/"))
            if rule.rule.count("/") > 1:  # '/api/stats' -> '/api/' too
                out.add("/" + rule.rule.split("/")[1] + "/")
        cached = app.extensions["json_prefixes"] = tuple(sorted(out))
    return cached


def wants_json() -> bool:
    fn = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if fn is not None and request.endpoint != "static":
        return not getattr(fn, "html_page", False)
    path = request.path
    if any(path == p.rstrip("/") or path.startswith(p if p.endswith("/") else p + "/")
           for p in json_prefixes(current_app)):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def json_error(status: int, code: str, message: str, headers=None, **extra):
    resp = jsonify(error_body(status, code, message, **extra))
    resp.status_code = status
    if headers:
        for k, v in headers:
            resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        retry = exc.extra.get("retry_after") or (5 if exc.status == 503 else None)
        headers = [("Retry-After", str(retry))] if retry else None
        if not wants_json():
            html = render_template("error.html", status=exc.status, title=exc.code.replace("_", " "),
                                   message=exc.message)
            return html, exc.status, headers or []
        return json_error(exc.status, exc.code, exc.message, headers=headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = f"request body exceeds the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
        extra_headers = [(k, v) for k, v in exc.get_headers() if k.lower() == "allow"]
        if wants_json():
            return json_error(status, code, message, headers=extra_headers)
        html = render_template("error.html", status=status, title=exc.name, message=message)
        return html, status, extra_headers

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return json_error(500, "internal_error", "internal server error")
        return render_template("error.html", status=500, title="Internal Server Error",
                               message="Something went wrong on our side."), 500
