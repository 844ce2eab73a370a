"""The dashboard (HTML and /api/stats), and a start page when no servable brings one."""
from __future__ import annotations

import os
import time

from flask import Blueprint, current_app, redirect, render_template, url_for

from ..runtime.info import runtime_info, server_started, workers
from ..serving import metrics
from .helpers import core_config, endpoint, registry

bp = Blueprint("pages", __name__)


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
                           uptime=_fmt_uptime(data["uptime_s"]), pid=os.getpid())


@endpoint("index", html=True)
def start_page():
    """``/`` when no servable's blueprint has one: the dashboard lists what is served."""
    return redirect(url_for("pages.dashboard"))


def register_start_page(app) -> None:
    if not any(r.rule == "/" for r in app.url_map.iter_rules()):
        app.add_url_rule("/", "pages.start_page", start_page, methods=["GET"])
