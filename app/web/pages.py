"""The dashboard (HTML, /api/stats, /api/stats/history), /favicon.ico, and a start page when
no servable brings one."""
from __future__ import annotations

import os
import time

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, send_from_directory, url_for

from ..runtime.info import runtime_info, server_started, workers
from ..serving import history, metrics
from ..serving.errors import ApiError
from .helpers import core_config, endpoint, registry

bp = Blueprint("pages", __name__)

#: the window of the dashboard's charts
DASHBOARD_MINUTES = 60


@bp.before_app_request
def _start_history_sampler():
    # once per process, on its first request: never in the uWSGI master before the fork
    history.ensure_sampler()


def dashboard_endpoints() -> list[tuple[str, str]]:
    """(metrics label, title) of every route marked with a dashboard title, in route order."""
    seen, out = set(), []
    for rule in current_app.url_map.iter_rules():
        fn = current_app.view_functions.get(rule.endpoint)
        title = getattr(fn, "dashboard_title", None)
        if title and fn.metrics_label not in seen:
            seen.add(fn.metrics_label)
            out.append((fn.metrics_label, title))
    return out


def endpoint_models() -> dict[str, str]:
    """metrics label -> model, of the routes marked with ``@endpoint(..., model=...)``."""
    out = {}
    for fn in current_app.view_functions.values():
        if getattr(fn, "model", None) and getattr(fn, "metrics_label", None):
            out[fn.metrics_label] = fn.model
    return out


def history_data(minutes: int = DASHBOARD_MINUTES) -> dict:
    return history.history(minutes, endpoint_models(), list(registry().status()))


def dashboard_data() -> dict:
    started = server_started()
    return {
        "metrics": metrics.snapshot(),
        "models": registry().status(),
        "uptime_s": round(time.time() - started, 1),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "workers": workers(),
        "this_worker": runtime_info(),
        "revision": core_config().revision,
        "multiprocess_metrics": metrics.multiprocess_enabled(),
    }


def _fmt_uptime(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


@bp.get("/dashboard")
@endpoint("dashboard", html=True)
def dashboard():
    data = dashboard_data()
    return render_template("dashboard.html", d=data, endpoints=dashboard_endpoints(),
                           uptime=_fmt_uptime(data["uptime_s"]), pid=os.getpid(),
                           history=history_data(), minutes=DASHBOARD_MINUTES)


@bp.get("/api/stats/history")
@endpoint("stats_history")
def stats_history():
    """Per-minute series of the last ``minutes`` (1..1440, default 60), all workers: requests/s,
    per model items/s, requests/s and inference p50/p99, errors by HTTP status (see
    app/serving/history.py)."""
    raw = request.args.get("minutes", str(DASHBOARD_MINUTES))
    try:
        minutes = int(raw)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= history.MAX_MINUTES:
        raise ApiError(400, "invalid_parameter", f"minutes must be an integer from 1 to {history.MAX_MINUTES}")
    return jsonify(history_data(minutes))


@bp.get("/favicon.ico")
@endpoint("static", public=True)
def favicon():
    """What browsers ask for unprompted; nginx answers it itself in the stack. Counted with the
    static files (label ``static``), not as an API request."""
    return send_from_directory(current_app.static_folder, "favicon.ico", mimetype="image/x-icon", max_age=86400)


@endpoint("index", html=True)
def start_page():
    """``/`` when no servable's blueprint has one: the dashboard lists what is served."""
    return redirect(url_for("pages.dashboard"))


def register_start_page(app) -> None:
    if not any(r.rule == "/" for r in app.url_map.iter_rules()):
        app.add_url_rule("/", "pages.start_page", start_page, methods=["GET"])
