"""Counters in fixed time windows, exact across workers and instances: the database does the
arithmetic (one conditional UPDATE), so two workers can never both take the last unit.

:func:`take` adds ``amount`` to a subject's count in the current window only if the result stays
within ``limit``; it answers how long until the window ends when it does not.
"""
from __future__ import annotations

import time

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .db import session
from .models import UsageCounter


def take(url: str, subject: str, amount: int, limit: int, window: int, now: float | None = None) -> int | None:
    """None when taken, else the seconds until the window resets (for Retry-After)."""
    now = time.time() if now is None else now
    start = int(now // window * window)
    retry = max(1, int(start + window - now + 0.999))
    if amount > limit:
        return retry
    with session(url) as s:
        insert = pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert
        s.execute(insert(UsageCounter).values(subject=subject, window_start=start, count=0)
                  .on_conflict_do_nothing())
        done = s.execute(update(UsageCounter)
                         .where(UsageCounter.subject == subject, UsageCounter.window_start == start,
                                UsageCounter.count + amount <= limit)
                         .values(count=UsageCounter.count + amount)).rowcount
    return None if done == 1 else retry


def count(url: str, subject: str, window: int, now: float | None = None) -> int:
    now = time.time() if now is None else now
    with session(url) as s:
        row = s.get(UsageCounter, (subject, int(now // window * window)))
        return row.count if row else 0


def purge(url: str, older_than: float) -> int:
    """Drop windows that started before ``older_than`` (unix seconds)."""
    from sqlalchemy import delete
    with session(url) as s:
        return s.execute(delete(UsageCounter).where(UsageCounter.window_start < int(older_than))).rowcount
