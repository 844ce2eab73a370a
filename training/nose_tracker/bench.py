"""Forward-pass latency of the shipped nose tracker through cv2.dnn, ONE thread.

  .venv/bin/python training/nose_tracker/bench.py [--pb models/nose_tracker/1.4.0/nose_tracker.pb] [--n 500]

Times net.setInput(blob) + net.forward() for one 1x3x112x112 float32 blob (the
preprocessing is not included) and prints median / p90 / min in milliseconds,
plus the per-image time for a batch of 16.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np



def bench(pb, n=500, threads=1, batch=1):
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    blob = np.random.default_rng(0).random((batch, 3, 112, 112), dtype=np.float32)
    for _ in range(30):
        net.setInput(blob)
        net.forward()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        net.setInput(blob)
        net.forward()
        ts.append((time.perf_counter() - t) * 1000)
    return np.array(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pb", default=None, help="default: the model repository's current nose_tracker")
    ap.add_argument("--n", type=int, default=500)
    a = ap.parse_args()
    if a.pb is None:
        from training.face_detector.evaluate import served_nose_pb
        a.pb = str(served_nose_pb())
    ts = bench(a.pb, a.n)
    print(f"{Path(a.pb).name}: cv2 {cv2.__version__}, 1 thread, batch 1, n={a.n}: "
          f"median {np.median(ts):.3f} ms  p90 {np.percentile(ts, 90):.3f} ms  min {ts.min():.3f} ms")
    tb = bench(a.pb, max(20, a.n // 10), batch=16)
    print(f"batch 16: median {np.median(tb):.2f} ms/batch = {np.median(tb) / 16:.3f} ms/image")


if __name__ == "__main__":
    main()
