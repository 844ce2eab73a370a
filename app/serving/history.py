"""Per-minute history of the request and model counters, for the dashboard's charts.

Design: snapshots of cumulative counters, differenced on read.

* Once per wall-clock minute a *sample* is taken: the cumulative counters that
  :mod:`app.serving.metrics` aggregates over every worker (``http_requests_total`` by endpoint
  and status; per model and version ``model_items_total`` and the buckets of
  ``model_inference_seconds``). A sample is one compact JSON line.
* Under uWSGI (``PROMETHEUS_MULTIPROC_DIR`` set) samples are appended to
  ``$PROMETHEUS_MULTIPROC_DIR/stats-history.jsonl`` (by default ``$RUN_DIR/prometheus``): a
  file shared by the workers, emptied together with the counters it samples when start.sh or
  the container starts the stack, so the history always describes exactly the counters the
  dashboard shows. prometheus_client only reads ``*.db`` files there. Every worker runs a
  small daemon thread (started by its first request, so never before uWSGI forks) that
  wakes just after each minute starts and, holding an exclusive ``flock`` on
  ``stats-history.lock``, appends a sample unless another worker already did so this minute:
  one sample a minute whatever the number of workers, and a worker that dies (even SIGKILLed)
  loses nothing, because the counters live in the multiprocess files, not in the worker.
* Without ``PROMETHEUS_MULTIPROC_DIR`` (``python -m app serve``, unit tests) the counters are
  this process's own and so is the history: a list in memory.
* A read (``GET /api/stats/history``, the dashboard) takes the samples of the window plus one
  before it, and a live sample of now; consecutive samples give exact per-interval counts
  (rates = count / seconds between the samples, p50/p99 from the difference of the histogram
  buckets, as the dashboard's totals are computed). The interval from the last stored sample
  to now is the current, partial minute (merged into the previous interval while it is
  shorter than 5 s), so the window's totals are exact up to the request. A counter that went
  down (a reset) counts from zero. When the store is first created a zero sample at the
  server's start time comes first: the counters were empty then, so nothing served before
  the first minute is lost.
* Why next to the counters and not beside them in ``$RUN_DIR``: a history that outlived its
  counters (a restart empties them) would need an epoch per sample to tell a reset from
  traffic; in the same directory both always start together.

The store keeps 24 hours (``RETENTION_S``) and is rewritten without older samples about
once an hour: at most ~1500 lines of about 1 KB.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import threading
import time

from . import metrics

log = logging.getLogger(__name__)

RETENTION_S = 24 * 3600
MAX_MINUTES = RETENTION_S // 60
FILE_NAME = "stats-history.jsonl"
LOCK_NAME = "stats-history.lock"
#: a live interval (last stored sample -> now) shorter than this is merged into the one before
#: (its rate would be noise); the totals stay exact up to now either way
MIN_LIVE_INTERVAL_S = 5.0


def take_sample(now: float | None = None) -> dict:
    """The cumulative counters now (all workers), as stored."""
    return {"t": round(time.time() if now is None else now, 3), **metrics.history_counters()}


def _zero_sample(t: float) -> dict:
    return {"t": round(t, 3), "zero": True, "r": {}, "m": {}}


class MemoryStore:
    """This process's history (single-process servers and unit tests)."""

    kind = "memory"

    def __init__(self):
        self._lock = threading.Lock()
        self._samples: list[dict] = []

    @contextlib.contextmanager
    def locked(self, exclusive: bool = True):
        with self._lock:
            yield

    def last(self) -> dict | None:
        return self._samples[-1] if self._samples else None

    def append(self, sample: dict) -> None:
        self._samples.append(sample)
        cutoff = sample["t"] - RETENTION_S
        if self._samples[0]["t"] < cutoff - 3600:
            self._samples = [s for s in self._samples if s["t"] >= cutoff]

    def read_since(self, t: float) -> list[dict]:
        """Samples with t >= the given time, and the one just before (the baseline)."""
        i = next((k for k, s in enumerate(self._samples) if s["t"] >= t), len(self._samples))
        return list(self._samples[max(0, i - 1):])

    def describe(self) -> str:
        return "memory"


class FileStore:
    """JSON lines shared by the workers of one stack; ``flock`` on a separate lock file (the
    history file itself is replaced when trimmed)."""

    kind = "file"

    def __init__(self, directory: str):
        self.path = os.path.join(directory, FILE_NAME)
        self.lock_path = os.path.join(directory, LOCK_NAME)

    @contextlib.contextmanager
    def locked(self, exclusive: bool = True):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                return fh.readlines()
        except FileNotFoundError:
            return []

    @staticmethod
    def _parse(lines) -> list[dict]:
        out = []
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except ValueError:  # a torn line (disk full): skip it
                continue
        return out

    def last(self) -> dict | None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 65536))
                tail = fh.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return None
        parsed = self._parse(tail[-3:])
        return parsed[-1] if parsed else None

    def _first_t(self) -> float | None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                parsed = self._parse([fh.readline()])
        except FileNotFoundError:
            return None
        return parsed[0]["t"] if parsed else None

    def append(self, sample: dict) -> None:
        """Call with the exclusive lock held."""
        line = json.dumps(sample, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        cutoff = sample["t"] - RETENTION_S
        first = self._first_t()
        if first is not None and first < cutoff - 3600:
            keep = [ln for ln in self._lines() if any(s["t"] >= cutoff for s in self._parse([ln]))]
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(keep)
            os.replace(tmp, self.path)

    def read_since(self, t: float) -> list[dict]:
        samples = self._parse(self._lines())
        i = next((k for k, s in enumerate(samples) if s["t"] >= t), len(samples))
        return samples[max(0, i - 1):]

    def describe(self) -> str:
        return self.path


_memory = MemoryStore()


def store() -> MemoryStore | FileStore:
    """The history of the counters this process reads: the stack's file under uWSGI, else memory."""
    if metrics.multiprocess_enabled():
        return FileStore(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return _memory


def maybe_sample(st=None, now: float | None = None, started: float | None = None) -> bool:
    """Append a sample unless one was taken in this wall-clock minute. True if one was."""
    st = st or store()
    now = time.time() if now is None else now
    with st.locked():
        last = st.last()
        if last is not None and int(last["t"] // 60) >= int(now // 60):
            return False
        if last is None:
            if started is None:
                from ..runtime.info import server_started
                started = server_started()
            if started < now - 1:
                st.append(_zero_sample(started))
        st.append(take_sample(now))
        return True


# --- the sampler thread, one per process ------------------------------------------

_sampler_pid: int | None = None
_sampler_lock = threading.Lock()


def ensure_sampler() -> None:
    """Start this process's sampler thread (once; again in a forked child). Cheap: called on
    every request."""
    global _sampler_pid
    if _sampler_pid == os.getpid():
        return
    with _sampler_lock:
        if _sampler_pid == os.getpid():
            return
        _sampler_pid = os.getpid()
        st = store()
        threading.Thread(target=_run, args=(st,), name="stats-history", daemon=True).start()


def _run(st) -> None:
    while True:
        try:
            maybe_sample(st)
        except Exception:  # a full disk, a metrics file another worker is just creating...
            log.warning("stats history: sampling failed; retrying in a few seconds", exc_info=True)
            time.sleep(2 + random.random() * 2)  # must not end the thread, nor lose the minute
            continue
        now = time.time()
        # just after the next minute starts; the jitter spreads the workers' attempts
        time.sleep(60 - now % 60 + 0.5 + random.random() * 2)


# --- reading: per-interval series ---------------------------------------------------

def _delta(new: float, old: float) -> float:
    return new - old if new >= old else new  # a reset counter counts from zero


def _interval(a: dict, b: dict, model_of: dict[str, str]) -> dict:
    """Counts between samples a and b."""
    req: dict[str, dict[str, float]] = {}
    for ep, by_status in b.get("r", {}).items():
        old = a.get("r", {}).get(ep, {})
        req[ep] = {st: _delta(n, old.get(st, 0)) for st, n in by_status.items()}
    models: dict[str, dict] = {}
    for m, versions in b.get("m", {}).items():
        acc = models.setdefault(m, {"items": 0.0, "calls": 0.0, "buckets": {}, "versions": []})
        for v, cur in versions.items():
            acc["versions"].append(v)
            old = a.get("m", {}).get(m, {}).get(v, {})
            reset = cur.get("c", 0) < old.get("c", 0)
            acc["items"] += cur.get("n", 0) if reset else _delta(cur.get("n", 0), old.get("n", 0))
            acc["calls"] += cur.get("c", 0) if reset else cur.get("c", 0) - old.get("c", 0)
            old_b = old.get("b", {})
            for le, n in cur.get("b", {}).items():
                d = n if reset else max(0.0, n - old_b.get(le, 0))
                acc["buckets"][le] = acc["buckets"].get(le, 0.0) + d
    for m, acc in models.items():
        acc["requests"] = sum(sum(by.values()) for ep, by in req.items() if model_of.get(ep) == m)
    return {"requests": req, "models": models}


def _quantile_ms(buckets: dict[str, float], q: float) -> float | None:
    b = sorted((float(le), n) for le, n in buckets.items())
    v = metrics.quantile_from_buckets(b, q)
    return None if v is None else round(v * 1000, 2)


def series(samples: list[dict], now_sample: dict | None, minutes: int, model_of: dict[str, str] | None = None,
           models: list[str] = (), now: float | None = None) -> dict:
    """Per-interval rates, latencies and error counts of the last ``minutes`` minutes, columnar
    (``t[i]`` is the end of interval i, ``dt[i]`` its length in seconds)."""
    model_of = model_of or {}
    now = (now_sample or {}).get("t") or (time.time() if now is None else now)
    start = now - minutes * 60
    pts = sorted(samples, key=lambda s: s["t"])
    partial = False
    if now_sample is not None and (not pts or now_sample["t"] > pts[-1]["t"]):
        if len(pts) >= 2 and now_sample["t"] - pts[-1]["t"] < MIN_LIVE_INTERVAL_S:
            pts[-1] = now_sample  # no interval of a few seconds: the last one runs up to now
        else:
            pts.append(now_sample)
        partial = len(pts) >= 2
    intervals = [(a, b) for a, b in zip(pts, pts[1:]) if b["t"] > start and b["t"] > a["t"]]
    names = list(dict.fromkeys([*models, *(m for _, b in intervals for m in b.get("m", {}))]))
    out_models = {m: {"versions": [], "items_per_s": [], "requests_per_s": [], "calls_per_s": [],
                      "p50_ms": [], "p99_ms": [], "items": 0, "requests": 0, "calls": 0} for m in names}
    t, dt, total_rps = [], [], []
    err_series: dict[str, dict[str, list]] = {"api": {}, "other": {}}
    err_totals: dict[str, dict[str, int]] = {"api": {}, "other": {}}
    requests_total = 0
    for i, (a, b) in enumerate(intervals):
        d = b["t"] - a["t"]
        iv = _interval(a, b, model_of)
        t.append(round(b["t"], 3))
        dt.append(round(d, 3))
        n_req = sum(sum(by.values()) for by in iv["requests"].values())
        requests_total += n_req
        total_rps.append(round(n_req / d, 4))
        for ep, by in iv["requests"].items():
            kind = "other" if ep in metrics.NON_API_LABELS else "api"
            for status, n in by.items():
                if int(status) >= 400 and n > 0:
                    col = err_series[kind].setdefault(status, [0] * len(intervals))
                    col[i] += int(n)
                    err_totals[kind][status] = err_totals[kind].get(status, 0) + int(n)
        for m in names:
            om, acc = out_models[m], iv["models"].get(m)
            if acc is None:
                acc = {"items": 0, "calls": 0, "requests": 0, "buckets": {}, "versions": []}
                acc["requests"] = sum(sum(by.values()) for ep, by in iv["requests"].items() if model_of.get(ep) == m)
            om["versions"] = list(dict.fromkeys([*om["versions"], *acc["versions"]]))
            om["items_per_s"].append(round(acc["items"] / d, 4))
            om["requests_per_s"].append(round(acc["requests"] / d, 4))
            om["calls_per_s"].append(round(acc["calls"] / d, 4))
            om["p50_ms"].append(_quantile_ms(acc["buckets"], 0.5) if acc["calls"] > 0 else None)
            om["p99_ms"].append(_quantile_ms(acc["buckets"], 0.99) if acc["calls"] > 0 else None)
            om["items"] += int(acc["items"])
            om["requests"] += int(acc["requests"])
            om["calls"] += int(acc["calls"])
    for kind in err_series:  # statuses in order
        err_series[kind] = dict(sorted(err_series[kind].items()))
        err_totals[kind] = dict(sorted(err_totals[kind].items()))
    return {
        "minutes": minutes, "now": round(now, 3), "start": round(start, 3), "partial_last": partial,
        "t": t, "dt": dt, "requests_per_s": total_rps, "requests": requests_total,
        "models": out_models,
        "errors": err_series, "error_totals": err_totals,
        "non_api_labels": list(metrics.NON_API_LABELS),
    }


def history(minutes: int = 60, model_of: dict[str, str] | None = None, models: list[str] = ()) -> dict:
    """The JSON of ``GET /api/stats/history``: a sample is taken first if this minute has none."""
    st = store()
    now = time.time()
    try:
        maybe_sample(st, now)
    except OSError:
        log.exception("stats history: sampling failed")
    with st.locked(exclusive=False):
        samples = st.read_since(now - minutes * 60)
    out = series(samples, take_sample(now), minutes, model_of, models)
    out["store"] = {"kind": st.kind, "where": st.describe(), "samples": len(samples),
                    "multiprocess": metrics.multiprocess_enabled()}
    return out
