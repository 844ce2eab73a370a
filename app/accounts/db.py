"""The database: ``DATABASE_URL`` or a SQLite file in RUN_DIR (WAL mode), one engine per process."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL``, else ``sqlite:///<RUN_DIR>/modelserver.db``."""
    from ..config import effective_env
    eff = effective_env(os.environ if environ is None else environ)
    url = eff.get("DATABASE_URL", "").strip()
    if url:
        if url.startswith(("postgres://", "postgresql://")):  # the driver we ship: psycopg 3
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    return f"sqlite:///{Path(eff['RUN_DIR']) / 'modelserver.db'}"


def engine_for(url: str) -> Engine:
    """The process's engine for ``url`` (created once; after a fork, call :func:`dispose_all`)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:"):
                path = url.split(":///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

                @event.listens_for(engine, "connect")
                def _sqlite_pragmas(conn, _record):
                    cur = conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
            _engines[url] = engine
        return engine


def dispose_all() -> None:
    with _lock:
        for e in _engines.values():
            e.dispose(close=False)
        _engines.clear()


@contextmanager
def session(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(engine_for(url), expire_on_commit=False)
    with factory() as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
