"""Imported by the uWSGI master before it forks its workers (app.ini: ``shared-import``).

With ``lazy-apps = true`` each worker builds the app and its models after the
fork; importing the big libraries here first means their code and read-only
data (TensorFlow alone is ~200 MB) are loaded once and shared copy-on-write by
all workers, which lowers PSS per worker and speeds up worker (re)starts.

Only imports happen here: no TensorFlow op runs and no thread pool is set up
(a TensorFlow that has run ops in the master deadlocks forked children), so
each worker can still size its own thread pools (TF_INTRA_OP_THREADS, ...).
Nothing here touches the models or the prometheus multiprocess files.
``PRELOAD_LIBRARIES=0`` turns it off.
"""
from __future__ import annotations

import os
import time

PRELOADED: dict = {}


def preload() -> dict:
    from ..config import apply_library_defaults
    apply_library_defaults()  # before TensorFlow's first import
    t0 = time.perf_counter()
    import numpy  # noqa: F401
    import cv2  # noqa: F401
    import PIL.Image  # noqa: F401
    import sentencepiece  # noqa: F401
    import flask  # noqa: F401
    import prometheus_client  # noqa: F401
    import tensorflow  # noqa: F401
    import keras  # noqa: F401
    PRELOADED.update(pid=os.getpid(), seconds=round(time.perf_counter() - t0, 2))
    return PRELOADED


if os.environ.get("PRELOAD_LIBRARIES", "1").strip().lower() in ("1", "true", "yes", "on"):
    preload()
    print(f"app.runtime.preload: libraries imported in the uWSGI master (pid {PRELOADED['pid']}) "
          f"in {PRELOADED['seconds']} s", flush=True)
