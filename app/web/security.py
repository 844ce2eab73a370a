"""Access control (optional API keys) and security headers on every app response.

API keys (``API_KEYS`` / ``API_KEYS_FILE``): when at least one key is
configured, every JSON endpoint except the public ones below needs
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (each one sent must be valid). Keys are compared
with :func:`hmac.compare_digest` against every configured key (no early exit),
so the time taken does not tell how much of a key was right. The HTML pages
stay public unless ``PROTECT_PAGES=1``.

Security headers: the same set nginx adds to its own responses
(``nginx/security-headers.conf``; a test checks they agree).
"""
from __future__ import annotations

import hmac

from flask import Flask, current_app, g, redirect, render_template, request, url_for

from .errors import json_error, wants_json

#: Content-Security-Policy of every response: no inline script or style, nothing
#: from other origins, no framing. Swagger UI (/docs) runs under it too.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

#: Endpoints anyone may call even when API keys are configured (besides views marked
#: ``@endpoint(..., public=True)``).
PUBLIC_ENDPOINTS = frozenset({"static"})

AUTH_CHALLENGE = 'Bearer realm="modelserver"'


def presented_keys() -> list[str]:
    """Every credential a request carries: the token of ``Authorization: Bearer <token>`` (an
    empty one too: it fails) and ``X-API-Key``. ``Basic`` credentials (a proxy's sign-in in
    front of us) are not ours and are ignored; an Authorization header of any other form is
    presented as a credential, and fails."""
    out = []
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            out.append(token.strip())
        elif scheme.lower() != "basic":
            out.append("")
    if "X-API-Key" in request.headers:
        out.append(request.headers["X-API-Key"].strip())
    return list(dict.fromkeys(out))  # the same key in both headers: checked (and charged) once


def key_matches(presented: str, keys: tuple) -> bool:
    """Constant-time comparison against every configured key."""
    given = presented.encode("utf-8", "surrogateescape")
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(given, k.encode("utf-8"))
    return ok


def needs_key(endpoint: str | None, view, protect_pages: bool) -> bool:
    if endpoint is None:  # unknown path / wrong method: the 404/405 answer tells nothing
        return False
    if endpoint in PUBLIC_ENDPOINTS or getattr(view, "public", False):
        return False
    if getattr(view, "html_page", False) and not protect_pages:
        return False
    return True


def credentials_required() -> bool:
    """Keys are configured (API_KEYS) or accounts are on (ACCOUNTS=1)."""
    return bool(current_app.extensions["config"].api_keys) or "accounts" in current_app.extensions


def check_credential(given: str) -> tuple[str, str] | None:
    """None when ``given`` is an environment key, a database key or a valid access token (its
    principal in ``g.principal``; None for an environment key), else (error code, message).
    A database key's requests-per-minute quota is charged here (QuotaExceeded when used up)."""
    cfg = current_app.extensions["config"]
    if cfg.api_keys and key_matches(given, cfg.api_keys):
        g.principal = None
        return None
    accounts = current_app.extensions.get("accounts")
    if accounts is not None:
        from ..accounts.tokens import InvalidToken, looks_like_jwt
        try:
            g.principal = accounts.principal(given)
        except InvalidToken as exc:
            return "invalid_token", str(exc)
        if g.principal is not None:
            accounts.charge_request(g.principal)
            return None
        if looks_like_jwt(given):
            return "invalid_token", "the token is not valid"
    return "invalid_api_key", "the API key is not valid"


def check_credentials(given: list[str]) -> tuple[str, str] | None:
    """Every credential presented must hold: a bad token is never outvoted by a good key sent
    beside it (a client that sends a stale token learns so)."""
    for cred in given:
        failure = check_credential(cred) if cred else (
            "invalid_api_key", "an empty API key or token, or an Authorization header that is not 'Bearer <token>'")
        if failure is not None:
            return failure
    return None


def init_app(app: Flask) -> None:
    @app.before_request
    def _require_api_key():
        cfg = current_app.extensions["config"]
        view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
        if not credentials_required() or not needs_key(request.endpoint, view, cfg.protect_pages):
            return None
        given = presented_keys()
        if not given and getattr(view, "html_page", False) and "accounts" in current_app.extensions:
            from .sessions import signed_in_principal
            g.principal = signed_in_principal()  # a signed-in browser (pages only, never the JSON APIs)
            if g.principal is not None:
                if request.method not in ("GET", "HEAD", "OPTIONS"):
                    from .sessions import check_csrf
                    check_csrf()  # a form a signed-in browser sends must carry the session's token
                return None
            return redirect(url_for("sessions.login", next=request.full_path.rstrip("?")), 303)
        if given:
            failure = check_credentials(given)
            if failure is None:
                return None
            code, message = failure
        else:
            code, message = ("missing_api_key", "this endpoint needs an API key"
                             + (" or an access token (POST /auth/token)" if "accounts" in current_app.extensions else "")
                             + ": send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        headers = [("WWW-Authenticate", AUTH_CHALLENGE)]
        if wants_json():
            return json_error(401, code, message, headers=headers)
        html = render_template("error.html", status=401, title="Unauthorized", message=message)
        return html, 401, headers

    @app.after_request
    def _security_headers(resp):
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp
