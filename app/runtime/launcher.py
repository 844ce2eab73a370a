"""Start the real stack -- nginx -> uWSGI -> Flask from app.ini and nginx/*.template, the files
start.sh and the containers use -- on free loopback ports in a run directory, with
environment overrides; wait for its workers, stop it, read its logs, stats and memory.

One launcher for everything that runs a stack of its own: the tests (``tests/conftest.py``
``Stack``), the benchmark (``bench/stack.py`` ``OurStack``, also for an earlier commit's tree)
and the fault scripts (``scripts/faults.py``, ``scripts/soak.py``). ``start.sh`` runs the same
stack natively in bash and writes nginx's Allow map with the same command (``nginx_allow_map``).

Standard library only (no pytest, no requests); nothing here is imported by the server.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import ROOT, effective_env

#: The virtual environment uWSGI runs from (app.ini: ``virtualenv`` when VIRTUAL_ENV is set).
VENV = ROOT / ".venv"
#: uWSGI log lines that mean a worker died or was killed (crash, harakiri, the request watchdog)
INCIDENT = re.compile(r"DAMN ! worker|!!! uWSGI process \d+ got|HARAKIRI ON WORKER|Fatal Python error|watchdog: ")


# --- ports ---------------------------------------------------------------------------------------

def _port_block() -> range:
    """This process's own range of ports to hand out: below the kernel's ephemeral range (so no
    client connection takes a port between choosing and binding it), and one block per pytest-xdist
    worker (gw0, gw1, ...; other processes share the upper blocks), so parallel test workers never
    pick the same port. Empty when the ephemeral range leaves too little room below it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            eph_lo = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph_lo = 32768
    lo, hi = 10000, min(eph_lo, 32768)
    if hi - lo < 1600:
        return range(0)
    size = (hi - lo) // 16
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    slot = int(worker[2:]) % 8 if worker[:2] == "gw" and worker[2:].isdigit() else 8 + os.getpid() % 8
    return range(lo + slot * size, lo + (slot + 1) * size)


_port_lock = threading.Lock()
_ports_given: set[int] = set()
_port_next: list[int] = []


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port with connections in TIME_WAIT is skipped too
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, never handed out before by this process."""
    block = _port_block()
    with _port_lock:
        if block:
            if not _port_next:
                _port_next.append(random.randrange(len(block)))
            for _ in range(len(block)):
                port = block[_port_next[0] % len(block)]
                _port_next[0] += 1
                if port not in _ports_given and _bindable(port):
                    _ports_given.add(port)
                    return port
        for _ in range(100):  # the kernel's choice (an ephemeral port)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free loopback port")


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


# --- programs ------------------------------------------------------------------------------------

def uwsgi_bin() -> str:
    cand = VENV / "bin" / "uwsgi"
    if cand.exists():
        return str(cand)
    found = shutil.which("uwsgi")
    if not found:
        raise FileNotFoundError("uwsgi is not installed (pip install -r requirements.txt)")
    return found


def nginx_bin() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx)")
    return found


def python_bin() -> str:
    cand = VENV / "bin" / "python"
    return str(cand) if cand.exists() else sys.executable


def stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 30) -> None:
    """The graceful signal, then SIGKILL after timeout seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# --- nginx ---------------------------------------------------------------------------------------

def nginx_allow_map(env: dict, root: Path | str = ROOT) -> str | None:
    """The lines of nginx's ``$nginx_allow`` map (the Allow header of nginx's own 405s) for the
    app in ``root`` with the settings in ``env``: ``python -m app nginx-allow``, exactly as
    start.sh runs it (without PROMETHEUS_MULTIPROC_DIR: the command must leave nothing in a
    stack's metrics directory). None for a tree that has no such command (an earlier commit's,
    whose nginx templates do not read the map)."""
    root = Path(root)
    if not (root / "app" / "web" / "nginx_map.py").exists():
        return None
    env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([python_bin(), "-m", "app", "nginx-allow"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"python -m app nginx-allow failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def write_nginx_allow_map(path: Path | str, env: dict, root: Path | str = ROOT) -> Path | None:
    """nginx_allow_map() into path (for render.sh: NGINX_ALLOW_MAP); None when there is no map."""
    text = nginx_allow_map(env, root)
    if text is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def render_nginx(env: dict, root: Path | str = ROOT) -> str:
    """nginx/render.sh: the templates into $NGINX_RUN_DIR/conf/; returns nginx.conf's path."""
    out = subprocess.run([str(Path(root) / "nginx" / "render.sh")], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def start_nginx(env: dict, log_path: Path, root: Path | str = ROOT) -> subprocess.Popen:
    """Render, check (nginx -t) and start nginx in the foreground (its own session)."""
    conf = render_nginx(env, root)
    base = [nginx_bin(), "-e", env["NGINX_ERROR_LOG"], "-p", env["NGINX_RUN_DIR"], "-c", conf]
    subprocess.run(base + ["-t", "-q"], env=env, check=True)
    return subprocess.Popen(base + ["-g", "daemon off;"], env=env, stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


# --- processes -----------------------------------------------------------------------------------

def mem_kb(pid: int) -> dict:
    """RSS and PSS (kB) of one process, from /proc/PID/smaps_rollup ({} when it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                k, _, rest = line.partition(":")
                if k in ("Rss", "Pss", "Shared_Clean", "Private_Dirty", "Private_Clean"):
                    out[k.lower()] = int(rest.split()[0])
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, http.client.HTTPException):
        return 0, b""


# --- the stack -----------------------------------------------------------------------------------

class Launcher:
    """nginx -> uWSGI -> Flask from ``root`` (its app/, app.ini and nginx/), as start.sh runs it
    natively, on free loopback ports, in ``run_dir`` (a new temporary directory, removed by
    stop(), when None), with ``overrides`` on top of the environment and defaults().

    nginx's directory (config, temp files, logs) is a separate 0711 temporary directory: a root
    master's workers (nobody) must reach its temp dirs to buffer large request bodies, as in a
    real deployment.

    Ready: ``workers`` distinct worker pids answered ``ready_path`` with 200 (``probes``
    requests at a time, every ``poll_s``)."""

    ready_path = "/readyz"
    probes = 1
    poll_s = 0.05
    startup_timeout = 300.0

    def __init__(self, run_dir: Path | str | None = None, overrides: dict | None = None, *,
                 root: Path | str = ROOT, workers: int | None = None):
        self.root = Path(root)
        self._own_run_dir = run_dir is None
        self.tmp = Path(tempfile.mkdtemp(prefix="modelserver-stack-")) if run_dir is None else Path(run_dir)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port, self.app_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.nginx_dir = Path(tempfile.mkdtemp(prefix="modelserver-nginx-"))
        self.nginx_dir.chmod(0o711)
        ov = {
            "APP_ROOT": str(self.root),
            "RUN_DIR": str(self.tmp),
            "APP_SOCKET": f"127.0.0.1:{self.app_port}",
            "APP_UPSTREAM": f"127.0.0.1:{self.app_port}",
            "PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "STATS_SOCKET": str(self.tmp / "stats.sock"),
            "APP_PIDFILE": str(self.tmp / "uwsgi.pid"),
            "TOUCH_RELOAD": str(self.tmp / "reload"),
            "TOUCH_CHAIN_RELOAD": str(self.tmp / "chain-reload"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "prometheus"),
            "NGINX_RUN_DIR": str(self.nginx_dir),
            "NGINX_ACCESS_LOG": str(self.nginx_dir / "access.log"),
            "NGINX_ERROR_LOG": str(self.nginx_dir / "error.log"),
        }
        ov.update(self.defaults())
        if workers is not None:
            ov["WORKERS"] = str(workers)
        ov.update(overrides or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
        env.update(ov)
        env = {**env, **effective_env(env)}
        if (VENV / "bin" / "python").exists():
            env["VIRTUAL_ENV"] = str(VENV)
        # nginx's Allow map from this app's routes (render.sh reads NGINX_ALLOW_MAP); an earlier
        # tree without `python -m app nginx-allow` renders its templates as they are
        env.pop("NGINX_ALLOW_MAP", None)
        if (self.root / "app" / "web" / "nginx_map.py").exists():
            env["NGINX_ALLOW_MAP"] = str(self.nginx_dir / "conf" / "allow.map")
        self.env = env
        self.workers = int(env["WORKERS"])
        self.uwsgi_log = self.tmp / "uwsgi.log"
        self.nginx_log = self.tmp / "nginx.out"
        self.uwsgi: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.startup_s: float | None = None  # start() to every worker ready
        self.ready_s: float | None = None  # the same, rounded to 10 ms
        self.first_ready_s: float | None = None  # start() to the first worker ready
        self._log_pos = 0  # how far new_incidents() has read the uWSGI log
        self._t0: float | None = None  # while start() waits: when it began
        keys = [k for k in env.get("API_KEYS", "").split(",") if k.strip()]
        self.auth_headers = {"X-API-Key": keys[0].strip()} if keys else {}

    def defaults(self) -> dict:
        """Settings of this kind of stack, under the caller's overrides."""
        return {}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> float:
        """Start uWSGI, write the Allow map, start nginx, wait for every worker; returns ready_s."""
        if self.env.get("PROMETHEUS_MULTIPROC_DIR"):
            Path(self.env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        for f in ("TOUCH_RELOAD", "TOUCH_CHAIN_RELOAD"):
            Path(self.env[f]).parent.mkdir(parents=True, exist_ok=True)
            Path(self.env[f]).touch()
        self._t0 = t0 = time.time()
        try:
            self.start_uwsgi()
            # while uWSGI loads: the map, then nginx from the templates
            if self.env.get("NGINX_ALLOW_MAP"):
                write_nginx_allow_map(self.env["NGINX_ALLOW_MAP"], self.env, self.root)
            self.nginx = start_nginx(self.env, self.nginx_log, self.root)
            wait_port(self.port)
            self.wait_workers(self.workers, self.startup_timeout if timeout is None else timeout)
        finally:
            self._t0 = None
        self.startup_s = time.time() - t0
        self.ready_s = round(self.startup_s, 2)
        return self.ready_s

    def start_uwsgi(self) -> subprocess.Popen:
        """uWSGI with app.ini (again, after it was stopped: the same settings, the same log)."""
        self.uwsgi = subprocess.Popen([uwsgi_bin(), "--ini", str(self.root / "app.ini")], env=self.env,
                                      cwd=self.root, stdout=open(self.uwsgi_log, "ab"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        return self.uwsgi

    def stop(self) -> None:
        """nginx (QUIT: graceful), then uWSGI (TERM: in-flight requests finish), each killed
        when it does not stop in time; then the temporary directories are removed."""
        stop_process(self.nginx, signal.SIGQUIT, timeout=30)
        stop_process(self.uwsgi, signal.SIGTERM, timeout=60)
        shutil.rmtree(self.nginx_dir, ignore_errors=True)
        if self._own_run_dir:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _probe(self) -> int | None:
        """The pid of the worker that answered ready_path with 200, else None."""
        code, body = http_get(self.base + self.ready_path, 10, self.auth_headers)
        if code != 200:
            return None
        try:
            return self.ready_pid(json.loads(body))
        except (ValueError, KeyError, TypeError):
            return None

    def ready_pid(self, body: dict) -> int:
        return body["pid"]

    def wait_workers(self, n: int, timeout: float) -> set[int]:
        """Until n distinct worker pids answered ready_path with 200 (during start(): sets
        first_ready_s, when the first one did)."""
        start = time.time()
        deadline = start + timeout
        pids: set[int] = set()
        first = None
        pool = ThreadPoolExecutor(self.probes) if self.probes > 1 else None
        try:
            while time.time() < deadline:
                if self.uwsgi is not None and self.uwsgi.poll() is not None:
                    raise RuntimeError("uWSGI exited:\n" + self.log_tail())
                found = list(pool.map(lambda _: self._probe(), range(self.probes))) if pool else [self._probe()]
                found = [p for p in found if p]
                if found and first is None:
                    first = time.time()
                pids.update(found)
                if len(pids) >= n:
                    if self._t0 is not None:
                        self.first_ready_s = round(first - self._t0, 2)
                    return pids
                time.sleep(self.poll_s)
        finally:
            if pool:
                pool.shutdown()
        raise TimeoutError(f"only {len(pids)} of {n} workers answered {self.ready_path} in {timeout}s\n"
                           + self.log_tail())

    # --- logs ----------------------------------------------------------------------------------
    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.uwsgi_log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        return self.uwsgi_log.read_text(errors="replace").splitlines()

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

    def request_log(self, request_id: str, timeout: float = 5) -> list[dict]:
        """The app's JSON log lines for one request id (waits up to timeout for them)."""
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

    # --- uWSGI ---------------------------------------------------------------------------------
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
        """The workers' pids in uWSGI's stats (0 for a slot whose worker is being respawned)."""
        return sorted(w["pid"] for w in self.uwsgi_stats()["workers"])

    def child_pids(self) -> list[int]:
        """The uWSGI master's child processes (its workers), from /proc."""
        return children(self.uwsgi.pid) if self.uwsgi else []

    def memory(self) -> dict:
        """RSS/PSS (kB) of the master and of each worker."""
        return {"master": mem_kb(self.uwsgi.pid) if self.uwsgi else {},
                "workers": {pid: mem_kb(pid) for pid in self.child_pids()}}


# --- test traffic ----------------------------------------------------------------------------------

def synthetic_face(w: int = 320, h: int = 240, seed: int = 0, fmt: str = ".jpg") -> bytes:
    """A drawn (not real) face-like picture, encoded: requests for a stack's nose tracker
    (tests, scripts/faults.py)."""
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
