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
INFERENCE = Histogram("model_inference_seconds", "Model forward pass time (inside the model lock)",
                      ["model"], buckets=INFERENCE_BUCKETS)
ITEMS = Counter("model_items_total", "Images or texts processed by a model", ["model"])
BATCH_REQUESTS = Histogram("translator_batch_requests", "Requests decoded together in one batched translator call",
                           buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64))
BATCH_TEXTS = Histogram("translator_batch_texts", "Texts decoded together in one batched translator call",
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
TRANSLATE_CACHE_HITS = Counter("translator_cache_hits_total",
                               "Translation requests answered entirely from the LRU cache (no decoding)")
MODEL_INFO = Gauge("model_info", "Models loaded by live workers (value 1)",
                   ["model", "version", "sha256"], multiprocess_mode="liveall")
MODEL_LOAD = Gauge("model_load_seconds", "Model load + warm-up time of live workers",
                   ["model"], multiprocess_mode="liveall")

#: Endpoints shown on the dashboard, in display order.
DASHBOARD_ENDPOINTS = (
    ("image_64", "Nose, base64 (POST /image-64)"),
    ("image_bin", "Nose, binary (POST /image-bin)"),
    ("translate_api", "Translation API (POST /api/translate)"),
    ("translate_form", "Translation form (POST /result)"),
)


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


def snapshot() -> dict:
    """Aggregated numbers for the dashboard (all workers)."""
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    by_status: dict[str, int] = {}
    buckets: dict[str, dict[float, float]] = {}
    lat_sum: dict[str, float] = {}
    inference: dict[str, dict[float, float]] = {}
    inference_count: dict[str, float] = {}
    batching = {"batches": 0, "requests": 0, "texts": 0, "cache_hits": 0}
    batch_hist: dict[float, float] = {}
    for metric in registry().collect():
        for s in metric.samples:
            if s.name == "http_requests_total":
                ep, status = s.labels["endpoint"], s.labels["status"]
                counts[ep] = counts.get(ep, 0) + int(s.value)
                by_status[status] = by_status.get(status, 0) + int(s.value)
                if int(status) >= 400:
                    errors[ep] = errors.get(ep, 0) + int(s.value)
            elif s.name == "http_request_duration_seconds_bucket":
                ep = s.labels["endpoint"]
                le = float(s.labels["le"])
                buckets.setdefault(ep, {})
                buckets[ep][le] = buckets[ep].get(le, 0.0) + s.value
            elif s.name == "http_request_duration_seconds_sum":
                ep = s.labels["endpoint"]
                lat_sum[ep] = lat_sum.get(ep, 0.0) + s.value
            elif s.name == "model_inference_seconds_bucket":
                m = s.labels["model"]
                le = float(s.labels["le"])
                inference.setdefault(m, {})
                inference[m][le] = inference[m].get(le, 0.0) + s.value
            elif s.name == "model_inference_seconds_count":
                m = s.labels["model"]
                inference_count[m] = inference_count.get(m, 0.0) + s.value
            elif s.name == "translator_batch_requests_count":
                batching["batches"] += int(s.value)
            elif s.name == "translator_batch_requests_sum":
                batching["requests"] += int(s.value)
            elif s.name == "translator_batch_texts_sum":
                batching["texts"] += int(s.value)
            elif s.name == "translator_cache_hits_total":
                batching["cache_hits"] += int(s.value)
            elif s.name == "translator_batch_requests_bucket":
                le = float(s.labels["le"])
                batch_hist[le] = batch_hist.get(le, 0.0) + s.value

    def pct(bmap: dict[float, float]) -> dict:
        b = sorted(bmap.items())
        out = {}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            v = quantile_from_buckets(b, q)
            out[name] = None if v is None else round(v * 1000, 1)
        return out

    latency = {ep: {**pct(b), "count": int(b.get(math.inf, 0)),
                    "mean_ms": round(lat_sum.get(ep, 0) / b[math.inf] * 1000, 1) if b.get(math.inf) else None}
               for ep, b in buckets.items()}
    inf = {m: {**pct(b), "count": int(inference_count.get(m, 0))} for m, b in inference.items()}
    return {
        "generated_at": time.time(),
        "counts": counts,
        "errors": errors,
        "errors_total": sum(errors.values()),
        "requests_total": sum(counts.values()),
        "by_status": by_status,
        "latency_ms": latency,
        "inference_ms": inf,
        "translator_batching": {
            **batching,
            "mean_requests_per_batch": round(batching["requests"] / batching["batches"], 2)
            if batching["batches"] else None,
            # cumulative: batches of at most N requests
            "batches_le": {("+Inf" if math.isinf(k) else str(int(k))): int(v) for k, v in sorted(batch_hist.items())},
        },
    }
