"""Accounts (ACCOUNTS=1) against both databases: SQLite (the default file in RUN_DIR) and a real
PostgreSQL server started here. The real CLI (`python -m app users|keys|db`) creates users and
keys; the Flask app (test client, stub translator) checks them, issues JWTs through the OAuth2
password flow, and refuses what must be refused: revoked keys, disabled users, bad signatures,
`alg: none`, expired tokens, a schema newer than the code."""
from __future__ import annotations

import hashlib
import io
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


def test_token_route_is_in_the_openapi_document(backend):
    c, _ = app_client(backend)
    spec = c.get("/openapi.json").get_json()
    op = spec["paths"]["/auth/token"]["post"]
    form = op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["username", "password"] and op["security"] == []
    assert set(op["responses"]) >= {"200", "400", "429"}
    assert "bearerAuth" in spec["components"]["securitySchemes"]


# --- browser sessions: /login, /logout, /register ----------------------------------------------

def _csrf(c, path="/login") -> str:
    import re
    html = c.get(path).get_data(as_text=True)
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def test_sign_in_pages_with_session_cookie_and_csrf(backend):
    cli(backend, "users", "create", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    c, _ = app_client(backend, PROTECT_PAGES="1")
    # a protected page sends a browser to the sign-in page, and back after
    r = c.get("/dashboard")
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=/dashboard")
    token = _csrf(c)
    cookie = c.get_cookie("ms_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    # no or a wrong CSRF token: refused before any password is looked at
    assert c.post("/login", data={"username": "carol", "password": PASSWORD}).status_code == 400
    assert c.post("/login", data={"username": "carol", "password": PASSWORD, "csrf_token": token + "x"}).status_code == 400
    # wrong password and unknown user: the same page, the same words
    a = c.post("/login", data={"username": "carol", "password": "not it at all", "csrf_token": token})
    b = c.post("/login", data={"username": "nobody", "password": "not it at all", "csrf_token": token})
    assert a.status_code == b.status_code == 401
    assert "Wrong user name or password." in a.get_data(as_text=True) and "Wrong user name or password." in b.get_data(as_text=True)
    r = c.post("/login", data={"username": "carol", "password": PASSWORD, "csrf_token": token, "next": "/dashboard"})
    assert r.status_code == 303 and r.headers["Location"] == "/dashboard"
    page = c.get("/dashboard")
    assert page.status_code == 200 and "carol" in page.get_data(as_text=True)
    # the session signs pages in, never the JSON APIs
    assert translate(c).status_code == 401
    # a new CSRF token after signing in; sign out needs it
    new = _csrf(c, "/dashboard")
    assert new != token
    assert c.post("/logout", data={"csrf_token": token}).status_code == 400
    assert c.post("/logout", data={"csrf_token": new}).status_code == 303
    assert c.get("/dashboard").status_code == 303
    # a disabled user's session stops working
    c.post("/login", data={"username": "carol", "password": PASSWORD, "csrf_token": _csrf(c)})
    assert c.get("/dashboard").status_code == 200
    cli(backend, "users", "disable", "carol")
    assert c.get("/dashboard").status_code == 303


def test_sign_in_refuses_open_redirects_and_hostile_fields(backend):
    cli(backend, "users", "create", "dave", "--password-stdin", stdin=PASSWORD + "\n")
    c, _ = app_client(backend)
    for nxt in ("//evil.example/", "https://evil.example/", "/\\evil", "javascript:alert(1)", "/ok\r\nX: y"):
        token = _csrf(c)
        r = c.post("/login", data={"username": "dave", "password": PASSWORD, "csrf_token": token, "next": nxt})
        assert r.status_code == 303 and r.headers["Location"] == "/", nxt
        c.post("/logout", data={"csrf_token": _csrf(c, "/login")})
    token = _csrf(c)
    for name, pw in (("x" * 5000, "y"), ("' OR 1=1 --", PASSWORD), ("dave\x00", PASSWORD), ("dave\n", PASSWORD),
                     (" dave", PASSWORD), ("", ""), ("dave", "p" * 5000)):
        r = c.post("/login", data={"username": name, "password": pw, "csrf_token": token})
        assert 400 <= r.status_code < 500, (name[:20], r.status_code)


def test_self_registration_is_off_unless_asked_for(backend):
    c, _ = app_client(backend)
    assert c.get("/register").status_code == 404
    c, _ = app_client(backend, ACCOUNTS_REGISTRATION="1")
    token = _csrf(c, "/register")
    r = c.post("/register", data={"username": "erin", "password": "short", "csrf_token": token})
    assert r.status_code == 400 and "8" in r.get_data(as_text=True)
    r = c.post("/register", data={"username": "bad name!", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 400
    r = c.post("/register", data={"username": "erin", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303
    assert "erin" in c.get("/dashboard").get_data(as_text=True)
    c2, _ = app_client(backend, ACCOUNTS_REGISTRATION="1")
    r = c2.post("/register", data={"username": "erin", "password": PASSWORD, "csrf_token": _csrf(c2, "/register")})
    assert r.status_code == 400 and "taken" in r.get_data(as_text=True)
    # a registered user is a plain user: a token, no admin
    r = c2.post("/auth/token", data={"username": "erin", "password": PASSWORD})
    assert r.status_code == 200
    assert '"admin": false' in cli(backend, "users", "list").stdout


def test_forms_of_a_signed_in_browser_need_the_csrf_token(backend):
    """With PROTECT_PAGES=1 the session signs in the translator's form too: its POST must carry
    the page's CSRF token (another site's form gets 400, never a translation)."""
    import re
    cli(backend, "users", "create", "frank", "--password-stdin", stdin=PASSWORD + "\n")
    c, _ = app_client(backend, PROTECT_PAGES="1")
    c.post("/login", data={"username": "frank", "password": PASSWORD, "csrf_token": _csrf(c)})
    html = c.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    assert c.post("/result", data={"English": "hi"}).status_code == 400
    assert c.post("/result", data={"English": "hi", "csrf_token": token}).status_code == 200


# --- the inference history -------------------------------------------------------------------

def _records(c, credential, **params):
    r = c.get("/api/history", query_string=params, headers={"Authorization": "Bearer " + credential})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def _wait_written(app, timeout=15.0):
    w = app.extensions["history"]
    deadline = time.time() + timeout
    while w.pending() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.8)  # the writer's last batch


def test_history_records_every_inference_and_shows_each_user_their_own(backend):
    cli(backend, "users", "create", "gina", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    cli(backend, "users", "create", "hank", stdin="")
    k_gina = cli(backend, "keys", "create", "gina").stdout.strip()
    k_hank = cli(backend, "keys", "create", "hank").stdout.strip()
    c, app = app_client(backend)
    for i in range(3):
        assert c.post("/api/translate", json={"text": f"hello {i}"}, headers={"X-API-Key": k_hank}).status_code == 200
    assert c.post("/api/translate", json={"texts": ["a", "bc"]}, headers={"X-API-Key": k_gina}).status_code == 200
    assert c.post("/api/translate", json={"text": 5}, headers={"X-API-Key": k_hank}).status_code == 400
    _wait_written(app)
    mine = _records(c, k_hank)["records"]
    assert [r["status"] for r in mine] == [400, 200, 200, 200] and {r["user"] for r in mine} == {"hank"}
    r = mine[1]
    assert r["endpoint"] == "translate_api" and r["model"] == "translator" and r["credential"] == "api_key"
    assert r["input"]["text"] == {"count": 1, "chars": 7, "sha256": hashlib.sha256(b"hello 2").hexdigest()}
    assert r["input_text"] is None and r["output"]["translation"] and r["latency_ms"] > 0 and len(r["request_id"]) >= 16
    everyone = _records(c, k_gina)["records"]  # an admin sees all
    assert len(everyone) == 5 and {x["user"] for x in everyone} == {"gina", "hank"}
    assert [x["user"] for x in _records(c, k_gina, user="gina")["records"]] == ["gina"]
    # cursor pagination, newest first, no record twice
    seen, cursor = [], None
    while True:
        page = _records(c, k_hank, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [x["id"] for x in page["records"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 4
    assert _records(c, k_hank, model="nose_tracker")["records"] == []
    for bad in ({"limit": "0"}, {"limit": "101"}, {"cursor": "x"}, {"model": "m" * 65}, {"limit": "' OR 1=1"}):
        assert c.get("/api/history", query_string=bad, headers={"X-API-Key": k_hank}).status_code == 400, bad
    # the page: the signed-in user's records
    c.post("/login", data={"username": "gina", "password": PASSWORD, "csrf_token": _csrf(c)})
    html = c.get("/history").get_data(as_text=True)
    assert "translate_api" in html and "hank" in html


def test_history_full_keeps_text_and_pictures_for_their_owner_only(backend, tmp_path):
    cli(backend, "users", "create", "ivy", "--password-stdin", stdin=PASSWORD + "\n")
    cli(backend, "users", "create", "joe", "--password-stdin", stdin=PASSWORD + "\n")
    key = cli(backend, "keys", "create", "ivy").stdout.strip()
    c, app = app_client(backend, HISTORY="full", HISTORY_DIR=str(tmp_path / "pics"))
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    c.post("/api/translate", json={"text": "keep me"}, headers={"X-API-Key": key})
    c.post("/image-bin", data={"image": (io.BytesIO(png), "me.png")}, headers={"X-API-Key": key},
           content_type="multipart/form-data")
    _wait_written(app)
    recs = _records(c, key)["records"]
    assert recs[1]["input_text"] == "keep me"
    pic = recs[0]
    assert pic["endpoint"] == "image_bin" and pic["input"]["files"][0]["sha256"] == hashlib.sha256(png).hexdigest()
    assert pic["image"]
    c.post("/login", data={"username": "ivy", "password": PASSWORD, "csrf_token": _csrf(c)})
    assert c.get(pic["image"]).data == png
    c2, _ = app_client(backend, HISTORY="full", HISTORY_DIR=str(tmp_path / "pics"))
    c2.post("/login", data={"username": "joe", "password": PASSWORD, "csrf_token": _csrf(c2)})
    assert c2.get(pic["image"]).status_code == 404  # another user's picture: not found
    assert "keep me" not in c2.get("/history").get_data(as_text=True)


def test_history_off_and_purge(backend):
    cli(backend, "users", "create", "kim", stdin="")
    key = cli(backend, "keys", "create", "kim").stdout.strip()
    c, app = app_client(backend, HISTORY="off")
    assert "history" not in app.extensions and c.get("/api/history", headers={"X-API-Key": key}).status_code == 404
    c, app = app_client(backend)
    for _ in range(3):
        c.post("/api/translate", json={"text": "x"}, headers={"X-API-Key": key})
    _wait_written(app)
    from sqlalchemy import update

    from app.accounts.db import session as db_session
    from app.accounts.models import InferenceRecord
    ids = [r["id"] for r in _records(c, key)["records"]]
    with db_session(app.extensions["accounts"].url) as s:
        s.execute(update(InferenceRecord).where(InferenceRecord.id == min(ids))
                  .values(created_at=InferenceRecord.created_at - __import__("datetime").timedelta(days=40)))
    assert "deleted 1 inference records older than 30 days" in cli(backend, "history", "purge").stdout
    assert len(_records(c, key)["records"]) == 2


def test_history_writes_never_fail_requests_and_a_graceful_close_loses_nothing(backend):
    from app.accounts import history
    c, app = app_client(backend, API_KEYS="envkey-0123456789abcdef")
    w = app.extensions["history"]
    dropped = history.DROPPED.labels("database")._value.get()
    good_url, w.url = w.url, "postgresql+psycopg://nobody@127.0.0.1:1/none"  # the database is unreachable
    for _ in range(5):
        assert c.post("/api/translate", json={"text": "x"}, headers={"X-API-Key": "envkey-0123456789abcdef"}).status_code == 200
    deadline = time.time() + 20
    while history.DROPPED.labels("database")._value.get() < dropped + 5 and time.time() < deadline:
        time.sleep(0.1)
    assert history.DROPPED.labels("database")._value.get() == dropped + 5  # counted, never raised
    w.url = good_url
    written = history.WRITTEN._value.get()
    for i in range(300):
        w.offer(history.record(None, "test", None, None, f"r{i}", 1.0, 200, {}, None, None, "meta"))
    w.close()  # what a graceful reload does: every queued record is written first
    assert history.WRITTEN._value.get() == written + 300


def test_history_survives_a_postgresql_restart(postgres, tmp_path, monkeypatch):
    """Requests under load while PostgreSQL restarts: none fails; every record is written or
    counted as dropped."""
    import threading

    from app.accounts import history
    monkeypatch.setattr(service, "CACHE_SECONDS", 0.0)
    env = {"RUN_DIR": str(tmp_path / "run"), "DATABASE_URL": postgres.create_database(f"r{time.monotonic_ns()}")}
    c, app = app_client(env, API_KEYS="envkey-0123456789abcdef")
    w = app.extensions["history"]
    written0, dropped0 = history.WRITTEN._value.get(), sum(
        history.DROPPED.labels(r)._value.get() for r in ("database", "queue_full"))
    statuses, stop = [], threading.Event()

    def load():
        cl = app.test_client()
        while not stop.is_set():
            statuses.append(cl.post("/api/translate", json={"text": "x"}, headers={"X-API-Key": "envkey-0123456789abcdef"}).status_code)
            time.sleep(0.01)
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    postgres.restart()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    w.close()
    written = history.WRITTEN._value.get() - written0
    dropped = sum(history.DROPPED.labels(r)._value.get() for r in ("database", "queue_full")) - dropped0
    assert statuses and set(statuses) == {200}, set(statuses)
    assert written + dropped == len(statuses), (written, dropped, len(statuses))
    print(f"\n[history] {len(statuses)} requests during a PostgreSQL restart: 0 failed, {written:.0f} records "
          f"written, {dropped:.0f} dropped (counted)")
