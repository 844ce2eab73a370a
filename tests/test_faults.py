"""Faults under load on a real nginx -> uWSGI stack of this module's own (shorter runs of
scripts/faults.py and scripts/soak.py; the scripts print the full-length figures).

The stack: 2 workers x 4 threads, HARAKIRI=6, UPSTREAM_TIMEOUT=5 (nginx answers a stuck
request before harakiri recycles the worker), workers not recycled by request count.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import faults  # scripts/faults.py (pyproject.toml puts scripts/ on pytest's pythonpath)
import soak  # scripts/soak.py

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "15"))


@pytest.fixture(scope="module")
def fstack(tmp_path_factory):
    st = faults.start_fault_stack(tmp=tmp_path_factory.mktemp("faults"))
    yield st
    st.stop()


def _bad_gateway_json(err: str) -> bool:
    return '"code":"bad_gateway"' in err


def test_short_soak_no_errors_no_memory_creep(fstack):
    r = soak.soak(fstack, SOAK_SECONDS, clients=8, warmup=5)
    print(f"\n[soak] {r['requests']} requests in {SOAK_SECONDS:.0f}s ({r['rps']}/s), {r['errors_total']} errors; "
          + ", ".join(f"pid {w['pid']}: {w['rss_start_mib']} -> {w['rss_end_mib']} MiB ({w['growth_pct']:+}%)"
                      for w in r["workers"]))
    assert r["errors_total"] == 0, r["failures"]
    assert r["requests"] >= 50
    assert not r["respawned"]
    assert len(r["workers"]) == 2
    for w in r["workers"]:
        assert w["growth_pct"] < 10, w


def test_sigkill_worker_under_load(fstack):
    r = faults.fault_kill_worker(fstack, clients=8, before=2.0, after=3.0)
    print(f"\n[kill] {r['sent']} requests, {r['failed']} failed (worker held {r['held_by_worker']}); /readyz 200 "
          f"{r['readyz_s']} s after the kill; respawned worker ready after {r['respawned_ready_s']} s")
    assert r["new_pid"] and r["new_pid"] != r["killed_pid"]
    assert r["failed"] <= r["bound"], r  # no more than the requests that worker could hold
    assert all(_bad_gateway_json(e) for e in r["failures"]), r["failures"]
    assert r["readyz_s"] is not None and r["readyz_s"] <= 10, r
    # the respawned worker loads and warms its own models (lazy-apps) while the other serves
    assert r["respawned_ready_s"] is not None and r["respawned_ready_s"] <= 60, r
    assert len(faults.workers(fstack)) == 2


def test_request_past_harakiri_gets_504_and_worker_replaced(fstack):
    """A legitimate request (32 texts of 5000 characters at beam 4) outlasting HARAKIRI while
    the same workers keep serving other clients."""
    r = faults.fault_harakiri(fstack, clients=4)
    print(f"\n[harakiri] slow request: {r['status']} after {r['answer_s']} s; worker killed by {r['killed_by']}, "
          f"replacement serving after {r['worker_replaced_s']} s; others: {r['sent']} sent, {r['failed']} failed")
    assert r["status"] == 504
    assert r["body"]["error"]["code"] == "gateway_timeout" and r["body"]["error"]["request_id"] == r["request_id"]
    assert int(fstack.env["UPSTREAM_TIMEOUT"]) <= r["answer_s"] < int(fstack.env["HARAKIRI"])
    assert r["killed_by"] in ("uWSGI harakiri", "app watchdog")
    # the worker comes back (loading three models while 4 clients and the other test process keep
    # both cores busy: 62 s on a 2-vCPU AMD EPYC machine, under 60 s on the Intel ones)
    assert r["worker_replaced_s"] is not None and r["worker_replaced_s"] < 120
    assert r["failed"] <= r["bound_others"], r["failures"]  # only what the killed worker held
    assert all(_bad_gateway_json(e) for e in r["failures"])
    fstack.wait_workers(2, 120)


def test_chain_reload_under_concurrent_load(fstack):
    r = faults.fault_chain_reload(fstack, clients=8)
    print(f"\n[chain reload] {r['sent']} requests ({r['during_reload']} during the reload), {r['failed']} failed, "
          f"workers replaced in {r['reload_s']} s")
    assert r["reload_s"] is not None
    assert r["failed"] == 0, r["failures"]
    assert r["during_reload"] >= 20


def test_uwsgi_down_then_up_without_touching_nginx(fstack):
    r = faults.fault_uwsgi_down(fstack, clients=4, down_s=1.5)
    print(f"\n[uwsgi down] {r['while_down']} requests while down (all 502 JSON: "
          f"{r['while_down_502_json'] == r['while_down']}); traffic back {r['traffic_back_s']} s after the restart, "
          f"{r['failed_after_back']} failed after; nginx untouched: {r['nginx_same_processes']}")
    assert r["down_502"] == 502 and r["down_502_body"]["error"]["code"] == "bad_gateway"
    assert r["while_down"] > 0 and r["while_down_502_json"] == r["while_down"]
    assert r["failed_before_down"] == 0
    assert r["traffic_back_s"] is not None and r["failed_after_back"] == 0
    assert r["nginx_same_processes"]
    fstack.wait_workers(2, 120)


def test_sigterm_while_a_worker_loads_stops_promptly(fstack):
    r = faults.fault_stop_while_loading(fstack)
    print(f"\n[stop while loading] SIGTERM {r['since_respawn_s']} s after a worker respawn (still loading: "
          f"{r['loading_when_stopped']}): uWSGI exited {r['exit_code']} after {r['stop_s']} s")
    assert r["respawned_pid"] and r["loading_when_stopped"], r
    assert r["exit_code"] == 0 and r["stop_s"] is not None and r["stop_s"] < 15, r
    fstack.wait_workers(2, 120)


# --- the watchdog's decision, in isolation ----------------------------------------------------

def test_watchdog_kills_only_overdue_requests():
    from app.runtime.watchdog import RequestWatchdog
    now = [100.0]
    killed = []
    release = threading.Event()

    def app(environ, start_response):
        release.wait(10)
        return [b"ok"]

    wd = RequestWatchdog(app, limit_s=6, grace_s=2, kill=lambda pid, sig: killed.append((pid, sig)),
                         clock=lambda: now[0])
    wd._thread_pid = os.getpid()  # no background thread: check() is driven by hand
    th = threading.Thread(target=wd, args=({"REQUEST_METHOD": "POST", "PATH_INFO": "/api/translate",
                                            "HTTP_X_REQUEST_ID": "slow-1"}, None))
    th.start()
    while not wd.inflight:
        time.sleep(0.01)
    now[0] += 7.9
    assert not wd.check() and not killed  # within HARAKIRI + grace
    now[0] += 0.2
    assert wd.check()
    assert killed == [(os.getpid(), signal.SIGKILL)]
    assert wd.fired[0]["path"] == "/api/translate" and wd.fired[0]["request_id"] == "slow-1"
    release.set()
    th.join(5)
    assert not wd.inflight  # finished requests are forgotten
