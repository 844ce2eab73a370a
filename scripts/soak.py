"""Soak at saturation: zero errors, and no worker's memory creeping up.

    .venv/bin/python scripts/soak.py [--seconds 300] [--clients 16] [--warmup 20]

Starts its own nginx -> uWSGI stack (loopback, the repository's app.ini and nginx
templates; workers are not recycled by request count during the run), keeps it
saturated with /image-64 and /api/translate requests (new sentences, so the
translator really decodes), samples every worker's RSS (/proc/PID/status VmRSS)
every 2 s, and prints a table: requests, errors, throughput, and per worker the
RSS after the warm-up, at the end, and the growth in percent (target: under 10%).
tests/test_faults.py runs a short version.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import faults  # scripts/faults.py, beside this file (and on pytest's pythonpath for tests/test_faults.py)


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def soak(stack, seconds: float, clients: int, warmup: float, sample_s: float = 2.0) -> dict:
    load = faults.Load(stack.base, clients, translate=True, timeout=60).start()
    samples: dict[int, list[tuple[float, int]]] = {}
    t0 = time.time()
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            for w in faults.workers(stack):
                kib = rss_kib(w["pid"]) if w["pid"] else None
                if kib:
                    samples.setdefault(w["pid"], []).append((time.time() - t0, kib))
            stop.wait(sample_s)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        time.sleep(warmup + seconds)
    finally:
        stop.set()
        th.join(10)
        load.stop()
    res = load.snapshot()
    measured = [r for r in res if r.t0 - t0 >= warmup]
    workers = []
    for pid, pts in samples.items():
        after = [kib for t, kib in pts if t >= warmup]
        lived = pts[0][0] <= warmup + sample_s and pts[-1][0] >= warmup + seconds - 2 * sample_s
        if len(after) >= 2:
            workers.append({"pid": pid, "rss_start_mib": round(after[0] / 1024, 1),
                            "rss_end_mib": round(after[-1] / 1024, 1),
                            "rss_max_mib": round(max(after) / 1024, 1),
                            "growth_pct": round(100.0 * (after[-1] - after[0]) / after[0], 2),
                            "whole_run": lived})
    return {
        "seconds": seconds,
        "warmup_s": warmup,
        "clients": clients,
        "requests": len(measured),
        "errors": sum(1 for r in measured if r.status != 200),
        "errors_total": sum(1 for r in res if r.status != 200),
        "rps": round(len(measured) / seconds, 1),
        "workers": workers,
        "respawned": sorted(set(samples)) != sorted({w["pid"] for w in faults.workers(stack)}),
        "failures": [r.error for r in res if r.status != 200][:5],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=20)
    a = ap.parse_args()
    st = faults.start_fault_stack({"HARAKIRI": "120", "UPSTREAM_TIMEOUT": "115"})
    try:
        print(f"stack up in {st.startup_s:.1f}s at {st.base}; soak {a.seconds:.0f}s after {a.warmup:.0f}s warm-up, "
              f"{a.clients} clients", flush=True)
        r = soak(st, a.seconds, a.clients, a.warmup)
    finally:
        st.stop()
    print(f"\nrequests {r['requests']} in {r['seconds']:.0f} s ({r['rps']}/s), errors {r['errors']} "
          f"(including warm-up: {r['errors_total']}); workers respawned: {r['respawned']}")
    print("\n| worker pid | RSS after warm-up (MiB) | RSS at end (MiB) | max (MiB) | growth |")
    print("|---|---|---|---|---|")
    for w in r["workers"]:
        print(f"| {w['pid']} | {w['rss_start_mib']} | {w['rss_end_mib']} | {w['rss_max_mib']} | {w['growth_pct']}% |")
    ok = r["errors_total"] == 0 and all(w["growth_pct"] < 10 for w in r["workers"]) and not r["respawned"]
    print("\nresult:", "PASS" if ok else "FAIL", r["failures"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
