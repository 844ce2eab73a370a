"""Pass-through of names, numbers, URLs, e-mail addresses and emoji (pure Python, no TensorFlow).

    text, spans = protect("Visit https://example.org with Zbigniew at 10:30.")
    # text  == "Visit ⟦0⟧ with ⟦1⟧ at ⟦2⟧."
    # ... translate text with a model that copies placeholders ...
    restore("Visita ⟦0⟧ con ⟦1⟧ a las ⟦2⟧.", spans)
    # == "Visita https://example.org con Zbigniew a las 10:30."

:func:`protect` replaces each span that must come out unchanged by a placeholder ``⟦i⟧``
(:data:`PLACEHOLDERS`; prepare.py --symbols makes each one a single SentencePiece piece, and
train.py --placeholders teaches the model to copy them). :func:`restore` puts the spans back and
is robust to what a model does wrong: a placeholder it drops is inserted before the final
punctuation, a duplicate is removed, an unknown one is removed; spaces the model put inside a
placeholder ("⟦ 1 ⟧") are tolerated.

What is protected (each a :class:`Span` with its kind):

- ``url``: http(s)://..., www....; trailing sentence punctuation is not part of it;
- ``email``: name@host.tld;
- ``emoji``: a run of emoji (with skin tones, ZWJ sequences, flags, keycaps, variation selectors);
- ``number``: digits with decimal/thousands separators, times (10:30), dates (2024-01-05),
  currency signs, %, and a unit right after it ("3.5 km", "10 kg", "$5", "50%");
- ``code``: a word mixing letters and digits ("A4", "MP3", "COVID-19");
- ``name``: capitalised words that are not the first word of a sentence, not in
  :data:`TRANSLATED` (weekdays, months, languages, nationalities, countries and cities with a
  Spanish name, titles: the model must translate those) and not in ``keep`` (default
  :data:`KEEP`: names so frequent in the training data that the model copies them and knows
  their gender, "Tom", "Mary"); consecutive ones form one span ("Zbigniew Brzezinski").
  A name at the very start of a sentence is left to the model (it cannot be told from an
  ordinary capitalised word without a dictionary).
- ``literal``: text that already looks like a placeholder (so restore cannot confuse it).

At most ``len(PLACEHOLDERS)`` spans are protected per call (the rest stays as text): call it per
sentence.
"""
from __future__ import annotations

import random
import re
from typing import NamedTuple

PLACEHOLDERS = [f"⟦{i}⟧" for i in range(16)]
_PH = re.compile(r"⟦\s*(\d+)\s*⟧")

#: Frequent training-data names left to the model (it copies them and knows their gender).
KEEP = frozenset({"Tom", "Mary", "John"})

#: Capitalised words the model must translate, not copy.
TRANSLATED = frozenset("""
I Mr Mrs Ms Miss Dr Sir Madam Mister Doctor Professor Prof Saint St Father Mother Mom Mum Dad
Grandma Grandpa Uncle Aunt God Lord Christmas Easter Halloween Xmas Bible Earth Moon Sun Internet
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July
August September October November December North South East West Northern Southern Eastern Western
English French Spanish German Italian Portuguese Russian Chinese Japanese Korean Arabic Greek Dutch
Swedish Norwegian Danish Finnish Polish Turkish Hebrew Latin Hindi Esperanto British American
Canadian Mexican Brazilian Argentinian Australian Irish Scottish Welsh European African Asian
Indian Catalan Basque Galician Swiss Austrian Belgian Hungarian Czech Egyptian Chilean Colombian
Peruvian Cuban Christian Muslim Jewish Catholic Protestant Buddhist
Spain France Germany Italy England Britain Scotland Wales Ireland Japan Brazil Mexico Canada
Russia Greece Turkey Egypt Belgium Netherlands Holland Switzerland Sweden Norway Denmark Finland
Poland Hungary Portugal Morocco Algeria Tunisia Israel Lebanon Iran Iraq Syria Jordan Afghanistan
Pakistan Thailand Vietnam Korea Philippines Indonesia Malaysia Singapore Peru Chile Argentina
Colombia Venezuela Ecuador Bolivia Uruguay Paraguay Cuba America Europe Africa Antarctica
Atlantic Pacific Mediterranean Kingdom United States Union Republic Empire Church Cathedral
Street Avenue Square Park River Lake Mountain Mount Ocean Sea Island Islands Bay Gulf Cape
London Paris Rome Athens Moscow Beijing Peking Tokyo Kyoto Lisbon Geneva Vienna Prague Warsaw
Munich Cologne Brussels Antwerp Florence Venice Naples Milan Turin Seville Cordoba Saragossa
Barcelona Madrid Berlin Cairo Jerusalem Beirut Stockholm Copenhagen Edinburgh Dublin Philadelphia
New Old Great Little Holy Black Red White Mrs Jr
""".split())

_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"']+", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_EMOJI_CHAR = (r"\U0001F1E6-\U0001F1FF\U0001F300-\U0001F5FF\U0001F600-\U0001F64F\U0001F680-\U0001F6FF"
               r"\U0001F700-\U0001F77F\U0001F780-\U0001F7FF\U0001F800-\U0001F8FF\U0001F900-\U0001F9FF"
               r"\U0001FA00-\U0001FAFF\u2600-\u26FF\u2700-\u27BF\u2B50\u2B55\u2B1B\u2B1C\u2934\u2935"
               r"\u3030\u303D\u3297\u3299\u00A9\u00AE\u203C\u2049\u2122\u2139\u2194-\u2199\u21A9\u21AA"
               r"\u231A\u231B\u2328\u23CF\u23E9-\u23F3\u23F8-\u23FA\u24C2\u25AA\u25AB\u25B6\u25C0"
               r"\u25FB-\u25FE")
_EMOJI_MOD = r"\uFE0F\uFE0E\u200D\u20E3\U0001F3FB-\U0001F3FF\U000E0020-\U000E007F"
_EMOJI = re.compile(rf"(?:[#*0-9]\uFE0F?\u20E3|[{_EMOJI_CHAR}])(?:[{_EMOJI_MOD}]|[{_EMOJI_CHAR}])*")
_UNITS = (r"km/h|km²|km|kph|mph|cm|mm|nm|µm|m²|m³|m|kg|mg|g|lb|lbs|oz|t|ml|cl|dl|l|L|h|hr|hrs|min|"
          r"ms|s|sec|GB|MB|KB|TB|Gb|Mb|kB|GHz|MHz|Hz|kWh|kW|W|V|mA|A|°C|°F|°|ºC|K|px|pt|€|\$|£|¥|%")
_NUMBER = re.compile(
    rf"(?<![\w.,])(?:[$€£¥]\s?)?[-+]?\d+(?:[.,:/-]\d+)*(?:\s?(?:{_UNITS})(?![\w]))?(?![\w])")
_CODE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w-])")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?…:;]\s+|[\"“«¿¡(]\s*)$")


class Span(NamedTuple):
    text: str
    kind: str
    start: int
    end: int


def _is_name(word: str, before: str, keep) -> bool:
    if not word[0].isupper() or word in keep or word in TRANSLATED:
        return False
    base = re.split(r"['’]", word)[0]
    if base in TRANSLATED or base in keep:
        return False
    if word.isupper() and len(word) <= 4:  # OK, TV, USA: left to the model
        return False
    if re.search(r"\b(?:Mr|Mrs|Ms|Dr|St|Prof|Jr|Sr|Mt)\.\s+$", before):
        return True
    return not _SENTENCE_START.search(before)


def find_spans(text: str, keep=KEEP) -> list[Span]:
    """Non-overlapping spans to pass through, in text order."""
    taken = [False] * len(text)
    spans: list[Span] = []

    def add(start, end, kind):
        if start < end and not any(taken[start:end]):
            spans.append(Span(text[start:end], kind, start, end))
            for k in range(start, end):
                taken[k] = True

    for m in _PH.finditer(text):
        add(m.start(), m.end(), "literal")
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?)]}'\"":
            end -= 1
        add(m.start(), end, "url")
    for m in _EMAIL.finditer(text):
        add(m.start(), m.end(), "email")
    for m in _EMOJI.finditer(text):
        add(m.start(), m.end(), "emoji")
    for m in _CODE.finditer(text):
        if not m.group(0).isdigit() and not re.fullmatch(r"\d+(st|nd|rd|th|s)", m.group(0)):
            if not _NUMBER.fullmatch(m.group(0)):
                add(m.start(), m.end(), "code")
    for m in _NUMBER.finditer(text):
        add(m.start(), m.end(), "number")
    words = [m for m in _WORD.finditer(text) if not any(taken[m.start():m.end()])]
    k = 0
    while k < len(words):
        m = words[k]
        if _is_name(m.group(0), text[:m.start()], keep):
            start, end = m.start(), m.end()
            while (k + 1 < len(words) and text[end:words[k + 1].start()] == " "
                   and words[k + 1].group(0)[0].isupper()
                   and words[k + 1].group(0) not in TRANSLATED):
                k += 1
                end = words[k].end()
            add(start, end, "name")
        k += 1
    spans.sort(key=lambda s: s.start)
    return spans[:len(PLACEHOLDERS)]


def protect(text: str, keep=KEEP) -> tuple[str, list[Span]]:
    """(text with placeholders ⟦0⟧, ⟦1⟧, ... in text order, the spans they stand for)."""
    spans = find_spans(text, keep)
    out, pos = [], 0
    for i, s in enumerate(spans):
        out.append(text[pos:s.start])
        out.append(PLACEHOLDERS[i])
        pos = s.end
    out.append(text[pos:])
    return "".join(out), spans


_FINAL_PUNCT = re.compile(r"[\s.!?…:;,\"'”’»)\]]*$")


def restore(translation: str, spans: list[Span]) -> str:
    """Put the spans back. Dropped placeholders are inserted before the final punctuation, in
    order; duplicates and unknown placeholders are removed."""
    used: set[int] = set()

    def put(m):
        i = int(m.group(1))
        if i >= len(spans) or i in used:
            return ""
        used.add(i)
        return spans[i].text

    out = _PH.sub(put, translation)
    missing = [s.text for i, s in enumerate(spans) if i not in used]
    if missing:
        tail = _FINAL_PUNCT.search(out)
        cut = tail.start() if tail else len(out)
        head = out[:cut].rstrip()
        out = (head + " " if head else "") + " ".join(missing) + out[cut:].lstrip(" ")
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r" +([.,!?;:…])(?=\s|$)", r"\1", out)  # a removed duplicate leaves " ."
    return out.strip()


def protect_pair(en: str, es: str, rng: random.Random | None = None,
                 keep_names_p: float = 0.8) -> tuple[str, str, int]:
    """Training side: protect the English, and the same spans in the Spanish where they occur
    verbatim; spans the Spanish does not contain are left as text on both sides. With
    probability 1 - keep_names_p the KEEP names ("Tom", "Mary") are protected too, so that the
    model also learns to copy placeholders in the slots where names stand. Returns
    (English, Spanish, number of placeholders)."""
    keep = KEEP if rng is None or rng.random() < keep_names_p else frozenset()
    spans = find_spans(en, keep)
    if not spans:
        return en, es, 0
    kept, es_out = [], es
    for s in spans:
        if s.kind == "literal":
            continue
        pattern = re.compile(r"(?<![\w⟦])" + re.escape(s.text) + r"(?![\w⟧])")
        m = pattern.search(es_out)
        if m is None:
            continue
        ph = PLACEHOLDERS[len(kept)]
        es_out = es_out[:m.start()] + ph + es_out[m.end():]
        kept.append(s)
    if not kept:
        return en, es, 0
    # Serving numbers placeholders 0, 1, ... in source order. Training draws a random increasing
    # set of ids instead, so that every placeholder piece is learnt, not only the first two.
    ids = sorted(rng.sample(range(len(PLACEHOLDERS)), len(kept))) if rng else list(range(len(kept)))
    es_out = _PH.sub(lambda m: "\x00" + str(ids[int(m.group(1))]) + "\x01", es_out)
    es_out = es_out.replace("\x00", "⟦").replace("\x01", "⟧")
    out, pos = [], 0
    for i, s in zip(ids, kept):
        out.append(en[pos:s.start])
        out.append(PLACEHOLDERS[i])
        pos = s.end
    out.append(en[pos:])
    return "".join(out), es_out, len(kept)
