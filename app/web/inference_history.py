"""The inference history's routes and its recording hook (``ACCOUNTS=1``, ``HISTORY`` not off).

* every request to an inference route (the routes with a dashboard row: the nose and translation
  routes, ``/v2/.../infer``, LibreTranslate's) is offered to the worker's history writer
  (app/accounts/history.py) after its answer is made: it never waits for the database;
* ``GET /api/history?limit=&cursor=&model=`` (a key or token of a user): the caller's own
  records, newest first, ``next_cursor`` for the next page; an admin sees everybody's
  (``user=`` filters);
* ``GET /history`` (signed in at /login): the same as a page, with the stored picture when
  ``HISTORY=full``.
"""
from __future__ import annotations

import json
import time
from datetime import timezone

from flask import Blueprint, current_app, g, has_request_context, redirect, render_template, request, send_file, url_for
from sqlalchemy import select

from ..serving.errors import ApiError
from .helpers import endpoint

bp = Blueprint("history", __name__)
TEXT_FIELDS = ("text", "texts", "q", "English")
PAGE_MAX = 100


def _texts() -> list[str]:
    out: list[str] = []
    payload = request.get_json(silent=True, cache=True) if request.is_json else None
    src = payload if isinstance(payload, dict) else request.form
    for k in TEXT_FIELDS:
        v = src.get(k) if hasattr(src, "get") else None
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
    return out


def _files() -> list[tuple[str, bytes]]:
    out = []
    for f in request.files.values():
        try:
            f.stream.seek(0)
            out.append((f.filename or "", f.stream.read()))
        except (OSError, ValueError):
            pass
    return out


def _image_of_request(files) -> tuple[bytes, str] | None:
    if files:
        name, data = files[0]
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else "bin"
        return data, ext if ext.isalnum() and len(ext) <= 5 else "bin"
    payload = request.get_json(silent=True, cache=True) if request.is_json else None
    if isinstance(payload, dict) and isinstance(payload.get("image"), str):
        from ..serving.imaging import decode_base64_image
        try:
            return decode_base64_image(payload["image"]), "img"
        except ApiError:
            return None
    return None


def _record_response(resp):
    writer = current_app.extensions.get("history")
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if writer is None or view is None or not getattr(view, "dashboard_title", None):
        return resp
    try:
        from ..accounts.history import record, summarize
        reg = current_app.extensions["models"]
        model = getattr(view, "model", None) or (request.view_args or {}).get("model") \
            or (g.get("models_run") or [None])[-1]
        h = reg.handles.get(model) if model else None
        files = _files()
        texts = _texts()
        summary = summarize(request.mimetype, b"" if files else request.get_data(cache=True), files, texts)
        if files:
            summary["bytes"] = request.content_length or 0
        output = resp.get_data(as_text=True) if resp.mimetype == "application/json" and not resp.is_streamed else None
        if output is None:
            summary["output"] = {"content_type": resp.mimetype}
        rec = record(g.get("principal"), getattr(view, "metrics_label", request.endpoint or "?"), model,
                     h.version if h is not None else None, g.get("request_id", "?"),
                     (time.perf_counter() - g.t0) * 1000 if "t0" in g else 0.0, resp.status_code, summary, output,
                     "\n".join(texts), writer.mode)
        image = _image_of_request(files) if writer.mode == "full" else None
        writer.offer(rec, *(image or (None,)))
    except Exception:  # the history must never fail a request
        current_app.logger.exception("history: building a record failed")
    return resp


def _principal_for_api():
    p = g.get("principal")
    if p is None or not getattr(p, "user", None):
        raise ApiError(403, "forbidden", "the history needs a user's API key or access token "
                       "(an environment key belongs to no user)")
    return p


def _query(p, cursor, limit, model, user):
    from ..accounts.db import session
    from ..accounts.models import InferenceRecord as R
    url = current_app.extensions["accounts"].url
    q = select(R).order_by(R.id.desc()).limit(limit + 1)
    if not p.is_admin:
        q = q.where(R.user_name == p.user)
    elif user:
        q = q.where(R.user_name == user)
    if cursor:
        q = q.where(R.id < cursor)
    if model:
        q = q.where(R.model == model)
    with session(url) as s:
        rows = list(s.execute(q).scalars())
    more = len(rows) > limit
    return rows[:limit], (rows[limit - 1].id if more else None)


def _as_json(r) -> dict:
    out = json.loads(r.output) if r.output and r.output.startswith("{") else r.output
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=timezone.utc)  # SQLite: naive
    return {"id": r.id, "created_at": created.isoformat(), "user": r.user_name, "credential": r.credential,
            "endpoint": r.endpoint, "model": r.model, "model_version": r.model_version, "request_id": r.request_id,
            "latency_ms": r.latency_ms, "status": r.status, "input": json.loads(r.input_summary), "output": out,
            "input_text": r.input_text, "image": url_for("history.image", record_id=r.id) if r.image_path else None}


def _int_arg(name, default, lo, hi):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        v = lo - 1
    if not lo <= v <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer from {lo} to {hi}")
    return v


def _filters():
    model = request.args.get("model") or None
    user = request.args.get("user") or None
    for name, v in (("model", model), ("user", user)):
        if v is not None and len(v) > 64:
            raise ApiError(400, "invalid_parameter", f"{name} is too long")
    return (_int_arg("cursor", None, 1, 2 ** 62), _int_arg("limit", 20, 1, PAGE_MAX), model, user)


@bp.get("/api/history")
@endpoint("history_api")
def api_history():
    p = _principal_for_api()
    cursor, limit, model, user = _filters()
    rows, nxt = _query(p, cursor, limit, model, user)
    return {"records": [_as_json(r) for r in rows], "next_cursor": nxt}


def _session_principal():
    from .sessions import signed_in_principal
    return signed_in_principal()


@bp.get("/history")
@endpoint("history_page", html=True)
def page():
    p = _session_principal()
    if p is None:
        return redirect(url_for("sessions.login", next=request.full_path.rstrip("?")), 303)
    cursor, limit, model, user = _filters()
    rows, nxt = _query(p, cursor, limit, model, user)
    models = sorted(current_app.extensions["models"].handles)
    return render_template("accounts/history.html", records=[_as_json(r) for r in rows], next_cursor=nxt,
                           model=model, models=models, user=p.user, admin=p.is_admin,
                           mode=current_app.extensions["history"].mode)


@bp.get("/history/image/<int:record_id>")
@endpoint("history_image", html=True)
def image(record_id: int):
    from ..accounts.db import session
    from ..accounts.models import InferenceRecord as R
    p = _session_principal() or g.get("principal")
    if p is None or not getattr(p, "user", None):
        raise ApiError(404, "not_found", "no such picture")
    with session(current_app.extensions["accounts"].url) as s:
        r = s.get(R, record_id)
    if r is None or not r.image_path or (r.user_name != p.user and not p.is_admin):
        raise ApiError(404, "not_found", "no such picture")  # never says whose it is
    path = (current_app.extensions["history"].dir / r.image_path).resolve()
    if not path.is_file() or current_app.extensions["history"].dir.resolve() not in path.parents:
        raise ApiError(404, "not_found", "no such picture")
    return send_file(path, mimetype="application/octet-stream" if path.suffix == ".bin" else None,
                     download_name=path.name, max_age=0)


def openapi_paths() -> dict:
    """The OpenAPI path item of ``GET /api/history`` (in the document when the history is on)."""
    from .docs import operation
    nullable_str = {"type": "string", "nullable": True}
    record = {"type": "object", "required": ["id", "created_at", "endpoint", "status", "input"], "properties": {
        "id": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
        "user": nullable_str, "credential": {"type": "string"}, "endpoint": {"type": "string"},
        "model": nullable_str, "model_version": nullable_str, "request_id": {"type": "string"},
        "latency_ms": {"type": "number"}, "status": {"type": "integer"},
        "input": {"type": "object", "additionalProperties": True},
        "output": {"nullable": True}, "input_text": nullable_str, "image": nullable_str}}
    ok = {"type": "object", "required": ["records", "next_cursor"],
          "properties": {"records": {"type": "array", "items": record},
                         "next_cursor": {"type": "integer", "nullable": True}}}
    params = [
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": 20}},
        {"name": "cursor", "in": "query", "required": False, "description": "next_cursor of the page before",
         "schema": {"type": "integer", "minimum": 1, "maximum": 2 ** 62}},
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 64}},
        {"name": "user", "in": "query", "required": False, "description": "an admin's filter by user name",
         "schema": {"type": "string", "maxLength": 64}},
    ]
    op = operation("The caller's inference history, newest first (an admin's: everyone's)", "history", ok,
                   (400, 401, 403), tags=("accounts",), parameters=params)
    return {"/api/history": {"get": op}}


def init_app(app, registry) -> None:
    cfg = app.extensions["config"]
    if "accounts" not in app.extensions:
        return
    from ..config import SETTINGS_BY_NAME, effective_env, parse_setting
    mode = parse_setting(SETTINGS_BY_NAME["HISTORY"], cfg.environ)
    if mode == "off":
        return
    from ..accounts.history import HistoryWriter
    eff = effective_env(cfg.environ)
    directory = eff.get("HISTORY_DIR") or f"{eff['RUN_DIR']}/history"
    app.extensions["history"] = HistoryWriter(
        app.extensions["accounts"].url, mode, directory,
        maxsize=parse_setting(SETTINGS_BY_NAME["HISTORY_QUEUE"], cfg.environ))
    app.after_request(_record_response)
    app.register_blueprint(bp)

    def ran(name):  # which models a request ran (LibreTranslate's routes name none)
        if has_request_context():
            g.setdefault("models_run", []).append(name)
    registry.run_observers.append(ran)

