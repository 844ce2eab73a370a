"""Near-duplicate groups and a split by group, so that dev/test cannot flatter the model.

Two English sentences (with all their Spanish references) are *linked* when

1. their English is equal after normalisation (:func:`normalise_en`: case, punctuation, curly
   quotes, contractions: "I'm" = "I am", "don't" = "do not", "can't" = "cannot" = "can not", ...);
2. they share a Spanish translation (equal after lower-casing and dropping punctuation);
3. their normalised English has the same number of tokens and differs in exactly one token
   ("I have a house" / "I have a car"), when the sentences have at least :data:`MIN_SHARED` + 1
   tokens (so "Go." / "Run." are not linked);
4. one is the other with one token inserted ("I have a house" / "I have a big house"), when the
   shorter one has at least :data:`MIN_SHARED` tokens. The issue's own example of a near-duplicate
   is such an insertion, so insertions and deletions count.

Links 3 and 4 are found without comparing all pairs: every sentence is hashed once with each
position masked (substitution keys) and once with each position deleted (looked up among the
full token tuples), which is O(total tokens).

Groups are the connected components of the links (union-find). Linking is transitive, and the
corpus is full of templates ("I have a car." - "I had a car." - "He had a car." ...), so one
giant component forms (17,552 sentences, 17% of the English sentences, mostly short ones); splitting
whole groups means that component can only go to train. :func:`split_by_group` therefore fills
test and then dev with whole groups of at most ``max_group`` sentences, drawn in a seeded random
order, and everything else is train. No link of any of the four kinds joins dev or test to
train. The price is a test set that is a little longer on average than the corpus (fewer
two- and three-word sentences): it is harder, never easier, than a random split.
"""
from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter, defaultdict

#: Links 3 and 4 need at least this many shared tokens.
MIN_SHARED = 2

_QUOTES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "“": '"', "”": '"'})
_CONTRACTIONS = [
    (re.compile(r"\bcan't\b"), "can not"), (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"), (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\bain't\b"), "am not"), (re.compile(r"n't\b"), " not"),
    (re.compile(r"'m\b"), " am"), (re.compile(r"'re\b"), " are"), (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"), (re.compile(r"'d\b"), " would"),
    (re.compile(r"\blet's\b"), "let us"),
    (re.compile(r"\b(he|she|it|that|what|where|who|there|here|how|when|why|this)'s\b"), r"\1 is"),
    (re.compile(r"'s\b"), " 's"),  # possessive (or "Tom's here"): its own token
    (re.compile(r"\bgonna\b"), "going to"), (re.compile(r"\bwanna\b"), "want to"),
    (re.compile(r"\bgotta\b"), "got to"),
]
_NON_WORD = re.compile(r"[^\w\s']+")


def normalise_en(sentence: str) -> tuple[str, ...]:
    """Tokens of an English sentence with case, punctuation and contractions normalised.

    >>> normalise_en("I'm not sure, Tom.") == normalise_en("i am not sure tom")
    True
    """
    s = unicodedata.normalize("NFKC", sentence).translate(_QUOTES).lower()
    for pattern, repl in _CONTRACTIONS:
        s = pattern.sub(repl, s)
    s = _NON_WORD.sub(" ", s)
    return tuple(t.strip("'") for t in s.split() if t.strip("'"))


def normalise_es(sentence: str) -> str:
    s = unicodedata.normalize("NFKC", sentence).lower()
    return " ".join(re.sub(r"[^\w\s]+", " ", s).split())


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        a, b = self.find(a), self.find(b)
        if a == b:
            return False
        if b < a:
            a, b = b, a
        self.parent[b] = a  # the smaller index is the root: deterministic
        return True


_MASK = "\x00"


def links(sentences: list[str], refs: dict[str, list[str]] | None = None,
          kinds=("normal", "spanish", "substitution", "insertion")):
    """Yield (i, j, kind) for linked sentence indices (each link at least once; j != i)."""
    toks = [normalise_en(s) for s in sentences]
    full: dict[tuple, int] = {}
    for i, t in enumerate(toks):
        if t in full:
            if "normal" in kinds:
                yield i, full[t], "normal"
        else:
            full[t] = i
    if "spanish" in kinds and refs is not None:
        first: dict[str, int] = {}
        for i, s in enumerate(sentences):
            for es in refs[s]:
                key = normalise_es(es)
                if key in first and first[key] != i:
                    yield i, first[key], "spanish"
                else:
                    first.setdefault(key, i)
    if "substitution" in kinds:
        first_sub: dict[tuple, int] = {}
        for i, t in enumerate(toks):
            if len(t) < MIN_SHARED + 1:
                continue
            for p in range(len(t)):
                key = t[:p] + (_MASK,) + t[p + 1:]
                j = first_sub.setdefault(key, i)
                if j != i:
                    yield i, j, "substitution"
    if "insertion" in kinds:
        for i, t in enumerate(toks):
            if len(t) < MIN_SHARED + 1:
                continue
            seen = set()
            for p in range(len(t)):
                shorter = t[:p] + t[p + 1:]
                if shorter in seen:
                    continue
                seen.add(shorter)
                j = full.get(shorter)
                if j is not None:
                    yield i, j, "insertion"


def group(sentences: list[str], refs: dict[str, list[str]] | None = None):
    """Group ids (the smallest member index of each component) and link counts by kind."""
    uf = UnionFind(len(sentences))
    counts: Counter = Counter()
    merges: Counter = Counter()
    for i, j, kind in links(sentences, refs):
        counts[kind] += 1
        merges[kind] += uf.union(i, j)
    return [uf.find(i) for i in range(len(sentences))], {"links": dict(counts), "merges": dict(merges)}


def split_by_group(sentences: list[str], gid: list[int], sizes: dict[str, int], seed: int,
                   max_group: int = 50) -> dict[str, list[str]]:
    """Fill the held-out splits in order (e.g. {"test": 2000, "dev": 1000}) with whole groups of
    at most max_group sentences in seeded random order, never past a split's size; the rest is
    train. Deterministic for the same sentences, seed and sizes (order of input irrelevant)."""
    members: dict[int, list[str]] = defaultdict(list)
    for s, g in zip(sentences, gid):
        members[g].append(s)
    groups = sorted(sorted(m) for m in members.values())  # canonical, independent of input order
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    out: dict[str, list[str]] = {name: [] for name in sizes}
    taken = set()
    for name, want in sizes.items():
        for k in order:
            if len(out[name]) >= want:
                break
            g = groups[k]
            if k in taken or len(g) > max_group or len(out[name]) + len(g) > want:
                continue
            taken.add(k)
            out[name].extend(g)
    out["train"] = [s for k, g in enumerate(groups) if k not in taken for s in g]
    return out


def group_stats(gid: list[int]) -> dict:
    size = Counter(gid)
    sizes = sorted(size.values(), reverse=True)
    return {"sentences": len(gid), "groups": len(sizes), "singletons": sum(1 for v in sizes if v == 1),
            "largest": sizes[:5], "in_largest_share": round(sizes[0] / len(gid), 4) if sizes else 0}


def crossing_links(splits: dict[str, list[str]], refs: dict[str, list[str]] | None = None):
    """Links (of any kind) between different splits: (split a, split b, kind) counts."""
    sentences = [s for name in splits for s in splits[name]]
    where = [name for name in splits for _ in splits[name]]
    counts: Counter = Counter()
    for i, j, kind in links(sentences, refs):
        if where[i] != where[j]:
            counts[(*sorted((where[i], where[j])), kind)] += 1
    return counts


def vocabulary(sentences) -> set[str]:
    return {t for s in sentences for t in normalise_en(s)}


def rare_word_sentences(sentences: list[str], train_vocab: set[str]) -> list[str]:
    """Sentences with at least one (normalised) English word that train never saw. Numbers do
    not count (they are copied, not translated)."""
    return [s for s in sentences
            if any(t not in train_vocab and not t.isdigit() for t in normalise_en(s))]
