"""The inference history: one row per inference request, written off the request path.

``HISTORY`` = ``off`` | ``meta`` (who, when, endpoint, model and version, request id, latency,
status, a summary of the input: sizes and sha256, and the JSON answer) | ``full`` (also the
text of a text request, and the uploaded image under ``HISTORY_DIR``).

Writes never block or fail a request: the request only offers its record to a bounded
in-process queue (``HISTORY_QUEUE``); one background thread per worker writes the queue in
batches: what arrives within half a second (or 500 records) goes into one multi-row INSERT.
When the database is down or slow the queue fills and the records that do not fit are dropped
and counted (``history_records_dropped_total``); a batch the database refuses three times is
dropped and counted too (and its stored pictures deleted). At a graceful reload or shutdown
the worker writes what its queue holds before it exits (``close``: uWSGI's atexit hook).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client import Counter
from sqlalchemy import delete, insert

from .db import session
from .models import InferenceRecord

log = logging.getLogger(__name__)

WRITTEN = Counter("history_records_written_total", "Inference records written to the history database")
DROPPED = Counter("history_records_dropped_total", "Inference records not written (queue full, database refused)",
                  ["reason"])
MAX_OUTPUT = 65536  # characters of an answer kept
MAX_TEXT = 65536


def summarize(content_type: str, body: bytes, files: list[tuple[str, bytes]], texts: list[str]) -> dict:
    """What an input was, without its content: sizes and digests."""
    out: dict = {"content_type": (content_type or "")[:100], "bytes": len(body)}
    if texts:
        joined = "\n".join(texts)
        out["text"] = {"count": len(texts), "chars": len(joined),
                       "sha256": hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()}
    if files:
        out["files"] = [{"name": name[:100], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                        for name, data in files]
    return out


class HistoryWriter:
    def __init__(self, url: str, mode: str, directory: str | os.PathLike, maxsize: int = 10000,
                 batch: int = 500, interval: float = 0.5):
        self.url, self.mode, self.dir = url, mode, Path(directory)
        self.q: queue.Queue = queue.Queue(maxsize)
        self.batch, self.interval = batch, interval
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    # --- the request side: never blocks --------------------------------------------------
    def offer(self, record: dict, image: bytes | None = None, image_ext: str = "bin") -> bool:
        if self.mode == "full" and image is not None:
            record["_image"] = (image, image_ext)
        try:
            self.q.put_nowait(record)
            return True
        except queue.Full:
            DROPPED.labels("queue_full").inc()
            return False

    # --- the writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        full = False
        while True:
            try:
                first = self.q.get(timeout=self.interval)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            # linger: what arrives within `interval` goes into the same INSERT. Writing as soon
            # as a record arrived made one transaction per request under load, ~10% of
            # /image-bin's req/s at c=32 (bench/history.py). One wait, not a wake-up per record.
            # A backlog (the last batch was full) is written at once.
            if not full:
                self._closed.wait(self.interval)
            rows = [first]
            while len(rows) < self.batch:
                try:
                    rows.append(self.q.get_nowait())
                except queue.Empty:
                    break
            full = len(rows) == self.batch
            self._write(rows)

    def _store_image(self, row: dict) -> None:
        data, ext = row.pop("_image")
        day = row["created_at"].strftime("%Y-%m-%d")
        rel = f"{day}/{row['request_id']}.{ext}"
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        row["image_path"] = rel

    def _write(self, rows: list[dict]) -> None:
        for r in rows:
            if "_image" in r:
                try:
                    self._store_image(r)
                except OSError as exc:
                    log.warning("history: cannot store an image: %s", exc)
                    r.pop("_image", None)
        for attempt in range(3):
            try:
                with session(self.url) as s:
                    s.execute(insert(InferenceRecord.__table__), rows)  # Core: no ORM bookkeeping per row
                WRITTEN.inc(len(rows))
                return
            except Exception as exc:  # the database is down or refuses: retry, then count the loss
                log.warning("history: writing %d records failed (attempt %d): %s", len(rows), attempt + 1,
                            str(exc).splitlines()[0][:200])
                if attempt < 2:
                    time.sleep(0.25 * 4 ** attempt)
        DROPPED.labels("database").inc(len(rows))
        for r in rows:  # no row points at these pictures: the purge would never find them
            if r.get("image_path"):
                try:
                    (self.dir / r["image_path"]).unlink()
                except OSError:
                    pass

    def close(self, timeout: float = 20.0) -> None:
        """Write what the queue holds, then stop (a graceful reload or shutdown)."""
        self._closed.set()
        self._thread.join(timeout)

    def pending(self) -> int:
        return self.q.qsize()


def record(principal, endpoint: str, model: str | None, version: str | None, request_id: str, latency_ms: float,
           status: int, summary: dict, output: str | None, text: str | None, mode: str) -> dict:
    return {
        "created_at": datetime.now(timezone.utc), "user_name": getattr(principal, "user", None),
        "key_id": getattr(principal, "key_id", None),
        "credential": getattr(principal, "kind", None) or "none",
        "endpoint": endpoint[:64], "model": (model or None) and model[:64],
        "model_version": (version or None) and str(version)[:128], "request_id": request_id[:64],
        "latency_ms": round(latency_ms, 3), "status": int(status),
        "input_summary": json.dumps(summary, separators=(",", ":")),
        "output": None if output is None else output[:MAX_OUTPUT],
        "input_text": text[:MAX_TEXT] if (mode == "full" and text) else None,
        "image_path": None,
    }


def purge(url: str, days: int, directory: str | os.PathLike | None = None) -> int:
    """Delete the records older than ``days`` days (and their stored images). Returns the count."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    with session(url) as s:
        if directory:
            from sqlalchemy import select
            for (rel,) in s.execute(select(InferenceRecord.image_path).where(
                    InferenceRecord.created_at < cutoff, InferenceRecord.image_path.is_not(None))):
                try:
                    (Path(directory) / rel).unlink()
                except OSError:
                    pass
        n = s.execute(delete(InferenceRecord).where(InferenceRecord.created_at < cutoff)).rowcount
    return int(n or 0)
