"""English->Spanish pairs from the gettext catalogues (.mo) that installed Debian packages ship.

    .venv/bin/python -m training.translator.gettext_pairs   # -> work/translator/gettext.tsv

Reads every /usr/share/locale/es/LC_MESSAGES/*.mo (and es_ES, if present) with a small .mo
parser (no polib), keeps msgid -> msgstr where

- it is a singular message (plural forms skipped), any msgctxt dropped;
- neither side has a format directive (%s, %d, %(name)s, %1$s, {0}, {name}, ${var}), markup,
  a line break or a tab, and the English has at least one letter;
- a keyboard accelerator (one `_` or `&` before a letter, on both sides) is removed, any other
  `_` / `&` use is skipped;
- the English has at most --max-words words (default 16) and is not identical to the Spanish;
- the Spanish is not marked fuzzy-looking (empty) and is not mostly in capitals when the English
  is not.

Every pair records its package (dpkg -S) and the licence read from
/usr/share/doc/<package>/copyright (its first License: field): TSV
`English<TAB>Spanish<TAB>gettext:<package>` and gettext.licences.json with counts per package.
Packages differ between machines: the counts are those of this machine's installed packages.
"""
from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

from training.translator import paths

LOCALE_DIRS = [Path("/usr/share/locale/es/LC_MESSAGES"), Path("/usr/share/locale/es_ES/LC_MESSAGES")]

_FORMAT = re.compile(r"%(\(\w+\))?[-+ #0]*\d*(\.\d+)?[hlLqjzt]*[diouxXeEfFgGcrsaAp%]|%\d+\$|%\d|"
                     r"\{[^}]*\}|\$\{|\$\w+|<[^>]+>|&\w+;|\\[nt]|[\n\t\r]")
_ACCEL = re.compile(r"(?<![\w_&])[_&](?=\w)")


def read_mo(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) of a GNU .mo file; plural entries keep their NUL-joined forms."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    _, n, orig, trans = struct.unpack(order + "4I", data[4:20])
    out = []
    for i in range(n):
        ol, oo = struct.unpack(order + "2I", data[orig + 8 * i:orig + 8 * i + 8])
        tl, to = struct.unpack(order + "2I", data[trans + 8 * i:trans + 8 * i + 8])
        try:
            out.append((data[oo:oo + ol].decode("utf-8"), data[to:to + tl].decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return out


def strip_accelerator(s: str) -> str | None:
    marks = _ACCEL.findall(s)
    if len(marks) > 1:
        return None
    s = _ACCEL.sub("", s)
    if "_" in s or "&" in s:
        return None
    return s


def clean(msgid: str, msgstr: str, max_words: int) -> tuple[str, str] | None:
    if not msgid or not msgstr or "\x00" in msgid or "\x00" in msgstr:
        return None  # header, plural, or untranslated
    msgid = msgid.split("\x04", 1)[-1]  # drop msgctxt
    if _FORMAT.search(msgid) or _FORMAT.search(msgstr):
        return None
    en, es = strip_accelerator(msgid), strip_accelerator(msgstr)
    if not en or not es:
        return None
    en, es = " ".join(en.split()), " ".join(es.split())
    if not re.search(r"[A-Za-z]{2}", en) or en == es or len(en.split()) > max_words:
        return None
    if len(es.split()) > 2 * max_words + 4:
        return None
    if es.isupper() and not en.isupper():
        return None
    return en, es


def package_of(path: Path) -> str:
    try:
        out = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True).stdout
        return out.split(":", 1)[0].strip() or "unknown"
    except FileNotFoundError:
        return "unknown"


def licence_of(package: str) -> str:
    """A short licence name from /usr/share/doc/<package>/copyright.

    Machine-readable (DEP-5) files: the License of the `Files: *` stanza. Free-form files: the
    first GNU licence named with its version ("GPL-2+ (free-form)"), else MIT/X11 or BSD wording;
    the file itself is the authority (its path is recorded beside)."""
    copyright_file = Path("/usr/share/doc") / package.split(":")[0] / "copyright"
    if not copyright_file.exists():
        return "unknown (no copyright file)"
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    if text.startswith("Format:"):
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Files:\s*\*\s*$", stanza, re.M):
                m = re.search(r"^License:\s*(\S.*)$", stanza, re.M)
                if m:
                    return m.group(1).strip()
        m = re.search(r"^License:\s*(\S.*)$", text, re.M)
        if m:
            return m.group(1).strip()
    m = re.search(r"GNU (Lesser |Library )?General Public License", text)
    if m:
        name = {"Lesser ": "LGPL", "Library ": "LGPL"}.get(m.group(1) or "", "GPL")
        v = re.search(r"version (\d(\.\d)?)", text[m.start():m.start() + 600])
        later = "later" in text[m.start():m.start() + 600]
        return f"{name}-{v.group(1) if v else '?'}{'+' if later else ''} (free-form copyright file)"
    if re.search(r"\bMIT\b|X11|Permission is hereby granted", text):
        return "MIT/X11-style (free-form copyright file)"
    if re.search(r"\bBSD\b|Redistribution and use in source and binary", text):
        return "BSD-style (free-form copyright file)"
    return "see " + str(copyright_file)


def extract(max_words: int = 16, dirs=LOCALE_DIRS, only: set[str] | None = None):
    pairs: dict[tuple[str, str], str] = {}
    per_package: dict[str, Counter] = {}
    licences: dict[str, str] = {}
    stats = Counter()
    for d in dirs:
        for mo in sorted(d.glob("*.mo")) if d.exists() else []:
            pkg = package_of(mo)
            if only and pkg not in only:
                continue
            if pkg not in licences:
                licences[pkg] = licence_of(pkg)
            c = per_package.setdefault(pkg, Counter())
            for msgid, msgstr in read_mo(mo):
                stats["messages"] += 1
                kept = clean(msgid, msgstr, max_words)
                if kept is None:
                    stats["skipped"] += 1
                    continue
                if kept in pairs:
                    stats["duplicates"] += 1
                    continue
                pairs[kept] = pkg
                c["pairs"] += 1
            c["files"] += 1
    return pairs, per_package, licences, stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=paths.WORK / "gettext.tsv")
    ap.add_argument("--max-words", type=int, default=16)
    ap.add_argument("--only-packages", nargs="*", default=None,
                    help="keep only these packages (e.g. iso-codes: country, language, currency names)")
    args = ap.parse_args(argv)
    pairs, per_package, licences, stats = extract(args.max_words,
                                                  only=set(args.only_packages) if args.only_packages else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted((en, es, pkg) for (en, es), pkg in pairs.items())
    args.out.write_text("".join(f"{en}\t{es}\tgettext:{pkg}\n" for en, es, pkg in rows),
                        encoding="utf-8")
    summary = {"pairs": len(rows), "extraction": dict(stats),
               "packages": {p: {"licence": licences[p],
                                "copyright": f"/usr/share/doc/{p.split(':')[0]}/copyright", **dict(c)}
                            for p, c in sorted(per_package.items(), key=lambda x: -x[1]["pairs"])}}
    args.out.with_name(args.out.stem + ".licences.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("pairs", "extraction")}, indent=1))
    for p, info in list(summary["packages"].items())[:15]:
        print(f"  {p}: {info.get('pairs', 0)} pairs, licence {info['licence']}")
    print(f"wrote {len(rows)} pairs to {args.out}")


if __name__ == "__main__":
    main()
