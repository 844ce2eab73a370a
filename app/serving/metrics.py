"""Prometheus metrics, exact across uWSGI workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (always under uWSGI: app.ini sets it,
start.sh and the tests empty it before start), prometheus_client writes every
sample to per-process mmap files and :func:`registry` aggregates all of them,
so a counter read by any worker includes every worker's increments.  Without
it (``python -m app serve``, unit tests) the default in-process registry is used.
"""
from __future__ import annotations

import math
import os
import re
import time
from collections import defaultdict

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                   1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0,
                     2.0, 5.0, 10.0, 30.0)

REQUESTS = Counter("http_requests_total", "HTTP requests handled by the app",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("http_request_duration_seconds", "Time spent in the app per request",
                    ["endpoint"], buckets=LATENCY_BUCKETS)
INFERENCE = Histogram("model_inference_seconds", "Time inside a model's infer() call (under its lock or batcher)",
                      ["model", "version"], buckets=INFERENCE_BUCKETS)
ITEMS = Counter("model_items_total", "Items (batch rows: images, texts) run through a model's infer()",
                ["model", "version"])
BATCH_REQUESTS = Histogram("model_batch_requests", "Requests served by one batched infer() call",
                           ["model", "version"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64))
BATCH_ITEMS = Histogram("model_batch_items", "Items in one batched infer() call", ["model", "version"],
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
CACHE_HITS = Counter("model_cache_hits_total", "Requests answered entirely from a model's cache (no infer())",
                     ["model", "version"])
QUEUE_DEPTH = Gauge("model_queue_depth", "Requests waiting for or inside a model's infer() (all live workers)",
                    ["model", "version"], multiprocess_mode="livesum")
MODEL_INFO = Gauge("model_info", "Models loaded by live workers (value 1)",
                   ["model", "version", "sha256"], multiprocess_mode="liveall")
MODEL_LOAD = Gauge("model_load_seconds", "Model load + warm-up time of live workers",
                   ["model", "version"], multiprocess_mode="liveall")


def model_loaded(labels: tuple[str, str], sha256: str, seconds: float) -> None:
    MODEL_INFO.labels(*labels, sha256).set(1)
    MODEL_LOAD.labels(*labels).set(seconds)


def observe_batch(labels: tuple[str, str], n_requests: int, n_items: int) -> None:
    BATCH_REQUESTS.labels(*labels).observe(n_requests)
    BATCH_ITEMS.labels(*labels).observe(n_items)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry() -> CollectorRegistry:
    if multiprocess_enabled():
        prune_dead_processes()
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return reg
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """Drop the live-gauge files of an exiting worker (counters are kept)."""
    if multiprocess_enabled():
        try:
            multiprocess.mark_process_dead(pid or os.getpid())
        except Exception:  # never fail a shutdown over metrics
            pass


_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def prune_dead_processes() -> list[int]:
    """Drop the live-gauge files of workers that died without exiting cleanly.

    A worker killed by SIGKILL (HARAKIRI, the request watchdog, the OOM killer) or a crash
    never runs its uwsgi.atexit hook, so without this its ``model_info`` would be exported
    for a dead pid until the next restart. Returns the pids pruned."""
    try:
        names = os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    except (KeyError, OSError):
        return []
    dead = sorted({int(m.group(1)) for m in map(_LIVE_FILE.match, names) if m} - {os.getpid()})
    dead = [pid for pid in dead if not _alive(pid)]
    for pid in dead:
        mark_process_dead(pid)
    return dead


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """histogram_quantile(): buckets are (upper_bound, cumulative count), sorted, ending at +Inf."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # above the largest finite bucket: report its bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _percentiles(bmap: dict[float, float]) -> dict:
    b = sorted(bmap.items())
    out = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        v = quantile_from_buckets(b, q)
        out[name] = None if v is None else round(v * 1000, 1)
    return out


class _Sums:
    """Samples summed over workers, keyed by (metric sample name, label tuple)."""

    def __init__(self):
        self.values: dict[tuple, float] = defaultdict(float)

    def add(self, sample, *label_names: str) -> None:
        self.values[(sample.name, *(sample.labels.get(n, "") for n in label_names))] += sample.value

    def by(self, name: str) -> dict[tuple, float]:
        return {k[1:]: v for k, v in self.values.items() if k[0] == name}


#: sample name -> the labels it is summed by
_SNAPSHOT_SAMPLES = {
    "http_requests_total": ("endpoint", "status"),
    "http_request_duration_seconds_bucket": ("endpoint", "le"),
    "http_request_duration_seconds_sum": ("endpoint",),
    "model_inference_seconds_bucket": ("model", "version", "le"),
    "model_inference_seconds_count": ("model", "version"),
    "model_items_total": ("model", "version"),
    "model_batch_requests_count": ("model", "version"),
    "model_batch_requests_sum": ("model", "version"),
    "model_batch_requests_bucket": ("model", "version", "le"),
    "model_batch_items_sum": ("model", "version"),
    "model_cache_hits_total": ("model", "version"),
    "model_queue_depth": ("model", "version"),
}


def _collect() -> _Sums:
    sums = _Sums()
    for metric in registry().collect():
        for s in metric.samples:
            labels = _SNAPSHOT_SAMPLES.get(s.name)
            if labels is not None:
                sums.add(s, *labels)
    return sums


#: ``endpoint`` labels that are not the API or its pages: ``static`` (files under /static/ and
#: /favicon.ico when the app serves them: the dev server; nginx serves them in the stack) and
#: ``unmatched`` (no route: an unknown path such as a browser's or a scanner's guess, or a
#: known path with a method it does not take). Their 4xx are counted apart from the API's errors.
NON_API_LABELS = ("static", "unmatched")


def _requests(sums: _Sums) -> dict:
    counts: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    by_status: dict[str, int] = defaultdict(int)
    errors_by_status: dict[str, int] = defaultdict(int)
    other_by_status: dict[str, int] = defaultdict(int)
    for (ep, status), v in sums.by("http_requests_total").items():
        counts[ep] += int(v)
        by_status[status] += int(v)
        if int(status) >= 400:
            errors[ep] += int(v)
            (other_by_status if ep in NON_API_LABELS else errors_by_status)[status] += int(v)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    for (ep, le), v in sums.by("http_request_duration_seconds_bucket").items():
        buckets[ep][float(le)] = v
    lat_sum = {ep: v for (ep,), v in sums.by("http_request_duration_seconds_sum").items()}
    latency = {ep: {**_percentiles(b), "count": int(b.get(math.inf, 0)),
                    "mean_ms": round(lat_sum.get(ep, 0) / b[math.inf] * 1000, 1) if b.get(math.inf) else None}
               for ep, b in buckets.items()}
    return {"counts": dict(counts), "errors": dict(errors),
            # errors of the API and its pages; the static/unmatched ones are errors_other_total
            "errors_total": sum(n for ep, n in errors.items() if ep not in NON_API_LABELS),
            "errors_by_status": dict(sorted(errors_by_status.items())),
            "errors_other_total": sum(n for ep, n in errors.items() if ep in NON_API_LABELS),
            "errors_other_by_status": dict(sorted(other_by_status.items())),
            "requests_total": sum(counts.values()), "by_status": dict(by_status), "latency_ms": latency}


def _models(sums: _Sums) -> dict:
    """Per model and version: inference percentiles, items, batching, cache hits, queue depth."""
    inference: dict[tuple, dict[float, float]] = defaultdict(dict)
    for (m, v, le), n in sums.by("model_inference_seconds_bucket").items():
        inference[(m, v)][float(le)] = n
    batch_hist: dict[tuple, dict[float, float]] = defaultdict(dict)
    for (m, v, le), n in sums.by("model_batch_requests_bucket").items():
        batch_hist[(m, v)][float(le)] = n
    get = {name: sums.by(name) for name in ("model_inference_seconds_count", "model_items_total",
                                             "model_batch_requests_count", "model_batch_requests_sum",
                                             "model_batch_items_sum", "model_cache_hits_total", "model_queue_depth")}
    keys = set(inference) | {k for d in get.values() for k in d}
    out: dict[str, dict] = defaultdict(dict)
    for m, v in sorted(keys):
        k = (m, v)
        batches = int(get["model_batch_requests_count"].get(k, 0))
        requests = int(get["model_batch_requests_sum"].get(k, 0))
        out[m][v] = {
            "inference_ms": {**_percentiles(inference.get(k, {})),
                             "count": int(get["model_inference_seconds_count"].get(k, 0))},
            "items": int(get["model_items_total"].get(k, 0)),
            "cache_hits": int(get["model_cache_hits_total"].get(k, 0)),
            "queue_depth": int(get["model_queue_depth"].get(k, 0)),
            "batching": {
                "batches": batches, "requests": requests,
                "items": int(get["model_batch_items_sum"].get(k, 0)),
                "mean_requests_per_batch": round(requests / batches, 2) if batches else None,
                # cumulative: batches of at most N requests
                "batches_le": {("+Inf" if math.isinf(le) else str(int(le))): int(n)
                               for le, n in sorted(batch_hist.get(k, {}).items())},
            },
        }
    return dict(out)


def history_counters() -> dict:
    """The cumulative counters app/serving/history.py stores once a minute (all workers):
    ``r``: {endpoint: {status: requests}}; ``m``: {model: {version: {"n": items, "c": infer()
    calls, "b": {upper bound: cumulative count}}}} of model_inference_seconds."""
    sums = _collect()
    req: dict[str, dict[str, int]] = defaultdict(dict)
    for (ep, status), v in sums.by("http_requests_total").items():
        req[ep][status] = int(v)
    models: dict[str, dict[str, dict]] = defaultdict(dict)

    def entry(m, v):
        return models[m].setdefault(v, {"n": 0, "c": 0, "b": {}})

    for (m, v), n in sums.by("model_items_total").items():
        entry(m, v)["n"] = int(n)
    for (m, v), n in sums.by("model_inference_seconds_count").items():
        entry(m, v)["c"] = int(n)
    for (m, v, le), n in sums.by("model_inference_seconds_bucket").items():
        entry(m, v)["b"][le] = int(n)
    return {"r": dict(req), "m": dict(models)}


def snapshot() -> dict:
    """Aggregated numbers for the dashboard and /api/stats (all workers)."""
    sums = _collect()
    return {"generated_at": time.time(), **_requests(sums), "models": _models(sums)}
