"""Split the Tatoeba English-Spanish pairs by near-duplicate group and train SentencePiece.

Writes into the work directory:
  train.tsv, dev.tsv, test.tsv   English<TAB>Spanish (all references of an English sentence stay
                                 in the same split; test/dev keep one row per reference)
  dev.rare.tsv, test.rare.tsv    the rows of dev/test whose English has a word train never saw
  dev.clean.tsv, test.clean.tsv  the rows of dev/test without a near-duplicate in train (all of
                                 them with --split grouped; the honest subset with --split distinct)
  split_stats.json               group statistics, links crossing the splits (none), and how
                                 many sentences of the old split had a near-duplicate in train
  spm.model, spm.vocab           joint English+Spanish subword model trained on train.tsv only
                                 (plus --spm-extra text, e.g. the lexicon, if given)

--split grouped (default) groups near-duplicates (dedup.py: normalised-equal English, shared
Spanish translation, one word substituted, inserted or deleted; union-find) and splits by
group; --split distinct reproduces the split of the shipped 2026.11.22 model (distinct English
sentence, seed 1234). Deterministic: the same data and flags give byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import random
import unicodedata
from collections import defaultdict
from pathlib import Path

import sentencepiece as spm

from training.translator import dedup, paths


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


def legacy_split(refs, n_test: int, n_dev: int, seed: int):
    """The split of the shipped model: shuffled distinct English sentences."""
    keys = sorted(refs)
    random.Random(seed).shuffle(keys)  # the file is sorted by length: shuffle first
    return {"test": keys[:n_test], "dev": keys[n_test:n_test + n_dev], "train": keys[n_test + n_dev:]}


def leak_report(refs, splits, leaked_out: dict | None = None) -> dict:
    """How many held-out English sentences have a link of each kind to a train sentence
    (the sentences themselves go into leaked_out[split], if given)."""
    where = {s: name for name, keys in splits.items() for s in keys}
    sentences = sorted(where)
    leaked: dict[str, dict[str, set]] = {n: {} for n in splits if n != "train"}
    for i, j, kind in dedup.links(sentences, refs):
        a, b = sentences[i], sentences[j]
        for x, y in ((a, b), (b, a)):
            if where[x] != "train" and where[y] == "train":
                leaked[where[x]].setdefault(kind, set()).add(x)
    out = {}
    for name, by_kind in leaked.items():
        anyk = set().union(*by_kind.values()) if by_kind else set()
        if leaked_out is not None:
            leaked_out[name] = anyk
        out[name] = {"sentences": len(splits[name]), "with_near_duplicate_in_train": len(anyk),
                     "share": round(len(anyk) / max(1, len(splits[name])), 4),
                     "by_kind": {k: len(v) for k, v in sorted(by_kind.items())}}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=paths.DATA)
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--test", type=int, default=2000, help="distinct English sentences in test")
    ap.add_argument("--dev", type=int, default=1000, help="distinct English sentences in dev")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--split", choices=["grouped", "distinct"], default="grouped",
                    help="grouped: by near-duplicate group (default); distinct: the shipped model's split")
    ap.add_argument("--max-group", type=int, default=50,
                    help="largest group (English sentences) that may go to dev/test")
    ap.add_argument("--spm-extra", type=Path, nargs="*", default=[],
                    help="extra TSV files (English<TAB>Spanish...) whose text also trains SentencePiece "
                         "(e.g. work/translator/lexicon.tsv); never dev/test")
    ap.add_argument("--spm-extra-max", type=int, default=0,
                    help="cap on rows taken from each --spm-extra file (0 = all)")
    ap.add_argument("--symbols", action="store_true",
                    help="reserve the <dict> tag and the pass-through placeholders as single pieces "
                         "(needed by train.py --lexicon-tag and --placeholders)")
    ap.add_argument("--no-stats", action="store_true", help="skip the leak statistics (faster)")
    args = ap.parse_args(argv)

    refs = read_pairs(args.data)
    stats: dict = {"data": str(args.data), "split": args.split, "seed": args.seed}
    if args.split == "distinct":
        splits = legacy_split(refs, args.test, args.dev, args.seed)
    else:
        sentences = sorted(refs)
        gid, link_counts = dedup.group(sentences, refs)
        stats["groups"] = {**dedup.group_stats(gid), **link_counts, "max_group": args.max_group,
                           "min_shared_tokens": dedup.MIN_SHARED}
        split = dedup.split_by_group(sentences, gid, {"test": args.test, "dev": args.dev},
                                     args.seed, args.max_group)
        splits = {"test": split["test"], "dev": split["dev"], "train": split["train"]}
        print(f"groups: {stats['groups']}")
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = {name: (len(splits[name]), write(args.work / f"{name}.tsv", refs, splits[name]))
             for name in ("train", "dev", "test")}
    train_vocab = dedup.vocabulary(splits["train"])
    for name in ("dev", "test"):
        rare = dedup.rare_word_sentences(splits[name], train_vocab)
        sizes[f"{name}.rare"] = (len(rare), write(args.work / f"{name}.rare.tsv", refs, rare))
    for name, (n_en, n_rows) in sizes.items():
        print(f"{name}: {n_en} distinct English sentences, {n_rows} pairs")
    stats["sizes"] = {name: {"english_sentences": a, "pairs": b} for name, (a, b) in sizes.items()}
    for name in ("train", "dev", "test"):
        n_tok = [len(dedup.normalise_en(s)) for s in splits[name]]
        stats["sizes"][name]["mean_english_tokens"] = round(sum(n_tok) / max(1, len(n_tok)), 2)
        stats["sizes"][name]["share_up_to_4_tokens"] = round(sum(n <= 4 for n in n_tok) / max(1, len(n_tok)), 3)
    if not args.no_stats:
        leaked: dict = {}
        stats["leaks_in_this_split"] = leak_report(refs, splits, leaked)
        for name in ("dev", "test"):  # with --split grouped these equal dev/test
            clean = [s for s in splits[name] if s not in leaked[name]]
            sizes[f"{name}.clean"] = (len(clean), write(args.work / f"{name}.clean.tsv", refs, clean))
            stats["sizes"][f"{name}.clean"] = {"english_sentences": sizes[f"{name}.clean"][0],
                                               "pairs": sizes[f"{name}.clean"][1]}
            print(f"{name}.clean: {sizes[name + '.clean'][0]} English sentences without a "
                  f"near-duplicate in train")
        if args.split == "grouped":
            stats["leaks_in_distinct_split"] = leak_report(
                refs, legacy_split(refs, args.test, args.dev, args.seed))
        print(json.dumps({k: stats[k] for k in stats if k.startswith("leaks")}, indent=1))
    (args.work / "split_stats.json").write_text(json.dumps(stats, indent=1) + "\n")

    text = args.work / "spm_input.txt"
    symbols = []
    if args.symbols:
        from app.servables.translator import passthrough
        from training.translator.lexicon_data import DICT_TAG
        symbols = [DICT_TAG, *passthrough.PLACEHOLDERS]
    with text.open("w", encoding="utf-8") as f:
        for row in (args.work / "train.tsv").read_text(encoding="utf-8").splitlines():
            en, es = row.split("\t")
            f.write(en + "\n" + es + "\n")
        for extra in args.spm_extra:
            rows = extra.read_text(encoding="utf-8").splitlines()
            if args.spm_extra_max:
                rows = rows[:args.spm_extra_max]
            for row in rows:
                en, es = row.split("\t")[:2]
                f.write(en + "\n" + es + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(args.work / "spm"), vocab_size=args.vocab,
        model_type="unigram", character_coverage=1.0, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        input_sentence_size=1_000_000, shuffle_input_sentence=True, seed_sentencepiece_size=200_000,
        num_threads=2, minloglevel=2, **({"user_defined_symbols": symbols} if symbols else {}))
    print(f"sentencepiece: {args.work / 'spm.model'} (vocab {args.vocab}"
          f"{', symbols ' + ' '.join(symbols) if symbols else ''})")


if __name__ == "__main__":
    main()
