"""Access tokens: JWTs (PyJWT, HS256) for the OAuth2 password flow of ``POST /auth/token``.

The secret is ``JWT_SECRET``, else the file ``JWT_SECRET_FILE``, else a random one generated
once into ``<RUN_DIR>/jwt-secret`` (mode 0600), shared by the workers of one instance (give
several instances the same ``JWT_SECRET``). Claims: ``sub`` (user name), ``iat``, ``exp``
(``JWT_MINUTES``, 20 by default), ``jti``. Only HS256 is accepted (never ``none``).
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt

ALGORITHM = "HS256"


class InvalidToken(ValueError):
    pass


def load_secret(environ) -> bytes:
    from ..config import effective_env
    eff = effective_env(environ)
    if eff.get("JWT_SECRET"):
        secret = eff["JWT_SECRET"]
    else:
        path = Path(eff.get("JWT_SECRET_FILE") or Path(eff["RUN_DIR"]) / "jwt-secret")
        if not path.exists():
            # written whole under a temporary name, then linked into place: a worker starting at
            # the same moment sees either no file or the complete one, and the first link wins
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError("JWT_SECRET (or its file) must have at least 32 characters")
    return secret.encode()


def issue(secret: bytes, user: str, minutes: int) -> tuple[str, int]:
    now = int(time.time())
    exp = now + minutes * 60
    token = jwt.encode({"sub": user, "iat": now, "exp": exp, "jti": secrets.token_hex(16)}, secret,
                       algorithm=ALGORITHM)
    return token, exp - now


def verify(secret: bytes, token: str) -> dict:
    """The claims of a valid, unexpired token signed with ``secret``; InvalidToken otherwise."""
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM],
                          options={"require": ["sub", "iat", "exp", "jti"]})
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.PyJWTError:
        raise InvalidToken("the token is not valid") from None


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2
