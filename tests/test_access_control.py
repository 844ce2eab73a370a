"""Access control and headers, on a real uWSGI + nginx stack of their own.

The stack here has API keys configured and no models loaded (MODEL_LOADING=off:
cheap to start; an authorised model request then answers 503 not_ready, which
shows it got past the key check). A second nginx from the same templates,
with a low rate and no exempt address, checks the rate limiting.
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests

from conftest import ROOT, free_port, nginx_bin, render_nginx, start_nginx, start_stack, stop_process, wait_port

from app.web.security import CSP, SECURITY_HEADERS

KEY1 = "k1-0123456789abcdef0123"
KEY2 = "k2-fedcba9876543210fedc"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    st = start_stack(tmp_path_factory.mktemp("keyed"), {
        "WORKERS": "1", "THREADS": "4", "MODEL_LOADING": "off", "API_KEYS": f"{KEY1}, {KEY2}",
    })
    yield st
    st.stop()


def assert_error(r: requests.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


PROTECTED = [
    ("post", "/image-64", {"json": {"image": "aGVsbG8="}}),
    ("post", "/image-bin", {"files": {"image": ("a.jpg", b"\xff\xd8", "image/jpeg")}}),
    ("post", "/api/translate", {"json": {"text": "Hello."}}),
    ("get", "/version", {}),
    ("get", "/metrics", {}),
    ("get", "/api/stats", {}),
]


@pytest.mark.parametrize("method,path,kw", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_protected_endpoints_need_a_key(keyed, method, path, kw):
    r = getattr(keyed, method)(path, **kw)
    err = assert_error(r, 401, "missing_api_key")
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="modelserver"'
    assert err["request_id"] == r.headers["X-Request-ID"]
    for headers in ({"Authorization": "Bearer " + KEY1[:-1] + "x"}, {"X-API-Key": KEY2 + "0"},
                    {"Authorization": "Bearer " + KEY1.upper()}, {"X-API-Key": "é" * 22}):
        r = getattr(keyed, method)(path, headers=headers, **kw)
        assert_error(r, 401, "invalid_api_key")
    # Basic (or any other scheme) is no API key
    r = getattr(keyed, method)(path, headers={"Authorization": "Basic " + KEY1}, **kw)
    assert_error(r, 401, "missing_api_key")


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY1}"}, {"authorization": f"bearer  {KEY2}"},
                                     {"X-API-Key": KEY1}, {"X-API-Key": KEY2}])
def test_valid_keys_pass(keyed, headers):
    assert keyed.get("/version", headers=headers).status_code == 200
    assert keyed.get("/api/stats", headers=headers).status_code == 200
    # past the key check: the model is not loaded in this stack, so 503 (not 401)
    r = keyed.post("/api/translate", json={"text": "Hello."}, headers=headers)
    assert_error(r, 503, "not_ready")
    r = keyed.post("/image-64", json={"image": "aGVsbG8="}, headers=headers)
    assert r.status_code in (400, 503)  # base64 of text: rejected before or after the model check


@pytest.mark.parametrize("headers,status", [
    ({"Authorization": "Bearer wrong-token", "X-API-Key": KEY1}, 401),  # a bad token is not outvoted
    ({"Authorization": f"Bearer {KEY1}", "X-API-Key": "wrong-key"}, 401),
    ({"Authorization": "Bearer ", "X-API-Key": KEY1}, 401),  # an empty token
    ({"Authorization": "vf", "X-API-Key": KEY1}, 401),  # not 'Bearer <token>' (schemathesis found it passing)
    ({"X-API-Key": "", "Authorization": f"Bearer {KEY1}"}, 401),
    ({"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": KEY1}, 200),  # a proxy's sign-in: not ours
    ({"Authorization": f"Bearer {KEY2}", "X-API-Key": KEY1}, 200),
])
def test_every_credential_sent_must_be_valid(keyed, headers, status):
    r = keyed.get("/version", headers=headers)
    if status == 401:
        assert_error(r, 401, "invalid_api_key")
    else:
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("path,status", [("/healthz", 200), ("/readyz", 503), ("/openapi.json", 200),
                                         ("/docs", 200), ("/", 200), ("/index", 200), ("/dashboard", 200),
                                         ("/static/style.css", 200), ("/nginx-health", 200)])
def test_public_paths_need_no_key(keyed, path, status):
    assert keyed.get(path).status_code == status


def test_unknown_path_and_wrong_method_are_not_401(keyed):
    assert_error(keyed.get("/api/nope"), 404, "not_found")
    r = keyed.get("/image-64")
    assert_error(r, 405, "method_not_allowed")


def test_openapi_declares_the_key_schemes(keyed):
    spec = keyed.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["paths"]["/api/translate"]["post"]["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in spec["paths"]["/image-64"]["post"]["responses"]


def test_protect_pages_with_the_flask_app(tmp_path):
    """PROTECT_PAGES=1 (the real app, Flask's test client, no models): pages need the key as well."""
    from app import create_app
    from app.config import Config
    keys = tmp_path / "keys"
    keys.write_text(f"# deploy keys\n{KEY1}\n\n{KEY2}  # second\n")
    cfg = Config.from_env({"MODEL_LOADING": "off", "API_KEYS_FILE": str(keys), "PROTECT_PAGES": "1",
                           "PROMETHEUS_MULTIPROC_DIR": ""})
    assert cfg.api_keys == (KEY1, KEY2)
    client = create_app(cfg).test_client()
    r = client.get("/", headers={"Accept": "text/html"})
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("text/html")
    assert client.get("/dashboard", headers={"X-API-Key": KEY2}).status_code == 200
    assert client.get("/healthz").status_code == 200
    cfg_open = Config.from_env({"MODEL_LOADING": "off", "API_KEYS": KEY1, "PROMETHEUS_MULTIPROC_DIR": ""})
    assert create_app(cfg_open).test_client().get("/").status_code == 200


@pytest.mark.parametrize("keys", ["short", "has space in the middle!", "k\u00e9y-0123456789abcdef"])
def test_weak_or_odd_keys_are_refused_at_start(keys):
    from app.config import Config
    with pytest.raises(ValueError):
        Config.from_env({"API_KEYS": keys})


# --- security headers -------------------------------------------------------------------

def _assert_security_headers(r: requests.Response):
    for k, v in SECURITY_HEADERS.items():
        assert r.headers.get(k) == v, (r.url, r.status_code, k, r.headers.get(k))
    assert "'unsafe-inline'" not in r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers.get("Server") == "nginx"  # server_tokens off: no version


def test_security_headers_on_every_kind_of_response(keyed, tmp_path):
    responses = [
        keyed.get("/"),                                   # app HTML page
        keyed.get("/healthz"),                            # app JSON
        keyed.get("/docs"),                               # Swagger UI page
        keyed.get("/api/stats"),                          # app 401
        keyed.get("/api/nope"),                           # app 404
        keyed.get("/static/style.css"),                   # nginx static file
        keyed.get("/static/swagger/swagger-ui-bundle.js"),
        keyed.get("/static/nope.css"),                    # nginx 404
        keyed.get("/nginx-health"),                       # nginx own
        keyed.post("/image-64", data="x" * (3 * 1024 * 1024), headers={"Content-Type": "application/json"}),
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 401, 404, 200, 200, 404, 200, 413]
    for r in responses:
        _assert_security_headers(r)
    assert_error(responses[7], 404, "not_found")
    assert_error(responses[9], 413, "payload_too_large")
    # the nginx snippet and the app agree (one policy)
    snippet = (ROOT / "nginx" / "security-headers.conf.template").read_text()
    for k, v in SECURITY_HEADERS.items():
        assert f'add_header {k} "{v}" always;' in snippet
    assert CSP == SECURITY_HEADERS["Content-Security-Policy"]


def test_templates_have_no_inline_script_or_style():
    for t in (ROOT / "app" / "templates").glob("*.html"):
        html = t.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), t.name
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), t.name
        assert not re.search(r"<style|\sstyle\s*=", html, re.I), t.name


# --- rate limiting ------------------------------------------------------------------------

def _nginx_in_front(keyed, tmp_path, **env_over) -> tuple[subprocess.Popen, str]:
    env = dict(keyed.env)
    port = free_port()
    env.update({"PORT": str(port), "NGINX_RUN_DIR": str(tmp_path / "ng"),
                "NGINX_ERROR_LOG": str(tmp_path / "ng-error.log"), "NGINX_ACCESS_LOG": str(tmp_path / "ng-access.log")})
    env.update(env_over)
    proc = start_nginx(env, tmp_path / "ng.out")
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def test_rate_limit_429_json_per_client(keyed, tmp_path):
    proc, base = _nginx_in_front(keyed, tmp_path, RATE_LIMIT_RPS="2", RATE_LIMIT_BURST="3", RATE_LIMIT_EXEMPT="")
    try:
        s = requests.Session()
        rs = [s.get(base + "/healthz", timeout=10) for _ in range(12)]  # within well under a second
        codes = [r.status_code for r in rs]
        assert codes[:4] == [200] * 4, codes  # 1 + burst of 3 pass at once
        assert codes.count(429) >= 6, codes
        r429 = next(r for r in rs if r.status_code == 429)
        err = assert_error(r429, 429, "too_many_requests")
        assert r429.headers["Retry-After"] == "1" and err["request_id"] == r429.headers["X-Request-ID"]
        _assert_security_headers(r429)
        # static files and nginx's own health check are not limited
        assert all(s.get(base + "/static/style.css", timeout=10).status_code == 200 for _ in range(10))
        time.sleep(1.2)  # the bucket refills at 2 r/s
        assert s.get(base + "/healthz", timeout=10).status_code == 200
    finally:
        stop_process(proc)


def test_rate_limit_exempt_and_off(keyed, tmp_path):
    for over in ({"RATE_LIMIT_RPS": "1", "RATE_LIMIT_BURST": "1", "RATE_LIMIT_EXEMPT": "10.1.2.3 127.0.0.0/8"},
                 {"RATE_LIMIT_RPS": "0", "RATE_LIMIT_BURST": "1", "RATE_LIMIT_EXEMPT": ""}):
        (tmp_path / "x").mkdir(exist_ok=True)
        proc, base = _nginx_in_front(keyed, tmp_path / "x", **over)
        try:
            s = requests.Session()
            codes = {s.get(base + "/healthz", timeout=10).status_code for _ in range(15)}
            assert codes == {200}, (over, codes)
        finally:
            stop_process(proc)
            time.sleep(0.2)
    conf = (tmp_path / "x" / "ng" / "conf" / "modelserver.conf").read_text()
    assert "limit_req zone" not in conf and "limit_req_zone" not in conf  # RATE_LIMIT_RPS=0: no limit at all


@pytest.mark.parametrize("over", [{"RATE_LIMIT_RPS": "fast"}, {"RATE_LIMIT_EXEMPT": "127.0.0.1; evil"}])
def test_render_rejects_bad_rate_settings(keyed, tmp_path, over):
    env = dict(keyed.env, NGINX_RUN_DIR=str(tmp_path / "ng"), **over)
    with pytest.raises(subprocess.CalledProcessError):
        render_nginx(env)


def test_nginx_config_has_server_tokens_off_and_limit(keyed):
    conf = (ROOT / "nginx" / "modelserver.conf.template").read_text()
    assert re.search(r"^server_tokens off;$", conf, re.M)
    rendered = (tmp := keyed.env["NGINX_RUN_DIR"]) and open(f"{tmp}/conf/modelserver.conf").read()
    assert "limit_req zone=perclient burst=40 nodelay;" in rendered
    assert "rate=20r/s" in rendered and "127.0.0.1 1;" in rendered
    r = subprocess.run([nginx_bin(), "-t", "-q", "-e", keyed.env["NGINX_ERROR_LOG"], "-p", tmp, "-c",
                        f"{tmp}/conf/nginx.conf"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- no secrets in the repository ---------------------------------------------------------------

SECRET_PATTERNS = [
    r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----",
    r"\bAKIA[0-9A-Z]{16}\b",                      # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",            # GitHub token
    r"\bxox[baprs]-[A-Za-z0-9-]{10,}",            # Slack token
    r"\bsk-[A-Za-z0-9]{32,}\b",                   # API secret keys of the sk-... kind
]
#: Secrets given values outside the tests (whose keys are made-up test values): quoted
#: literals (code, YAML) and NAME=value lines (shell, .env).
ASSIGNMENTS = [
    r"(?i)\b(?:api[_-]?keys?|secret|password|passwd|token)\b[\"']?\s*[:=]\s*[\"'][A-Za-z0-9+/_.-]{12,}[\"']",
    r"(?m)^\s*(?:export\s+)?[A-Z_]*(?:API_KEYS?|SECRET|PASSWORD|TOKEN)[A-Z_]*=[^\s$\"'{}]{12,}",
]


def test_no_secret_in_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert files
    hits = []
    for f in files:
        p = ROOT / f
        if p.suffix in (".pb", ".png", ".jpg", ".keras", ".model", ".h5", ".index") or not p.is_file() \
                or p.stat().st_size > 2_000_000:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for pat in SECRET_PATTERNS:
            hits += [(f, m.group(0)[:40]) for m in re.finditer(pat, text)]
        if not f.startswith("tests/") and not f.startswith("app/static/swagger/"):
            for pat in ASSIGNMENTS:
                hits += [(f, m.group(0)[:60]) for m in re.finditer(pat, text)]
    assert not hits, hits
