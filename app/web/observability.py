"""Request ids, one JSON log line per request (stdout) and request metrics."""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid

from flask import Flask, current_app, g, request

from ..serving import metrics

_RID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("app.access")

class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = getattr(record, "payload", None)
        if payload is None:
            payload = {"level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
                       "pid": os.getpid()}
            if record.exc_info:
                payload["exc"] = self.formatException(record.exc_info)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        return json.dumps({"ts": ts, **payload}, separators=(",", ":"), ensure_ascii=False)


def setup_logging(level: str = "INFO") -> None:
    """JSON lines on stdout for the app's loggers (uWSGI collects worker stdout)."""
    root = logging.getLogger("app")
    if getattr(root, "_configured_by_app", False):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    root._configured_by_app = True  # type: ignore[attr-defined]


def endpoint_label() -> str:
    """The route's ``@endpoint`` label (metrics and dashboard), else its Flask endpoint name."""
    ep = request.endpoint
    if ep is None:
        return "unmatched"
    fn = current_app.view_functions.get(ep)
    return getattr(fn, "metrics_label", None) or ep


def init_app(app: Flask) -> None:
    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if _RID_OK.match(rid) else uuid.uuid4().hex

    @app.after_request
    def _finish(resp):
        t0 = getattr(g, "t0", None)
        seconds = (time.perf_counter() - t0) if t0 is not None else 0.0
        rid = getattr(g, "request_id", None) or uuid.uuid4().hex
        resp.headers["X-Request-ID"] = rid
        label = endpoint_label()
        try:
            metrics.observe_request(label, request.method, resp.status_code, seconds)
        except Exception:  # metrics must never break a response
            logging.getLogger(__name__).exception("recording metrics failed")
        rec = logging.LogRecord("app.access", logging.INFO, __file__, 0, "request", None, None)
        rec.payload = {
            "msg": "request",
            "method": request.method,
            "path": request.path,
            "status": resp.status_code,
            "duration_ms": round(seconds * 1000, 2),
            "pid": os.getpid(),
            "request_id": rid,
            "endpoint": label,
            "bytes_in": request.content_length or 0,
        }
        access_log.handle(rec)
        return resp
