"""Translating HTML, SubRip subtitles and plain-text files with a plain-text translator.

Everything here is independent of HTTP and of the model: a *job* lists the plain texts it
needs translated, and renders its document from a ``{text: translation}`` map.
:func:`translate_jobs` runs any number of jobs with one ``translate(list_of_texts)`` call per
pass (a second pass only for HTML sentences whose inline elements' words were not found).

HTML (:class:`HtmlJob`), parsed with Python's own ``html.parser`` (no regular expression sees
the markup):

* every event of the parser keeps its exact source text, so whatever is not translated is
  copied byte for byte: tags and their attributes (their order, quoting, case), comments,
  doctype, entities, whitespace-only text, the content of ``<code> <pre> <script> <style>
  <kbd> <samp> <var> <svg> <math> <template> <textarea>`` and of any element with
  ``translate="no"`` (``translate="yes"`` inside it turns translation back on) or a class of
  :data:`SKIP_CLASSES` (``notranslate``; Mastodon's mentions, hashtags and link parts);
* a *segment* is a run of text and inline elements (``<b> <i> <a> <span> <em>`` ...) between
  other markup; it is translated as one text (its whitespace collapsed, as a browser shows it),
  and the leading and trailing whitespace of its text is kept as it was. An untranslated inline
  element inside a sentence (``<code>``, ``<kbd>``, ``translate="no"``, a Mastodon mention or
  hashtag) is kept whole where it stands, as are inline elements without text (an icon);
* inline markup inside a segment: each element's words are looked for in the translation of the
  whole segment -- as the translation of the element's own text, or its text unchanged (a name,
  a number), or else as the words that the translation of the segment *without* that element
  lacks (a second pass); failing all of these, where its words would be if the translation kept
  the order and proportions of the source. The tags go around what was found, in their order.
  Nested inline markup with text in more than one level (``<i>very <b>tired</b></i>``) is
  translated run by run instead, so that every tag keeps its own words;
* ``alt`` and ``title`` attribute values are translated in place (quoted, escaped);
* translated text is escaped (``& < >``, no-break spaces as ``&nbsp;``), so the output is as
  safe to insert as the input was.
"""
from __future__ import annotations

import difflib
import html
import io
import re
from dataclasses import dataclass, field
from html import parser as _hp
from typing import Callable

#: Elements whose content is never translated.
SKIP = frozenset({"code", "pre", "script", "style", "kbd", "samp", "var", "svg", "math", "template",
                  "textarea"})
#: Inline elements that may sit inside a sentence (a segment goes on across them).
INLINE = frozenset({"a", "abbr", "b", "bdi", "bdo", "big", "cite", "data", "del", "dfn", "em", "font", "i",
                    "ins", "mark", "q", "s", "small", "span", "strong", "sub", "sup", "time", "tt", "u"})
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta",
                  "param", "source", "track", "wbr"})
#: Classes whose elements are never translated: Google's ``notranslate``; the mentions, hashtags
#: and the URL parts of links in the HTML of Mastodon, Pleroma and Akkoma posts.
SKIP_CLASSES = frozenset({"notranslate", "mention", "hashtag", "invisible", "ellipsis"})
#: Elements kept whole, untranslated, where they stand inside a sentence when they are not
#: translated (``<code>``, or ``translate="no"`` on an inline element).
OPAQUE_INLINE = INLINE | {"code", "kbd", "samp", "var"}
#: Attributes whose values are text for people.
TEXT_ATTRS = ("alt", "title")

_SENTENCE_END = ".!?…;:"


class HtmlError(ValueError):
    """The parser gave up on this input."""


def has_letters(s: str) -> bool:
    return any(c.isalpha() for c in s)


def normalize(s: str) -> str:
    """Whitespace collapsed to single spaces, stripped: the text as a browser shows it."""
    return " ".join(s.split())


def escape_text(s: str) -> str:
    return html.escape(s, quote=False).replace("\xa0", "&nbsp;")


def fragment(source: str, out: str) -> str:
    """A translation of part of a sentence, without the sentence end and capital letter the
    model adds to what looks like a whole sentence."""
    s, o = source.strip(), out.strip()
    if not o:
        return o
    if s and s[-1] not in _SENTENCE_END and o[-1] in ".!?" and not o.endswith("..."):
        o = o[:-1].rstrip()
    if s[:1].islower() and o[:1].isupper():
        o = o[0].lower() + o[1:]
    return o


# --- tokens ----------------------------------------------------------------------------------

@dataclass
class Tok:
    kind: str            # start | startend | end | data | entity | other
    pos: int             # where its source text starts
    tag: str = ""
    attrs: list = field(default_factory=list)
    data: str = ""       # decoded text (data, entity)
    raw: str = ""        # its exact source text (set after parsing)


class _Tokenizer(_hp.HTMLParser):
    """html.parser with every event's start offset in the source."""

    def __init__(self, src: str):
        super().__init__(convert_charrefs=False)
        self.src = src
        self.toks: list[Tok] = []
        self._line_starts = [0]
        i = src.find("\n")
        while i >= 0:
            self._line_starts.append(i + 1)
            i = src.find("\n", i + 1)

    def _pos(self) -> int:
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def handle_starttag(self, tag, attrs):
        self.toks.append(Tok("start", self._pos(), tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.toks.append(Tok("startend", self._pos(), tag, attrs))

    def handle_endtag(self, tag):
        self.toks.append(Tok("end", self._pos(), tag))

    def handle_data(self, data):
        self.toks.append(Tok("data", self._pos(), data=data))

    def handle_entityref(self, name):
        self.toks.append(Tok("entity", self._pos()))

    def handle_charref(self, name):
        self.toks.append(Tok("entity", self._pos()))

    def handle_comment(self, data):
        self.toks.append(Tok("other", self._pos()))

    handle_decl = handle_pi = unknown_decl = handle_comment


def tokenize(src: str) -> list[Tok]:
    """The parser's events, each with its exact source text; their texts joined are ``src``."""
    p = _Tokenizer(src)
    try:
        p.feed(src)
        p.close()
    except Exception as exc:  # html.parser is tolerant; anything else is a malformed input we refuse
        raise HtmlError(f"the HTML could not be parsed: {exc}") from None
    toks = p.toks
    if not toks or toks[0].pos != 0:
        toks.insert(0, Tok("other", 0))
    for a, b in zip(toks, toks[1:] + [Tok("other", len(src))]):
        if b.pos < a.pos:
            raise HtmlError("the HTML could not be parsed (positions out of order)")
        a.raw = src[a.pos:b.pos]
    for t in toks:
        if t.kind == "entity":
            t.data = html.unescape(t.raw)
        elif t.kind == "data" and t.raw != t.data:
            # the parser reported less than it consumed: keep the rest verbatim, translate nothing of it
            t.kind = "other"
    return toks


# --- start tags with translatable attributes ----------------------------------------------------

def _attr_value_spans(raw: str) -> list[tuple[str, int, int]] | None:
    """(name, start, end) of every attribute value of a start tag's source text, found with the
    very expressions html.parser parsed it with; None when they are not available."""
    tagfind, attrfind = getattr(_hp, "tagfind_tolerant", None), getattr(_hp, "attrfind_tolerant", None)
    if tagfind is None or attrfind is None:
        return None
    m = tagfind.match(raw, 1)
    if not m:
        return None
    k, out, end = m.end(), [], len(raw)
    while k < end:
        m = attrfind.match(raw, k)
        if not m:
            break
        if m.group(2):
            out.append((m.group(1).lower(), m.start(3), m.end(3)))
        else:
            out.append((m.group(1).lower(), -1, -1))
        k = m.end()
    return out


@dataclass
class AttrTag:
    """A start tag whose alt/title values are translated; everything else of it is kept."""
    raw: str
    tag: str
    attrs: list
    texts: list = field(default_factory=list)   # (attribute index, normalized value)

    def render(self, tr: dict) -> str:
        spans = _attr_value_spans(self.raw)
        values = {i: tr.get(text) for i, text in self.texts}
        if spans is not None and len(spans) == len(self.attrs) and \
                all(spans[i][0] == self.attrs[i][0] and spans[i][1] >= 0 for i in values):
            out, last = [], 0
            for i, new in sorted(values.items(), key=lambda kv: spans[kv[0]][1]):
                if new is None:
                    continue
                _, a, b = spans[i]
                quote = self.raw[a] if self.raw[a] in "'\"" else '"'
                out += [self.raw[last:a], quote, html.escape(new, quote=True), quote]
                last = b
            return "".join(out) + self.raw[last:]
        # fallback: the tag written anew from its parsed attributes
        parts = [f"<{self.tag}"]
        for i, (name, value) in enumerate(self.attrs):
            if i in values and values[i] is not None:
                value = values[i]
            parts.append(f" {name}" if value is None else f' {name}="{html.escape(value, quote=True)}"')
        return "".join(parts) + (" />" if self.raw.rstrip().endswith("/>") else ">")


def _text_attrs(tok: Tok) -> list:
    return [(i, normalize(v)) for i, (name, v) in enumerate(tok.attrs)
            if name in TEXT_ATTRS and v and has_letters(v)]


def _skips(tok: Tok, parent: bool) -> bool:
    attrs = {k: (v or "") for k, v in tok.attrs}
    if tok.tag in SKIP:
        return True
    tr = attrs.get("translate", None)
    if tr is not None and tr.strip().lower() == "no":
        return True
    if set(attrs.get("class", "").split()) & SKIP_CLASSES:
        return True
    if tr is not None and tr.strip().lower() in ("yes", ""):
        return False
    return parent


# --- segments --------------------------------------------------------------------------------

@dataclass
class Run:
    """Consecutive text: data and entities."""
    pieces: list = field(default_factory=list)  # (decoded, raw)

    @property
    def text(self) -> str:
        return "".join(d for d, _ in self.pieces)

    @property
    def raw(self) -> str:
        return "".join(r for _, r in self.pieces)

    def _edge(self, leading: bool) -> str:
        """The raw source of the run's leading (or trailing) whitespace."""
        pieces = self.pieces if leading else self.pieces[::-1]
        out = []
        for d, r in pieces:
            if d.isspace():  # whole piece (a whitespace data node, &nbsp;, &#32;)
                out.append(r)
                continue
            if r == d:  # data: its own leading/trailing whitespace
                n = len(d) - len(d.lstrip()) if leading else len(d) - len(d.rstrip())
                if n:
                    out.append(d[:n] if leading else d[len(d) - n:])
            break
        return "".join(out if leading else out[::-1])

    def lead(self) -> str:
        return self._edge(True)

    def trail(self) -> str:
        return self._edge(False)


@dataclass
class Segment:
    nodes: list = field(default_factory=list)  # Run | ("open", tag, raw|AttrTag) | ("close", tag, raw)

    def runs(self) -> list[Run]:
        return [n for n in self.nodes if isinstance(n, Run)]

    @property
    def full(self) -> str:
        return normalize("".join(r.text for r in self.runs()))

    def flat_elements(self):
        """The inline elements of the segment as [(opening tags, run or None, closing tags)], when
        each holds one run of text (possibly inside a chain of elements: ``<a><b>text</b></a>``) or
        no text at all (an anchor, an icon); None when one holds more (nested markup with text)."""
        cached = getattr(self, "_flat", False)
        if cached is not False:
            return cached
        out, i, nodes, result = [], 0, self.nodes, None
        while i < len(nodes):
            n = nodes[i]
            if isinstance(n, Run):
                i += 1
                continue
            if n[0] == "opaque":
                out.append(([n], None, []))
                i += 1
                continue
            if n[0] != "open":
                break
            depth, j = 0, i
            while j < len(nodes):  # the element's nodes, up to its own closing tag
                m = nodes[j]
                if not isinstance(m, Run) and m[0] != "opaque":
                    depth += 1 if m[0] == "open" else -1
                    if depth == 0:
                        break
                j += 1
            if j >= len(nodes):
                break
            unit = nodes[i:j + 1]
            texts = [m for m in unit if isinstance(m, Run) and m.text.strip()]
            if not texts:
                out.append((unit, None, []))
            else:
                k = unit.index(texts[0])
                if len(texts) != 1 or any(isinstance(m, Run) for m in unit[:k] + unit[k + 1:]) or \
                        k * 2 + 1 != len(unit):
                    break
                out.append((unit[:k], texts[0], unit[k + 1:]))
            i = j + 1
        else:
            result = out
        self._flat = result
        return result

    def element_probes(self) -> list[tuple[str, str]]:
        """Per element of a flat segment: (its text, the segment's text without it)."""
        out = []
        for _, run, _ in self.flat_elements() or []:
            if run is None:
                out.append(("", self.full))
                continue
            out.append((normalize(run.text), normalize("".join(r.text for r in self.runs() if r is not run))))
        return out

    def word_spans(self) -> list[tuple[float, float]]:
        """Per element of a flat segment: where its words are among the segment's (0..1)."""
        total = len(self.full.split()) or 1
        starts = {id(pre[0]): run for pre, run, _ in self.flat_elements() or []}
        out, count = [], 0
        for n in self.nodes:
            if id(n) in starts:
                run = starts[id(n)]
                w = len(run.text.split()) if run is not None else 0
                out.append((count / total, (count + w) / total))
            if isinstance(n, Run):
                count += len(n.text.split())
        return out


def _render_node(n, tr: dict) -> str:
    raw = n[2]
    return raw.render(tr) if isinstance(raw, AttrTag) else raw


_EDGE_PUNCT = ".,;:!?…\"'«»“”)(¡¿"


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    """A span without the punctuation at its edges (the tags go around the words)."""
    while b > a + 1 and text[b - 1] in _EDGE_PUNCT:
        b -= 1
    while a < b - 1 and text[a] in _EDGE_PUNCT:
        a += 1
    return a, b


def _find(hay: str, needle: str, start: int) -> tuple[int, int] | None:
    """``needle`` in ``hay[start:]``, case-insensitively, on word boundaries."""
    needle = needle.strip().strip(_EDGE_PUNCT).strip()
    if not needle or not has_letters(needle) and not any(c.isdigit() for c in needle):
        return None
    low, nl = hay.lower(), needle.lower()
    i = low.find(nl, start)
    while i >= 0:
        j = i + len(nl)
        if (i == 0 or not hay[i - 1].isalnum()) and (j == len(hay) or not hay[j].isalnum()):
            return i, j
        i = low.find(nl, i + 1)
    return None


def _inserted(whole: str, without: str, start: int) -> tuple[int, int] | None:
    """The words of ``whole`` that the translation ``without`` (of the sentence without one
    element's words) lacks: that element's words in the translation, when they are one block."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", whole)]
    a = [w.lower().strip(_EDGE_PUNCT) for w in without.split()]
    b = [whole[x:y].lower().strip(_EDGE_PUNCT) for x, y in words]
    blocks = [(j1, j2) for op, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
              if op in ("insert", "replace") and j2 > j1]
    blocks = [(j1, j2) for j1, j2 in blocks if words[j1][0] >= start]
    if not blocks:
        return None
    j1, j2 = max(blocks, key=lambda r: (r[1] - r[0], -r[0]))  # the biggest block: the element's words
    return _trim(whole, words[j1][0], words[j2 - 1][1])


def _proportional(whole: str, frac: tuple[float, float], start: int, empty: bool) -> tuple[int, int]:
    """Where an element's words would be if the translation kept the order and proportions."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", whole) if m.start() >= start]
    if not words:
        return len(whole), len(whole)
    n = len(words)
    i = min(n - 1, max(0, int(frac[0] * n + 0.5) if empty else int(frac[0] * n)))
    if empty:
        return (words[i][0], words[i][0])
    j = min(n, max(i + 1, int(frac[1] * n + 0.5)))
    return _trim(whole, words[i][0], words[j - 1][1])


class HtmlJob:
    """One HTML document (or fragment) to translate."""

    def __init__(self, src: str, escape: bool = True):
        self.src = src
        self.escape = escape_text if escape else (lambda s: s)
        self.parts: list = []   # str | Segment | AttrTag
        self._build(tokenize(src) if src else [])

    # building ---------------------------------------------------------------------------
    def _build(self, toks: list[Tok]) -> None:
        stack: list[tuple[str, bool]] = []   # (tag, skip) of open elements
        seg: Segment | None = None
        depth = 0                            # inline elements opened inside the current segment

        def skip_now() -> bool:
            return stack[-1][1] if stack else False

        def flush():
            nonlocal seg, depth
            if seg is not None:
                if has_letters(seg.full):
                    self.parts.append(seg)
                else:  # nothing to translate but the attributes of its tags
                    self.parts += [n.raw if isinstance(n, Run) else n[2] for n in seg.nodes]
            seg, depth = None, 0

        def start_seg() -> Segment:
            nonlocal seg
            if seg is None:
                seg = Segment()
            return seg

        opaque: list | None = None           # the raw source of an untranslated inline element
        opaque_level = 0

        for t in toks:
            if opaque is not None:  # inside an untranslated inline element: kept whole
                opaque.append(t.raw)
                if t.kind == "start" and t.tag not in VOID:
                    stack.append((t.tag, True))
                elif t.kind == "end":
                    for k in range(len(stack) - 1, -1, -1):
                        if stack[k][0] == t.tag:
                            del stack[k:]
                            break
                if len(stack) < opaque_level:
                    seg.nodes.append(("opaque", "", "".join(opaque)))
                    opaque = None
                continue
            skip = skip_now()
            if t.kind in ("data", "entity") and not skip:
                s = start_seg()
                if s.nodes and isinstance(s.nodes[-1], Run):
                    s.nodes[-1].pieces.append((t.data, t.raw))
                else:
                    s.nodes.append(Run([(t.data, t.raw)]))
                continue
            if t.kind in ("start", "startend"):
                tag_skip = _skips(t, skip)
                texts = _text_attrs(t) if not tag_skip else []
                raw = AttrTag(t.raw, t.tag, t.attrs, texts) if texts else t.raw
                if t.kind == "start" and t.tag in INLINE and not tag_skip and not skip:
                    start_seg().nodes.append(("open", t.tag, raw))
                    depth += 1
                    stack.append((t.tag, False))
                    continue
                if t.kind == "start" and t.tag in OPAQUE_INLINE and tag_skip and not skip:
                    start_seg()
                    opaque = [t.raw]
                    stack.append((t.tag, True))
                    opaque_level = len(stack)
                    continue
                flush()
                self.parts.append(raw)
                if t.kind == "start" and t.tag not in VOID:
                    stack.append((t.tag, tag_skip))
                continue
            if t.kind == "end":
                if seg is not None and depth > 0 and t.tag in INLINE and stack and stack[-1][0] == t.tag:
                    seg.nodes.append(("close", t.tag, t.raw))
                    depth -= 1
                    stack.pop()
                    continue
                flush()
                self.parts.append(t.raw)
                for k in range(len(stack) - 1, -1, -1):
                    if stack[k][0] == t.tag:
                        del stack[k:]
                        break
                continue
            flush()
            self.parts.append(t.raw)
        if opaque is not None:  # never closed: kept as it was
            seg.nodes.append(("opaque", "", "".join(opaque)))
        flush()

    # what to translate ------------------------------------------------------------------------
    def texts(self) -> list[str]:
        """The texts of the first pass: each segment, each inline element's text, each attribute."""
        out = []
        for p in self.parts:
            if isinstance(p, AttrTag):
                out += [t for _, t in p.texts]
            elif isinstance(p, Segment):
                out.append(p.full)
                for n in p.nodes:
                    if not isinstance(n, Run) and isinstance(n[2], AttrTag):
                        out += [t for _, t in n[2].texts]
                if len(p.nodes) == 1:
                    continue
                if p.flat_elements() is None:
                    out += self._run_texts(p)
                else:
                    out += [inner for inner, _ in p.element_probes() if has_letters(inner)]
        return out

    @staticmethod
    def _run_texts(seg: Segment) -> list[str]:
        return [normalize(r.text) for r in seg.runs() if has_letters(r.text)]

    def visible_text(self) -> str:
        """Every segment's text (for language detection)."""
        return "\n".join(p.full for p in self.parts if isinstance(p, Segment))

    def second_pass(self, tr: dict) -> list[str]:
        """The sentences without each inline element whose words were not found in the
        sentence's translation (their difference is where the element's words are)."""
        out = []
        for p in self.parts:
            if isinstance(p, Segment) and len(p.nodes) > 1 and p.flat_elements():
                whole = tr.get(p.full)
                if whole is None:
                    continue
                for inner, rest in p.element_probes():
                    if inner and inner != p.full and has_letters(rest) and not self._direct(whole, inner, tr, 0):
                        out.append(rest)
        return out

    # rendering --------------------------------------------------------------------------------
    @staticmethod
    def _direct(whole: str, inner: str, tr: dict, start: int):
        for cand in (tr.get(inner), inner):
            if cand:
                found = _find(whole, cand, start)
                if found:
                    return found
        return None

    def _align(self, seg: Segment, tr: dict) -> list | None:
        """[(start, end)] of each inline element's words in the segment's translation, in order."""
        els = seg.flat_elements()
        whole = tr.get(seg.full)
        if not els or not whole:
            return None
        probes, fracs = seg.element_probes(), seg.word_spans()
        spans, pos = [], 0
        for (inner, rest), frac in zip(probes, fracs):
            found = None
            if inner and inner == seg.full:  # the element holds all of the text
                found = (0, len(whole))
            elif inner:
                found = self._direct(whole, inner, tr, pos)
                if found is None and rest in tr and has_letters(rest):
                    found = _inserted(whole, tr[rest], pos)
            if found is None or found[0] < pos:
                found = _proportional(whole, frac, pos, not inner)
            spans.append(found)
            pos = found[1]
        return spans

    def _render_segment(self, seg: Segment, tr: dict) -> str:
        esc = self.escape
        runs = seg.runs()
        if len(seg.nodes) == 1:  # one text: translated as a whole
            r = runs[0]
            got = tr.get(seg.full)
            return r.lead() + esc(got) + r.trail() if got else r.raw
        spans = self._align(seg, tr)
        if spans is not None:
            whole = tr[seg.full]
            els = seg.flat_elements()
            first, last = seg.nodes[0], seg.nodes[-1]
            out = [first.lead() if isinstance(first, Run) else ""]
            pos = 0
            for (pre, run, post), (a, b) in zip(els, spans):
                if run is not None and run.text[:1].isspace() and a > pos and whole[a - 1] == " ":
                    a -= 1
                if run is not None and run.text[-1:].isspace() and b < len(whole) and whole[b] == " ":
                    b += 1
                out.append(esc(whole[pos:a]))
                out += [n.raw if isinstance(n, Run) else _render_node(n, tr) for n in pre]
                out.append(esc(whole[a:b]))
                out += [_render_node(n, tr) for n in post]
                if run is None and a == b and 0 < a < len(whole) and whole[a - 1] == " " and whole[a] != " ":
                    out.append(" ")  # a unit without text placed before a word: its own space after it
                pos = b
            out.append(esc(whole[pos:]))
            out.append(last.trail() if isinstance(last, Run) else "")
            return "".join(out)
        # nested or unbalanced inline markup: each run on its own, every tag where it was
        out = []
        for n in seg.nodes:
            if isinstance(n, Run):
                key = normalize(n.text)
                got = fragment(key, tr.get(key) or "") if has_letters(key) else ""
                out.append(n.lead() + esc(got) + n.trail() if got else n.raw)
            else:
                out.append(_render_node(n, tr))
        return "".join(out)

    def render(self, tr: dict) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, AttrTag):
                out.append(p.render(tr))
            else:
                out.append(self._render_segment(p, tr))
        return "".join(out)


# --- plain text and subtitles -------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    """Lines with their own endings (\\n, \\r\\n or \\r), exactly."""
    return io.StringIO(text, newline="").readlines()


def _ending(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body):]


class TextJob:
    """A plain-text file: every line with letters is translated on its own; indentation,
    trailing spaces, blank lines and line endings are kept."""

    def __init__(self, src: str):
        self.lines = [_ending(ln) for ln in _lines(src)]

    def texts(self) -> list[str]:
        return [b.strip() for b, _ in self.lines if has_letters(b)]

    def visible_text(self) -> str:
        return "\n".join(self.texts())

    def second_pass(self, tr: dict) -> list[str]:
        return []

    def render(self, tr: dict) -> str:
        out = []
        for body, end in self.lines:
            core = body.strip()
            if has_letters(core) and core in tr:
                lead = body[:len(body) - len(body.lstrip())]
                trail = body[len(body.rstrip()):]
                out.append(lead + tr[core] + trail + end)
            else:
                out.append(body + end)
        return "".join(out)


def split_balanced(text: str, n: int) -> list[str]:
    """``text`` in at most ``n`` lines of similar length, cut between words; no line empty."""
    words = text.split()
    n = max(1, min(n, len(words)))
    if n == 1:
        return [" ".join(words)] if words else [""]
    ends, total = [], -1
    for w in words:  # the length of the text up to the end of each word
        total += len(w) + 1
        ends.append(total)
    cuts, last = [], 0
    for j in range(1, n):
        lo, hi = last + 1, len(words) - (n - j)  # leave a word for every line after this one
        best = min(range(lo, hi + 1), key=lambda i: (abs(ends[i - 1] - total * j / n), i))
        cuts.append(best)
        last = best
    bounds = [0, *cuts, len(words)]
    return [" ".join(words[bounds[k]:bounds[k + 1]]) for k in range(n)]


_ASS_PREFIX = re.compile(r"^(?:\{[^{}]*\})+")  # {\an8}-style positioning codes of a subtitle line


class SrtJob:
    """A SubRip file: cue numbers, timings, blank lines and line endings exactly kept; the text
    lines of a cue are translated together and spread over as many lines again; a cue whose
    text has markup (``<i>``, ``<font>``) is translated line by line with its tags kept."""

    def __init__(self, src: str):
        lines = [_ending(ln) for ln in _lines(src)]
        self.parts: list = []  # str | ("cue", [(body, end)]) | ("tagged", [(prefix, HtmlJob, end)])
        i, n = 0, len(lines)
        while i < n:
            body, end = lines[i]
            timing = "-->" in body
            if not timing and i + 1 < n and "-->" in lines[i + 1][0] and body.strip():
                self.parts.append(body + end)  # the cue number
                i += 1
                body, end = lines[i]
                timing = True
            if not timing:
                self.parts.append(body + end)
                i += 1
                continue
            self.parts.append(body + end)  # the timing line
            i += 1
            cue = []
            while i < n and lines[i][0].strip():
                cue.append(lines[i])
                i += 1
            if not cue:
                continue
            if any("<" in b for b, _ in cue):
                tagged = []
                for b, e in cue:
                    m = _ASS_PREFIX.match(b)
                    prefix = m.group(0) if m else ""
                    tagged.append((prefix, HtmlJob(b[len(prefix):], escape=False), e))
                self.parts.append(("tagged", tagged))
            else:
                self.parts.append(("cue", cue))

    def _cue_text(self, cue) -> tuple[str, str]:
        m = _ASS_PREFIX.match(cue[0][0])
        prefix = m.group(0) if m else ""
        text = normalize(" ".join([cue[0][0][len(prefix):]] + [b for b, _ in cue[1:]]))
        return prefix, text

    def texts(self) -> list[str]:
        out = []
        for p in self.parts:
            if isinstance(p, tuple) and p[0] == "cue":
                _, text = self._cue_text(p[1])
                if has_letters(text):
                    out.append(text)
            elif isinstance(p, tuple):
                for _, job, _ in p[1]:
                    out += job.texts()
        return out

    def visible_text(self) -> str:
        return "\n".join(self.texts())

    def second_pass(self, tr: dict) -> list[str]:
        return [t for p in self.parts if isinstance(p, tuple) and p[0] == "tagged"
                for _, job, _ in p[1] for t in job.second_pass(tr)]

    def render(self, tr: dict) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif p[0] == "cue":
                cue = p[1]
                prefix, text = self._cue_text(cue)
                if not has_letters(text) or text not in tr:
                    out += [b + e for b, e in cue]
                    continue
                lines = split_balanced(tr[text], len(cue))
                for k, line in enumerate(lines):
                    end = cue[k][1] if k < len(lines) - 1 else cue[-1][1]
                    out.append((prefix if k == 0 else "") + line + end)
            else:
                for prefix, job, end in p[1]:
                    out.append(prefix + job.render(tr) + end)
        return "".join(out)


# --- running jobs ------------------------------------------------------------------------------

def translate_jobs(jobs: list, translate: Callable[[list[str]], list[str]]) -> list[str]:
    """Render every job: one ``translate`` call for the texts of all of them (each distinct
    text once), and one more only for HTML segments whose markup needs their runs apart."""
    tr: dict[str, str] = {}

    def run(texts):
        need = [t for t in dict.fromkeys(texts) if t not in tr]
        if need:
            tr.update(zip(need, translate(need)))

    run([t for j in jobs for t in j.texts()])
    run([t for j in jobs for t in j.second_pass(tr)])
    return [j.render(tr) for j in jobs]
