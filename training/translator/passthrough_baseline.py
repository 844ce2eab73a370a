"""How a translator passes names, numbers, URLs, e-mail addresses and emoji through: 20 examples.

    .venv/bin/python -m training.translator.passthrough_baseline [--model-dir DIR] [--beam 1]
    .venv/bin/python -m training.translator.passthrough_baseline --protect   # with passthrough.py

Counts the examples whose every span (passthrough.find_spans with no names kept) comes out
verbatim in the translation. Without --protect the raw sentence goes to the model (the shipped
model: 1/20); with --protect it goes through passthrough.protect / restore, which needs a
model trained with placeholders (prepare.py --symbols, train.py --placeholders).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.servables.translator import passthrough
from training.translator import paths

EXAMPLES = [
    "Tom lives in Boston.",
    "I was born in 2024.",
    "The station is 3.5 km away.",
    "Please visit https://example.org for details.",
    "Write to a@b.com if you have questions.",
    "I love you ❤️",
    "Good job 👍",
    "I met Zbigniew in Warsaw.",
    "Call me at 10:30 tomorrow.",
    "It costs $25.",
    "Mary has 12 cats.",
    "My phone number is 555-0199.",
    "Our meeting is on 2024-05-17.",
    "The password is XK42B.",
    "Ask Nakamura about it.",
    "I bought an MP3 player.",
    "She scored 98% on the test.",
    "Download it from www.example.com today.",
    "Tom and Ingrid went to Reykjavik.",
    "It weighs 70 kg.",
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--protect", action="store_true", help="use passthrough.protect/restore")
    args = ap.parse_args(argv)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from app.servables.translator.model import Translator
    translator = Translator.load(args.model_dir, cache_size=0)
    translator.placeholders = False  # the model alone; --protect below does what serving does
    if args.protect:
        if translator.sp.piece_to_id(passthrough.PLACEHOLDERS[0]) == translator.sp.unk_id():
            raise SystemExit("this model's spm.model has no placeholder pieces: it was not trained "
                             "with prepare.py --symbols / train.py --placeholders")
        protected = [passthrough.protect(t) for t in EXAMPLES]
        raw = translator.translate([p for p, _ in protected], beam=args.beam)
        outs = [passthrough.restore(o, spans) for o, (_, spans) in zip(raw, protected)]
        copied = sum(all(passthrough.PLACEHOLDERS[i] in o for i in range(len(spans)))
                     for o, (_, spans) in zip(raw, protected))
        print(f"{copied}/{len(EXAMPLES)} examples where the model itself emitted every placeholder "
              f"(the rest were put back by restore's fallback, before the final punctuation)")
    else:
        outs = translator.translate(EXAMPLES, beam=args.beam)
    rows, ok = [], 0
    for src, out in zip(EXAMPLES, outs):
        spans = [s.text for s in passthrough.find_spans(src, keep=frozenset())]
        kept = all(s in out for s in spans)
        ok += kept
        rows.append({"source": src, "output": out, "spans": spans, "unchanged": kept})
        print(f"{'ok ' if kept else 'BAD'} {src!r} -> {out!r}  spans {spans}")
    print(f"{ok}/{len(EXAMPLES)} examples with every span unchanged")
    if args.json:
        args.json.write_text(json.dumps({"unchanged": ok, "examples": rows}, indent=1,
                                        ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
