"""Thread pools per framework, applied once per worker whenever a model of that framework loads.

With several workers on few cores the libraries' default pools oversubscribe the CPU (batch-1
decoding was 2.4x slower with two workers), so every framework gets the configured count:
TensorFlow (``TF_INTRA_OP_THREADS``/``TF_INTER_OP_THREADS``, before its first op), OpenCV
(``CV2_THREADS``) and NumPy's BLAS/OpenMP pools (``NUMPY_THREADS``, through threadpoolctl).
"""
from __future__ import annotations

import logging
import os
import threading

from ..config import Config

log = logging.getLogger(__name__)

FRAMEWORKS = ("tensorflow", "opencv", "numpy")

_lock = threading.Lock()
_applied: dict[str, dict] = {}
_limiter = None  # threadpoolctl's limits live as long as this object


def _tensorflow(cfg: Config) -> dict:
    from ..config import apply_library_defaults
    apply_library_defaults()  # before TensorFlow's first import in this process
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.tf_inter_op_threads)
    except RuntimeError as exc:  # TF already initialised in this process (tests)
        log.warning("could not set TF thread pools (already initialised): %s", exc)
    info = {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
    try:  # whether TensorFlow really runs its oneDNN kernels (TF_ENABLE_ONEDNN_OPTS)
        from tensorflow.python.util import _pywrap_util_port
        info["tf_onednn"] = bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # private API: report unknown rather than fail
        info["tf_onednn"] = None
    return info


def _opencv(cfg: Config) -> dict:
    import cv2
    cv2.setNumThreads(cfg.cv2_threads)
    return {"cv2_threads": cfg.cv2_threads, "cv2_threads_effective": cv2.getNumThreads()}


def _numpy(cfg: Config) -> dict:
    global _limiter
    from threadpoolctl import threadpool_limits
    if cfg.numpy_threads > 0:
        _limiter = threadpool_limits(limits=cfg.numpy_threads)
    return {"numpy_threads": cfg.numpy_threads}


_SETUP = {"tensorflow": _tensorflow, "opencv": _opencv, "numpy": _numpy}


def configure(cfg: Config, frameworks) -> dict:
    """Apply the pools of ``frameworks`` (once each per process); returns what is in force."""
    with _lock:
        for fw in frameworks:
            if fw not in _SETUP:
                raise ValueError(f"unknown framework {fw!r}; expected one of {FRAMEWORKS}")
            if fw not in _applied:
                _applied[fw] = _SETUP[fw](cfg)
        return applied(cfg)


def applied(cfg: Config) -> dict:
    info: dict = {}
    for fw in FRAMEWORKS:
        info.update(_applied.get(fw, {}))
    info.update(thread_budget(cfg))
    return info


def thread_budget(cfg: Config, environ=None) -> dict:
    """Compute threads of all workers vs the cores: WORKERS x max(TF intra-op, OpenCV) <= cores.

    Request threads (THREADS) only wait on sockets, locks and the batch queue, so they do not
    count; a worker computes with at most one pool at a time (one lock or batcher per model).
    """
    env = os.environ if environ is None else environ
    try:
        workers = int(env.get("WORKERS", "1"))
    except ValueError:
        workers = 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_worker = max(cfg.tf_intra_op_threads or cores, cfg.cv2_threads or cores, cfg.numpy_threads or cores)
    budget = {"workers": workers, "cores": cores, "compute_threads": workers * per_worker,
              "within_budget": workers * per_worker <= cores}
    if not budget["within_budget"]:
        log.warning("thread budget exceeded: %d workers x %d compute threads > %d cores "
                    "(lower WORKERS, TF_INTRA_OP_THREADS, CV2_THREADS or NUMPY_THREADS)", workers, per_worker, cores)
    return budget
