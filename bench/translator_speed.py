"""Translator speed, in process (no HTTP): the issue-3 targets, printed as a Markdown table.

- one 10-word sentence, greedy and beam 4, one TensorFlow thread: median and p90 ms;
- a batch of 64 mixed-length sentences, greedy, two threads: sentences/s.

Usage: .venv/bin/python bench/translator_speed.py [--model-dir models/translator] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from app.serving.repository import version_dir

ROOT = Path(__file__).resolve().parents[1]

TEN_WORDS = "I would like to buy a ticket to Madrid for tomorrow."
MIXED = [
    "Hello.", "Thank you very much.", "Where is the station?", "I have a house.",
    "She is reading a book in the garden.", "We will go to the beach if it does not rain.",
    "Tom told me that he did not want to go to school tomorrow morning.",
    "Can you help me?", "It is cold today.", "My brother lives in a small town near the sea.",
    "I don't know what to do.", "They bought a new car last week.",
    "The children are playing in the park with their dog.", "What time is it?",
    "I think that this is the best restaurant in the city, but it is very expensive.",
    "He works at the hospital.",
]
# 64 distinct sentences of mixed length (identical sentences would be decoded once).
BATCH = (MIXED + [f"Yesterday {s[0].lower()}{s[1:]}" for s in MIXED]
         + [f"I think that {s[0].lower()}{s[1:]}" for s in MIXED]
         + [f"{s[:-1]}, but not today." for s in MIXED])


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=str(version_dir("translator")))
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from app.servables.translator.model import Translator
    t = Translator.load(args.model_dir, cache_size=0)  # measure decoding, not the LRU cache
    t.warmup()
    rows = []
    for beam, target in ((1, 25.0), (4, 60.0)):
        t.translate([TEN_WORDS], beam=beam)
        ms = timed(lambda: t.translate([TEN_WORDS], beam=beam), args.repeat)
        med = statistics.median(ms)
        rows.append((f"10-word sentence, {'greedy' if beam == 1 else f'beam {beam}'}, 1 thread",
                     f"{med:.1f} ms median (p90 {sorted(ms)[int(0.9 * len(ms))]:.1f})",
                     f"<= {target:.0f} ms", med <= target))
    # intra-op threads can only be set before TF runs ops: measure 2 threads in a subprocess
    import subprocess
    code = ("import time,tensorflow as tf;"
            "tf.config.threading.set_intra_op_parallelism_threads(2);"
            "tf.config.threading.set_inter_op_parallelism_threads(1);"
            "from app.servables.translator.model import Translator; from bench.translator_speed import BATCH as b;"
            f"t=Translator.load({args.model_dir!r}, cache_size=0); t.warmup(); t.translate(b);"
            "r=[];\nfor _ in range(5):\n t0=time.perf_counter(); t.translate(b); r.append(time.perf_counter()-t0)\n"
            "print(len(b)/sorted(r)[len(r)//2])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    rate = float(out.stdout.strip().splitlines()[-1])
    rows.append(("batch of 64 mixed sentences, greedy, 2 threads", f"{rate:.0f} sentences/s",
                 ">= 150 sentences/s", rate >= 150))
    print("| measurement | result | target | met |\n|---|---|---|---|")
    for name, res, target, ok in rows:
        print(f"| {name} | {res} | {target} | {'yes' if ok else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("name", "result", "target", "met"), r))
                                         for r in rows], indent=1))


if __name__ == "__main__":
    main()
