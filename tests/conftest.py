"""Shared fixtures.

``stack`` (session scope) runs the real thing on free loopback ports: uWSGI
with app.ini (2 workers x 4 threads, lazy-apps) behind nginx rendered from
nginx/*.template by nginx/render.sh -- the very files the containers and
start.sh use -- with pid files, logs, sockets and the prometheus multiprocess
directory in a temporary directory. Torn down at the end of the session.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import effective_env  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
NOSE_DATA = SHARED / "data" / "nose"
VENV = ROOT / ".venv"
STARTUP_TIMEOUT = float(os.environ.get("E2E_STARTUP_TIMEOUT", "300"))
# uWSGI log lines that mean a worker died or was killed (crash, harakiri, the request watchdog)
INCIDENT = re.compile(r"DAMN ! worker|!!! uWSGI process \d+ got|HARAKIRI ON WORKER|Fatal Python error|watchdog: ")


def in_ci() -> bool:
    """CI is set (``.ci/run``: CI=true), where every tool and the shared data a check needs are installed."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str):
    """pytest.skip(reason) on a developer's machine; in CI a failure, because there a missing
    tool or data set means the CI setup is broken, and a skip would hide the check."""
    if in_ci():
        pytest.fail(f"{reason} [CI is set: a check CI is meant to run must not be skipped]", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uwsgi_bin() -> str:
    cand = VENV / "bin" / "uwsgi"
    if cand.exists():
        return str(cand)
    found = shutil.which("uwsgi")
    if not found:
        pytest.fail("uwsgi is not installed (pip install -r requirements.txt)")
    return found


def nginx_bin() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        pytest.fail("nginx is not installed (apt-get install nginx)")
    return found


def render_nginx(env: dict) -> str:
    out = subprocess.run([str(ROOT / "nginx" / "render.sh")], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def start_nginx(env: dict, log_path: Path) -> subprocess.Popen:
    conf = render_nginx(env)
    base = [nginx_bin(), "-e", env["NGINX_ERROR_LOG"], "-p", env["NGINX_RUN_DIR"], "-c", conf]
    subprocess.run(base + ["-t", "-q"], env=env, check=True)
    return subprocess.Popen(base + ["-g", "daemon off;"], env=env, stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class Stack:
    def __init__(self, tmp: Path, extra_env: dict | None = None):
        self.tmp = tmp
        self.port = free_port()
        self.app_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # nginx's dir outside pytest's 0700 tmp root: a root master's workers (nobody) must
        # reach its temp dirs to buffer large request bodies, as in a real deployment
        self.nginx_dir = Path(tempfile.mkdtemp(prefix="modelserver-nginx-"))
        self.nginx_dir.chmod(0o711)
        self.revision_file = tmp / "REVISION"
        self.revision_file.write_text("rev-1\n")
        overrides = {
            "APP_ROOT": str(ROOT),
            "APP_REVISION_FILE": str(self.revision_file),
            "APP_SOCKET": f"127.0.0.1:{self.app_port}",
            "APP_UPSTREAM": f"127.0.0.1:{self.app_port}",
            "PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "WORKERS": "2",
            "THREADS": "4",
            "RUN_DIR": str(tmp),
            "STATS_SOCKET": str(tmp / "stats.sock"),
            "APP_PIDFILE": str(tmp / "uwsgi.pid"),
            "TOUCH_RELOAD": str(tmp / "reload"),
            "TOUCH_CHAIN_RELOAD": str(tmp / "chain-reload"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
            "NGINX_RUN_DIR": str(self.nginx_dir),
            "NGINX_ACCESS_LOG": str(self.nginx_dir / "access.log"),
            "NGINX_ERROR_LOG": str(self.nginx_dir / "error.log"),
            "MAX_BODY_BYTES": str(2 * 1024 * 1024),
            "MODEL_LOADING": "sync",
        }
        overrides.update(extra_env or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
        env.update(overrides)
        env = {**env, **effective_env(env)}
        if (VENV / "bin" / "python").exists():
            env["VIRTUAL_ENV"] = str(VENV)
        self.env = env
        self.uwsgi_log = tmp / "uwsgi.log"
        self.nginx_log = tmp / "nginx.out"
        self.uwsgi: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._log_pos = 0  # how far new_incidents() has read the uWSGI log
        keys = [k for k in env.get("API_KEYS", "").split(",") if k.strip()]
        self.auth_headers = {"X-API-Key": keys[0].strip()} if keys else {}

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        (self.tmp / "prometheus").mkdir(parents=True, exist_ok=True)
        for f in ("reload", "chain-reload"):
            (self.tmp / f).touch()
        t0 = time.time()
        self.uwsgi = subprocess.Popen([uwsgi_bin(), "--ini", str(ROOT / "app.ini")], env=self.env, cwd=ROOT,
                                      stdout=open(self.uwsgi_log, "ab"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.nginx = start_nginx(self.env, self.nginx_log)
        wait_port(self.port)
        self.wait_workers(int(self.env["WORKERS"]), STARTUP_TIMEOUT)
        self.startup_s = time.time() - t0

    def stop(self) -> None:
        stop_process(self.nginx, signal.SIGQUIT)
        stop_process(self.uwsgi, signal.SIGTERM, timeout=60)
        shutil.rmtree(self.nginx_dir, ignore_errors=True)

    def wait_workers(self, n: int, timeout: float) -> set[int]:
        """Until n distinct worker pids answered /version (their models are final then)."""
        deadline = time.time() + timeout
        pids: set[int] = set()
        while time.time() < deadline:
            if self.uwsgi.poll() is not None:
                raise RuntimeError("uWSGI exited:\n" + self.log_tail())
            try:
                with ThreadPoolExecutor(4) as ex:
                    for r in ex.map(lambda _: requests.get(self.base + "/version", timeout=10,
                                                           headers=self.auth_headers), range(4)):
                        if r.status_code == 200:
                            pids.add(r.json()["worker"]["pid"])
            except requests.RequestException:
                pass
            if len(pids) >= n:
                return pids
            time.sleep(0.5)
        raise TimeoutError(f"only {len(pids)} of {n} workers answered in {timeout}s\n" + self.log_tail())

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.uwsgi_log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def new_incidents(self, context: int = 60) -> list[str]:
        """Worker deaths logged since the last call, each with the log lines that follow it
        (faulthandler's thread stacks, uWSGI's backtrace), per-request lines left out."""
        try:
            with open(self.uwsgi_log, "rb") as fh:
                fh.seek(self._log_pos)
                data = fh.read()
        except OSError:
            return []
        data = data[:data.rfind(b"\n") + 1]  # whole lines only; the rest is read next time
        self._log_pos += len(data)
        lines = [ln for ln in data.decode(errors="replace").splitlines() if not ln.startswith('{"ts":"') or
                 '"msg":"request"' not in ln]
        blocks: list[list[int]] = []  # [start, end) of each incident and what follows it, merged
        for i, ln in enumerate(lines):
            if INCIDENT.search(ln):
                if blocks and i < blocks[-1][1]:
                    blocks[-1][1] = i + context
                else:
                    blocks.append([i, i + context])
        return ["\n".join(lines[a:b]) for a, b in blocks]

    def log_lines(self) -> list[str]:
        return self.uwsgi_log.read_text(errors="replace").splitlines()

    def request_log(self, request_id: str, timeout: float = 5) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            found = []
            for line in self.log_lines():
                if request_id in line and line.startswith("{"):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("msg") == "request" and rec.get("request_id") == request_id:
                        found.append(rec)
            if found or time.time() > deadline:
                return found
            time.sleep(0.1)

    # --- http helpers -------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 120)
        return requests.post(self.url(path), **kw)

    def uwsgi_stats(self) -> dict:
        """The uWSGI stats server's JSON (workers, pids, requests)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.env["STATS_SOCKET"])
            buf = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
        return json.loads(buf)

    def worker_pids(self) -> list[int]:
        return sorted(w["pid"] for w in self.uwsgi_stats()["workers"])




@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    st = Stack(tmp)
    try:
        st.start()
    except Exception:
        st.stop()
        raise
    print(f"\n[stack] up in {st.startup_s:.1f}s at {st.base}")
    st.new_incidents()
    yield st
    st.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "kills_workers: the test kills uWSGI workers on purpose")
    config.addinivalue_line("markers", "ci_may_skip(reason): this test may be skipped even when CI is set")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With CI set, a skipped test is reported as failed (unless marked ci_may_skip): the safety
    net behind skip_or_fail() for every pytest.skip / importorskip / skipif in tests/, so that a
    tool or data set missing in CI (chromium, wrk, docker-compose, ../shared, TensorFlow) fails
    the run instead of silently dropping its check."""
    rep = yield
    if (rep.skipped and not hasattr(rep, "wasxfail") and in_ci()
            and item.get_closest_marker("ci_may_skip") is None):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (f"skipped in CI: {reason}\nCI is set, and a check CI is meant to run must not be skipped "
                        f"(install what it needs, see .ci/run; or mark the test ci_may_skip)")
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at collection (pytest.importorskip at module level)."""
    rep = yield
    if rep.outcome == "skipped" and in_ci():
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI at collection: {rep.longrepr}\nCI is set: a check CI is meant to run must not be skipped"
    return rep


@pytest.fixture(autouse=True)
def _no_worker_deaths(request):
    """Fail the test during which a worker of the shared stack died unexpectedly, showing why
    (the uWSGI log: faulthandler's stacks, uWSGI's own report); tests marked kills_workers may."""
    if "stack" not in request.fixturenames:
        yield
        return
    st = request.getfixturevalue("stack")
    st.new_incidents()
    yield
    incidents = st.new_incidents()
    if incidents and request.node.get_closest_marker("kills_workers") is None:
        pytest.fail("a uWSGI worker died during this test:\n\n" + "\n---\n".join(incidents), pytrace=False)


# --- test data -------------------------------------------------------------------

def synthetic_face(w: int = 320, h: int = 240, seed: int = 0, fmt: str = ".jpg") -> bytes:
    """A drawn (not real) face-like picture, encoded."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(60, 200, size=3), dtype=np.uint8)
    cx, cy = w // 2 + int(rng.integers(-w // 8, w // 8)), h // 2 + int(rng.integers(-h // 8, h // 8))
    r = min(w, h) // 3
    cv2.ellipse(img, (cx, cy), (int(r * 0.8), r), 0, 0, 360, (150, 180, 220), -1)
    cv2.circle(img, (cx - r // 3, cy - r // 4), r // 10, (40, 40, 40), -1)
    cv2.circle(img, (cx + r // 3, cy - r // 4), r // 10, (40, 40, 40), -1)
    cv2.circle(img, (cx, cy + r // 8), r // 12, (90, 110, 170), -1)
    cv2.ellipse(img, (cx, cy + r // 2), (r // 3, r // 8), 0, 0, 180, (60, 60, 150), 3)
    ok, buf = cv2.imencode(fmt, img)
    assert ok
    return buf.tobytes()


def shared_faces(n: int = 4) -> list[dict]:
    """A few real faces from ../shared (never copied into the repo)."""
    labels = NOSE_DATA / "labels.csv"
    if not labels.exists():
        skip_or_fail(f"shared face data not found at {NOSE_DATA} (set SHARED_DIR or put ../shared beside the repo)")
    rows = []
    with open(labels, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["source"] == "cuhk_net" and row["width"] == "400":
                p = NOSE_DATA / row["path"]
                if p.exists():
                    rows.append({**row, "file": p, "bytes": p.read_bytes()})
            if len(rows) >= n:
                break
    if not rows:
        skip_or_fail("no face images found in the shared data")
    return rows


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
