"""Latency of each endpoint through nginx (sequential), plus a concurrent throughput run.

    .venv/bin/python bench/bench.py --base http://127.0.0.1:8080 --n 50 [--image face.jpg]

Prints a Markdown table (p50/p90/mean ms per endpoint). Only ever targets the
given local URL; bounded request counts.
"""
from __future__ import annotations

import argparse
import base64
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import requests


def synthetic(w=400, h=400):
    img = np.full((h, w, 3), 120, np.uint8)
    cv2.ellipse(img, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, (150, 180, 220), -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


VOCAB = ("the a man woman child house car dog cat river city green red big small old new walks runs eats "
         "sees loves reads buys today tomorrow with under near book table water bread garden station").split()


class Sentences:
    """Distinct, reproducible English sentences (the translator caches repeats)."""

    def __init__(self, seed=0):
        import random
        self.rnd = random.Random(seed)

    def __call__(self, words=10):
        return " ".join(self.rnd.choice(VOCAB) for _ in range(words)).capitalize() + "."


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--image")
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    img = open(a.image, "rb").read() if a.image else synthetic()
    b64 = base64.b64encode(img).decode()
    s = requests.Session()
    sentence = "The weather is nice today and we are going to the beach."
    new = Sentences()
    cases = {
        "GET /healthz": lambda: s.get(a.base + "/healthz"),
        "POST /image-64 (400x400 JPEG)": lambda: s.post(a.base + "/image-64", json={"image": b64}),
        "POST /image-bin (400x400 JPEG)": lambda: s.post(a.base + "/image-bin", files={"image": ("f.jpg", img)}),
        "POST /api/translate (1 new 10-word sentence, greedy)":
            lambda: s.post(a.base + "/api/translate", json={"text": new()}),
        "POST /api/translate (1 new 10-word sentence, beam 4)":
            lambda: s.post(a.base + "/api/translate", json={"text": new(), "beam": 4}),
        "POST /api/translate (batch of 8 new sentences, greedy)":
            lambda: s.post(a.base + "/api/translate", json={"texts": [new() for _ in range(8)]}),
        "POST /api/translate (repeated sentence: translator's LRU cache)":
            lambda: s.post(a.base + "/api/translate", json={"text": sentence}),
        "POST /result (HTML form, new sentence)": lambda: s.post(a.base + "/result", data={"English": new()}),
        "GET /dashboard": lambda: s.get(a.base + "/dashboard"),
    }
    print(f"| Endpoint (through nginx, n={a.n}, sequential) | p50 ms | p90 ms | mean ms |")
    print("|---|---|---|---|")
    for name, fn in cases.items():
        if fn().status_code == 503:
            print(f"| {name} | not ready | | |")
            continue
        for _ in range(2):
            fn()  # warm
        xs = []
        for _ in range(a.n):
            t0 = time.perf_counter()
            r = fn()
            xs.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
        print(f"| {name} | {pct(xs, .5):.1f} | {pct(xs, .9):.1f} | {statistics.mean(xs):.1f} |")

    def one(_):
        t0 = time.perf_counter()
        r = requests.post(a.base + "/image-64", json={"image": b64}, timeout=60)
        assert r.status_code == 200
        return (time.perf_counter() - t0) * 1000

    n = a.n * 4
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.concurrency) as ex:
        xs = list(ex.map(one, range(n)))
    wall = time.perf_counter() - t0
    print(f"\n/image-64 with {a.concurrency} concurrent clients: {n / wall:.0f} req/s, "
          f"p50 {pct(xs, .5):.1f} ms, p90 {pct(xs, .9):.1f} ms")


if __name__ == "__main__":
    main()
