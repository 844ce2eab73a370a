"""Per-request harakiri for threaded uWSGI workers.

uWSGI 2.0 keeps ONE harakiri deadline per worker, shared by its threads: every
request that ends on any thread clears it (core/utils.c, set_harakiri(0) in
uwsgi_close_request; see unbit/uwsgi#2706). So a request stuck on one thread of a
worker whose other threads keep answering is never killed by ``harakiri``: it was
measured here (scripts/faults.py): under load, a request running past HARAKIRI kept
its thread busy until it finished by itself, and the worker was never replaced.

This WSGI middleware records when each in-flight request of the worker started; a
daemon thread looks every half second, and when a request has run for longer than
HARAKIRI plus a grace (so that uWSGI's own harakiri acts first whenever it can), it
logs the request and its thread's stack and SIGKILLs its own worker -- what uWSGI's
harakiri does -- so the master respawns it. nginx has already answered that client
504 (UPSTREAM_TIMEOUT is below HARAKIRI).
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)


class RequestWatchdog:
    def __init__(self, wsgi_app, limit_s: float, grace_s: float = 2.0, interval_s: float = 0.5,
                 kill=os.kill, clock=time.monotonic):
        self.wsgi_app = wsgi_app
        self.limit_s = float(limit_s)
        self.grace_s = float(grace_s)
        self.interval_s = float(interval_s)
        self._kill = kill
        self._clock = clock
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.inflight: dict[int, tuple] = {}  # id -> (start, method, path, request id, thread ident)
        self._thread_pid: int | None = None
        self.fired: list[dict] = []

    def __call__(self, environ, start_response):
        if self._thread_pid != os.getpid():  # first request in this (forked) process
            self._start_thread()
        key = next(self._ids)
        with self._lock:
            self.inflight[key] = (self._clock(), environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                                  environ.get("HTTP_X_REQUEST_ID", ""), threading.get_ident())
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            with self._lock:
                self.inflight.pop(key, None)

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
        threading.Thread(target=self._run, name="request-watchdog", daemon=True).start()

    def overdue(self) -> list[tuple]:
        """In-flight requests older than limit + grace, oldest first."""
        now = self._clock()
        with self._lock:
            items = list(self.inflight.values())
        return sorted((r for r in items if now - r[0] > self.limit_s + self.grace_s), key=lambda r: r[0])

    def check(self) -> bool:
        """Kill this worker if a request is overdue; True if it did."""
        late = self.overdue()
        if not late:
            return False
        start, method, path, rid, ident = late[0]
        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)[-12:]) if frame is not None else "(thread gone)"
        info = {"method": method, "path": path, "request_id": rid, "seconds": round(self._clock() - start, 1),
                "limit_s": self.limit_s, "pid": os.getpid(), "in_flight": len(self.inflight)}
        self.fired.append(info)
        log.error("watchdog: %s %s (request id %s) running for %.1f s, over HARAKIRI=%s s on a busy threaded "
                  "worker; killing worker pid %d so the master replaces it\n%s", method, path, rid,
                  info["seconds"], self.limit_s, os.getpid(), stack)
        for h in logging.getLogger("app").handlers:
            try:
                h.flush()
            except Exception:
                pass
        self._kill(os.getpid(), signal.SIGKILL)
        return True

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                if self.check():
                    return
            except Exception:  # the watchdog must never take the worker down by mistake
                log.exception("watchdog check failed")


def wrap(application, harakiri_s: int):
    """The app wrapped in the watchdog when running threaded under uWSGI with harakiri on."""
    try:
        import uwsgi  # type: ignore  # noqa: F401
    except ImportError:
        return application
    if harakiri_s <= 0:
        return application
    return RequestWatchdog(application, harakiri_s)
