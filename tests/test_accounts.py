"""Accounts (ACCOUNTS=1) against both databases: SQLite (the default file in RUN_DIR) and a real
PostgreSQL server started here. The real CLI (`python -m app users|keys|db`) creates users and
keys; the Flask app (test client, stub translator) checks them, issues JWTs through the OAuth2
password flow, and refuses what must be refused: revoked keys, disabled users, bad signatures,
`alg: none`, expired tokens, a schema newer than the code."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import jwt
import pytest

from app.accounts import passwords, schema, service
from conftest import ROOT
from pg import Postgres
from test_app_unit import make_app, stub_translator

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path, postgres, monkeypatch):
    """env for the CLI and the app: a fresh database of the given kind."""
    env = {"RUN_DIR": str(tmp_path / "run")}
    if request.param == "postgresql":
        env["DATABASE_URL"] = postgres.create_database(f"t{os.getpid()}_{time.monotonic_ns()}")
    monkeypatch.setattr(service, "CACHE_SECONDS", 0.0)  # revocation seen at once
    return env


def cli(env, *args, stdin="", check=True):
    r = subprocess.run([sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, **env}, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def app_client(env, **extra):
    _, reg, app = make_app(ACCOUNTS="1", **env, **extra)
    stub_translator(reg)
    return app.test_client(), app


def translate(c, credential=None, header="Authorization"):
    headers = {}
    if credential:
        headers[header] = ("Bearer " + credential) if header == "Authorization" else credential
    return c.post("/api/translate", json={"text": "hi"}, headers=headers)


def test_keys_users_and_tokens(backend):
    env = backend
    assert "created user alice (admin)" in cli(env, "users", "create", "alice", "--admin", "--password-stdin",
                                               stdin=PASSWORD + "\n").stdout
    cli(env, "users", "create", "bob", stdin="")  # no password: keys only
    key = cli(env, "keys", "create", "bob", "--label", "ci", "--rpm", "60").stdout.strip()
    assert key.startswith("msk_") and len(key) > 40
    listed = cli(env, "keys", "list").stdout
    assert '"user": "bob"' in listed and '"rpm": 60' in listed and key not in listed  # never the key itself
    c, _ = app_client(env)

    r = translate(c)
    assert r.status_code == 401 and r.json["error"]["code"] == "missing_api_key"
    assert "POST /auth/token" in r.json["error"]["message"]
    assert translate(c, key).status_code == 200
    assert translate(c, key, header="X-API-Key").status_code == 200
    assert translate(c, key[:-1] + ("A" if key[-1] != "A" else "B")).json["error"]["code"] == "invalid_api_key"
    assert c.get("/healthz").status_code == 200  # public endpoints stay public

    # the OAuth2 password flow
    r = c.post("/auth/token", data={"username": "alice", "password": PASSWORD, "grant_type": "password"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json
    assert body["token_type"] == "bearer" and body["expires_in"] == 20 * 60
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 1200 and len(claims["jti"]) == 32
    assert translate(c, body["access_token"]).status_code == 200
    # wrong password and unknown user: the same answer
    wrong = c.post("/auth/token", data={"username": "alice", "password": "not it at all"})
    unknown = c.post("/auth/token", data={"username": "nobody", "password": "not it at all"})
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json == unknown.json == {"error": "invalid_grant", "error_description": "wrong user name or password"}
    assert c.post("/auth/token", data={"username": "bob", "password": "anything at all"}).status_code == 400
    assert c.post("/auth/token", data={"username": "alice"}).json["error"] == "invalid_request"
    assert c.post("/auth/token", data={"username": "alice", "password": PASSWORD,
                                       "grant_type": "client_credentials"}).json["error"] == "unsupported_grant_type"
    assert c.post("/auth/token", json={"username": "alice", "password": PASSWORD}).json["error"] == "invalid_request"

    # revoking a key and disabling a user take effect
    key_id = [ln for ln in cli(env, "keys", "list").stdout.splitlines() if '"label": "ci"' in ln][0].split(",")[0]
    cli(env, "keys", "revoke", key_id.split(":")[1].strip())
    assert translate(c, key).json["error"]["code"] == "invalid_api_key"
    cli(env, "users", "disable", "alice")
    r = translate(c, body["access_token"])
    assert r.status_code == 401 and r.json["error"]["code"] == "invalid_token"
    assert "unknown or disabled" in r.json["error"]["message"]
    assert c.post("/auth/token", data={"username": "alice", "password": PASSWORD}).status_code == 400
    cli(env, "users", "enable", "alice")
    cli(env, "users", "set-password", "alice", "--password-stdin", stdin="another long password\n")
    assert c.post("/auth/token", data={"username": "alice", "password": PASSWORD}).status_code == 400
    assert c.post("/auth/token", data={"username": "alice", "password": "another long password"}).status_code == 200


def test_forged_and_expired_tokens_are_refused(backend):
    env = backend
    cli(env, "users", "create", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    c, app = app_client(env)
    secret = app.extensions["accounts"].secret
    now = int(time.time())
    good = {"sub": "carol", "iat": now, "exp": now + 60, "jti": "a" * 32}
    assert translate(c, jwt.encode(good, secret, algorithm="HS256")).status_code == 200
    cases = {
        "bad signature": jwt.encode(good, b"x" * 40, algorithm="HS256"),
        "alg none": jwt.encode(good, None, algorithm="none"),
        "expired": jwt.encode({**good, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256"),
        "no jti": jwt.encode({k: v for k, v in good.items() if k != "jti"}, secret, algorithm="HS256"),
        "unknown user": jwt.encode({**good, "sub": "mallory"}, secret, algorithm="HS256"),
        "garbage": "a.b.c",
    }
    for name, token in cases.items():
        r = translate(c, token)
        assert r.status_code == 401 and r.json["error"]["code"] == "invalid_token", name
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "expired" in translate(c, cases["expired"]).json["error"]["message"]


def test_environment_keys_keep_working_beside_accounts(backend):
    env_key = "environment-key-0123456789"
    c, _ = app_client(backend, API_KEYS=env_key)
    assert translate(c, env_key).status_code == 200
    assert translate(c).status_code == 401


def test_libretranslate_api_key_field_takes_database_keys(backend):
    env = backend
    cli(env, "users", "create", "dave", stdin="")
    key = cli(env, "keys", "create", "dave").stdout.strip()
    c, _ = app_client(env)
    ok = c.post("/translate", json={"q": "Hello.", "source": "en", "target": "es", "api_key": key})
    assert ok.status_code == 200, ok.json
    bad = c.post("/translate", json={"q": "Hello.", "source": "en", "target": "es", "api_key": key + "x"})
    assert bad.status_code == 403 and bad.json["error"] == "Invalid API key"
    assert c.post("/translate", json={"q": "Hello.", "source": "en", "target": "es"}).status_code == 403


def test_a_newer_schema_refuses_to_start(backend):
    env = backend
    cli(env, "db", "upgrade")
    assert cli(env, "db", "current").stdout.startswith(schema.head())
    from sqlalchemy import text
    from app.accounts.db import database_url, engine_for
    url = database_url({**os.environ, **env})
    with engine_for(url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(schema.SchemaTooNew, match="revision 9999, newer than this code knows"):
        make_app(ACCOUNTS="1", **env)
    r = cli(env, "users", "list", check=False)
    assert r.returncode != 0 and "newer than this code knows" in r.stderr


def test_user_names_and_passwords_are_checked(backend):
    env = backend
    for bad in ("", "_x", "a b", "x" * 65, "semi;colon"):
        r = cli(env, "users", "create", bad, stdin="", check=False)
        assert r.returncode != 0 and "user name" in r.stderr, bad
    r = cli(env, "users", "create", "erin", "--password-stdin", stdin="short\n", check=False)
    assert r.returncode != 0 and "8 to 1024 characters" in r.stderr
    cli(env, "users", "create", "erin", stdin="")
    assert "exists" in cli(env, "users", "create", "erin", stdin="", check=False).stderr
    assert "at least 1" in cli(env, "keys", "create", "erin", "--rpm", "0", check=False).stderr
    assert "no user" in cli(env, "keys", "create", "nobody", check=False).stderr


def test_unknown_user_costs_an_argon2_verification(monkeypatch):
    """No early exit for an unknown user: the dummy hash is verified, as for a wrong password."""
    calls, real = [], passwords._hasher
    passwords._dummy()  # made before the spy (made on first use)

    class Spy:
        def verify(self, h, p):
            calls.append(h)
            return real.verify(h, p)

    monkeypatch.setattr(passwords, "_hasher", Spy())
    assert passwords.verify(None, "whatever password") is False
    stored = real.hash("the right password")
    assert passwords.verify(stored, "a wrong password") is False
    assert calls == [passwords._dummy(), stored]


def test_quotas_are_exact_across_workers(backend):
    """Two apps on one database stand for two workers: requests per minute and characters per
    day are counted once across both, answered 429 with Retry-After when used up."""
    env = backend
    cli(env, "users", "create", "frank", stdin="")
    rpm_key = cli(env, "keys", "create", "frank", "--rpm", "5").stdout.strip()
    chars_key = cli(env, "keys", "create", "frank", "--chars-per-day", "30").stdout.strip()
    (c1, _), (c2, _) = app_client(env), app_client(env)
    codes = [translate(c, rpm_key).status_code for c in (c1, c2, c1, c2, c1, c2, c1)]
    if codes[:5] != [200] * 5:  # a minute boundary passed during the first requests: once more
        codes = [translate(c, rpm_key).status_code for c in (c1, c2, c1, c2, c1, c2, c1)]
    assert codes == [200] * 5 + [429, 429]
    r = translate(c2, rpm_key)
    assert r.json["error"]["code"] == "quota_exceeded" and "5 requests per minute" in r.json["error"]["message"]
    lt = c1.post("/translate", json={"q": "Hi.", "source": "en", "target": "es", "api_key": rpm_key})
    assert lt.status_code == 429  # LibreTranslate's api_key counts against the same quota
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.json["error"]["retry_after"] == int(r.headers["Retry-After"])

    def chars(c, text):
        return c.post("/api/translate", json={"text": text}, headers={"Authorization": "Bearer " + chars_key})

    assert chars(c1, "x" * 20).status_code == 200
    assert chars(c2, "y" * 10).status_code == 200  # 30 of 30
    r = chars(c1, "z")
    assert r.status_code == 429 and "30 characters per day" in r.json["error"]["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 86400
    assert chars(c2, "").status_code == 200  # nothing to translate costs nothing
    # LibreTranslate counts the same characters
    lt = c1.post("/translate", json={"q": "Hi.", "source": "en", "target": "es", "api_key": chars_key})
    assert lt.status_code == 429


def test_sign_in_attempts_are_limited_per_user_and_per_address(backend, monkeypatch):
    env = backend
    cli(env, "users", "create", "gina", "--password-stdin", stdin=PASSWORD + "\n")
    monkeypatch.setattr(service, "LOGIN_PER_USER", 3)
    monkeypatch.setattr(service, "LOGIN_PER_ADDRESS", 5)
    c, _ = app_client(env)

    def attempt(name, password="wrong password!", addr="10.0.0.1"):
        return c.post("/auth/token", data={"username": name, "password": password},
                      environ_base={"REMOTE_ADDR": addr})

    got = [attempt("gina").status_code for _ in range(3)]
    r = attempt("gina", PASSWORD)  # the right password, but the user's attempts are used up
    assert got == [400, 400, 400] and r.status_code == 429, got
    assert r.json["error"] == "quota_exceeded" and int(r.headers["Retry-After"]) >= 1
    assert attempt("someone", addr="10.0.0.1").status_code == 400   # 5th attempt from this address
    assert attempt("another", addr="10.0.0.1").status_code == 429   # the address is used up too
    assert attempt("another", addr="10.0.0.2").status_code == 400   # another address is not
