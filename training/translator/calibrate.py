"""Calibrate the low-confidence threshold of the translator on dev (never on test).

Translates every distinct English sentence of dev (and, to report only, of test) as the server
does (greedy unless --beam, pass-through on), takes each sentence's confidence (the exponential
of the length-normalised log-probability of the output: model.py) and calls a translation
*wrong* when its sentence chrF against all references of that English sentence is below
--wrong-chrf (default 40). The threshold is the one that flags wrong translations best on dev
(the highest F1 of "flagged" as a detector of "wrong"); test shows how well that holds on
sentences the choice never saw. With --card it is written into <model-dir>/metadata.json as
``confidence`` (the server reads ``confidence.threshold``; TRANSLATE_LOW_CONFIDENCE overrides it).

    .venv/bin/python -m training.translator.calibrate --model-dir models/translator/<version> --card
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.translator import paths
from training.translator.evaluate import read_split


def detection(conf: list[float], wrong: list[bool], threshold: float) -> dict:
    flagged = [c < threshold for c in conf]
    tp = sum(f and w for f, w in zip(flagged, wrong))
    n_flag, n_wrong = sum(flagged), sum(wrong)
    recall = tp / n_wrong if n_wrong else 0.0
    precision = tp / n_flag if n_flag else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"sentences": len(conf), "wrong": n_wrong, "flagged": n_flag,
            "share_flagged": round(n_flag / len(conf), 4),
            "share_of_wrong_flagged": round(recall, 4),
            "share_of_flagged_wrong": round(precision, 4),
            "share_of_right_flagged": round((n_flag - tp) / (len(conf) - n_wrong), 4) if len(conf) > n_wrong else 0.0,
            "f1": round(f1, 4)}


def sentence_scores(translator, work: Path, split: str, beam: int, wrong_chrf: float):
    import sacrebleu
    _, refs = read_split(work / f"{split}.tsv")
    sentences = list(refs)
    outs = translator.translate(sentences, beam=beam)
    conf = [o.confidence for o in outs]
    chrf = [sacrebleu.sentence_chrf(str(o), refs[s]).score for o, s in zip(outs, sentences)]
    return conf, [c < wrong_chrf for c in chrf]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wrong-chrf", type=float, default=40.0,
                    help="a translation whose sentence chrF (all references) is below this is wrong")
    ap.add_argument("--card", action="store_true", help="record the threshold in metadata.json")
    args = ap.parse_args(argv)

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from app.servables.translator.model import Translator

    translator = Translator.load(args.model_dir, cache_size=0)
    dev_conf, dev_wrong = sentence_scores(translator, args.work, "dev", args.beam, args.wrong_chrf)
    candidates = sorted({round(c, 3) for c in dev_conf} | {0.0})
    best = max(candidates, key=lambda t: (detection(dev_conf, dev_wrong, t)["f1"], -t))
    test_conf, test_wrong = sentence_scores(translator, args.work, "test", args.beam, args.wrong_chrf)
    result = {
        "threshold": best,
        "definition": "confidence = exp(mean log-probability per output token, end token included); "
                      f"a translation is wrong when its sentence chrF against all references is < {args.wrong_chrf:g}; "
                      "threshold = the highest F1 of low confidence as a detector of wrong, on dev",
        "beam": args.beam,
        "pass_through": translator.placeholders,
        "dev": detection(dev_conf, dev_wrong, best),
        "test": detection(test_conf, test_wrong, best),
        "by_confidence_dev": [
            {"below": t, **{k: v for k, v in detection(dev_conf, dev_wrong, t).items()
                            if k in ("share_flagged", "share_of_wrong_flagged", "share_of_flagged_wrong")}}
            for t in (0.3, 0.4, 0.5, 0.6, 0.7)],
    }
    print(json.dumps(result, indent=1))
    if args.card:
        meta_path = args.model_dir / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["confidence"] = result
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
