"""HTML pages: the English->Spanish form, its result page and the dashboard."""
from __future__ import annotations

import os
import time

from flask import Blueprint, current_app, render_template, request

from . import metrics
from .models import TRANSLATOR, ModelBusy, ModelNotReady
from .runtime import runtime_info, server_started, workers

bp = Blueprint("pages", __name__)

FIELD = "English"  # form field name; kept for existing clients


def _form(message: str | None = None, text: str = "", status: int = 200):
    reg = current_app.extensions["models"]
    max_chars, _ = reg.translator_limits()
    return render_template("index.html", message=message, text=text, max_chars=max_chars), status


@bp.get("/")
@bp.get("/index")
def index():
    return _form()


@bp.post("/result")
def result():
    reg = current_app.extensions["models"]
    cfg = current_app.extensions["config"]
    if not request.form and request.content_length and request.mimetype in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        # Werkzeug drops form data that is not valid UTF-8
        return _form("The form data could not be read: it must be UTF-8 encoded.", "", 400)
    text = request.form.get(FIELD, "")
    max_chars, input_too_long = reg.translator_limits()
    if not text.strip():
        return _form("Please enter an English sentence to translate.", text, 400)
    if len(text) > max_chars:
        return _form(f"The text is too long: {len(text)} characters, the limit is {max_chars}.", text, 400)
    model = reg.get(TRANSLATOR)
    if model is None:
        return _form("The translator is not ready yet. Please try again in a moment.", text, 503)
    t0 = time.perf_counter()
    try:
        translation = reg.translate([text], cfg.default_beam)[0]
    except input_too_long as exc:
        return _form(str(exc), text, 400)
    except (ModelNotReady, ModelBusy):
        return _form("The translator is busy or not ready. Please try again in a moment.", text, 503)
    seconds = time.perf_counter() - t0
    metrics.INFERENCE.labels(TRANSLATOR).observe(seconds)
    metrics.ITEMS.labels(TRANSLATOR).inc()
    return render_template("result.html", source=text, translation=translation,
                           model_version=model.metadata.get("version"), inference_ms=round(seconds * 1000, 1))


def dashboard_data() -> dict:
    reg = current_app.extensions["models"]
    cfg = current_app.extensions["config"]
    snap = metrics.snapshot()
    counts = snap["counts"]
    summary = {
        "base64": counts.get("image_64", 0),
        "binary": counts.get("image_bin", 0),
        "translation": counts.get("translate_api", 0) + counts.get("translate_form", 0),
        "errors": snap["errors_total"],
        "total": snap["requests_total"],
    }
    started = server_started()
    return {
        "summary": summary,
        "metrics": snap,
        "models": reg.status(),
        "uptime_s": round(time.time() - started, 1),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "workers": workers(),
        "this_worker": runtime_info(),
        "revision": cfg.revision,
        "multiprocess_metrics": metrics.multiprocess_enabled(),
    }


def _fmt_uptime(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


@bp.get("/dashboard")
def dashboard():
    data = dashboard_data()
    return render_template("dashboard.html", d=data, endpoints=metrics.DASHBOARD_ENDPOINTS,
                           uptime=_fmt_uptime(data["uptime_s"]), pid=os.getpid())
