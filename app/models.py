"""Per-worker model registry: loads, warms and hands out both models.

Under uWSGI ``lazy-apps = true`` the app (and so this registry) is created in
each worker *after* the fork, so TensorFlow never runs an op in the master.
Thread pools are sized from the config before anything runs: by default one
intra-op and one inter-op TensorFlow thread and one OpenCV thread per worker,
because with several workers on few cores the default pools oversubscribe the
CPU (batch-1 decoding was 2.4x slower with two workers).
"""
from __future__ import annotations

import logging
import os
import threading
import time

from .config import Config
from .metrics import MODEL_INFO, MODEL_LOAD

log = logging.getLogger(__name__)

NOSE = "nose_tracker"
TRANSLATOR = "translator"
FALLBACK_MAX_CHARS = 5000  # only used while the translator module cannot be imported

_threads_configured = False
_threads_lock = threading.Lock()


def configure_threads(cfg: Config, with_tf: bool = True) -> dict:
    """Set OpenCV and TensorFlow thread pools once per process (before any TF op)."""
    global _threads_configured
    info = {"cv2_threads": cfg.cv2_threads}
    with _threads_lock:
        import cv2
        cv2.setNumThreads(cfg.cv2_threads)
        info["cv2_threads_effective"] = cv2.getNumThreads()
        if with_tf:
            from .config import apply_library_defaults
            apply_library_defaults()  # before TensorFlow's first import in this process
            import tensorflow as tf
            if not _threads_configured:
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_intra_op_threads)
                    tf.config.threading.set_inter_op_parallelism_threads(cfg.tf_inter_op_threads)
                except RuntimeError as exc:  # TF already initialised in this process (tests)
                    log.warning("could not set TF thread pools (already initialised): %s", exc)
                _threads_configured = True
            info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
            info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
            try:  # whether TensorFlow really runs its oneDNN kernels (TF_ENABLE_ONEDNN_OPTS)
                from tensorflow.python.util import _pywrap_util_port
                info["tf_onednn"] = bool(_pywrap_util_port.IsMklEnabled())
            except Exception:  # private API: report unknown rather than fail
                info["tf_onednn"] = None
    info.update(thread_budget(cfg))
    return info


def thread_budget(cfg: Config, environ=None) -> dict:
    """Compute threads of all workers vs the cores: WORKERS x max(TF intra-op, OpenCV) <= cores.

    Request threads (THREADS) only wait on sockets, locks and the batch queue, so they do not
    count; a worker computes with at most its TF or OpenCV pool at a time (one model lock each).
    """
    env = os.environ if environ is None else environ
    try:
        workers = int(env.get("WORKERS", "1"))
    except ValueError:
        workers = 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_worker = max(cfg.tf_intra_op_threads or cores, cfg.cv2_threads or cores)
    budget = {"workers": workers, "cores": cores, "compute_threads": workers * per_worker,
              "within_budget": workers * per_worker <= cores}
    if not budget["within_budget"]:
        log.warning("thread budget exceeded: %d workers x %d compute threads > %d cores "
                    "(lower WORKERS, TF_INTRA_OP_THREADS or CV2_THREADS)", workers, per_worker, cores)
    return budget


class ModelNotReady(RuntimeError):
    def __init__(self, name: str, status: str):
        super().__init__(f"model {name} is not ready ({status})")
        self.name, self.status = name, status


class ModelBusy(RuntimeError):
    def __init__(self, name: str, waited: float):
        super().__init__(f"model {name} is busy: no slot within {waited:g} s, retry later")
        self.name, self.waited = name, waited


class ModelState:
    def __init__(self, name: str):
        self.name = name
        self.status = "pending"  # pending | loading | ready | failed | disabled
        self.error: str | None = None
        self.model = None
        self.metadata: dict = {}
        self.load_ms: float | None = None    # reading + building the model
        self.warmup_ms: float | None = None  # warm-up inferences
        self.ready_ms: float | None = None   # both: from start of loading to ready

    def as_dict(self) -> dict:
        d = {"status": self.status}
        if self.error:
            d["error"] = self.error
        if self.metadata:
            for k in ("name", "version", "sha256", "load_ms"):
                if k in self.metadata:
                    d[k] = self.metadata[k]
        for k in ("load_ms", "warmup_ms", "ready_ms"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


class ModelRegistry:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.states = {NOSE: ModelState(NOSE), TRANSLATOR: ModelState(TRANSLATOR)}
        self.threads: dict = {}
        self._load_lock = threading.Lock()
        self._done = threading.Event()
        # One translation at a time per worker (the translator also locks itself);
        # waiting here has a deadline, so a queue of big requests cannot outlive HARAKIRI.
        self._translate_slot = threading.BoundedSemaphore(1)
        # Dynamic batching (app/batching.py), created with the translator when TRANSLATE_BATCH_MAX > 0.
        self.batcher = None

    # --- loading -----------------------------------------------------------
    def load_all(self) -> None:
        with self._load_lock:
            try:
                if self.cfg.model_loading == "off":
                    for st in self.states.values():
                        st.status, st.error = "disabled", "model loading is off (MODEL_LOADING=off)"
                    return
                for name, st in self.states.items():
                    if name not in self.cfg.enabled_models:
                        st.status, st.error = "disabled", "not in ENABLED_MODELS"
                translator_module = None
                if TRANSLATOR in self.cfg.enabled_models:
                    translator_module = self._import_translator()
                try:
                    self.threads = configure_threads(self.cfg, with_tf=translator_module is not None)
                except Exception as exc:  # pragma: no cover - TF import failure
                    log.exception("configuring thread pools failed")
                    self.threads = {"error": str(exc)}
                if NOSE in self.cfg.enabled_models:
                    self._load(NOSE, self._load_nose)
                if translator_module is not None:
                    self._load(TRANSLATOR, lambda: self._load_translator(translator_module))
            finally:
                self._done.set()

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.load_all, name="model-loader", daemon=True)
        t.start()
        return t

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _import_translator(self):
        st = self.states[TRANSLATOR]
        try:
            from . import translator  # noqa: WPS433 (the translator owner's module)
            return translator
        except Exception as exc:
            st.status, st.error = "failed", f"cannot import app.translator: {exc}"
            log.error("translator unavailable: %s", st.error)
            return None

    def _load(self, name: str, loader) -> None:
        st = self.states[name]
        st.status = "loading"
        t0 = time.perf_counter()
        try:
            model, warm_ms = loader()
        except Exception as exc:
            st.status, st.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("loading model %s failed", name)
            return
        st.model = model
        st.metadata = dict(getattr(model, "metadata", {}) or {})
        st.warmup_ms = warm_ms
        st.ready_ms = round((time.perf_counter() - t0) * 1000, 1)
        st.load_ms = round(st.ready_ms - (warm_ms or 0.0), 1)
        st.status = "ready"
        MODEL_INFO.labels(name, str(st.metadata.get("version", "?")), str(st.metadata.get("sha256", "?"))).set(1)
        MODEL_LOAD.labels(name).set(st.ready_ms / 1000)
        log.info("model %s ready: version=%s load_ms=%s warmup_ms=%s pid=%d", name,
                 st.metadata.get("version"), st.load_ms, warm_ms, os.getpid())

    def _warm(self, model) -> float | None:
        if not self.cfg.model_warmup:
            return None
        t0 = time.perf_counter()
        model.warmup()
        return round((time.perf_counter() - t0) * 1000, 1)

    def _load_nose(self):
        from .nose import NoseTracker
        model = NoseTracker.load(self.cfg.nose_model_dir)
        return model, self._warm(model)

    def _load_translator(self, module):
        model = module.Translator.load(self.cfg.translator_model_dir, cache_size=self.cfg.translate_cache_size)
        warm = self._warm(model)
        if self.cfg.translate_batch_max > 0:
            from .batching import Batcher
            from .metrics import BATCH_REQUESTS, BATCH_TEXTS

            def on_batch(n_requests: int, n_texts: int, beam: int) -> None:
                BATCH_REQUESTS.observe(n_requests)
                BATCH_TEXTS.observe(n_texts)

            self.batcher = Batcher(model.translate, self.cfg.translate_batch_max,
                                   self.cfg.translate_batch_wait_ms, on_batch=on_batch,
                                   name="translate-batcher")
        return model, warm

    # --- access ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Every enabled model loaded and warmed (and at least one enabled)."""
        enabled = [st for n, st in self.states.items() if n in self.cfg.enabled_models]
        return bool(enabled) and all(st.status == "ready" for st in enabled)

    def not_ready(self) -> list[str]:
        return [n for n, st in self.states.items() if n in self.cfg.enabled_models and st.status != "ready"]

    def get(self, name: str):
        """The loaded model, or None when it is not (yet) available."""
        st = self.states[name]
        return st.model if st.status == "ready" else None

    def translate(self, texts: list[str], beam: int) -> list[str]:
        """Translate with the loaded translator, waiting at most TRANSLATE_WAIT_TIMEOUT for it.

        Raises ModelNotReady, or ModelBusy when the translator stays busy that long.
        """
        model = self.get(TRANSLATOR)
        if model is None:
            raise ModelNotReady(TRANSLATOR, self.states[TRANSLATOR].status)
        lookup = getattr(model, "cached", None)  # repeats: answered at once, never queued
        cached = lookup(texts, beam) if lookup is not None else None
        if cached is not None:
            from .metrics import TRANSLATE_CACHE_HITS
            TRANSLATE_CACHE_HITS.inc()
            return cached
        if self.batcher is not None:
            from .batching import QueueTimeout
            try:
                return self.batcher.submit(texts, beam, self.cfg.translate_wait_timeout)
            except QueueTimeout:
                raise ModelBusy(TRANSLATOR, self.cfg.translate_wait_timeout) from None
        if not self._translate_slot.acquire(timeout=self.cfg.translate_wait_timeout):
            raise ModelBusy(TRANSLATOR, self.cfg.translate_wait_timeout)
        try:
            return model.translate(texts, beam=beam)
        finally:
            self._translate_slot.release()

    def status(self) -> dict:
        return {name: st.as_dict() for name, st in self.states.items()}

    @staticmethod
    def translator_limits() -> tuple[int, type]:
        """(MAX_CHARS, InputTooLong) from the translator module, with fallbacks."""
        try:
            from . import translator
            return int(translator.MAX_CHARS), translator.InputTooLong
        except Exception:
            return FALLBACK_MAX_CHARS, type("InputTooLong", (ValueError,), {})
