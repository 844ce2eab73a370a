"""WSGI entry point for uWSGI (``module = app.wsgi:application`` in app.ini).

With ``lazy-apps = true`` this module is imported in each worker after the
fork: models are loaded per worker and TensorFlow never runs in the master.
"""
from __future__ import annotations

import atexit
import os

from . import create_app, metrics, watchdog
from .config import effective_env

flask_app = create_app()
# per-request harakiri on threaded workers (uWSGI 2.0's is per worker; see app/watchdog.py)
application = watchdog.wrap(flask_app, int(effective_env().get("HARAKIRI") or 0))

_PID = os.getpid()


def _on_exit() -> None:
    # Remove this worker's live-gauge files (counters and histograms stay, so
    # totals remain exact after a worker is recycled or reloaded).
    if os.getpid() == _PID:
        metrics.mark_process_dead(_PID)


try:
    import uwsgi  # type: ignore

    _previous = getattr(uwsgi, "atexit", None)

    def _uwsgi_atexit() -> None:
        _on_exit()
        if callable(_previous):
            _previous()

    uwsgi.atexit = _uwsgi_atexit
except ImportError:  # not under uWSGI
    atexit.register(_on_exit)
