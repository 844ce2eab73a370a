"""English-Spanish word and phrase pairs from Debian's apertium-eng-spa bilingual dictionary.

    .venv/bin/python -m training.translator.lexicon            # -> work/translator/lexicon.tsv

Needs `apertium-eng-spa` (the compiled dictionaries) and `lttoolbox` + `lttoolbox-dev`
(`lt-proc`, `lt-print`): apt-get install -y apertium-eng-spa lttoolbox-dev.

1. `lt-print eng-spa.autobil.bin` dumps the bilingual transducer (ATT text); every path from the
   start to a final state is one entry, `lemma<tags>` -> `lemma<tags>` (e.g. `commerce<n>` ->
   `comercio<n><m>`; `#` marks the invariable tail of a multi-word lemma: `take# part`).
   Number patterns (`<num>`, ~59k paths of digit strings) are skipped.
2. Each entry gives its lemma pair, and where cheap and reliable some inflected forms, made with
   the package's generators (`spa-eng.autogen.bin` for English, `eng-spa.autogen.bin` for
   Spanish, `lt-proc -g`) and kept only if the package's analysers (`eng-spa.automorf.bin`,
   `spa-eng.automorf.bin`) read the form back as the same lemma and tags:
   - nouns: singular and plural, and with the definite article where the Spanish gender is
     known (`the house` / `la casa`, `the houses` / `las casas`; feminine nouns in a-/ha- are
     skipped: `el agua`);
   - verbs (not pronominal ones): `to eat` / `comer`, `I eat` / `como`, `he eats` / `él come`,
     `we eat` / `comemos`, `they eat` / `ellos comen`, `I ate` / `comí`, `she ate` / `ella comió`;
   - everything else (proper nouns, adjectives, adverbs, prepositions, ...): the lemma pair.
3. Output: TSV `English<TAB>Spanish<TAB>kind` (kind: POS, form, `mw` for multi-word), de-duplicated,
   sorted, plus lexicon.stats.json with counts.

Licence: apertium-eng-spa is GPL-2+ (/usr/share/doc/apertium-eng-spa/copyright): a model trained
on these pairs must say so in its model card. The extracted file is not committed.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

from training.translator import paths

APERTIUM = Path("/usr/share/apertium/apertium-eng-spa")
_TAGS = re.compile(r"<([^>]+)>")


def paths_of_att(att: str) -> list[tuple[str, str]]:
    """All (input, output) strings of the first transducer in lt-print's ATT dump.

    Self-loops (the digit loops of number patterns) are not followed; the rest is acyclic."""
    arcs: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    final = set()
    for line in att.split("\n"):
        if line == "--":  # next section (punctuation, regexes): not dictionary entries
            break
        p = line.split("\t")
        if len(p) >= 4:
            arcs[int(p[0])].append((int(p[1]), p[2], p[3]))
        elif p[0]:
            final.add(int(p[0]))
    out = []
    stack = [(0, "", "")]
    while stack:
        s, i, o = stack.pop()
        if s in final:
            out.append((i, o))
        for d, a, b in arcs[s]:
            if d != s:
                stack.append((d, i + ("" if a == "ε" else a), o + ("" if b == "ε" else b)))
    return out


def split_entry(s: str) -> tuple[str, str, list[str]]:
    """'take# part<vblex>' -> ('take', ' part', ['vblex'])."""
    m = s.find("<")
    lemma, tags = (s, []) if m < 0 else (s[:m], _TAGS.findall(s[m:]))
    head, _, queue = lemma.partition("#")
    return head, (queue if "#" in lemma else ""), tags


def lt_proc(binary: Path, lines: list[str], generate: bool) -> list[str]:
    """Run lt-proc (-g: generate) with one item per line; returns one output line per item."""
    if not lines:
        return []
    args = ["lt-proc", "-g", str(binary)] if generate else ["lt-proc", str(binary)]
    out = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout.split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(lines):
        raise RuntimeError(f"lt-proc {binary.name}: {len(out)} lines for {len(lines)}")
    return out


def surface(head: str, queue: str) -> str:
    return (head + queue).strip()


def unit(head: str, tags: list[str], queue: str) -> str:
    return "^" + head + "".join(f"<{t}>" for t in tags) + (f"#{queue}" if queue else "") + "$"


class Inflector:
    """Generate forms in bulk, keep those the analyser reads back as the same lemma + tags."""

    def __init__(self, generator: Path, analyser: Path):
        self.generator, self.analyser = generator, analyser
        self.requests: list[tuple[str, list[str], str]] = []
        self.results: dict[int, str | None] = {}
        self.rejected = Counter()

    def ask(self, head: str, tags: list[str], queue: str = "") -> int:
        self.requests.append((head, tags, queue))
        return len(self.requests) - 1

    def run(self):
        units = [unit(h, t, q) for h, t, q in self.requests]
        forms = lt_proc(self.generator, units, generate=True)
        ok = [f if f and not re.search(r"[#@~^$/<>]", f) else None for f in forms]
        self.rejected["not generated"] += sum(1 for f in ok if f is None)
        check = [i for i, f in enumerate(ok) if f]
        analyses = lt_proc(self.analyser, [ok[i] for i in check], generate=False)
        for i, a in zip(check, analyses):
            h, t, q = self.requests[i]
            want = h + "".join(f"<{x}>" for x in t) + (f"#{q}" if q else "")
            readings = a[1:-1].split("/")[1:] if a.startswith("^") and a.endswith("$") and \
                a.count("^") == 1 else []
            if want in readings:
                self.results[i] = ok[i]
            else:
                self.rejected["analyser disagrees"] += 1
        return self

    def get(self, i: int) -> str | None:
        return self.results.get(i)


NOUN_GENDERS = {"m": ("el", "los"), "f": ("la", "las")}
VERB_FORMS = [  # (English subject, English tags, Spanish tags, Spanish subject, kind)
    ("I", ["inf"], ["pri", "p1", "sg"], "", "v.pres.p1sg"),
    ("he", ["pri", "p3", "sg"], ["pri", "p3", "sg"], "él", "v.pres.p3sg"),
    ("we", ["inf"], ["pri", "p1", "pl"], "", "v.pres.p1pl"),
    ("they", ["inf"], ["pri", "p3", "pl"], "ellos", "v.pres.p3pl"),
    ("I", ["past"], ["ifi", "p1", "sg"], "", "v.past.p1sg"),
    ("she", ["past"], ["ifi", "p3", "sg"], "ella", "v.past.p3sg"),
]


def extract(apertium_dir: Path = APERTIUM, inflect: bool = True):
    att = subprocess.run(["lt-print", str(apertium_dir / "eng-spa.autobil.bin")],
                         capture_output=True, text=True, check=True).stdout
    entries = paths_of_att(att)
    stats = Counter(paths=len(entries))
    en_gen = Inflector(apertium_dir / "spa-eng.autogen.bin", apertium_dir / "eng-spa.automorf.bin")
    es_gen = Inflector(apertium_dir / "eng-spa.autogen.bin", apertium_dir / "spa-eng.automorf.bin")
    pairs: set[tuple[str, str, str]] = set()
    jobs = []  # (kind, English template, Spanish template, en request, es request)
    for src, tgt in entries:
        eh, eq, et = split_entry(src)
        sh, sq, st = split_entry(tgt)
        if not et or et[0] == "num" or not eh.strip() or not sh.strip():
            stats["skipped (number or empty)"] += 1
            continue
        pos = et[0]
        en, es = surface(eh, eq), surface(sh, sq)
        multi = " " in en or " " in es
        kind = pos + (".mw" if multi else "")
        stats[f"entries {pos}"] += 1
        if pos == "vblex":
            pairs.add(("to " + en, es, kind + ".inf"))
        else:
            pairs.add((en, es, kind))
        if not inflect:
            continue
        if pos == "n" and len(st) >= 2:
            gender = st[1]
            e_pl = en_gen.ask(eh, ["n", "pl"], eq)
            s_pl = es_gen.ask(sh, ["n", gender, "pl"], sq) if gender in ("m", "f", "mf") else None
            if s_pl is not None:
                jobs.append((kind + ".pl", "{}", "{}", e_pl, s_pl))
            if gender in NOUN_GENDERS and not (gender == "f" and re.match(r"(?i)h?[aá]", es)):
                sg_art, pl_art = NOUN_GENDERS[gender]
                pairs.add((f"the {en}", f"{sg_art} {es}", kind + ".def"))
                jobs.append((kind + ".def.pl", "the {}", pl_art + " {}", e_pl, s_pl))
        elif pos == "vblex" and "pron" not in st:
            for subj, etags, stags, ssubj, vkind in VERB_FORMS:
                e = en_gen.ask(eh, ["vblex", *etags], eq)
                s = es_gen.ask(sh, ["vblex", *stags], sq)
                jobs.append((vkind + (".mw" if multi else ""), subj + " {}",
                             (ssubj + " {}").strip(), e, s))
    if inflect:
        en_gen.run()
        es_gen.run()
        for kind, etpl, stpl, e, s in jobs:
            ef, sf = en_gen.get(e), es_gen.get(s)
            if ef and sf:
                pairs.add((etpl.format(ef), stpl.format(sf), kind))
            else:
                stats["forms dropped"] += 1
        for k, v in (en_gen.rejected + Counter({f"es {k}": v for k, v in es_gen.rejected.items()})).items():
            stats[f"generation: {k}"] += v
    return sorted(pairs), stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=paths.WORK / "lexicon.tsv")
    ap.add_argument("--apertium-dir", type=Path, default=APERTIUM)
    ap.add_argument("--no-inflect", action="store_true", help="lemma pairs only")
    args = ap.parse_args(argv)
    pairs, stats = extract(args.apertium_dir, inflect=not args.no_inflect)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{e}\t{s}\t{k}\n" for e, s, k in pairs), encoding="utf-8")
    by_kind = Counter(k for _, _, k in pairs)
    summary = {"source": "apertium-eng-spa (Debian), GPL-2+", "pairs": len(pairs),
               "distinct_english": len({e for e, _, _ in pairs}),
               "by_kind": dict(by_kind.most_common()), "extraction": dict(stats)}
    args.out.with_suffix(".stats.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {len(pairs)} pairs to {args.out}")


if __name__ == "__main__":
    main()
