"""The published contract: /openapi.json describes the real API, /docs serves Swagger UI
from local files, and schemathesis, run against the document through nginx for a
bounded time, finds no 5xx and no response that breaks the document.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

#: Every path of the document: each model's own routes, ours, and the Open Inference Protocol's.
PATHS = ["/image-64", "/image-bin", "/api/translate", "/healthz", "/readyz", "/version", "/api/stats",
         "/api/stats/history", "/metrics",
         "/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index",
         "/v2/models/{model}", "/v2/models/{model}/ready", "/v2/models/{model}/infer",
         "/v2/models/{model}/versions/{version}", "/v2/models/{model}/versions/{version}/ready",
         "/v2/models/{model}/versions/{version}/infer",
         "/translate", "/languages", "/detect", "/frontend/settings", "/translate_file", "/download_file/{filename}"]
#: LibreTranslate's routes (app/web/libretranslate.py): their errors are its {"error": "..."}.
LIBRETRANSLATE_PATHS = {"/translate", "/languages", "/detect", "/frontend/settings", "/translate_file",
                        "/download_file/{filename}"}

SCHEMATHESIS_SECONDS = int(os.environ.get("SCHEMATHESIS_SECONDS", "20"))

#: Every check but positive_data_acceptance: a schema cannot say "a decodable image",
#: so schema-valid random bytes are rightly refused with 400.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def test_openapi_document(stack):
    r = stack.get("/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == set(PATHS)
    model = spec["paths"]["/v2/models/{model}/infer"]["post"]["parameters"][0]
    assert model["schema"]["enum"] == ["face_detector", "nose_tracker", "translator"]
    # the document states the limits this deployment enforces
    tr = spec["paths"]["/api/translate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    beam = tr[0]["properties"]["beam"]
    assert (beam["minimum"], beam["maximum"]) == (1, 4)
    assert tr[0]["properties"]["text"]["maxLength"] == 5000
    assert tr[1]["properties"]["texts"]["maxItems"] == 32
    assert "securitySchemes" not in spec["components"]  # no API keys in this stack
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for status, resp in op["responses"].items():
                if status != "200":
                    shape = "V2Error" if path.startswith("/v2") or path in LIBRETRANSLATE_PATHS else "Error"
                    assert resp["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{shape}"}
    # the example image of /image-64 really works
    ex = spec["paths"]["/image-64"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    r = stack.post("/image-64", json={"image": ex["properties"]["image"]["example"]})
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (8, 8)


def test_swagger_ui_from_local_files(stack):
    r = stack.get("/docs")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    html = r.text
    srcs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith("/static/swagger/") for s in srcs), srcs  # no CDN
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # no inline script
    for s in srcs:
        a = stack.get(s)
        assert a.status_code == 200
        assert a.content == (ROOT / "app" / s.lstrip("/")).read_bytes()
    init = (ROOT / "app" / "static" / "swagger" / "init.js").read_text()
    assert 'url: "/openapi.json"' in init
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_swagger_ui_renders_under_the_csp(stack, tmp_path):
    """A real browser (headless Chromium, when installed) renders every operation from
    /openapi.json with the strict CSP: the UI needs nothing inline and nothing remote."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chrome:
        pytest.skip("no Chromium installed: the static checks of test_swagger_ui_from_local_files still ran")
    out = subprocess.run([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", stack.url("/docs")], capture_output=True, text=True, timeout=120)
    dom = out.stdout
    paths = re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom)
    assert sorted(paths) == sorted(PATHS), (paths, out.stderr[-2000:])
    assert "Content Security Policy" not in out.stderr, out.stderr[-3000:]


def run_schemathesis(stack, tmp_path, headers: dict | None = None) -> int:
    """Bounded fuzzing of every operation of the stack's document, through nginx: every check
    passes, nothing crashed or was recycled, nginx logged no 5xx. Returns the cases run."""
    st = os.path.join(os.path.dirname(sys.executable), "st")
    report = tmp_path / "junit.xml"
    # one worker: schemathesis' worker threads build ASTs at once, and CPython 3.11 before 3.11.8
    # can fail that with "SystemError: AST constructor recursion depth mismatch" (gh-106905)
    cmd = [st, "run", stack.url("/openapi.json"), "--max-time", str(SCHEMATHESIS_SECONDS), "--workers", "1",
           *CHECKS, "--request-timeout", "60", "--suppress-health-check", "all",
           "--report", "junit", "--report-junit-path", str(report), "--no-color"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    pids = stack.worker_pids()
    log_start = os.path.getsize(stack.env["NGINX_ACCESS_LOG"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SCHEMATHESIS_SECONDS + 120, cwd=tmp_path,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    out = proc.stdout + proc.stderr
    m = re.search(r"(\d+) generated, (\d+) passed", out)
    assert proc.returncode == 0 and m, out[-6000:]
    generated, passed = int(m.group(1)), int(m.group(2))
    assert generated == passed and generated >= 100, out[-3000:]
    # nothing crashed or was recycled, and nginx logged no 5xx for the whole run
    assert stack.worker_pids() == pids
    assert stack.get("/readyz").status_code == 200
    with open(stack.env["NGINX_ACCESS_LOG"], "rb") as fh:
        fh.seek(log_start)
        statuses = re.findall(rb'"status":(\d+)', fh.read())
    assert len(statuses) >= generated and not [s for s in statuses if s.startswith(b"5")]
    return generated


def test_schemathesis_finds_no_5xx(stack, tmp_path):
    """Bounded fuzzing of every operation in the document, through nginx."""
    generated = run_schemathesis(stack, tmp_path)
    print(f"\n[schemathesis] {generated} cases in {SCHEMATHESIS_SECONDS}s, 0 failures")
