"""Faults under load, on a real nginx -> uWSGI stack of its own (loopback only, bounded).

    .venv/bin/python scripts/faults.py [--seconds 20] [--clients 16] [--only kill,harakiri,down,reload,stop-loading]

Starts the stack from the repository's own app.ini and nginx templates (app/runtime/launcher.py,
as the tests do: free loopback ports, a temporary directory) and, while a load generator runs,

* kill      SIGKILLs one uWSGI worker: the master respawns it; failed requests must be no
            more than the requests that worker held (its THREADS at most), /readyz back
            within 10 s;
* harakiri  sends a request that runs past HARAKIRI: the client gets nginx's 504 in our
            JSON shape (UPSTREAM_TIMEOUT is below HARAKIRI), the worker is replaced;
* down      stops uWSGI: nginx answers 502 in our JSON shape; starts it again: traffic
            resumes with the same nginx processes (no restart, no reload);
* reload    chain-reloads the workers: zero failed requests;
* stop-loading  SIGTERMs uWSGI while a respawned worker is still loading its models: it
            must exit at once (it used to wait for that worker forever).

Prints a Markdown table. tests/test_faults.py runs the same functions, shorter.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from app.runtime.launcher import Launcher, stop_process, synthetic_face

#: Settings of the fault stack: HARAKIRI low enough for the harakiri fault, nginx's
#: timeout below it; a larger MAX_TOTAL_CHARS lets one legitimate request outlast
#: HARAKIRI; workers are not recycled by request count during a run.
FAULT_ENV = {
    "WORKERS": "2",
    "THREADS": "4",
    "HARAKIRI": "6",
    "UPSTREAM_TIMEOUT": "5",
    "MAX_TOTAL_CHARS": "160000",
    "MAX_REQUESTS": "1000000",
    "RELOAD_MERCY": "30",
}

VOCAB = ("the a man woman child house car dog cat river city green red big small old new walks runs eats sees "
         "loves reads buys today tomorrow with under near book table water bread garden station").split()


def sentence(rnd: random.Random, words: int = 8) -> str:
    return " ".join(rnd.choice(VOCAB) for _ in range(words)).capitalize() + "."


def long_text(rnd: random.Random, n: int = 5000) -> str:
    t = ""
    while len(t) < n:
        t += sentence(rnd, rnd.randint(6, 14)) + " "
    return t[:n]


def synthetic_image(seed: int) -> bytes:
    return synthetic_face(160 + 8 * (seed % 5), 120 + 8 * (seed % 3), seed)


@dataclass
class Result:
    t0: float
    t1: float
    status: int  # 0: connection error
    error: str = ""


@dataclass
class Load:
    """N client threads sending /image-64 (and, with translate=True, short /api/translate)
    requests as fast as they are answered; records every request."""

    base: str
    clients: int = 8
    translate: bool = False
    timeout: float = 60
    results: list = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.images = [base64.b64encode(synthetic_image(i)).decode() for i in range(8)]

    def _client(self, idx: int):
        rnd = random.Random(idx)
        s = requests.Session()
        i = 0
        while not self._stop.is_set():
            i += 1
            t0 = time.time()
            try:
                if self.translate and i % 4 == 0:
                    r = s.post(self.base + "/api/translate", json={"text": sentence(rnd)}, timeout=self.timeout)
                else:
                    r = s.post(self.base + "/image-64", json={"image": self.images[(idx + i) % 8]},
                               timeout=self.timeout)
                res = Result(t0, time.time(), r.status_code, "" if r.status_code == 200 else r.text[:200])
            except requests.RequestException as exc:
                res = Result(t0, time.time(), 0, repr(exc)[:200])
            with self._lock:
                self.results.append(res)

    def start(self) -> "Load":
        for i in range(self.clients):
            th = threading.Thread(target=self._client, args=(i,), daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> "Load":
        self._stop.set()
        for th in self._threads:
            th.join(self.timeout + 10)
        return self

    def snapshot(self) -> list:
        with self._lock:
            return list(self.results)

    @property
    def failed(self) -> list:
        return [r for r in self.snapshot() if r.status != 200]


def workers(stack) -> list[dict]:
    return stack.uwsgi_stats()["workers"]


def wait_ready_worker(stack, old_pids: set, timeout: float) -> tuple[int | None, float | None]:
    """Until a worker that is none of old_pids answers /readyz with 200 (its pid is in the
    answer); returns (new pid, seconds). Other traffic may go on meanwhile."""
    t0 = time.time()
    s = requests.Session()
    while time.time() - t0 < timeout:
        new = {w["pid"] for w in workers(stack) if w["pid"] and w["pid"] not in old_pids}
        if new:
            try:
                r = s.get(stack.base + "/readyz", timeout=10)
                if r.status_code == 200 and r.json()["pid"] in new:
                    return r.json()["pid"], time.time() - t0
            except (requests.RequestException, ValueError):
                pass
        time.sleep(0.02)
    return None, None


def nginx_pids(stack) -> set[int]:
    """nginx master and worker pids (the master's children)."""
    master = stack.nginx.pid
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return {master, *map(int, out.split())}


# --- the faults --------------------------------------------------------------------------------

def fault_kill_worker(stack, clients: int = 8, before: float = 2.0, after: float = 12.0) -> dict:
    load = Load(stack.base, clients).start()
    try:
        time.sleep(before)
        before = workers(stack)
        victim = max(before, key=lambda w: w["requests"])
        held = sum(1 for c in victim.get("cores", []) if c.get("in_request"))
        t_kill = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        readyz_s = None  # /readyz 200 from whichever worker answers
        while time.time() - t_kill < 30 and readyz_s is None:
            try:
                if requests.get(stack.base + "/readyz", timeout=10).status_code == 200:
                    readyz_s = time.time() - t_kill
            except requests.RequestException:
                time.sleep(0.05)
        new_pid, _ = wait_ready_worker(stack, {w["pid"] for w in before}, 90)
        ready_s = time.time() - t_kill if new_pid else None  # the respawned worker itself ready
        time.sleep(max(0.0, after - (time.time() - t_kill)))
    finally:
        load.stop()
    res = load.snapshot()
    return {
        "fault": "SIGKILL a worker under load",
        "sent": len(res),
        "failed": len(load.failed),
        "held_by_worker": held,
        "bound": int(stack.env["THREADS"]),
        "statuses_failed": sorted({r.status for r in load.failed}),
        "readyz_s": round(readyz_s, 2) if readyz_s is not None else None,
        "respawned_ready_s": round(ready_s, 2) if ready_s else None,
        "killed_pid": victim["pid"],
        "new_pid": new_pid,
        "failures": [r.error for r in load.failed][:5],
    }


def fault_harakiri(stack, clients: int = 4, seed: int = 0) -> dict:
    """One legitimate request that needs longer than HARAKIRI (32 texts of 5000 characters
    at the largest beam), while other clients keep sending small requests."""
    rnd = random.Random(seed or time.time_ns())
    texts = [long_text(rnd) for _ in range(32)]
    before = {w["pid"] for w in workers(stack)}
    log_start = len(stack.log_lines())
    load = Load(stack.base, clients).start()
    t0 = time.time()
    try:
        r = requests.post(stack.base + "/api/translate", json={"texts": texts, "beam": int(os.environ.get(
            "FAULT_BEAM", "4"))}, timeout=120)
        elapsed = time.time() - t0
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else None
        # the worker that held it is killed at HARAKIRI and respawned
        replaced_s = None
        while time.time() - t0 < 90:
            now = {w["pid"] for w in workers(stack) if w["pid"]}
            if len(now) == len(before) and now != before:
                pid, _ = wait_ready_worker(stack, before, 60)
                if pid:
                    replaced_s = time.time() - t0
                    break
            time.sleep(0.1)
        time.sleep(1)
    finally:
        load.stop()
    new_lines = stack.log_lines()[log_start:]
    killed_by = ("uWSGI harakiri" if any("HARAKIRI ON WORKER" in ln for ln in new_lines)
                 else "app watchdog" if any('"logger":"app.runtime.watchdog"' in ln for ln in new_lines) else None)
    return {
        "fault": "request past HARAKIRI",
        "status": r.status_code,
        "body": body,
        "answer_s": round(elapsed, 2),
        "harakiri_s": int(stack.env["HARAKIRI"]),
        "upstream_timeout_s": int(stack.env["UPSTREAM_TIMEOUT"]),
        "worker_replaced_s": round(replaced_s, 2) if replaced_s else None,
        "killed_by": killed_by,
        "bound_others": int(stack.env["THREADS"]) - 1,
        "sent": len(load.snapshot()),
        "failed": len(load.failed),
        "failures": [r.error for r in load.failed][:5],
        "request_id": r.headers.get("X-Request-ID"),
    }


def restart_uwsgi(stack) -> None:
    stack.start_uwsgi()  # the same app.ini, settings and log


def fault_uwsgi_down(stack, clients: int = 4, down_s: float = 3.0) -> dict:
    ng_before = nginx_pids(stack)
    load = Load(stack.base, clients, timeout=30).start()
    try:
        time.sleep(1.0)
        t_down = time.time()
        stop_process(stack.uwsgi, signal.SIGTERM, timeout=60)
        stopped_s = time.time() - t_down
        t_gone = time.time()
        time.sleep(down_s)
        r502 = requests.get(stack.base + "/readyz", timeout=10)
        restart_uwsgi(stack)
        t_up = time.time()
        first_ok = None
        while time.time() - t_up < 120:
            ok = [x for x in load.snapshot() if x.status == 200 and x.t0 >= t_up]
            if ok:
                first_ok = min(x.t1 for x in ok) - t_up
                break
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        load.stop()
    res = load.snapshot()
    during = [x for x in res if x.t0 >= t_gone and x.t1 <= t_up]
    after_ok = [x for x in res if x.t0 >= t_up + (first_ok or 0) + 0.5]
    return {
        "fault": "uWSGI down, then up again",
        "sent": len(res),
        "while_down": len(during),
        "while_down_502_json": sum(1 for x in during if x.status == 502 and '"bad_gateway"' in x.error),
        "down_502": r502.status_code,
        "down_502_body": r502.json() if r502.headers.get("Content-Type", "").startswith("application/json") else None,
        "stop_s": round(stopped_s, 2),
        "traffic_back_s": round(first_ok, 2) if first_ok is not None else None,
        "failed_after_back": sum(1 for x in after_ok if x.status != 200),
        "failed_before_down": sum(1 for x in res if x.t1 < t_down and x.status != 200),
        "nginx_same_processes": nginx_pids(stack) == ng_before,
    }


def fault_stop_while_loading(stack, timeout: float = 60) -> dict:
    """SIGTERM (docker stop, start.sh stop) while a just-respawned worker is still loading its
    models; uWSGI must still shut down at once (it hung for good before app/wsgi.py handled it)."""
    before = {w["pid"] for w in workers(stack)}
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    t_kill, new = time.time(), None
    while new is None and time.time() - t_kill < 10:
        new = next(iter({w["pid"] for w in workers(stack)} - before - {0}), None)
        time.sleep(0.02)
    loading = new is not None and not any("ready in" in ln and f"pid: {new} " in ln for ln in stack.log_lines())
    t_term = time.time()
    stack.uwsgi.send_signal(signal.SIGTERM)
    try:
        code, stop_s = stack.uwsgi.wait(timeout), round(time.time() - t_term, 2)
    except subprocess.TimeoutExpired:
        code, stop_s = None, None
        stop_process(stack.uwsgi, signal.SIGKILL, timeout=10)
    restart_uwsgi(stack)
    return {
        "fault": "SIGTERM while a respawned worker loads its models",
        "killed_pid": victim,
        "respawned_pid": new,
        "loading_when_stopped": loading,
        "since_respawn_s": round(t_term - t_kill, 2),
        "exit_code": code,
        "stop_s": stop_s,
    }


def fault_chain_reload(stack, clients: int = 8, timeout: float = 180) -> dict:
    old = {w["pid"] for w in workers(stack)}
    load = Load(stack.base, clients, translate=True).start()
    try:
        time.sleep(1.0)
        t0 = time.time()
        os.utime(stack.env["TOUCH_CHAIN_RELOAD"])
        done_s = None
        answered: set[int] = set()  # new workers seen answering /readyz 200 (uWSGI's per-slot
        s = requests.Session()     # request counters survive a respawn, so they cannot tell)
        while time.time() - t0 < timeout:
            pids = {w["pid"] for w in workers(stack)}
            try:
                r = s.get(stack.base + "/readyz", timeout=10)
                if r.status_code == 200:
                    answered.add(r.json()["pid"])
            except (requests.RequestException, ValueError):
                pass
            if not (pids & old) and 0 not in pids and pids <= answered:
                done_s = time.time() - t0
                break
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        load.stop()
    res = load.snapshot()
    return {
        "fault": "chain reload under load",
        "sent": len(res),
        "during_reload": sum(1 for x in res if x.t0 >= t0 and (done_s is None or x.t0 <= t0 + done_s)),
        "failed": len(load.failed),
        "reload_s": round(done_s, 2) if done_s else None,
        "failures": [r.error for r in load.failed][:5],
    }


class FaultStack(Launcher):
    """The fault stack: FAULT_ENV under the caller's overrides; ready when every worker
    answered /readyz (4 requests at a time, so that each worker gets some)."""

    probes = 4
    poll_s = 0.25

    def defaults(self) -> dict:
        return dict(FAULT_ENV)


def start_fault_stack(extra: dict | None = None, tmp: Path | None = None) -> FaultStack:
    """The fault stack, started; its logs stay in tmp (a new /tmp/modelserver-faults-* by default)."""
    st = FaultStack(tmp or Path(tempfile.mkdtemp(prefix="modelserver-faults-")), extra)
    try:
        st.start()
    except BaseException:
        st.stop()
        raise
    return st


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--only", default="kill,harakiri,down,reload,stop-loading")
    a = ap.parse_args()
    st = start_fault_stack()
    rows = []
    try:
        print(f"stack up in {st.startup_s:.1f}s at {st.base} (HARAKIRI={st.env['HARAKIRI']}, "
              f"UPSTREAM_TIMEOUT={st.env['UPSTREAM_TIMEOUT']}); logs in {st.tmp}", flush=True)
        for name in a.only.split(","):
            fn = {"kill": lambda: fault_kill_worker(st, a.clients, after=15),
                  "harakiri": lambda: fault_harakiri(st, a.clients // 2),
                  "down": lambda: fault_uwsgi_down(st, a.clients // 2),
                  "reload": lambda: fault_chain_reload(st, a.clients),
                  "stop-loading": lambda: fault_stop_while_loading(st)}[name]
            r = fn()
            print(json.dumps(r, default=str), flush=True)
            rows.append(r)
            st.wait_workers(int(st.env["WORKERS"]), 120)
    finally:
        st.stop()
    print("\n| fault | requests sent | failed | bound / expectation | recovery |")
    print("|---|---|---|---|---|")
    for r in rows:
        f = r["fault"]
        if f.startswith("SIGKILL"):
            print(f"| {f} | {r['sent']} | {r['failed']} (statuses {r['statuses_failed']}) | <= {r['bound']} "
                  f"(THREADS); held at the kill: {r['held_by_worker']} | /readyz 200 {r['readyz_s']} s after the kill; "
                  f"the respawned worker itself ready after {r['respawned_ready_s']} s |")
        elif f.startswith("request past"):
            print(f"| {f} | 1 slow + {r['sent']} others | {r['failed']} others (<= {r['bound_others']}: in flight "
                  f"on the killed worker) | slow one: {r['status']} "
                  f"{(r['body'] or {}).get('error', {}).get('code')} after {r['answer_s']} s (nginx timeout "
                  f"{r['upstream_timeout_s']} s, harakiri {r['harakiri_s']} s) | killed by {r['killed_by']}; "
                  f"replacement serving after {r['worker_replaced_s']} s |")
        elif f.startswith("uWSGI down"):
            print(f"| {f} | {r['sent']} | {r['while_down']} while down, all {r['down_502']} JSON: "
                  f"{r['while_down_502_json'] == r['while_down']}; {r['failed_after_back']} after | 502 JSON while "
                  f"down, none after | traffic back {r['traffic_back_s']} s after the restart; nginx same processes: "
                  f"{r['nginx_same_processes']} |")
        elif f.startswith("SIGTERM while"):
            print(f"| {f} | - | - | exit 0 at once | SIGTERM {r['since_respawn_s']} s after the respawn (loading: "
                  f"{r['loading_when_stopped']}): exit {r['exit_code']} after {r['stop_s']} s |")
        else:
            print(f"| {f} | {r['sent']} ({r['during_reload']} during) | {r['failed']} | 0 | both workers "
                  f"replaced in {r['reload_s']} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
