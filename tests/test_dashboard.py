"""The dashboard's charts and their data (app/serving/history.py, GET /api/stats/history), the
favicon, errors of static/unmatched paths counted apart from the API's, start.sh's
$RUN_DIR/stack.env, and one check on the real stack: the history is exact across uWSGI
workers and headless Chromium draws the charts under the strict CSP."""
from __future__ import annotations

import html as htmlmod
import http.server
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, b64, skip_or_fail, synthetic_face

from app.serving import history, metrics

STATIC = ROOT / "app" / "static"


# --- the series: pure arithmetic on stored samples ------------------------------------

def _sample(t, requests, items, calls, buckets):
    return {"t": t, "r": requests, "m": {"nose": {"1.0": {"n": items, "c": calls, "b": buckets}}}}


def test_series_rates_percentiles_errors_and_resets():
    s0 = _sample(1000.0, {"image_64": {"200": 10}}, 10, 10, {"0.01": 5, "0.1": 10, "+Inf": 10})
    s1 = _sample(1060.0, {"image_64": {"200": 70, "400": 2}, "unmatched": {"404": 3}, "static": {"404": 1}},
                 130, 70, {"0.01": 35, "0.1": 70, "+Inf": 70})
    s2 = _sample(1120.0, {"image_64": {"200": 6}}, 6, 6, {"0.01": 0, "0.1": 6, "+Inf": 6})  # counters reset
    now = _sample(1150.0, {"image_64": {"200": 36, "503": 1}}, 36, 30, {"0.01": 0, "0.1": 30, "+Inf": 30})
    h = history.series([s0, s1, s2], now, minutes=60, model_of={"image_64": "nose"}, models=["nose", "other"])
    assert h["t"] == [1060.0, 1120.0, 1150.0] and h["dt"] == [60.0, 60.0, 30.0] and h["partial_last"]
    m = h["models"]["nose"]
    assert m["items_per_s"] == [2.0, 0.1, 1.0]
    assert m["calls_per_s"] == [1.0, 0.1, 0.8]
    assert m["requests_per_s"] == [round(62 / 60, 4), 0.1, round(31 / 30, 4)]
    assert (m["items"], m["calls"], m["requests"]) == (120 + 6 + 30, 60 + 6 + 24, 62 + 6 + 31)
    expected_p50 = metrics.quantile_from_buckets([(0.01, 30), (0.1, 60), (float("inf"), 60)], 0.5) * 1000
    assert m["p50_ms"][0] == round(expected_p50, 2)
    assert m["p99_ms"][1] == round(metrics.quantile_from_buckets([(0.01, 0), (0.1, 6), (float("inf"), 6)], 0.99)
                                   * 1000, 2)
    assert h["models"]["other"]["items_per_s"] == [0.0, 0.0, 0.0]  # a registered model without data
    assert h["models"]["other"]["p50_ms"] == [None, None, None]
    # 4xx/5xx per interval: the API's apart from static files and unmatched paths
    assert h["errors"] == {"api": {"400": [2, 0, 0], "503": [0, 0, 1]}, "other": {"404": [4, 0, 0]}}
    assert h["error_totals"] == {"api": {"400": 2, "503": 1}, "other": {"404": 4}}
    assert h["requests"] == 66 + 6 + 31
    # the window: intervals that end inside the last minute only
    h1 = history.series([s0, s1, s2], now, minutes=1)
    assert h1["t"] == [1120.0, 1150.0]
    # a live sample a few seconds after the last stored one ends the interval before (no
    # interval of 2 s, whose rate would be noise), and the totals still count up to now
    h2 = history.series([s0, s1, s2], dict(now, t=1122.0), minutes=60)
    assert h2["t"] == [1060.0, 1122.0] and h2["dt"] == [60.0, 62.0] and h2["partial_last"]
    assert h2["requests"] == h["requests"]


# --- the stores ------------------------------------------------------------------------

def test_memory_store_one_sample_a_minute_and_a_zero_baseline():
    st = history.MemoryStore()
    assert history.maybe_sample(st, now=120.5, started=10.0)
    assert not history.maybe_sample(st, now=150.0)          # same minute
    assert history.maybe_sample(st, now=181.0)
    samples = st.read_since(0)
    assert [s["t"] for s in samples] == [10.0, 120.5, 181.0] and samples[0]["zero"]
    assert [s["t"] for s in st.read_since(150)] == [120.5, 181.0]  # and the baseline before


def _race(directory, barrier, now):
    barrier.wait(10)
    history.maybe_sample(history.FileStore(directory), now=now, started=now - 100)


def test_file_store_one_sample_a_minute_across_processes(tmp_path):
    """Several processes (the uWSGI workers) try at once: one sample, whatever the number."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    now = (time.time() // 60) * 60 + 5
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, now)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = (tmp_path / history.FILE_NAME).read_text().splitlines()
    assert [json.loads(ln)["t"] for ln in lines] == [now - 100, now]
    # prometheus_client's multiprocess collector reads *.db files only
    assert not list(tmp_path.glob("*.db"))


def test_file_store_drops_samples_past_the_retention(tmp_path):
    st = history.FileStore(str(tmp_path))
    t0 = 1_000_000.0
    with st.locked():
        for i in range(0, history.RETENTION_S + 2 * 3600, 600):
            st.append({"t": t0 + i, "r": {}, "m": {}})
    kept = st.read_since(0)
    assert kept[-1]["t"] - kept[0]["t"] <= history.RETENTION_S + 3600
    assert kept[0]["t"] > t0 and st.last()["t"] == kept[-1]["t"]


_CHILD = textwrap.dedent("""
    import sys, time
    from app.serving import history, metrics
    what, now = sys.argv[1], float(sys.argv[2])
    if what == "a":
        for _ in range(5):
            metrics.observe_request("image_64", "POST", 200, 0.01)
            metrics.ITEMS.labels("nose", "1.0").inc()
            metrics.INFERENCE.labels("nose", "1.0").observe(0.004)
        history.maybe_sample(now=now - 120, started=now - 180)
    elif what == "b":
        for _ in range(7):
            metrics.observe_request("image_64", "POST", 200, 0.01)
            metrics.ITEMS.labels("nose", "1.0").inc(2)
            metrics.INFERENCE.labels("nose", "1.0").observe(0.04)
        metrics.observe_request("unmatched", "GET", 404, 0.001)
        metrics.observe_request("image_64", "POST", 400, 0.001)
    else:
        import json
        print(json.dumps(history.history(60, {"image_64": "nose"}, ["nose"])))
""")


def test_history_is_exact_across_processes(tmp_path):
    """prometheus_client multiprocess files as under uWSGI: what exited processes counted is in
    the history read by a third one."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    now = str(time.time())

    def child(what):
        return subprocess.run([sys.executable, "-c", _CHILD, what, now], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=True).stdout

    child("a")
    child("b")
    h = json.loads(child("read"))
    assert h["store"]["kind"] == "file" and h["store"]["where"] == str(tmp_path / history.FILE_NAME)
    assert len(h["t"]) == 2  # server start -> a's sample -> the reader's sample
    m = h["models"]["nose"]
    assert (m["items"], m["calls"], m["requests"]) == (5 + 14, 12, 13)
    assert m["p50_ms"][0] is not None and m["p50_ms"][0] <= 5 and m["p99_ms"][1] > 20
    assert h["error_totals"] == {"api": {"400": 1}, "other": {"404": 1}}
    assert h["requests"] == 14


# --- the app (Flask test client) -----------------------------------------------------

@pytest.fixture
def client(monkeypatch):
    from app import create_app
    from app.config import Config
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    st = history.MemoryStore()
    monkeypatch.setattr(history, "_memory", st)
    app = create_app(Config.from_env({"MODEL_LOADING": "off", "PROMETHEUS_MULTIPROC_DIR": ""}))
    c = app.test_client()
    st.append(history.take_sample(time.time() - 61))  # the previous minute's sample
    return c


def test_history_endpoint_counts_every_request_and_splits_errors(client):
    before = client.get("/api/stats").json["metrics"]
    for path in ["/nope", "/nope/deeper", "/api/nope", "/static/nope.css", "/static/nope.js", "/favicon.ico",
                 "/api/stats/history?minutes=0", "/healthz"]:
        client.get(path)
    r = client.get("/api/stats/history?minutes=60")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    h = r.json
    assert h["store"]["kind"] == "memory" and not h["store"]["multiprocess"]
    assert h["error_totals"] == {"api": {"400": 1}, "other": {"404": 5}}
    assert h["requests"] == 1 + 8  # /api/stats, the 8 above; not the history request itself
    assert set(h["models"]) == {"face_detector", "nose_tracker", "translator"} and h["non_api_labels"] == ["static", "unmatched"]
    after = client.get("/api/stats").json["metrics"]
    assert after["errors_total"] - before["errors_total"] == 1  # the 400 only
    assert after["errors_other_total"] - before["errors_other_total"] == 5
    assert after["errors_other_by_status"]["404"] - before.get("errors_other_by_status", {}).get("404", 0) == 5
    assert after["counts"]["static"] - before["counts"].get("static", 0) == 3  # favicon.ico is a static file


@pytest.mark.parametrize("minutes, status", [("1", 200), ("1440", 200), ("0", 400), ("1441", 400), ("x", 400),
                                              ("", 400)])
def test_history_minutes_parameter(client, minutes, status):
    r = client.get(f"/api/stats/history?minutes={minutes}")
    assert r.status_code == status
    if status == 400:
        assert r.json["error"]["code"] == "invalid_parameter"
    else:
        assert r.json["minutes"] == int(minutes)


def test_dashboard_carries_the_charts_under_the_csp(client):
    client.get("/nope")
    client.get("/api/stats/history?minutes=0")
    r = client.get("/dashboard")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    # the ids of the tables and tiles are kept
    for id_ in ("count-errors", "count-total", "count-errors-other", "model-nose_tracker", "model-translator",
                "row-v2_infer", "count-v2_infer", "history", "errors-by-status"):
        assert f'id="{id_}"' in page, id_
    m = re.search(r"""<section[^>]+id="history" data-history='([^']*)'""", page)
    h = json.loads(htmlmod.unescape(m.group(1)))
    assert h["minutes"] == 60 and h["error_totals"]["other"]["404"] >= 1 and h["error_totals"]["api"]["400"] >= 1
    assert re.search(r'<tr id="errors-404"><th scope="row">404</th>\s*<td class="num" data-field="api">0</td>\s*'
                     r'<td class="num" data-field="other">[1-9]', page)
    for name in ("nose_tracker", "translator"):
        for kind in ("throughput", "latency"):
            assert f'data-chart="{kind}" data-model="{name}"' in page
    assert 'data-chart="errors"' in page
    # nothing inline, nothing remote: one local script, the favicons
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script src="/static/dashboard.js" defer>']
    assert not re.search(r"\sstyle=|\son[a-z]+=|<style", page)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert '<link rel="icon" href="/favicon.ico"' in page and 'href="/static/favicon.svg"' in page
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_chart_script_and_favicons_are_local_static_files(client):
    js = client.get("/static/dashboard.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    src = js.get_data(as_text=True)
    js.close()
    for banned in ("eval(", "new Function", "innerHTML", ".style", "setAttribute(\"style\"", "import(", "fetch("):
        assert banned not in src, banned
    assert re.findall(r"https?://[^\s\"']*", src) == ["http://www.w3.org/2000/svg"]  # a namespace, not a URL to load
    ico = client.get("/favicon.ico")
    assert ico.status_code == 200 and ico.headers["Content-Type"] == "image/x-icon"
    assert ico.data == (STATIC / "favicon.ico").read_bytes() and ico.data[:4] == b"\x00\x00\x01\x00"
    ico.close()
    svg = client.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
    svg.close()


def test_nginx_answers_favicon_itself():
    conf = (ROOT / "nginx" / "modelserver.conf.template").read_text()
    block = re.search(r"location = /favicon\.ico \{(.*?)\n    \}", conf, re.S)
    assert block and "alias ${STATIC_ROOT}/favicon.ico;" in block.group(1)
    assert "security-headers.conf" in block.group(1)


# --- start.sh remembers the running stack's settings ----------------------------------------

class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_stack(tmp_path):
    """A run directory whose stack.env names a port where /readyz answers 200 (no real stack)."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    for k in ("PORT", "BIND_HOST", "API_KEYS", "TOUCH_CHAIN_RELOAD", "APP_PIDFILE", "NGINX_RUN_DIR"):
        env.pop(k, None)
    env["RUN_DIR"] = str(tmp_path / "run")
    yield env, srv.server_port, tmp_path
    srv.shutdown()


def _bash(script: str, env: dict) -> subprocess.CompletedProcess:
    """Run ``script`` with start.sh's functions defined (everything but its command dispatch)."""
    text = (ROOT / "start.sh").read_text()
    functions = text[:text.index('case "${1:-start}" in')]
    return subprocess.run(["bash", "-c", functions + "\n" + script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_start_sh_writes_the_effective_settings(fake_stack):
    env, port, tmp = fake_stack
    r = _bash('load_env; mkdir -p "$RUN_DIR"; write_stack_env', {**env, "PORT": str(port), "API_KEYS": "k" * 20,
                                                               "WORKERS": "3"})
    assert r.returncode == 0, r.stderr
    f = tmp / "run" / "stack.env"
    text = f.read_text()
    assert f"export PORT={port}\n" in text and "export WORKERS=3\n" in text
    assert f"export RUN_DIR={tmp / 'run'}\n" in text and "export APP_PIDFILE=" in text
    assert "API_KEYS=" not in text.replace("API_KEYS_FILE=", "")  # no secret on disk
    assert f.stat().st_mode & 0o077 == 0
    # sourcing it gives the same values back
    back = subprocess.run(["bash", "-c", f'source "{f}" && echo "$PORT $WORKERS"'], env=env, capture_output=True,
                          text=True)
    assert back.stdout.strip() == f"{port} 3"


def test_start_sh_status_reload_stop_use_stack_env(fake_stack):
    env, port, tmp = fake_stack
    run = tmp / "run"
    run.mkdir()
    (run / "stack.env").write_text(f"# test\nexport PORT={port}\nexport BIND_HOST=127.0.0.1\n"
                                   f"export TOUCH_CHAIN_RELOAD={tmp / 'chain'}\n")
    st = subprocess.run([str(ROOT / "start.sh"), "status"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=60)
    assert st.returncode == 0, st.stderr
    assert f"readyz: 200 (http://127.0.0.1:{port}/readyz)" in st.stdout and "settings: " in st.stdout
    # the running stack's settings win over the environment's, with a note
    st2 = subprocess.run([str(ROOT / "start.sh"), "status"], cwd=ROOT, env={**env, "PORT": "1"},
                         capture_output=True, text=True, timeout=60)
    assert "readyz: 200" in st2.stdout and f"PORT={port}" in st2.stderr
    rl = subprocess.run([str(ROOT / "start.sh"), "reload"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=60)
    assert rl.returncode == 0 and (tmp / "chain").exists()
    sp = subprocess.run([str(ROOT / "start.sh"), "stop"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=60)
    assert sp.returncode == 0, sp.stderr
    assert not (run / "stack.env").exists()  # stopped: nothing to remember
    st3 = subprocess.run([str(ROOT / "start.sh"), "status"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert "settings: environment" in st3.stdout


# --- the real stack: 2 uWSGI workers behind nginx ------------------------------------------

def test_history_exact_across_workers_and_charts_render(stack, tmp_path):
    img = b64(synthetic_face(160, 120, 5))
    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda _: stack.post("/image-64", json={"image": img}).status_code, range(24)))
    assert codes == [200] * 24
    assert stack.post("/image-64", json={}).status_code == 400
    assert stack.get("/no-such-page").status_code == 404
    ico = stack.get("/favicon.ico")
    assert ico.status_code == 200 and ico.content == (STATIC / "favicon.ico").read_bytes()
    assert "X-Request-ID" not in ico.headers  # nginx answered it, the app never saw it

    h = stack.get("/api/stats/history?minutes=1440").json()
    stats = stack.get("/api/stats").json()["metrics"]
    assert h["store"]["kind"] == "file" and h["store"]["multiprocess"]
    assert h["store"]["where"] == stack.env["PROMETHEUS_MULTIPROC_DIR"] + "/" + history.FILE_NAME
    # exact: every request since the stack started, whichever worker served it (the /api/stats
    # request above is the only one the history has not seen)
    assert h["requests"] == stats["requests_total"] - 1
    assert h["error_totals"] == {"api": stats["errors_by_status"], "other": stats["errors_other_by_status"]}
    assert h["error_totals"]["api"].get("400", 0) >= 1 and h["error_totals"]["other"].get("404", 0) >= 1
    nose = stats["models"]["nose_tracker"]
    assert h["models"]["nose_tracker"]["items"] == sum(v["items"] for v in nose.values())
    assert h["models"]["nose_tracker"]["calls"] == sum(v["inference_ms"]["count"] for v in nose.values())
    # one sample a minute although two workers sample
    lines = open(h["store"]["where"]).read().splitlines()
    minutes = [int(json.loads(ln)["t"] // 60) for ln in lines if not json.loads(ln).get("zero")]
    assert len(minutes) == len(set(minutes))

    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chrome:
        skip_or_fail("no Chromium installed: the charts' rendering was not checked in a browser")
    out = subprocess.run([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path}", "--virtual-time-budget=5000", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", stack.url("/dashboard")], capture_output=True, text=True, timeout=120)
    dom = out.stdout
    m = re.search(r'id="history"[^>]*data-rendered="(\d+)"', dom)
    assert m, out.stderr[-3000:]
    assert int(m.group(1)) >= 3, dom[:3000]  # nose_tracker's two charts and the errors' at least
    assert len(re.findall(r"<svg[^>]*role=\"img\"", dom)) == int(m.group(1))
    assert "Content Security Policy" not in out.stderr and "Refused to" not in out.stderr, out.stderr[-3000:]


def test_history_needs_a_key_like_api_stats_and_the_page_still_draws(monkeypatch):
    """With API keys the JSON needs one (as /api/stats does); the public dashboard carries the
    same data in its page, so its charts need none."""
    from app import create_app
    from app.config import Config
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    key = "test-key-0123456789abcdef"
    c = create_app(Config.from_env({"MODEL_LOADING": "off", "PROMETHEUS_MULTIPROC_DIR": "", "API_KEYS": key})) \
        .test_client()
    assert c.get("/api/stats/history").status_code == 401
    assert c.get("/api/stats/history", headers={"X-API-Key": key}).status_code == 200
    assert c.get("/favicon.ico").status_code == 200  # public, as static files are
    page = c.get("/dashboard").get_data(as_text=True)
    assert "data-history='{" in page
