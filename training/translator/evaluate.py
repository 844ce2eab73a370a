"""BLEU and chrF (sacrebleu, default settings) of the exported translator and of Apertium.

Scores every row of a split (English<TAB>Spanish, one reference per row, as in the Tatoeba test
sets), and also multi-reference BLEU/chrF over distinct English sentences. Apertium
(`apertium-eng-spa` from Debian) translates the same English sentences, separated by blank lines
so its output stays aligned. With --card, writes the figures into models/translator/metadata.json
and MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from training.translator import paths


def read_split(path: Path):
    rows = [r.split("\t") for r in path.read_text(encoding="utf-8").splitlines() if r]
    refs: dict[str, list[str]] = {}
    for en, es in rows:
        refs.setdefault(en, []).append(es)
    return rows, refs


def scores(hyp_of: dict[str, str], rows, refs) -> dict:
    import sacrebleu
    hyps = [hyp_of[en] for en, _ in rows]
    single = [[es for _, es in rows]]
    keys = list(refs)
    width = max(len(v) for v in refs.values())
    multi = [[refs[k][min(j, len(refs[k]) - 1)] for k in keys] for j in range(width)]
    mhyps = [hyp_of[k] for k in keys]
    return {
        "bleu": round(sacrebleu.corpus_bleu(hyps, single).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hyps, single).score, 2),
        "bleu_multi_ref": round(sacrebleu.corpus_bleu(mhyps, multi).score, 2),
        "chrf_multi_ref": round(sacrebleu.corpus_chrf(mhyps, multi).score, 2),
        "rows": len(rows), "sentences": len(keys),
    }


def apertium(sentences: list[str]) -> list[str] | None:
    if not shutil.which("apertium"):
        return None
    text = "\n\n".join(s.replace("\n", " ") for s in sentences) + "\n"
    out = subprocess.run(["apertium", "-u", "eng-spa"], input=text, capture_output=True,
                         text=True, check=True).stdout
    lines = [p.strip().replace("\n", " ") for p in out.strip("\n").split("\n\n")]
    if len(lines) != len(sentences):
        raise RuntimeError(f"apertium returned {len(lines)} paragraphs for {len(sentences)}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--beam", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-apertium", action="store_true")
    ap.add_argument("--card", action="store_true", help="record figures in metadata.json")
    args = ap.parse_args(argv)

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from app.servables.translator.model import Translator

    rows, refs = read_split(args.work / f"{args.split}.tsv")
    sentences = list(refs)
    translator = Translator.load(args.model_dir)
    translator.warmup()
    results = {}
    for beam in args.beam:
        t0 = time.perf_counter()
        hyps = translator.translate(sentences, beam=beam)
        secs = time.perf_counter() - t0
        res = scores(dict(zip(sentences, hyps)), rows, refs)
        res["sentences_per_s"] = round(len(sentences) / secs, 1)
        results[f"ours_beam{beam}"] = res
        print(f"ours beam {beam}: {res}", flush=True)
        (args.work / f"{args.split}.beam{beam}.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    if not args.no_apertium:
        t0 = time.perf_counter()
        hyps = apertium(sentences)
        if hyps is None:
            print("apertium not installed (apt-get install apertium-eng-spa): skipped")
        else:
            res = scores(dict(zip(sentences, hyps)), rows, refs)
            res["sentences_per_s"] = round(len(sentences) / (time.perf_counter() - t0), 1)
            results["apertium"] = res
            print(f"apertium: {res}")
    if args.card:
        meta_path = args.model_dir / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta.setdefault("metrics", {})[args.split] = results
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
