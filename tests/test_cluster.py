"""`./start.sh cluster N`: N independent app instances (each its own uWSGI master, workers and
models, on its own loopback port) behind one nginx, started, killed and restarted for real.

- requests are spread over every instance (the master pids /version reports);
- SIGKILL of a whole instance under load fails at most what it held; the rest is served, and
  traffic returns to it once `./start.sh cluster-restart K` has brought it back;
- a rolling restart of every instance under load fails no request;
- each instance keeps its own metrics (its own prometheus directory); nginx's /metrics is the
  instance that answered, so Prometheus scrapes each one (README "Scale out").

Instances serve the nose tracker only, one worker each, to keep the test light; the mechanics
do not depend on the models.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest
import requests

from app.runtime import healthcheck
from app.runtime.launcher import free_port
from conftest import ROOT, shared_faces

N = 3


def consecutive_ports(n: int) -> int:
    """A base port with base..base+n-1 all free on loopback."""
    for _ in range(200):
        base = free_port()
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no consecutive free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run = tmp_path_factory.mktemp("cluster")
    env = dict(os.environ, RUN_DIR=str(run), PORT=str(free_port()), APP_SOCKET=f"127.0.0.1:{consecutive_ports(N)}",
               ENABLED_MODELS="nose_tracker", WORKERS="1", THREADS="4", PRELOAD_LIBRARIES="0",
               RATE_LIMIT_RPS="0", UPSTREAM_FAIL_TIMEOUT="2", RELOAD_MERCY="20", READY_TIMEOUT="120")
    for k in ("PROMETHEUS_MULTIPROC_DIR", "NGINX_RUN_DIR", "APP_PIDFILE", "STATS_SOCKET", "TOUCH_RELOAD",
              "TOUCH_CHAIN_RELOAD", "NGINX_ACCESS_LOG", "NGINX_ERROR_LOG"):
        env.pop(k, None)

    def sh(*args, timeout=300):
        r = subprocess.run([str(ROOT / "start.sh"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, f"start.sh {' '.join(args)}: {r.stderr[-3000:]}"
        return r

    out = sh("cluster", str(N))
    base = out.stdout.strip().rstrip("/")
    yield {"base": base, "sh": sh, "run": run, "env": env}
    subprocess.run([str(ROOT / "start.sh"), "stop"], env=env, cwd=ROOT, capture_output=True, timeout=120)


def instance_pid(cluster, k: int) -> int:
    return int((cluster["run"] / f"instance-{k}" / "uwsgi.pid").read_text())


def masters(base: str, n: int = 30) -> Counter:
    return Counter(requests.get(base + "/version", timeout=10).json()["worker"]["master_pid"] for _ in range(n))


class Load:
    """c client threads posting a real face to /image-bin until stopped; counts statuses."""

    def __init__(self, base: str, c: int = 4):
        self.image = shared_faces(1)[0]["bytes"]
        self.base, self.stop, self.codes, self.lock = base, threading.Event(), Counter(), threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(c)]

    def run(self):
        s = requests.Session()
        while not self.stop.is_set():
            try:
                code = s.post(self.base + "/image-bin", files={"image": ("f.jpg", self.image, "image/jpeg")},
                              timeout=30).status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            with self.lock:
                self.codes[code] += 1
            time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_requests_are_spread_over_every_instance(cluster):
    seen = masters(cluster["base"])
    assert set(seen) == {instance_pid(cluster, k) for k in range(1, N + 1)}
    assert min(seen.values()) >= 8  # round robin over 30 requests


def test_status_lists_every_instance(cluster):
    out = cluster["sh"]("status").stdout
    for k in range(1, N + 1):
        assert f"instance {k} (127.0.0.1:" in out and "running" in out
    assert "readyz: 200" in out


def test_each_instance_keeps_its_own_metrics(cluster):
    """Per instance: its own prometheus files and its own /metrics, straight over its socket
    and through nginx at /instances/K/metrics (what a Prometheus on the machine scrapes)."""
    import json
    host, port = cluster["env"]["APP_SOCKET"].rsplit(":", 1)
    workers = {}
    for k in range(1, N + 1):
        assert any((cluster["run"] / f"instance-{k}" / "prometheus").iterdir())
        status, raw = healthcheck.request(f"{host}:{int(port) + k - 1}", "/version")
        assert status == 200
        workers[k] = json.loads(raw.split(b"\r\n\r\n", 1)[1])["worker"]["pid"]
    for k in range(1, N + 1):
        status, raw = healthcheck.request(f"{host}:{int(port) + k - 1}", "/metrics")
        assert status == 200 and f'pid="{workers[k]}"'.encode() in raw, raw[:300]
        r = requests.get(f"{cluster['base']}/instances/{k}/metrics", timeout=10)
        assert r.status_code == 200 and "model_info{" in r.text
        # model_info (liveall) carries the worker's pid: this instance's worker, no other's
        assert [w for w in workers.values() if f'pid="{w}"' in r.text] == [workers[k]]
    assert requests.get(f"{cluster['base']}/instances/{N + 1}/metrics", timeout=10).status_code == 404


def test_sigkill_of_one_instance_fails_at_most_what_it_held(cluster):
    victim = instance_pid(cluster, 2)
    with Load(cluster["base"]) as load:
        time.sleep(2)
        before = sum(load.codes.values())
        os.killpg(os.getpgid(victim), signal.SIGKILL)  # the whole instance: master and workers
        time.sleep(5)
    codes = dict(load.codes)
    failed = sum(v for k, v in codes.items() if k != 200)
    assert before > 20 and codes.get(200, 0) > before + 20, codes  # the others kept serving
    assert failed <= 4, codes  # at most its in-flight requests (one worker x 4 threads)
    assert victim not in masters(cluster["base"], 12)
    cluster["sh"]("cluster-restart", "2")
    back = instance_pid(cluster, 2)
    assert back != victim
    time.sleep(2.5)  # UPSTREAM_FAIL_TIMEOUT
    assert back in masters(cluster["base"])


def test_rolling_restart_under_load_fails_nothing(cluster):
    old = {instance_pid(cluster, k) for k in range(1, N + 1)}
    with Load(cluster["base"]) as load:
        time.sleep(1)
        cluster["sh"]("cluster-restart")
        time.sleep(1)
    assert set(load.codes) == {200} and load.codes[200] > 50, load.codes
    new = {instance_pid(cluster, k) for k in range(1, N + 1)}
    assert not old & new
    assert set(masters(cluster["base"])) == new
