"""WSGI entry point for uWSGI (``module = app.wsgi:application`` in app.ini).

With ``lazy-apps = true`` this module is imported in each worker after the
fork: models are loaded per worker and TensorFlow never runs in the master.
"""
from __future__ import annotations

import atexit
import os

from . import create_app, metrics

application = create_app()

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
