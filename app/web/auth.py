"""``POST /auth/token``: the OAuth2 password flow (RFC 6749 4.3), when ``ACCOUNTS=1``.

Form fields ``username`` and ``password`` (``grant_type`` optional, must be ``password``) ->
``{"access_token", "token_type": "bearer", "expires_in"}``: a JWT to send as
``Authorization: Bearer <token>`` to every JSON API. Errors use OAuth2's own shape
(``{"error": "invalid_grant", "error_description": ...}``), which OAuth2 clients read.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..serving.errors import ApiError
from .errors import register_error_shape
from .helpers import endpoint

bp = Blueprint("auth", __name__)


def _oauth_error(status, code, message, **extra):
    return {"error": code if code in _OAUTH_CODES else "invalid_request", "error_description": message}


_OAUTH_CODES = {"invalid_request", "invalid_grant", "unsupported_grant_type", "invalid_client",
                "quota_exceeded"}


@bp.post("/auth/token")
@endpoint("auth_token", public=True)
def token():
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise ApiError(400, "invalid_request", "send the form fields username and password "
                       "(Content-Type application/x-www-form-urlencoded)")
    form = request.form
    grant = form.get("grant_type", "password")
    if grant != "password":
        raise ApiError(400, "unsupported_grant_type", "only grant_type=password is supported")
    name, password = form.get("username", ""), form.get("password", "")
    if not name or not password:
        raise ApiError(400, "invalid_request", "the form fields username and password are required")
    accounts = current_app.extensions["accounts"]
    accounts.charge_login(name[:64], request.remote_addr or "")  # 429 after too many attempts
    if len(name) > 64 or len(password) > 1024:
        raise ApiError(400, "invalid_grant", "wrong user name or password")
    issued = accounts.password_token(name, password)
    if issued is None:
        raise ApiError(400, "invalid_grant", "wrong user name or password")
    access, seconds = issued
    resp = jsonify({"access_token": access, "token_type": "bearer", "expires_in": seconds})
    resp.headers["Cache-Control"] = "no-store"
    return resp


def openapi_paths() -> dict:
    """The OpenAPI path item of ``POST /auth/token`` (in the document when ACCOUNTS=1)."""
    from .docs import operation
    token_schema = {"type": "object", "required": ["access_token", "token_type", "expires_in"],
                    "properties": {"access_token": {"type": "string"},
                                   "token_type": {"type": "string", "enum": ["bearer"]},
                                   "expires_in": {"type": "integer", "minimum": 1}}}
    oauth_error = {"type": "object", "required": ["error", "error_description"],
                   "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}}
    body = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["username", "password"],
        "properties": {"grant_type": {"type": "string", "enum": ["password"]},
                       "username": {"type": "string", "maxLength": 64},
                       "password": {"type": "string", "format": "password", "maxLength": 1024}}}}}}
    op = operation("A bearer token (JWT) for a user name and password (OAuth2 password flow)", "authToken",
                   token_schema, (400,), body, secured=False, tags=("accounts",), error_schema=oauth_error)
    return {"/auth/token": {"post": op}}


def init_app(app, registry) -> None:
    cfg = app.extensions["config"]
    if not cfg.accounts:
        return
    from ..accounts.service import Accounts
    from ..config import SETTINGS_BY_NAME, parse_setting
    minutes = parse_setting(SETTINGS_BY_NAME["JWT_MINUTES"], cfg.environ)
    accounts = app.extensions["accounts"] = Accounts(cfg.environ, minutes)

    def charge(model, usage):
        from flask import g, has_request_context
        p = g.get("principal") if has_request_context() else None
        if p is not None and usage:
            accounts.charge_usage(p, usage)

    registry.usage_hook = charge
    register_error_shape("/auth/token", _oauth_error)
    app.register_blueprint(bp)
    from .sessions import init_app as init_sessions
    init_sessions(app)
