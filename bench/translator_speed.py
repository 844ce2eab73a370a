"""Translator speed, in process (no HTTP): the issue-3 targets, printed as a Markdown table.

- one 10-word sentence, greedy and beam 4, one TensorFlow thread: median and p90 ms;
- a batch of 64 mixed-length sentences, greedy, two threads: sentences/s.

Usage: .venv/bin/python bench/translator_speed.py [--model-dir DIR] [--json out.json]
       .venv/bin/python bench/translator_speed.py --model-dir NEW --against OLD [--rounds 2]
           (both models measured in the same run, alternately, each in its own process; medians
           and the ratios of the issue-13 targets: greedy <= 1.2x OLD's time, batch >= 0.8x its rate)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
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
    ap.add_argument("--against", help="a second model directory, measured alternately in the same run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if args.against:
        return compare(args.model_dir, args.against, args.rounds, args.repeat, args.json)

    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from app.servables.translator.model import Translator
    t = Translator.load(args.model_dir, cache_size=0)  # measure decoding, not the LRU cache
    t.warmup()
    rows, raw = [], {}
    for beam, target in ((1, 25.0), (4, 60.0)):
        t.translate([TEN_WORDS], beam=beam)
        ms = timed(lambda: t.translate([TEN_WORDS], beam=beam), args.repeat)
        med = statistics.median(ms)
        raw["greedy_ms" if beam == 1 else "beam4_ms"] = med
        rows.append((f"10-word sentence, {'greedy' if beam == 1 else f'beam {beam}'}, 1 thread",
                     f"{med:.1f} ms median (p90 {sorted(ms)[int(0.9 * len(ms))]:.1f})",
                     f"<= {target:.0f} ms", med <= target))
    # intra-op threads can only be set before TF runs ops: measure 2 threads in a subprocess
    code = ("import time,tensorflow as tf;"
            "tf.config.threading.set_intra_op_parallelism_threads(2);"
            "tf.config.threading.set_inter_op_parallelism_threads(1);"
            "from app.servables.translator.model import Translator; from bench.translator_speed import BATCH as b;"
            f"t=Translator.load({args.model_dir!r}, cache_size=0); t.warmup(); t.translate(b);"
            "r=[];\nfor _ in range(5):\n t0=time.perf_counter(); t.translate(b); r.append(time.perf_counter()-t0)\n"
            "print(len(b)/sorted(r)[len(r)//2])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    rate = float(out.stdout.strip().splitlines()[-1])
    raw["batch_rate"] = rate
    rows.append(("batch of 64 mixed sentences, greedy, 2 threads", f"{rate:.0f} sentences/s",
                 ">= 150 sentences/s", rate >= 150))
    print("| measurement | result | target | met |\n|---|---|---|---|")
    for name, res, target, ok in rows:
        print(f"| {name} | {res} | {target} | {'yes' if ok else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("name", "result", "target", "met"), r))
                                         for r in rows] + [{"raw": raw}], indent=1))


def compare(new: str, old: str, rounds: int, repeat: int, out: Path | None) -> None:
    """NEW and OLD alternately, ``rounds`` times each, each run in its own process."""
    import tempfile
    runs: dict[str, list[dict]] = {"new": [], "old": []}
    for _ in range(rounds):
        for which, model in (("old", old), ("new", new)):
            with tempfile.NamedTemporaryFile(suffix=".json") as fh:
                subprocess.run([sys.executable, __file__, "--model-dir", model, "--repeat", str(repeat),
                                "--json", fh.name], check=True, cwd=ROOT, capture_output=True)
                runs[which].append(json.loads(Path(fh.name).read_text())[-1]["raw"])
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    ratio = {k: med["new"][k] / med["old"][k] for k in med["new"]}
    rows = [
        ("10-word sentence, greedy, 1 thread (ms)", "greedy_ms", "<= 1.2x", ratio["greedy_ms"] <= 1.2),
        ("10-word sentence, beam 4, 1 thread (ms)", "beam4_ms", "", None),
        ("batch of 64 mixed sentences, greedy, 2 threads (sentences/s)", "batch_rate", ">= 0.8x",
         ratio["batch_rate"] >= 0.8),
    ]
    print(f"| measurement | {Path(old).name} | {Path(new).name} | ratio | target |\n|---|---|---|---|---|")
    table = []
    for name, key, target, ok in rows:
        print(f"| {name} | {med['old'][key]:.1f} | {med['new'][key]:.1f} | {ratio[key]:.3f}x | "
              f"{target}{'' if ok is None else (' met' if ok else ' NOT met')} |")
        table.append({"name": name, "old": round(med["old"][key], 2), "new": round(med["new"][key], 2),
                      "ratio": round(ratio[key], 3), "target": target, "met": ok})
    if out:
        out.write_text(json.dumps({"old": old, "new": new, "rounds": rounds, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
