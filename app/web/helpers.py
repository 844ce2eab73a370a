"""What every blueprint (ours and a servable's) uses: the registry, the JSON body, and the
``@endpoint`` marker that names a route for metrics, the dashboard and error formatting."""
from __future__ import annotations

import json

from flask import current_app, request

from ..serving.errors import ApiError


def registry():
    return current_app.extensions["models"]


def core_config():
    return current_app.extensions["config"]


def endpoint(label: str, title: str | None = None, html: bool = False, model: str | None = None,
             public: bool = False):
    """Mark a view: ``label`` is its ``endpoint`` label in the request metrics; with a
    ``title`` it is a row of the dashboard; ``html``: an HTML page (its errors too, and it
    needs an API key only with PROTECT_PAGES=1); ``public``: never needs an API key."""
    def mark(fn):
        fn.metrics_label, fn.dashboard_title, fn.html_page, fn.model = label, title, html, model
        fn.public = public
        return fn
    return mark


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
