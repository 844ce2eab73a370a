"""English->Spanish translator: loading, pre/post-processing, batched decoding, lock, metadata.

The version directory (models/translator/<version>/) holds ``config.json`` (architecture),
``weights.npz`` (float16), ``spm.model`` (SentencePiece) and ``metadata.json``.

``Translator.translate(texts, beam)`` splits each text into sentences, translates all sentences of
all texts in a few length-bucketed batches (each one ``tf.function`` call with a key/value cache),
and rejoins them. Each result is a :class:`Translation`: the Spanish text (a ``str``) with, per
sentence, its confidence: the exponential of the length-normalised log-probability the model gave
its own output (the geometric mean of the token probabilities, 0..1). Texts longer than
:data:`MAX_CHARS` are refused with :class:`InputTooLong`, never truncated.

A model trained with placeholders (its metadata's ``recipe.placeholders``) gets names, numbers,
URLs, e-mail addresses and emoji replaced by ``⟦0⟧``, ``⟦1⟧``... before decoding and put back
after it (:mod:`.passthrough`), so they come out unchanged whatever the model does with them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import threading
import time
import unicodedata
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...serving.artifacts import sha256_file
from . import passthrough
from .servable import MAX_CHARS

MAX_SENTENCE_TOKENS = 60  # longer sentences are cut at commas / word boundaries before decoding
MAX_BATCH = 64            # sentences per decoder call
BEAM_ALPHA = 0.6          # GNMT length-normalisation exponent for beam search

_SENTENCE_END = re.compile(r"(?<=[.!?…;])[\"'”’)\]]*\s+(?=[\"'“‘(\[¿¡]?[A-Z0-9À-Ý])")
_LONE_I = re.compile(r"\bi\b")


class InputTooLong(ValueError):
    """A text is over MAX_CHARS characters."""


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences (after . ! ? … ; when a capital or digit follows)."""
    out = []
    for line in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def is_shouting(sentence: str) -> bool:
    cased = [c for c in sentence if c.lower() != c.upper()]
    return len(cased) >= 2 and all(c.isupper() for c in cased)


def sentence_case(sentence: str) -> str:
    """'I HAVE A HOUSE.' -> 'I have a house.' (the model saw almost no all-caps text)."""
    low = _LONE_I.sub("I", sentence.lower())
    return low[:1].upper() + low[1:]


class Sentence(NamedTuple):
    """One sentence of a translated text."""
    source: str
    translation: str
    confidence: float  # exp(mean log-probability per output token), 0..1


class Translation(str):
    """A translated text: a ``str`` (so every caller that wants the text keeps working) that
    also carries its lines of :class:`Sentence` (the text is the lines joined by newlines, the
    sentences of a line by spaces)."""
    lines: tuple[tuple[Sentence, ...], ...]

    def __new__(cls, lines=()):
        lines = [tuple(line) for line in lines]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        obj = super().__new__(cls, "\n".join(" ".join(s.translation for s in line) for line in lines))
        obj.lines = tuple(lines)
        return obj

    @property
    def sentences(self) -> list[Sentence]:
        return [s for line in self.lines for s in line]

    @property
    def confidence(self) -> float:
        """The lowest sentence confidence (a text is as good as its worst sentence); 1.0 for a
        text with no sentence (nothing was translated)."""
        return min((s.confidence for s in self.sentences), default=1.0)


class Translator:
    """One loaded translator. Thread-safe: decoding runs under the instance's own lock."""

    def __init__(self, model, sp, metadata: dict, cache_size: int = 4096):
        from .transformer import Decoder
        self.model = model
        self.sp = sp
        self.decoder = Decoder(model)
        self.metadata = metadata
        self.lock = threading.Lock()
        # Names, numbers, URLs... as placeholders: only for a model that learnt to copy them.
        self.placeholders = bool(metadata.get("recipe", {}).get("placeholders")) and \
            sp.piece_to_id(passthrough.PLACEHOLDERS[0]) != sp.unk_id()
        # Bounded LRU of decoded chunks: (beam, source ids) -> (output ids, mean log-probability).
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, tuple[list[int], float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | os.PathLike, cache_size: int = 4096) -> "Translator":
        import sentencepiece as spm
        from .transformer import Transformer

        t0 = time.perf_counter()
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        config["dropout"] = 0.0
        model = Transformer(**config).build_weights()
        with np.load(model_dir / "weights.npz") as data:
            names = [str(n) for n in data["names"]]
            values = [data[f"w{i:03d}"].astype(np.float32) for i in range(len(names))]
        have = [v.path for v in model.weights]
        if have != names:
            raise ValueError(f"weights.npz does not match config.json: {names[:3]}... vs {have[:3]}...")
        model.set_weights(values)
        sp = spm.SentencePieceProcessor(model_file=str(model_dir / "spm.model"))
        meta_path = model_dir / "metadata.json"
        metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        metadata.setdefault("name", "translator-en-es")
        metadata.setdefault("version", "unversioned")
        metadata["sha256"] = sha256_file(model_dir / "weights.npz")
        metadata["load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return cls(model, sp, metadata, cache_size)

    def warmup(self) -> None:
        """Trace the decoders (greedy and beam 4) so the first request is not slow."""
        t0 = time.perf_counter()
        self.translate(["Hello.", "How are you today, my friend? I am fine."], beam=1)
        self.translate(["Hello."], beam=4)
        self.metadata["warmup_ms"] = round((time.perf_counter() - t0) * 1000, 1)

    # -- pre-processing -------------------------------------------------------------------
    def _pieces(self, sentence: str) -> list[list[int]]:
        """Token ids of a sentence, cut into chunks of <= MAX_SENTENCE_TOKENS - 1 ids."""
        ids = self.sp.encode(sentence)
        if len(ids) < MAX_SENTENCE_TOKENS:
            return [ids]
        parts = [p for p in re.split(r"(?<=[,:;])\s+", sentence) if p]
        if len(parts) == 1:
            words = sentence.split()
            half = max(1, len(words) // 2)
            if len(words) == 1:  # one enormous "word": cut its pieces
                step = MAX_SENTENCE_TOKENS - 1
                return [ids[i:i + step] for i in range(0, len(ids), step)]
            parts = [" ".join(words[:half]), " ".join(words[half:])]
        else:
            half = len(parts) // 2
            parts = [" ".join(parts[:half]), " ".join(parts[half:])]
        return [c for p in parts for c in self._pieces(p)]

    # -- decoding -------------------------------------------------------------------------
    def _decode_batch(self, batch: list[list[int]], beam: int) -> list[tuple[list[int], float]]:
        import tensorflow as tf
        from .transformer import EOS

        longest = max(len(ids) for ids in batch) + 1
        src = np.zeros((len(batch), longest), np.int32)
        for r, ids in enumerate(batch):
            src[r, :len(ids) + 1] = ids + [EOS]
        # each row's own output limit (1.5 x its source + 10, at most 256): what it gets alone
        max_len = tf.constant([min(int((len(ids) + 1) * 1.5) + 10, 256) for ids in batch], tf.int32)
        with self.lock:
            if beam <= 1:
                out, logp = self.decoder.greedy(tf.constant(src), max_len)
            else:
                out, logp = self.decoder.beam(beam)(tf.constant(src), max_len,
                                                    tf.constant(BEAM_ALPHA, tf.float32))
        result = []
        for row, lp in zip(out.numpy().tolist(), logp.numpy().tolist()):
            if EOS in row:
                row = row[:row.index(EOS)]
            result.append(([t for t in row if t > EOS], lp))
        return result

    def translate_ids(self, sources: list[list[int]], beam: int = 1) -> list[tuple[list[int], float]]:
        """Decode many token-id sequences, batched by similar length; results in input order,
        each (output ids, mean log-probability per output token, end token included).

        Sequences seen recently (same beam) come from the LRU cache without decoding."""
        out: list[tuple[list[int], float] | None] = [None] * len(sources)
        with self._cache_lock:
            for i, ids in enumerate(sources):
                hit = self._cache.get((beam, *ids))
                if hit is not None:
                    self._cache.move_to_end((beam, *ids))
                    out[i] = hit
            missing = [i for i, o in enumerate(out) if o is None]
        order = sorted(missing, key=lambda i: len(sources[i]))
        for start in range(0, len(order), MAX_BATCH):
            idx = order[start:start + MAX_BATCH]
            for i, ids in zip(idx, self._decode_batch([sources[i] for i in idx], beam)):
                out[i] = ids
        if self.cache_size > 0 and missing:
            with self._cache_lock:
                for i in missing:
                    self._cache[(beam, *sources[i])] = out[i]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def translate(self, texts: list[str], beam: int = 1) -> list[Translation]:
        """Translate each text (one or more sentences). Raises InputTooLong over MAX_CHARS."""
        for i, text in enumerate(texts):
            if len(text) > MAX_CHARS:
                raise InputTooLong(f"text {i} has {len(text)} characters; the limit is {MAX_CHARS}")
        unique, layout = self._layout(texts)
        decoded = self.translate_ids([list(k) for k in unique], beam)
        return self._render(decoded, layout)

    def cached(self, texts: list[str], beam: int = 1) -> list[Translation] | None:
        """The translations if every chunk of every text is in the LRU cache, else None.

        Lets the server answer repeated requests at once instead of queueing them for a batch."""
        if self.cache_size <= 0 or any(len(t) > MAX_CHARS for t in texts):
            return None
        unique, layout = self._layout(texts)
        decoded = []
        with self._cache_lock:
            for ids in unique:
                hit = self._cache.get((beam, *ids))
                if hit is None:
                    return None
                decoded.append(hit)
            for ids in unique:
                self._cache.move_to_end((beam, *ids))
        return self._render(decoded, layout)

    def _layout(self, texts: list[str]):
        """Unique chunks (token-id tuples, in first-seen order) and, per text, lines of
        sentences, each (source, shouting, pass-through spans, chunk indices)."""
        # Each text is lines of sentences of chunks; identical chunks are decoded once.
        unique: dict[tuple[int, ...], int] = {}
        layout: list[list[list[tuple]]] = []
        for text in texts:
            lines = []
            for line in unicodedata.normalize("NFC", text).splitlines() or [""]:
                sentences = []
                for source in split_sentences(line):
                    shout = is_shouting(source)
                    sentence = sentence_case(source) if shout else source
                    spans = []
                    if self.placeholders:
                        sentence, spans = passthrough.protect(sentence)
                    chunks = [unique.setdefault(tuple(ids), len(unique)) for ids in self._pieces(sentence)]
                    sentences.append((source, shout, spans, chunks))
                lines.append(sentences)
            layout.append(lines)
        return unique, layout

    def _render(self, decoded: list[tuple[list[int], float]], layout) -> list[Translation]:
        words = [self.sp.decode(ids) for ids, _ in decoded]
        weights = [len(ids) + 1 for ids, _ in decoded]  # output tokens, end token included
        out = []
        for lines in layout:
            rendered = []
            for line in lines:
                sentences = []
                for source, shout, spans, chunks in line:
                    target = " ".join(words[u] for u in chunks)
                    if spans:
                        target = passthrough.restore(target, spans)
                    if shout:
                        target = target.upper()
                    logp = sum(decoded[u][1] * weights[u] for u in chunks) / sum(weights[u] for u in chunks)
                    sentences.append(Sentence(source, target, round(math.exp(logp), 4)))
                rendered.append(sentences)
            out.append(Translation(rendered))
        return out


def cli_main(argv: list[str] | None = None) -> int:
    """`python -m app translate`: one English line in, one Spanish line out, in order."""
    ap = argparse.ArgumentParser(prog="python -m app translate", description=cli_main.__doc__)
    ap.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy)")
    ap.add_argument("--model-dir", default=None,
                    help="a version directory (default: the served version of 'translator' in MODEL_REPOSITORY)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="TensorFlow intra-op threads")
    ap.add_argument("--chunk", type=int, default=512, help="lines decoded per batch call")
    args = ap.parse_args(argv)
    if args.beam < 1 or args.beam > 16:
        ap.error("--beam must be between 1 and 16")

    from app.config import apply_library_defaults
    apply_library_defaults()  # before TensorFlow's first import
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from ...serving.repository import version_dir
    translator = Translator.load(args.model_dir or version_dir("translator"))
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", newline=None, closefd=False)
    status = 0
    lines: list[str] = []

    def flush():
        nonlocal status
        ok = [l if len(l) <= MAX_CHARS else "" for l in lines]
        for n, l in enumerate(lines):
            if len(l) > MAX_CHARS:
                print(f"line {flush.done + n + 1}: {len(l)} characters, over the limit of "
                      f"{MAX_CHARS}; refused (empty output line)", file=sys.stderr)
                status = 2
        for out in translator.translate(ok, beam=args.beam):
            sys.stdout.write(out.replace("\n", " ") + "\n")
        sys.stdout.flush()
        flush.done += len(lines)
        lines.clear()

    flush.done = 0
    for line in stdin:
        lines.append(line.rstrip("\r\n"))
        if len(lines) >= args.chunk:
            flush()
    flush()
    return status
