"""Start our real stack (uWSGI with app.ini + nginx from nginx/*.template) on free loopback
ports in a temporary directory, with environment overrides; measure start-to-ready and
per-process memory (RSS/PSS from /proc/PID/smaps_rollup). Used by bench/run.py and
bench/compare.py; the launcher itself is app/runtime/launcher.py (the tests' too).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from app.runtime.launcher import ROOT, Launcher, children, free_port, http_get, mem_kb  # noqa: F401


class OurStack(Launcher):
    """nginx -> uWSGI -> Flask, exactly as start.sh runs it, with overrides.

    Ready: every worker answered /readyz with 200 (``first_ready_s``: the first one,
    ``ready_s``: all, both from the start). The benchmark's load comes from one address at
    high rates: never rate-limited (RATE_LIMIT_RPS=0)."""

    startup_timeout = 180.0

    def __init__(self, overrides: dict | None = None, workers: int = 2, root: Path = ROOT):
        """root: the tree whose app/, app.ini and nginx/ run (another commit's, to compare)."""
        super().__init__(None, overrides, root=root, workers=workers)

    def defaults(self) -> dict:
        return {"RATE_LIMIT_RPS": "0"}

    def worker_pids(self) -> list[int]:
        """The uWSGI master's children (its workers), from /proc."""
        return self.child_pids()


def cell_arguments(ap: argparse.ArgumentParser, rounds: int, max_requests: int = 20000) -> None:
    """The options every interleaved-cells benchmark takes (bench/compare.py, faces.py,
    history.py): --rounds, --duration and --max-requests of each wrk cell, --json."""
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell")
    ap.add_argument("--max-requests", type=int, default=max_requests, help="most requests per wrk cell")
    ap.add_argument("--json", help="output JSON path")
