"""Trained artifacts: checksums and metadata files beside them."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict:
    """A metadata.json as a dict ({} when missing; a broken one is logged and ignored, since
    a description must not stop a model from serving)."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        loaded = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", p, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}
