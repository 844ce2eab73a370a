"""Start our real stack (uWSGI with app.ini + nginx from nginx/*.template) on free loopback
ports in a temporary directory, with environment overrides; measure start-to-ready and
per-process memory (RSS/PSS from /proc/PID/smaps_rollup). Used by bench/run.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import effective_env  # noqa: E402

VENV = ROOT / ".venv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def mem_kb(pid: int) -> dict:
    """RSS and PSS (kB) of one process, from smaps_rollup."""
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


class OurStack:
    """nginx -> uWSGI -> Flask, exactly as start.sh runs it, with overrides."""

    def __init__(self, overrides: dict | None = None, workers: int = 2, root: Path = ROOT):
        """root: the tree whose app/, app.ini and nginx/ run (another commit's, to compare)."""
        self.root = Path(root)
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-stack-"))
        self.port, self.app_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        ov = {
            "APP_ROOT": str(self.root), "RUN_DIR": str(self.tmp),
            "APP_SOCKET": f"127.0.0.1:{self.app_port}", "APP_UPSTREAM": f"127.0.0.1:{self.app_port}",
            "PORT": str(self.port), "BIND_HOST": "127.0.0.1", "WORKERS": str(workers),
            "TOUCH_RELOAD": str(self.tmp / "reload"), "TOUCH_CHAIN_RELOAD": str(self.tmp / "chain-reload"),
            # the benchmark's load comes from one address at high rates: never rate-limit it
            "RATE_LIMIT_RPS": "0",
        }
        ov.update(overrides or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
        env.update(ov)
        env = {**env, **effective_env(env)}
        if (VENV / "bin" / "python").exists():
            env["VIRTUAL_ENV"] = str(VENV)
        self.env = env
        self.uwsgi = self.nginx = None
        self.ready_s: float | None = None

    def start(self, timeout: float = 180) -> float:
        (self.tmp / "prometheus").mkdir(parents=True, exist_ok=True)
        for f in ("reload", "chain-reload"):
            (self.tmp / f).touch()
        uwsgi = str(VENV / "bin" / "uwsgi") if (VENV / "bin" / "uwsgi").exists() else shutil.which("uwsgi")
        t0 = time.time()
        self.uwsgi = subprocess.Popen([uwsgi, "--ini", str(self.root / "app.ini")], env=self.env, cwd=self.root,
                                      stdout=open(self.tmp / "uwsgi.log", "ab"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        conf = subprocess.run([str(self.root / "nginx" / "render.sh")], env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = subprocess.Popen([nginx, "-e", self.env["NGINX_ERROR_LOG"], "-p", self.env["NGINX_RUN_DIR"],
                                       "-c", conf, "-g", "daemon off;"], env=self.env,
                                      stdout=open(self.tmp / "nginx.out", "ab"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        # ready = every worker answers /readyz 200 (first 200 for /readyz is one worker)
        deadline = t0 + timeout
        first_ready = None
        pids: set[int] = set()
        while time.time() < deadline:
            if self.uwsgi.poll() is not None:
                raise RuntimeError("uWSGI exited:\n" + self.log_tail())
            code, body = http_get(self.base + "/readyz", 5)
            if code == 200:
                first_ready = first_ready or time.time()
                pids.add(json.loads(body)["pid"])
                if len(pids) >= self.workers:
                    break
                continue
            time.sleep(0.05)
        else:
            raise TimeoutError("stack not ready:\n" + self.log_tail())
        self.ready_s = round(time.time() - t0, 2)
        self.first_ready_s = round(first_ready - t0, 2)
        return self.ready_s

    def worker_pids(self) -> list[int]:
        return children(self.uwsgi.pid) if self.uwsgi else []

    def memory(self) -> dict:
        master = mem_kb(self.uwsgi.pid)
        workers = {pid: mem_kb(pid) for pid in self.worker_pids()}
        return {"master": master, "workers": workers}

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.tmp / "uwsgi.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        for proc, sig in ((self.nginx, signal.SIGQUIT), (self.uwsgi, signal.SIGTERM)):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
