"""Browser sign-in, when ``ACCOUNTS=1``: ``/login``, ``/logout`` and (``ACCOUNTS_REGISTRATION=1``)
``/register``.

A signed-in browser holds Flask's signed session cookie (itsdangerous; the key is derived from
the JWT secret, so every worker and instance that shares ``JWT_SECRET`` accepts it): ``HttpOnly``,
``SameSite=Lax``, ``Secure`` over TLS (``SESSION_COOKIE_SECURE``), ``SESSION_HOURS`` long. It signs
the HTML pages in (``PROTECT_PAGES=1``); JSON APIs keep taking keys and tokens only, so no other
site's page can use the cookie against them.

Every form carries a CSRF token (the synchronizer-token pattern: a random token kept in the
signed session and echoed by a hidden field, compared in constant time); a POST without the
right one is refused with 400. Sign-in attempts count against the same limits as
``POST /auth/token`` (per user name and per address), and a wrong password and an unknown user
get the same answer in the same time.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import Blueprint, current_app, redirect, render_template, request, session
from flask.sessions import SecureCookieSessionInterface

from ..serving.errors import ApiError, QuotaExceeded
from .helpers import endpoint

bp = Blueprint("sessions", __name__)
MAX_FIELD = 1024


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with SESSION_COOKIE_SECURE=auto: Secure when the request
    came over TLS."""

    def get_cookie_secure(self, app):
        mode = app.config.get("MODEL_SERVER_COOKIE_SECURE", "auto")
        return request.is_secure if mode == "auto" else mode == "1"


def csrf_token() -> str:
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(32)
    return tok


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    kept = session.get("csrf", "")
    if not kept or not hmac.compare_digest(sent.encode("utf-8", "replace"), kept.encode()):
        raise ApiError(400, "csrf_failed", "the form is out of date or was not sent by this site: reload the page "
                                           "and send it again")


def _field(name: str) -> str:
    v = request.form.get(name, "")
    if len(v) > MAX_FIELD:
        raise ApiError(400, "invalid_field", f"field {name!r} is too long")
    return v


def _next_url() -> str:
    """Where to go after signing in: a path of this site only (never //host or a scheme)."""
    nxt = request.values.get("next", "/")
    if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt or len(nxt) > 512 or any(c < " " for c in nxt):
        return "/"
    return nxt


def _page(template: str, status: int = 200, **ctx):
    return render_template(template, csrf=csrf_token(), registration=current_app.config["MODEL_SERVER_REGISTRATION"],
                           next=_next_url(), **ctx), status


@bp.route("/login", methods=["GET", "POST"])
@endpoint("login", html=True, public=True)
def login():
    if request.method == "GET":
        return _page("accounts/login.html")
    check_csrf()
    name, password = _field("username"), _field("password")
    if not name or not password:
        return _page("accounts/login.html", 400, error="Enter your user name and password.", name=name)
    accounts = current_app.extensions["accounts"]
    try:
        accounts.charge_login(name[:64], request.remote_addr or "")
    except QuotaExceeded:
        return _page("accounts/login.html", 429, error="Too many sign-in attempts; try again in a few minutes.",
                     name=name)
    user = accounts.check_password(name, password)
    if user is None:
        return _page("accounts/login.html", 401, error="Wrong user name or password.", name=name)
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    session.permanent = True
    session["user"] = user
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(_next_url(), 303)


@bp.post("/logout")
@endpoint("logout", html=True, public=True)
def logout():
    check_csrf()
    session.clear()
    return redirect("/login", 303)


@bp.route("/register", methods=["GET", "POST"])
@endpoint("register", html=True, public=True)
def register():
    if not current_app.config["MODEL_SERVER_REGISTRATION"]:
        raise ApiError(404, "not_found", "self-registration is off (ACCOUNTS_REGISTRATION=0)")
    if request.method == "GET":
        return _page("accounts/register.html")
    check_csrf()
    name, password = _field("username"), _field("password")
    accounts = current_app.extensions["accounts"]
    try:
        accounts.charge_login(name[:64], request.remote_addr or "")
    except QuotaExceeded:
        return _page("accounts/register.html", 429, error="Too many attempts; try again in a few minutes.", name=name)
    try:
        accounts.register(name, password)
    except ValueError as exc:
        return _page("accounts/register.html", 400, error=str(exc).capitalize() + ".", name=name)
    session.clear()
    session.permanent = True
    session["user"] = name
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(_next_url(), 303)


def signed_in_principal():
    """The principal of the request's session (None: not signed in, or the user is gone)."""
    name = session.get("user")
    if not name or "accounts" not in current_app.extensions:
        return None
    return current_app.extensions["accounts"].session_principal(name)


def init_app(app) -> None:
    """Sessions for the accounts pages (called by auth.init_app when ACCOUNTS=1)."""
    from ..config import SETTINGS_BY_NAME, parse_setting
    cfg = app.extensions["config"]
    env = cfg.environ
    secret = app.extensions["accounts"].secret
    app.secret_key = hmac.new(secret if isinstance(secret, bytes) else secret.encode(), b"flask-session",
                              hashlib.sha256).hexdigest()
    app.session_interface = _SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="ms_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=parse_setting(SETTINGS_BY_NAME["SESSION_HOURS"], env)),
        MODEL_SERVER_COOKIE_SECURE=parse_setting(SETTINGS_BY_NAME["SESSION_COOKIE_SECURE"], env),
        MODEL_SERVER_REGISTRATION=parse_setting(SETTINGS_BY_NAME["ACCOUNTS_REGISTRATION"], env))

    @app.context_processor
    def _signed_in():
        if "accounts" not in app.extensions:
            return {}
        return {"signed_in_user": session.get("user"), "csrf_token": csrf_token}

    app.register_blueprint(bp)

