"""Command line entry points: start.sh (native stack), python -m app serve / translate / healthcheck."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import ROOT, b64, free_port, synthetic_face


def _wait(url, status=200, timeout=120):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = requests.get(url, timeout=5)
            if last.status_code == status:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url}: {last}")


def test_dev_server_background_loading(tmp_path):
    """python -m app serve: single process (gevent); /readyz is 503 until the models are loaded."""
    port = free_port()
    env = {**os.environ, "ENABLED_MODELS": "nose_tracker", "MODEL_LOADING": "background", "PORT": str(port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/healthz")
        r = _wait(base + "/readyz", 200, 120)
        assert r.json()["models"]["nose_tracker"]["status"] == "ready"
        r = requests.post(base + "/image-64", json={"image": b64(synthetic_face(90, 60))}, timeout=30)
        assert r.status_code == 200 and r.json()["width"] == 90
        r = requests.post(base + "/api/translate", json={"text": "hi"}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert "single-process metrics" in requests.get(base + "/dashboard", timeout=30).text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_usage():
    r = subprocess.run([sys.executable, "-m", "app", "bogus"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_start_sh_native_idempotent_and_stop(tmp_path):
    """start.sh starts uWSGI + nginx natively (same app.ini and nginx templates), is idempotent,
    and `stop` stops exactly the processes it started."""
    port, app_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    env.update({"RUN_DIR": str(tmp_path / "run"), "PORT": str(port), "APP_SOCKET": f"127.0.0.1:{app_port}",
                "APP_UPSTREAM": f"127.0.0.1:{app_port}", "TOUCH_RELOAD": str(tmp_path / "reload"),
                "TOUCH_CHAIN_RELOAD": str(tmp_path / "chain"), "ENABLED_MODELS": "nose_tracker",
                "WORKERS": "1", "THREADS": "2", "READY_TIMEOUT": "180"})
    for k in ("PROMETHEUS_MULTIPROC_DIR", "NGINX_RUN_DIR", "NGINX_ACCESS_LOG", "NGINX_ERROR_LOG",
              "STATS_SOCKET", "APP_PIDFILE"):
        env.pop(k, None)
    run = tmp_path / "run"
    try:
        r = subprocess.run([str(ROOT / "start.sh"), "native"], env=env, capture_output=True, text=True,
                           timeout=400, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip() == f"http://127.0.0.1:{port}/"
        uwsgi_pid = int((run / "uwsgi.pid").read_text())
        nginx_pid = int((run / "nginx" / "nginx.pid").read_text())
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        # again: nothing new is started
        r2 = subprocess.run([str(ROOT / "start.sh"), "native"], env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
        assert r2.returncode == 0 and "already running" in r2.stderr
        assert int((run / "uwsgi.pid").read_text()) == uwsgi_pid
        st = subprocess.run([str(ROOT / "start.sh"), "status"], env=env, capture_output=True, text=True, timeout=60)
        assert "uwsgi: running" in st.stdout and "readyz: 200" in st.stdout
    finally:
        s = subprocess.run([str(ROOT / "start.sh"), "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert s.returncode == 0, s.stderr
    for pid in (uwsgi_pid, nginx_pid):
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert not (run / "uwsgi.pid").exists() and not (run / "nginx" / "nginx.pid").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
