"""Uniform errors: ``{"error": {"code": ..., "message": ...}}`` for the API.

HTML pages (/, /index, /result, /dashboard and unknown non-API paths asked
for by a browser) get a small HTML error page instead.
"""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

#: Paths whose errors are always JSON.
API_PREFIXES = ("/api/", "/image-64", "/image-bin", "/healthz", "/readyz", "/version", "/metrics", "/openapi.json")

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


class ApiError(Exception):
    """An error answered as JSON with the given HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_body(status: int, code: str, message: str, **extra) -> dict:
    err = {"code": code, "message": message}
    rid = getattr(g, "request_id", None)
    if rid:
        err["request_id"] = rid
    err.update(extra)
    return {"error": err}


def wants_json() -> bool:
    path = request.path
    if any(path == p.rstrip("/") or path.startswith(p) for p in API_PREFIXES):
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
        headers = [("Retry-After", "5")] if exc.status == 503 else None
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
