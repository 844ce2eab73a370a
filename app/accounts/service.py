"""The accounts of one app process (``ACCOUNTS=1``): who a presented credential is.

Credentials: an environment ``API_KEYS`` key (as before), a database API key, or a JWT access
token. Database answers are cached for :data:`CACHE_SECONDS` per credential, so a request costs
no query when its key was seen a moment ago; a revoked key or a disabled user is refused within
that time. Unknown credentials are not cached (the cache cannot be filled by guessing).
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from ..serving.errors import QuotaExceeded
from . import keys, passwords, quotas, tokens
from .db import database_url, session
from .models import User
from .schema import ensure

CACHE_SECONDS = 5.0
CACHE_MAX = 10_000
#: sign-in attempts (POST /auth/token) allowed per user name and per client address per window
LOGIN_PER_USER, LOGIN_PER_ADDRESS, LOGIN_WINDOW = 10, 30, 300
#: user names: 1-64 letters, digits, _ . @ - (the CLI's rule too)
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")  # use fullmatch


@dataclass(frozen=True)
class Principal:
    """Who made a request: ``kind`` is env_key, api_key or token."""
    kind: str
    user: str | None = None
    key_id: int | None = None
    is_admin: bool = False
    rpm: int | None = None
    chars_per_day: int | None = None


class Accounts:
    def __init__(self, environ, minutes: int):
        self.url = database_url(environ)
        self.revision = ensure(self.url)
        self.secret = tokens.load_secret(environ)
        self.minutes = minutes
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    # --- credentials -------------------------------------------------------------------
    def principal(self, presented: str) -> Principal | None:
        """The principal of a database key or a token; None when neither is valid.
        Raises tokens.InvalidToken for a JWT that is bad or expired (its message says which)."""
        if tokens.looks_like_jwt(presented):
            claims = tokens.verify(self.secret, presented)  # raises InvalidToken
            user = self._cached("user:" + claims["sub"], lambda: self._user_principal(claims["sub"]))
            if user is None:
                raise tokens.InvalidToken("the token's user is unknown or disabled")
            return user
        return self._cached("key:" + keys.key_hash(presented), lambda: self._key_principal(presented))

    def _cached(self, key, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < CACHE_SECONDS:
                return hit[1]
        value = load()
        if value is not None:
            with self._lock:
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = (now, value)
        return value

    def _key_principal(self, presented: str) -> Principal | None:
        with session(self.url) as s:
            found = keys.lookup(s, presented)
            if found is None:
                return None
            k, u = found
            return Principal("api_key", u.name, k.id, u.is_admin, k.rpm, k.chars_per_day)

    def _user_principal(self, name: str) -> Principal | None:
        with session(self.url) as s:
            u = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
            if u is None or u.disabled:
                return None
            return Principal("token", u.name, None, u.is_admin)

    # --- quotas ---------------------------------------------------------------------------
    def charge_request(self, p: Principal) -> None:
        """One request against the key's requests-per-minute; QuotaExceeded when used up."""
        if p.rpm:
            retry = quotas.take(self.url, f"key:{p.key_id}:rpm", 1, p.rpm, 60)
            if retry is not None:
                raise QuotaExceeded(f"this key's quota of {p.rpm} requests per minute is used up", retry)

    def charge_usage(self, p: Principal, usage: dict) -> None:
        """What an inference consumes (``{"characters": n}``) against the key's daily quota."""
        chars = usage.get("characters", 0)
        if p.chars_per_day and chars:
            retry = quotas.take(self.url, f"key:{p.key_id}:chars", chars, p.chars_per_day, 86400)
            if retry is not None:
                raise QuotaExceeded(f"this key's quota of {p.chars_per_day} characters per day does not "
                                    f"cover these {chars} characters", retry)

    def charge_login(self, name: str, address: str) -> None:
        """Password attempts: LOGIN_PER_USER per user name and LOGIN_PER_ADDRESS per client
        address within LOGIN_WINDOW seconds, whatever their outcome; then 429."""
        # the name hashed: any string a client sends (NUL bytes included) is a valid key
        user = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        for subject, limit in ((f"login-addr:{address}", LOGIN_PER_ADDRESS), (f"login-user:{user}", LOGIN_PER_USER)):
            retry = quotas.take(self.url, subject, 1, limit, LOGIN_WINDOW)
            if retry is not None:
                raise QuotaExceeded("too many sign-in attempts; try again later", retry)

    # --- passwords: the OAuth2 password flow, the sign-in page ----------------------------
    def check_password(self, name: str, password: str) -> str | None:
        """The user's name for a right name and password of an enabled user, else None.
        Unknown users and wrong passwords take the same time (argon2 against a dummy hash)."""
        if not USER_NAME.fullmatch(name):  # never a user's name: the same cost as a wrong password
            passwords.verify(None, password)
            return None
        with session(self.url) as s:
            u = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
            ok = passwords.verify(u.password_hash if u is not None else None, password)
            if not ok or u is None or u.disabled:
                return None
            return u.name

    def password_token(self, name: str, password: str) -> tuple[str, int] | None:
        """(access token, seconds) for a right name and password of an enabled user, else None."""
        user = self.check_password(name, password)
        return None if user is None else tokens.issue(self.secret, user, self.minutes)

    def session_principal(self, name: str) -> Principal | None:
        """The principal of a signed-in browser session (None: the user is gone or disabled)."""
        p = self._cached("user:" + name, lambda: self._user_principal(name))
        return None if p is None else Principal("session", p.user, None, p.is_admin)

    def register(self, name: str, password: str) -> None:
        """A new user (not an admin) with a password; ValueError with the reason when refused."""
        if not USER_NAME.fullmatch(name):
            raise ValueError("a user name is 1-64 letters, digits, _ . @ - (starting with a letter or digit)")
        digest = passwords.hash_password(password)  # ValueError: too short or too long
        with session(self.url) as s:
            if s.execute(select(User).where(User.name == name)).first():
                raise ValueError("that user name is taken")
            s.add(User(name=name, is_admin=False, password_hash=digest))
