"""Redeploys while a client keeps sending requests: no request may fail.

On a stack of this module's own (``stack`` below overrides the session's): these tests replace
the workers, change the revision and finally stop uWSGI, which no other test file may see --
so the files can run in any order, and in parallel.
"""
from __future__ import annotations

import os
import re
import threading
import time

import pytest
import requests

from conftest import b64, serve_stack, synthetic_face

RELOAD_TIMEOUT = float(os.environ.get("E2E_RELOAD_TIMEOUT", "240"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """This module's own stack (the same settings as the session's), in its test order."""
    yield from serve_stack(tmp_path_factory, "reload")


class Client(threading.Thread):
    """Keeps sending /version and /image-64 requests; records every answer."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack = stack
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str | None, int | None]] = []  # (t, status, revision, pid)
        self.failures: list[str] = []
        self.img = b64(synthetic_face(100, 100, 21))

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if i % 2:
                    r = self.stack.get("/version", timeout=120)
                    rev = r.json()["app"]["revision"] if r.status_code == 200 else None
                    pid = r.json()["worker"]["pid"] if r.status_code == 200 else None
                else:
                    r = self.stack.post("/image-64", json={"image": self.img}, timeout=120)
                    rev, pid = None, None
                self.results.append((time.time(), r.status_code, rev, pid))
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code}: {r.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            time.sleep(0.02)


def _redeploy(stack, touch_file: str, new_rev: str):
    old_pids = set(stack.worker_pids())
    client = Client(stack)
    client.start()
    try:
        time.sleep(0.5)
        stack.revision_file.write_text(new_rev + "\n")
        t_touch = time.time()
        os.utime(touch_file)
        deadline = t_touch + RELOAD_TIMEOUT
        new_pids: set[int] = set()
        while time.time() < deadline:
            new_pids = {pid for t, s, rev, pid in client.results if t > t_touch and rev == new_rev}
            if len(new_pids) >= 2 and not (set(stack.worker_pids()) & old_pids):
                break
            time.sleep(0.5)
        elapsed = time.time() - t_touch
        time.sleep(1)
    finally:
        client.stop.set()
        client.join(150)
    assert not client.failures, client.failures[:5]
    assert len(new_pids) >= 2, (new_pids, stack.log_tail())
    assert not (new_pids & old_pids)
    assert not (set(stack.worker_pids()) & old_pids)
    # once the new revision answered, the old one never answers again
    first_new = min(t for t, s, rev, pid in client.results if rev == new_rev)
    assert all(rev in (None, new_rev) for t, s, rev, pid in client.results if t > first_new + 0.001 and pid in new_pids)
    served = sum(1 for t, s, rev, pid in client.results if t > t_touch)
    print(f"\n[reload] {os.path.basename(touch_file)}: new workers serving after {elapsed:.1f}s, "
          f"{served} requests during the reload, 0 failed")
    return elapsed


def _live_gauge_pids(stack) -> set[int]:
    text = stack.get("/metrics").text
    return {int(p) for p in re.findall(r'^model_info\{[^}]*model="nose_tracker"[^}]*pid="(\d+)"', text, re.M)}


def test_chain_reload_zero_downtime(stack):
    _redeploy(stack, stack.env["TOUCH_CHAIN_RELOAD"], "rev-2")
    assert stack.get("/readyz").status_code == 200
    # exiting workers removed their live gauges (mark_process_dead in uwsgi.atexit)
    assert _live_gauge_pids(stack) == set(stack.worker_pids())


def test_idle_chain_reload_is_quick(stack):
    """No traffic at all: idle workers must still be replaced promptly (no thunder-lock hang)."""
    old = set(stack.worker_pids())
    t0 = time.time()
    os.utime(stack.env["TOUCH_CHAIN_RELOAD"])
    while time.time() - t0 < RELOAD_TIMEOUT:
        now = set(stack.worker_pids())
        if not (now & old) and 0 not in now and len(now) == 2:
            break
        time.sleep(0.25)
    elapsed = time.time() - t0
    assert not (set(stack.worker_pids()) & old), stack.log_tail()
    # the old workers exited gracefully, not killed after the reload mercy
    assert "NO MERCY" not in stack.uwsgi_log.read_text(errors="replace")
    stack.wait_workers(2, RELOAD_TIMEOUT)
    print(f"\n[reload] idle chain reload: both workers replaced after {elapsed:.1f}s")


def test_touch_reload_whole_app(stack):
    _redeploy(stack, stack.env["TOUCH_RELOAD"], "rev-3")
    r = stack.get("/version")
    assert r.json()["app"]["revision"] == "rev-3"
    # exact counters survive worker replacement (files of dead workers are kept)
    assert stack.get("/api/stats").json()["metrics"]["counts"]["image_64"] >= 100


@pytest.mark.kills_workers
def test_crashed_worker_is_respawned_reported_and_drops_out_of_metrics(stack):
    """A worker that crashes (here SIGSEGV) never runs its exit hook: faulthandler writes its
    threads' Python stacks to the log, the master respawns it, and /metrics stops exporting
    the dead pid (the same holds for SIGKILL: HARAKIRI, the request watchdog, the OOM killer)."""
    import signal
    victim = stack.worker_pids()[0]
    assert victim in _live_gauge_pids(stack)
    os.kill(victim, signal.SIGSEGV)
    t0 = time.time()
    while time.time() - t0 < RELOAD_TIMEOUT:
        pids = stack.worker_pids()
        if victim not in pids and 0 not in pids:
            break
        time.sleep(0.25)
    stack.wait_workers(2, RELOAD_TIMEOUT)
    assert stack.get("/readyz").status_code == 200
    assert victim not in stack.worker_pids()
    assert _live_gauge_pids(stack) == set(stack.worker_pids())
    log = "\n".join(stack.new_incidents())
    assert "Fatal Python error: Segmentation fault" in log and "app/serving/batching.py" in log, log[-3000:]
    assert f"(pid: {victim}) died, killed by signal 11" in log, log[-3000:]


def test_sigterm_finishes_in_flight_requests(stack):
    """Last test of the session's stack: SIGTERM (docker stop / start.sh stop) lets the
    in-flight request finish (200), then uWSGI exits cleanly."""
    import random
    import signal
    rnd = random.Random(time.time_ns())
    vocab = "the a man woman child house car dog river city green big small walks sees with near book".split()
    texts = []
    for _ in range(2):
        t = ""
        while len(t) < 4900:
            t += " ".join(rnd.choice(vocab) for _ in range(rnd.randint(6, 14))).capitalize() + ". "
        texts.append(t[:5000])
    result = {}

    def slow():
        t0 = time.time()
        try:
            r = stack.post("/api/translate", json={"texts": texts, "beam": 4}, timeout=200)
            result["status"] = r.status_code
        except requests.RequestException as exc:
            result["status"] = repr(exc)
        result["seconds"] = time.time() - t0

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(1.5)
    assert th.is_alive(), "the request finished before SIGTERM; make it longer"
    stack.uwsgi.send_signal(signal.SIGTERM)
    th.join(200)
    assert result.get("status") == 200, result
    assert stack.uwsgi.wait(60) == 0
    print(f"\n[shutdown] in-flight request answered 200 after {result['seconds']:.1f}s, uWSGI exited 0")
