"""What the CNN trainings share (nose tracker, face detector): batches made by producer threads
into a bounded queue, and a wall-clock budget with a cosine learning rate."""
from __future__ import annotations

import math
import queue
import threading
import time
from typing import Callable, Iterator


def start_producers(make_batch: Callable[[int], object], n: int, maxsize: int = 8
                    ) -> tuple[queue.Queue, threading.Event]:
    """n daemon threads, thread k putting ``make_batch(k)``'s batches into the queue until the
    event is set. make_batch(k) returns a callable making one batch (each thread its own
    generator, so its random stream is its own)."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def run(k):
        make = make_batch(k)
        while not stop.is_set():
            b = make()
            while not stop.is_set():
                try:
                    q.put(b, timeout=0.5)
                    break
                except queue.Full:
                    pass
    for k in range(n):
        threading.Thread(target=run, args=(k,), daemon=True).start()
    return q, stop


def cosine_steps(minutes: float, steps: int, lr: float, warm: int = 300) -> Iterator[tuple[int, float, float, float]]:
    """Yields (step, elapsed s, progress 0..1, learning rate) until the budget is spent: ``steps``
    steps when > 0 (repeatable), else ``minutes`` of wall-clock time. Linear warm-up over
    ``warm`` steps, then cosine decay over the budget."""
    t0 = time.time()
    step = 0
    while True:
        el = time.time() - t0
        prog = step / steps if steps else el / (minutes * 60)
        if prog >= 1.0:
            return
        yield step, el, prog, lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * prog))
        step += 1
