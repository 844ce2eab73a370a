"""Health, version, metrics and stats: the JSON endpoints of the server itself."""
from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify

from ..runtime.info import runtime_info
from ..serving import metrics
from ..serving.errors import ApiError
from .helpers import core_config, endpoint, registry

bp = Blueprint("api", __name__)


@bp.get("/healthz")
@endpoint("healthz", public=True)
def healthz():
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
@endpoint("readyz", public=True)
def readyz():
    reg = registry()
    body = {"pid": os.getpid(), "models": reg.status()}
    if reg.ready:
        return jsonify({"status": "ready", **body})
    missing = reg.not_ready() or ["(no model enabled)"]
    raise ApiError(503, "not_ready", "models not ready: " + ", ".join(missing), **body)


@bp.get("/version")
@endpoint("version")
def version():
    from .. import __version__
    reg = registry()
    models = {}
    for name, h in reg.handles.items():
        m = {"status": h.status, "version": h.version, "sha256": h.artifact_sha256 if h.sha256 else None,
             "load_ms": h.load_ms, "warmup_ms": h.warmup_ms, "ready_ms": h.ready_ms}
        if h.error:
            m["error"] = h.error
        models[name] = m
    return jsonify({
        "app": {"name": "modelserver", "version": __version__, "revision": core_config().revision},
        "worker": runtime_info(),
        "models": models,
        "threads": reg.threads,
    })


@bp.get("/metrics")
@endpoint("metrics")
def metrics_endpoint():
    data, ctype = metrics.exposition()
    return Response(data, content_type=ctype)


@bp.get("/api/stats")
@endpoint("stats")
def stats():
    """The dashboard's numbers as JSON."""
    from .pages import dashboard_data
    return jsonify(dashboard_data())
