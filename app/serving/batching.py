"""Dynamic batching of one servable's requests inside one worker (any servable whose
``max_batch_size`` > 0; the translator's is ``TRANSLATE_BATCH_MAX``).

Concurrent requests are put on a queue, each as its items (batch rows) and a batch key;
one batcher thread per model and worker takes the oldest request, waits at most
``max_wait_ms`` for more requests with the same key (up to ``max_batch`` items in all),
runs all their items in ONE ``fn(items, key)`` call and hands each request its own slice
of the result. While a batch runs, new requests queue up and form the next batch without
any added wait, so under load batches fill by themselves.

* requests with different keys (e.g. greedy and beam 4) never share a batch;
* a request larger than the maximum batch runs alone (never split);
* if a batched call fails, each of its requests is retried alone, so one bad
  request gets its own error and the others their results;
* a request still queued after its timeout is taken off the queue and answered
  ``503 busy`` (the same contract as the lock used without batching).
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
    __slots__ = ("items", "key", "enqueued", "started", "done", "result", "error", "ms")

    def __init__(self, items: list, key):
        self.items = items
        self.key = key
        self.enqueued = time.perf_counter()
        self.started = False
        self.done = threading.Event()
        self.result: list | None = None
        self.error: BaseException | None = None
        self.ms = 0.0  # duration of the fn call that produced the result


class Batcher:
    """Collects concurrent requests and runs them as batched calls of ``fn(items, key)``.

    fn: the batched function (the registry's timed ``Servable.infer``); one output per item.
    max_batch: most items per call (a single bigger request still runs, alone).
    max_wait_ms: how long the oldest queued request may wait for company (0: no waiting;
    batches then form only from requests that queued while the previous call ran).
    on_batch(n_requests, n_items, key): called after each call (metrics).
    """

    def __init__(self, fn: Callable[[list, object], list], max_batch: int, max_wait_ms: float,
                 on_batch: Callable[[int, int, object], None] | None = None, name: str = "batcher"):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- client side ---------------------------------------------------------------
    def submit(self, items: list, key, timeout: float) -> list:
        """Results of ``items``; raises QueueTimeout if not started within ``timeout`` s,
        or the exception ``fn`` raised for this request."""
        return self.submit_timed(items, key, timeout)[0]

    def submit_timed(self, items: list, key, timeout: float) -> tuple[list, float]:
        """(results, ms of the fn call that produced them): see :meth:`submit`."""
        item = _Item(list(items), key)
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
        return item.result, item.ms  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # --- batcher thread --------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        """Wait for work, then remove and return one batch (same key, <= max_batch items)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.enqueued + self.max_wait
            while True:
                n = sum(len(it.items) for it in self._queue if it.key == first.key)
                now = time.perf_counter()
                if n >= self.max_batch or now >= deadline or self._closed:
                    break
                self._cond.wait(deadline - now)
                if not self._queue or self._queue[0] is not first:  # it timed out meanwhile
                    return []
            batch, total = [], 0
            for it in list(self._queue):
                if it.key != first.key:
                    continue
                if batch and total + len(it.items) > self.max_batch:
                    break
                batch.append(it)
                total += len(it.items)
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
                log.exception("batcher error")
                for it in batch or ():
                    if not it.done.is_set():
                        it.error = it.error or exc
                        it.done.set()

    def _execute(self, batch: list[_Item]) -> None:
        key = batch[0].key
        items = [t for it in batch for t in it.items]
        t0 = time.perf_counter()
        try:
            out = self.fn(items, key)
            if len(out) != len(items):
                raise RuntimeError(f"batched call returned {len(out)} outputs for {len(items)} items")
        except BaseException as exc:  # noqa: BLE001 - isolate the failing request(s)
            if len(batch) == 1:
                batch[0].error = exc
            else:
                log.warning("batched call of %d requests failed (%s); retrying one by one",
                            len(batch), exc)
                for it in batch:
                    t1 = time.perf_counter()
                    try:
                        it.result = list(self.fn(it.items, key))
                    except BaseException as exc1:  # noqa: BLE001
                        it.error = exc1
                    it.ms = (time.perf_counter() - t1) * 1000
            out = None
        if out is not None:
            ms = (time.perf_counter() - t0) * 1000
            i = 0
            for it in batch:
                it.result = list(out[i:i + len(it.items)])
                it.ms = ms
                i += len(it.items)
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), len(items), key)
            except Exception:  # metrics must never break a batch
                log.exception("on_batch callback failed")
        for it in batch:
            it.done.set()
