"""WSGI entry point for uWSGI (``module = app.runtime.wsgi:application`` in app.ini).

With ``lazy-apps = true`` this module is imported in each worker after the
fork: models are loaded per worker and TensorFlow never runs in the master.
"""
from __future__ import annotations

import atexit
import faulthandler
import os
import signal

try:
    import uwsgi  # type: ignore
except ImportError:  # not under uWSGI
    uwsgi = None

# uWSGI 2.0 with lazy-apps loads the app BEFORE it installs a worker's own signal handlers
# (core/uwsgi.c, uwsgi_worker_run), so until then a worker runs the handlers it inherited from
# the master: the SIGHUP a graceful shutdown or reload sends it ran the master's grace_them_all
# inside the worker, which went on to serve, and the master's gracefully_kill_them_all waited
# for it forever (measured: SIGTERM 2 s after a worker respawn, uWSGI still up 200 s later).
# A loading worker serves nothing yet, so it simply exits at once; uWSGI replaces these
# handlers with its own as soon as the app is loaded.
_UWSGI_RELOAD_CODE, _UWSGI_END_CODE = 17, 30  # uwsgi.h


def _exit_while_loading(signum, frame) -> None:
    os.write(2, f"worker pid {os.getpid()}: {signal.Signals(signum).name} while loading the app; "
                f"exiting (it serves nothing yet)\n".encode())
    from ..serving import metrics
    metrics.mark_process_dead(os.getpid())
    os._exit(_UWSGI_RELOAD_CODE if signum == signal.SIGHUP else _UWSGI_END_CODE)


# installed before the app's own imports: a stop signal right after a respawn must find them
if uwsgi is not None:
    for _sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, _exit_while_loading)

from .. import create_app  # noqa: E402
from ..config import effective_env  # noqa: E402
from ..serving import metrics  # noqa: E402
from . import watchdog  # noqa: E402

# A worker that crashes (SIGSEGV, SIGABRT, SIGBUS...) writes every thread's Python stack to
# stderr, i.e. the uWSGI log, before uWSGI's own handler reports it and the master respawns it.
faulthandler.enable(all_threads=True)

flask_app = create_app()
# per-request harakiri on threaded workers (uWSGI 2.0's is per worker; see app/runtime/watchdog.py)
application = watchdog.wrap(flask_app, int(effective_env().get("HARAKIRI") or 0))

_PID = os.getpid()


def _on_exit() -> None:
    # Write what the inference history still holds (a graceful reload or shutdown loses none),
    # then remove this worker's live-gauge files (counters and histograms stay, so totals remain
    # exact after a worker is recycled or reloaded).
    if os.getpid() == _PID:
        writer = flask_app.extensions.get("history")
        if writer is not None:
            writer.close()
        metrics.mark_process_dead(_PID)


if uwsgi is not None:
    _previous = getattr(uwsgi, "atexit", None)

    def _uwsgi_atexit() -> None:
        _on_exit()
        if callable(_previous):
            _previous()

    uwsgi.atexit = _uwsgi_atexit
else:
    atexit.register(_on_exit)
