"""Dynamic batching of translation requests (app/serving/batching.py).

Unit tests drive the Batcher with a recording function (no model); the end-to-end
test sends new sentences concurrently through nginx + uWSGI and checks that every
answer equals a separate process's one-by-one translation and that the workers
really decoded several requests per call (the model_batch_requests histogram).
"""
from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.serving.batching import Batcher, QueueTimeout

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """fn(texts, beam): upper-cases, remembers every call, optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.calls: list[tuple[list[str], int]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, texts, beam):
        with self.lock:
            self.calls.append((list(texts), beam))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot translate {self.fail_on!r}")
        return [f"{t.upper()}/{beam}" for t in texts]


def _concurrently(batcher, jobs, timeout=10.0):
    def run(job):
        texts, beam = job
        try:
            return batcher.submit(texts, beam, timeout)
        except Exception as exc:  # noqa: BLE001
            return exc
    with ThreadPoolExecutor(len(jobs)) as ex:
        return list(ex.map(run, jobs))


def test_concurrent_requests_are_batched_and_routed_back():
    rec = Recorder(delay=0.05)
    batches = []
    b = Batcher(rec, max_batch=64, max_wait_ms=30, on_batch=lambda n_req, n_items, key: batches.append(n_req))
    jobs = [([f"t{i}a", f"t{i}b"] if i % 3 == 0 else [f"t{i}"], 1) for i in range(12)]
    out = _concurrently(b, jobs)
    for (texts, beam), res in zip(jobs, out):
        assert res == [f"{t.upper()}/1" for t in texts]
    # far fewer calls than requests, and no text decoded twice
    assert len(rec.calls) < len(jobs)
    assert sorted(t for texts, _ in rec.calls for t in texts) == sorted(t for texts, _ in jobs for t in texts)
    assert sum(batches) == len(jobs) and len(batches) == len(rec.calls)
    b.close()


def test_beams_never_share_a_batch_and_max_batch_is_respected():
    rec = Recorder(delay=0.02)
    b = Batcher(rec, max_batch=4, max_wait_ms=20)
    jobs = [([f"g{i}"], 1) for i in range(10)] + [([f"b{i}"], 4) for i in range(6)] + [([f"x{i}" for i in range(6)], 1)]
    out = _concurrently(b, jobs)
    for (texts, beam), res in zip(jobs, out):
        assert res == [f"{t.upper()}/{beam}" for t in texts]
    for texts, beam in rec.calls:
        assert all(t.startswith("b") for t in texts) == (beam == 4)
        # a 6-text request runs alone; otherwise at most max_batch texts per call
        assert len(texts) <= 4 or (len(texts) == 6 and texts[0].startswith("x"))
    b.close()


def test_one_failing_request_does_not_break_the_others():
    rec = Recorder(delay=0.02, fail_on="bad")
    b = Batcher(rec, max_batch=64, max_wait_ms=50)
    jobs = [(["good1"], 1), (["bad"], 1), (["good2", "good3"], 1), (["good4"], 1)]
    out = _concurrently(b, jobs)
    assert out[0] == ["GOOD1/1"] and out[2] == ["GOOD2/1", "GOOD3/1"] and out[3] == ["GOOD4/1"]
    assert isinstance(out[1], ValueError) and "bad" in str(out[1])
    b.close()


def test_zero_wait_batches_only_what_queued_meanwhile():
    rec = Recorder(delay=0.0)
    b = Batcher(rec, max_batch=32, max_wait_ms=0)
    assert b.submit(["alone"], 1, 5) == ["ALONE/1"]
    assert rec.calls == [(["alone"], 1)]
    b.close()


def test_request_not_started_in_time_gets_queue_timeout():
    started = threading.Event()
    release = threading.Event()

    def slow(texts, beam):
        started.set()
        release.wait(10)
        return texts

    b = Batcher(slow, max_batch=1, max_wait_ms=0)
    first = threading.Thread(target=lambda: b.submit(["first"], 1, 10))
    first.start()
    assert started.wait(5)
    t0 = time.perf_counter()
    with pytest.raises(QueueTimeout):
        b.submit(["second"], 1, 0.3)
    assert 0.25 < time.perf_counter() - t0 < 3
    assert b.queued() == 0  # taken off the queue, never decoded
    release.set()
    first.join(10)
    b.close()


# --- end to end ---------------------------------------------------------------------------

VOCAB = ("the a man woman child house car dog cat river city green red big small old new walks runs "
         "eats sees loves reads buys today tomorrow with under near book table water bread garden").split()


def _reference(texts: list[str], beam: int) -> list[str]:
    """One-by-one translations by `python -m app translate` in a separate process."""
    proc = subprocess.run([sys.executable, "-m", "app", "translate", "--threads", "1", "--chunk", "1",
                           "--beam", str(beam)], cwd=ROOT, input="\n".join(texts) + "\n",
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.split("\n")[:-1]
    assert len(out) == len(texts) and all(o.strip() for o in out)
    return out


def _batch_metrics(stack) -> tuple[float, float, float]:
    """(batches, requests in batches, batches of exactly one request) over all workers."""
    text = stack.get("/metrics").text

    def value(pattern):
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else 0.0
    labels = r'model="translator",version="[^"]+"'
    return (value(r"^model_batch_requests_count\{%s\} (\S+)" % labels),
            value(r"^model_batch_requests_sum\{%s\} (\S+)" % labels),
            value(r'^model_batch_requests_bucket\{le="1\.0",%s\} (\S+)' % labels))


def test_concurrent_translations_are_batched_and_exact(stack):
    rnd = random.Random(time.time_ns())
    greedy = [" ".join(rnd.choice(VOCAB) for _ in range(rnd.randint(5, 12))).capitalize() + "." for _ in range(24)]
    beam4 = [" ".join(rnd.choice(VOCAB) for _ in range(rnd.randint(5, 9))).capitalize() + "." for _ in range(6)]
    expected = {(t, 1): o for t, o in zip(greedy, _reference(greedy, 1))}
    expected.update({(t, 4): o for t, o in zip(beam4, _reference(beam4, 4))})
    jobs = [(t, 1) for t in greedy] + [(t, 4) for t in beam4]
    rnd.shuffle(jobs)
    before = _batch_metrics(stack)

    def run(job):
        text, beam = job
        r = stack.post("/api/translate", json={"text": text, "beam": beam})
        assert r.status_code == 200, r.text
        return r.json()["translation"]

    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(run, jobs))
    for job, res in zip(jobs, results):
        assert res == expected[job], job
    after = _batch_metrics(stack)
    batches, requests, singles = (a - b for a, b in zip(after, before))
    assert requests == len(jobs)  # every (new) request went through a batcher exactly once
    assert batches < len(jobs)    # ...and some calls decoded several requests
    assert singles < batches
    (stats,) = [v["batching"] for v in stack.get("/api/stats").json()["metrics"]["models"]["translator"].values()]
    assert stats["batches"] >= after[0] and stats["requests"] >= after[1]
    assert stats["batches_le"]["1"] >= after[2] and stats["mean_requests_per_batch"] >= 1
