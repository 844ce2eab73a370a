"""Password hashing (argon2id, argon2-cffi's defaults). An unknown user is checked against a
dummy hash, so that "no such user" and "wrong password" take the same time."""
from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@cache
def _dummy() -> str:
    return _hasher.hash("not the password of anybody")

MIN_LENGTH = 8
MAX_LENGTH = 1024


def check_new(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValueError(f"a password must have {MIN_LENGTH} to {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_new(password)
    return _hasher.hash(password)


def verify(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored`` (None: no such user, same cost)."""
    if len(password) > MAX_LENGTH:
        password = password[:MAX_LENGTH + 1]
    try:
        return _hasher.verify(stored or _dummy(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
