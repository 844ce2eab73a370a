"""Dynamic batching of translation requests inside one worker.

Concurrent ``/api/translate`` (and ``/result``) requests are put on a queue;
one batcher thread per worker takes the oldest request, waits at most
``TRANSLATE_BATCH_WAIT_MS`` for more requests with the same beam (up to
``TRANSLATE_BATCH_MAX`` texts in all), decodes all their texts in ONE
``Translator.translate(texts, beam)`` call and hands each request its own slice
of the result. While a batch is decoding, new requests queue up and form the
next batch without any added wait, so under load batches fill by themselves.

* greedy and beam requests never share a batch (a batch has one beam);
* a request larger than the maximum batch is decoded alone (never split);
* if a batched call fails, each of its requests is retried alone, so one bad
  request gets its own error and the others their translations;
* a request still queued after ``TRANSLATE_WAIT_TIMEOUT`` seconds is taken
  off the queue and answered ``503 busy`` (the same contract as without batching).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)


class QueueTimeout(RuntimeError):
    """The request was not started within the wait timeout."""


class _Item:
    __slots__ = ("texts", "beam", "enqueued", "started", "done", "result", "error")

    def __init__(self, texts: list[str], beam: int):
        self.texts = texts
        self.beam = beam
        self.enqueued = time.perf_counter()
        self.started = False
        self.done = threading.Event()
        self.result: list[str] | None = None
        self.error: BaseException | None = None


class Batcher:
    """Collects concurrent requests and runs them as batched calls of ``fn(texts, beam)``.

    fn: the batched function (``Translator.translate``); it must return one output per text.
    max_batch: most texts per call (a single bigger request still runs, alone).
    max_wait_ms: how long the oldest queued request may wait for company (0: no waiting;
    batches then form only from requests that queued while the previous call ran).
    on_batch(n_requests, n_texts, beam): called after each call (metrics).
    """

    def __init__(self, fn: Callable[[list[str], int], list[str]], max_batch: int, max_wait_ms: float,
                 on_batch: Callable[[int, int, int], None] | None = None, name: str = "batcher"):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches = self.requests = 0  # counters (this process)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- client side ---------------------------------------------------------------
    def submit(self, texts: list[str], beam: int, timeout: float) -> list[str]:
        """Translations of ``texts``; raises QueueTimeout if not started within ``timeout`` s,
        or the exception the translator raised for this request."""
        item = _Item(list(texts), int(beam))
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._queue.append(item)
            self._cond.notify_all()
        if not item.done.wait(timeout):
            with self._cond:
                if not item.started:
                    try:
                        self._queue.remove(item)
                    except ValueError:  # pragma: no cover - taken just now
                        pass
                    else:
                        raise QueueTimeout(f"not started within {timeout:g} s")
            item.done.wait()  # started: it finishes (HARAKIRI bounds a stuck call)
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # --- batcher thread --------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        """Wait for work, then remove and return one batch (same beam, <= max_batch texts)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.enqueued + self.max_wait
            while True:
                n = sum(len(it.texts) for it in self._queue if it.beam == first.beam)
                now = time.perf_counter()
                if n >= self.max_batch or now >= deadline or self._closed:
                    break
                self._cond.wait(deadline - now)
                if not self._queue or self._queue[0] is not first:  # it timed out meanwhile
                    return []
            batch, total = [], 0
            for it in list(self._queue):
                if it.beam != first.beam:
                    continue
                if batch and total + len(it.texts) > self.max_batch:
                    break
                batch.append(it)
                total += len(it.texts)
            for it in batch:
                self._queue.remove(it)
                it.started = True
            return batch

    def _run(self) -> None:
        while True:
            batch = None
            try:
                batch = self._take()
                if batch is None:
                    return
                if batch:
                    self._execute(batch)
            except BaseException as exc:  # noqa: BLE001 - the batcher thread must never die
                log.exception("translation batcher error")
                for it in batch or ():
                    if not it.done.is_set():
                        it.error = it.error or exc
                        it.done.set()

    def _execute(self, batch: list[_Item]) -> None:
        beam = batch[0].beam
        texts = [t for it in batch for t in it.texts]
        try:
            out = self.fn(texts, beam)
            if len(out) != len(texts):
                raise RuntimeError(f"batched call returned {len(out)} outputs for {len(texts)} texts")
        except BaseException as exc:  # noqa: BLE001 - isolate the failing request(s)
            if len(batch) == 1:
                batch[0].error = exc
            else:
                log.warning("batched translation of %d requests failed (%s); retrying one by one",
                            len(batch), exc)
                for it in batch:
                    try:
                        it.result = list(self.fn(it.texts, beam))
                    except BaseException as exc1:  # noqa: BLE001
                        it.error = exc1
            out = None
        if out is not None:
            i = 0
            for it in batch:
                it.result = list(out[i:i + len(it.texts)])
                i += len(it.texts)
        self.batches += 1
        self.requests += len(batch)
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), len(texts), beam)
            except Exception:  # metrics must never break a batch
                log.exception("on_batch callback failed")
        for it in batch:
            it.done.set()
