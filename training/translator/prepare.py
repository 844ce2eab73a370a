"""Split the Tatoeba English-Spanish pairs by distinct English sentence and train SentencePiece.

Writes into the work directory:
  train.tsv, dev.tsv, test.tsv   English<TAB>Spanish (all references of an English sentence stay
                                 in the same split; test/dev keep one row per reference)
  spm.model, spm.vocab           joint English+Spanish subword model trained on train.tsv only
"""
from __future__ import annotations

import argparse
import random
import unicodedata
from collections import defaultdict
from pathlib import Path

import sentencepiece as spm

from training.translator import paths


def read_pairs(path: Path) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        en, es = line.split("\t")[:2]
        en, es = unicodedata.normalize("NFC", en.strip()), unicodedata.normalize("NFC", es.strip())
        if en and es and es not in refs[en]:
            refs[en].append(es)
    return refs


def write(path: Path, refs: dict[str, list[str]], keys: list[str]) -> int:
    rows = [f"{en}\t{es}" for en in keys for es in refs[en]]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=paths.DATA)
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--test", type=int, default=2000, help="distinct English sentences in test")
    ap.add_argument("--dev", type=int, default=1000, help="distinct English sentences in dev")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)

    refs = read_pairs(args.data)
    keys = sorted(refs)
    random.Random(args.seed).shuffle(keys)  # the file is sorted by length: shuffle first
    test, dev, train = keys[:args.test], keys[args.test:args.test + args.dev], keys[args.test + args.dev:]
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = {name: (len(k), write(args.work / f"{name}.tsv", refs, k))
             for name, k in (("train", train), ("dev", dev), ("test", test))}
    for name, (n_en, n_rows) in sizes.items():
        print(f"{name}: {n_en} distinct English sentences, {n_rows} pairs")

    text = args.work / "spm_input.txt"
    with text.open("w", encoding="utf-8") as f:
        for row in (args.work / "train.tsv").read_text(encoding="utf-8").splitlines():
            en, es = row.split("\t")
            f.write(en + "\n" + es + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(args.work / "spm"), vocab_size=args.vocab,
        model_type="unigram", character_coverage=1.0, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        input_sentence_size=1_000_000, shuffle_input_sentence=True, seed_sentencepiece_size=200_000,
        num_threads=2, minloglevel=2)
    print(f"sentencepiece: {args.work / 'spm.model'} (vocab {args.vocab})")


if __name__ == "__main__":
    main()
