"""Migrations (Alembic, app/accounts/migrations): bring a database to this code's schema.

:func:`ensure` upgrades an empty or older database to the head revision, under a lock
(PostgreSQL: an advisory lock; SQLite: the file's write lock), so that several workers starting
at once migrate it once. A database at a revision this code does not know (written by a newer
version) raises :class:`SchemaTooNew`: the server refuses to start rather than guess.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from .db import engine_for

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = 7_305_011  # pg_advisory_lock key of our migrations


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of the code."""


def _config(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current(url: str) -> str | None:
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure(url: str) -> str:
    """Migrate ``url`` to head if needed; return the revision. Raises SchemaTooNew."""
    engine = engine_for(url)
    script = ScriptDirectory(str(MIGRATIONS))
    known = {r.revision for r in script.walk_revisions()}
    with _migration_lock(engine), engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
        if rev is not None and rev not in known:
            raise SchemaTooNew(f"the database ({_safe(url)}) has schema revision {rev}, newer than this "
                               f"code knows (head {script.get_current_head()}): run the newer code, "
                               f"or restore a backup taken before it migrated")
        if rev != script.get_current_head():
            command.upgrade(_config(conn), "head")
            conn.commit()
    return script.get_current_head()


@contextmanager
def _migration_lock(engine):
    """One migrating process at a time: PostgreSQL's advisory lock, or a lock file beside SQLite's."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_ID})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with open(engine.url.database + ".migrate.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def _safe(url: str) -> str:
    """The URL without its password (for messages)."""
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)
