"""What the inference history costs (issue 16): ``HISTORY=meta`` against ``HISTORY=off``, both
with ``ACCOUNTS=1``, on SQLite (the default file in RUN_DIR) and on a real PostgreSQL server
(Debian's, started here as the tests start it: tests/pg.py), in the same run.

For each database, two stacks at once (off and meta; the idle one costs nothing), cells
``/image-bin`` (640x480 JPEG, one face) and ``/api/translate`` (10-word sentences) at c=32
after a warm-up, interleaved: each round runs every cell on both stacks, the order flipping
every round, so both modes see the same machine over the same minutes. With ``meta`` the records in the database are counted
after the run and compared with the requests served and the dropped-records metric
(``history_records_dropped_total``): every request is a record or a counted drop.

    .venv/bin/python bench/history.py [--duration 5] [--rounds 4] [--databases sqlite,postgresql] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.run import build_inputs, drain, machine, md_table, ours_env, wrk_cell  # noqa: E402
from bench.stack import OurStack, cell_arguments  # noqa: E402

CELLS = ["image-bin", "translate"]
KEY = "bench-history-key-0123456789"  # ACCOUNTS=1: every JSON API needs a key (the same in both modes)


def count_records(url: str) -> int:
    from sqlalchemy import func, select

    from app.accounts.db import session
    from app.accounts.models import InferenceRecord
    with session(url) as s:
        return int(s.execute(select(func.count()).select_from(InferenceRecord)).scalar_one())


def dropped(base: str) -> float:
    req = urllib.request.Request(base + "/metrics", headers={"X-API-Key": KEY})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r'^history_records_dropped_total\{[^}]*\} (\S+)$', text, re.M))


def run_pair(db: str, urls: dict, a, inputs) -> list[dict]:
    """Both stacks up at once (the idle one costs nothing), cells interleaved round by round,
    so that both modes see the same machine over the same minutes."""
    stacks = {}
    rows: list[dict] = []
    try:
        for mode in ("off", "meta"):
            env = ours_env({"ACCOUNTS": "1", "HISTORY": mode, "API_KEYS": KEY})
            if urls[mode]:
                env["DATABASE_URL"] = urls[mode]
            stacks[mode] = st = OurStack(env)
            st.start()
        st = stacks["meta"]
        db_url = urls["meta"] or f"sqlite:///{st.tmp}/modelserver.db"
        before = count_records(db_url)
        sent = 0
        for mode in ("off", "meta"):
            for ep in CELLS:
                w = wrk_cell(stacks[mode].base, ep, inputs, 8, 1, 0, api_key=KEY)  # warm-up, not recorded
                sent += w["requests"] if mode == "meta" else 0

        def pids():
            return stacks["off"].worker_pids() + stacks["meta"].worker_pids()
        for rnd in range(a.rounds):
            for ep in CELLS:
                for mode in (("off", "meta") if rnd % 2 == 0 else ("meta", "off")):
                    drain(pids)
                    r = wrk_cell(stacks[mode].base, ep, inputs, a.concurrency, a.duration, a.max_requests,
                                 api_key=KEY)
                    r.update(db=db, mode=mode, round=rnd)
                    sent += r["requests"] if mode == "meta" else 0
                    rows.append(r)
                    print(f"  round {rnd} {db:10s} {mode:4s} {ep:10s} c={a.concurrency} {r['rps']:8.1f} req/s  "
                          f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
        deadline, n = time.time() + 30, -1
        while time.time() < deadline:  # the writers flush every 0.5 s
            time.sleep(1.0)
            m = count_records(db_url) - before
            if m == n:
                break
            n = m
        rec = {"db": db, "records": n, "requests_sent": sent, "dropped_metric": dropped(st.base)}
        print(f"    records {n} for {sent} requests answered (wrk), dropped (metric) {rec['dropped_metric']:.0f}",
              flush=True)
        rows.append(rec)
    finally:
        for st in stacks.values():
            st.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cell_arguments(ap, rounds=4, max_requests=50000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--databases", default="sqlite,postgresql")
    a = ap.parse_args()
    inputs = build_inputs(Path(tempfile.mkdtemp(prefix="bench-history-")))
    rows: list[dict] = []
    pg = None
    try:
        for db in a.databases.split(","):
            if db == "postgresql":
                from pg import Postgres
                pg = Postgres().start()
            urls = {m: pg.create_database(f"bench_{m}_{time.monotonic_ns()}") if pg else None
                    for m in ("off", "meta")}
            rows += run_pair(db, urls, a, inputs)
            if pg is not None:
                pg.stop()
                pg = None
    finally:
        if pg is not None:
            pg.stop()

    def med(db, mode, ep, k):
        return statistics.median(r[k] for r in rows
                                 if (r["db"], r.get("mode"), r.get("endpoint")) == (db, mode, ep))

    table = []
    for db in a.databases.split(","):
        for ep in CELLS:
            off, meta = med(db, "off", ep, "rps"), med(db, "meta", ep, "rps")
            table.append([db, ep, f"{off:.1f}", f"{meta:.1f}", f"{meta / off:.3f}x",
                          f"{med(db, 'off', ep, 'p50_ms'):.2f}", f"{med(db, 'meta', ep, 'p50_ms'):.2f}",
                          sum(r["errors"] for r in rows if (r["db"], r.get("endpoint")) == (db, ep))])
    md = md_table(["database", "cell", "off req/s", "meta req/s", "meta / off", "off p50 ms", "meta p50 ms",
                   "errors"], table)
    print("\n" + md)
    recs = [r for r in rows if "records" in r]
    for r in recs:
        print(f"- {r['db']}: {r['records']} records for {r['requests_sent']} requests, "
              f"{r['dropped_metric']:.0f} dropped (metric)")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine(), "rows": rows, "table": table,
                                            "rounds": a.rounds, "duration": a.duration}, indent=1))
    lost = [r for r in recs if r["records"] + r["dropped_metric"] < r["requests_sent"]]
    return 0 if not any(r.get("errors") for r in rows) and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
