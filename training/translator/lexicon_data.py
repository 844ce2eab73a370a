"""Extra training pairs (dictionary / gettext) for train.py: loading, tagging, sampling weight.

Files are TSV, ``English<TAB>Spanish[<TAB>kind...]`` (lexicon.py and gettext_pairs.py write them).
With ``--lexicon-tag`` every extra pair's source gets :data:`DICT_TAG` in front, a single
SentencePiece piece (prepare.py --symbols reserves it): the model learns the words, and learns
that the dictionary's bare-lemma style belongs to tagged input only. Serving never sends the
tag. ``--lexicon-weight W`` shows each extra pair W times per epoch on average (a fresh seeded
sample each epoch when W < 1, whole copies plus a sample when W > 1), so a 100k-entry
dictionary cannot outweigh ~115k real sentence pairs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DICT_TAG = "<dict>"


def read_pairs(paths: list[Path], max_rows: int = 0) -> list[tuple[str, str]]:
    out, seen = [], set()
    for path in paths:
        rows = path.read_text(encoding="utf-8").splitlines()
        for row in rows[:max_rows or None]:
            parts = row.split("\t")
            if len(parts) < 2 or not parts[0] or not parts[1]:
                continue
            key = (parts[0], parts[1])
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


def sample_indices(n: int, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the extra pairs to show this epoch: ``weight * n`` on average."""
    if n == 0 or weight <= 0:
        return np.zeros(0, np.int64)
    whole = int(weight)
    frac = weight - whole
    parts = [np.arange(n)] * whole
    if frac > 0:
        parts.append(np.flatnonzero(rng.random(n) < frac))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
