"""API keys kept in the database: only their sha256 is stored, with a short prefix to list them."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select

from .models import ApiKey, User, utcnow

PREFIX = "msk_"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def create(s, user: User, label: str = "", rpm: int | None = None, chars_per_day: int | None = None) -> tuple[ApiKey, str]:
    """(row, the key): the key is shown once and never stored."""
    key = new_key()
    row = ApiKey(user_id=user.id, label=label, prefix=key[:len(PREFIX) + 6], key_hash=key_hash(key),
                 rpm=rpm, chars_per_day=chars_per_day)
    s.add(row)
    s.flush()
    return row, key


def lookup(s, key: str) -> tuple[ApiKey, User] | None:
    """The live key and its enabled user for a presented key, else None."""
    row = s.execute(select(ApiKey, User).join(User, ApiKey.user_id == User.id)
                    .where(ApiKey.key_hash == key_hash(key))).first()
    if row is None or row[0].revoked_at is not None or row[1].disabled:
        return None
    return row[0], row[1]


def revoke(s, key_id: int, when: datetime | None = None) -> bool:
    row = s.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = when or utcnow()
    return True
