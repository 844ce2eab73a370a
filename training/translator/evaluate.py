"""BLEU and chrF (sacrebleu, default settings) of the exported translator and of Apertium.

Scores every row of each split (English<TAB>Spanish, one reference per row, as in the Tatoeba
test sets), and also multi-reference BLEU/chrF over distinct English sentences. Splits are files
<name>.tsv of the work directory: dev, test and the rare-word slices dev.rare, test.rare
(prepare.py). Apertium (`apertium-eng-spa` from Debian, mode eng-spa) always translates exactly
the same English sentences, separated by blank lines so its output stays aligned; a missing
Apertium is an error unless --no-apertium is given. The translator's LRU cache is off, so
sentences/s are honest. With --card, writes the figures into <model-dir>/metadata.json (card.py
renders MODEL_CARD.md); --json writes them to a file.

    .venv/bin/python -m training.translator.evaluate --split dev dev.rare --beam 1 4
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split", nargs="+", default=["test"],
                    help="split names: dev test dev.rare test.rare (files <work>/<name>.tsv)")
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--beam", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-apertium", action="store_true",
                    help="skip Apertium (only for quick checks: reported figures always include it)")
    ap.add_argument("--hyp-dir", type=Path, help="where to write <split>.<system>.hyp (default: work)")
    ap.add_argument("--limit", type=int, default=0, help="first N distinct sentences only (smoke tests)")
    ap.add_argument("--card", action="store_true", help="record figures in metadata.json")
    ap.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    args = ap.parse_args(argv)

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from app.servables.translator.model import Translator

    if not args.no_apertium and not shutil.which("apertium"):
        raise SystemExit("apertium not installed (apt-get install apertium-eng-spa); "
                         "figures without it are not comparable: pass --no-apertium to skip")
    hyp_dir = args.hyp_dir or args.work
    hyp_dir.mkdir(parents=True, exist_ok=True)
    translator = Translator.load(args.model_dir, cache_size=0)
    translator.warmup()
    everything = {}
    for split in args.split:
        rows, refs = read_split(args.work / f"{split}.tsv")
        if args.limit:
            keep = set(list(refs)[:args.limit])
            rows = [r for r in rows if r[0] in keep]
            refs = {k: v for k, v in refs.items() if k in keep}
        sentences = list(refs)
        results = {}
        for beam in args.beam:
            t0 = time.perf_counter()
            hyps = translator.translate(sentences, beam=beam)
            secs = time.perf_counter() - t0
            res = scores(dict(zip(sentences, hyps)), rows, refs)
            res["sentences_per_s"] = round(len(sentences) / secs, 1)
            results[f"ours_beam{beam}"] = res
            print(f"{split} ours beam {beam}: {res}", flush=True)
            (hyp_dir / f"{split}.beam{beam}.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
        if not args.no_apertium:
            t0 = time.perf_counter()
            hyps = apertium(sentences)
            res = scores(dict(zip(sentences, hyps)), rows, refs)
            res["sentences_per_s"] = round(len(sentences) / (time.perf_counter() - t0), 1)
            results["apertium"] = res
            print(f"{split} apertium: {res}", flush=True)
            (hyp_dir / f"{split}.apertium.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
        everything[split] = results
    if args.card:
        meta_path = args.model_dir / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta.setdefault("metrics", {}).update(everything)
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1) + "\n")
    print(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
