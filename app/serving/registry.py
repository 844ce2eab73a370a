"""The per-worker model registry: which models, which version, loaded how, served how.

Under uWSGI ``lazy-apps = true`` the app (and so this registry) is created in each worker
*after* the fork, so TensorFlow never runs an op in the master.

For every model of ``ENABLED_MODELS`` the registry reads the repository entry, picks the
version (``<NAME>_VERSION`` or the highest), resolves the servable class and its settings,
and creates the instance (cheap). ``load_all`` then, model by model: applies the thread
pools of the servable's frameworks, calls ``load`` and ``warmup``, and sets up one lock or
one dynamic batcher. A model that fails anywhere (no folder, bad manifest, bad setting, an
exception in load or warm-up) is marked ``failed`` with the reason and its traceback in the
log; the other models serve on.

``run(name, inputs, parameters)`` is the one request path: ``preprocess`` outside any lock,
``infer`` under the model's lock or batcher (timed: ``model_inference_seconds``), then
``postprocess``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import Config
from . import metrics, threads
from .artifacts import sha256_file
from .batching import Batcher, QueueTimeout
from .errors import ModelBusy, ModelNotFound, ModelNotReady
from .repository import ModelEntry, RepositoryError, read_entry, select_version, servable_class
from .servable import Servable, ServableContext

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """What one request got: its items, one result per item, and the servable's outputs."""
    items: list
    results: list
    outputs: dict | None
    inference_ms: float  # time inside infer() of the call(s) that served it (0 for a cache hit)
    cached: bool = False


class ModelHandle:
    """One model in this worker: its state, its servable instance, its lock or batcher."""

    def __init__(self, name: str):
        self.name = name
        self.status = "pending"  # pending | loading | ready | failed | disabled
        self.error: str | None = None
        self.entry: ModelEntry | None = None
        self.cls: type | None = None
        self.version: str | None = None
        self.servable: Servable | None = None
        self.settings: dict = {}
        self.sha256: dict[str, str] = {}
        self.load_ms: float | None = None    # reading + building the model
        self.warmup_ms: float | None = None  # warm-up inferences
        self.ready_ms: float | None = None   # both: from start of loading to ready
        self.lock = threading.Lock()
        self.batcher: Batcher | None = None

    def fail(self, reason: str) -> None:
        self.status, self.error = "failed", reason

    @property
    def labels(self) -> tuple[str, str]:
        return self.name, self.version or "?"

    @property
    def artifact_sha256(self) -> str:
        """One digest for the version: its primary artifact's (or only file's), else one over all."""
        primary = getattr(self.servable, "primary_artifact", None)
        if primary in self.sha256:
            return self.sha256[primary]
        if len(self.sha256) == 1:
            return next(iter(self.sha256.values()))
        if not self.sha256:
            return "?"
        import hashlib
        return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(self.sha256.items())).encode()).hexdigest()

    def as_dict(self) -> dict:
        d: dict = {"status": self.status, "version": self.version}
        if self.error:
            d["error"] = self.error
        if self.sha256:
            d["sha256"] = self.artifact_sha256
        for k in ("load_ms", "warmup_ms", "ready_ms"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


class ModelRegistry:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.root = Path(cfg.model_repository)
        #: called as hook(model name, servable.usage(items)) before each inference (quotas)
        self.usage_hook = None
        #: called as observer(model name) at each run (the inference history notes the models)
        self.run_observers: list = []
        self.handles: dict[str, ModelHandle] = {}
        self.threads: dict = {}
        self._load_lock = threading.Lock()
        self._done = threading.Event()
        for name in cfg.enabled_models:
            self.handles[name] = self._prepare(name)
        # models of the repository that are not enabled are known (their routes answer 503
        # "disabled", the repository index lists them) but never loaded
        from .repository import list_models
        for name in list_models(self.root):
            if name not in self.handles:
                h = self._prepare(name)
                if h.status != "failed":
                    h.status, h.error = "disabled", "not in ENABLED_MODELS"
                self.handles[name] = h

    def _prepare(self, name: str) -> ModelHandle:
        h = ModelHandle(name)
        env = self.cfg.environ or os.environ
        try:
            h.entry = read_entry(self.root, name)
            h.version = select_version(h.entry, env)
            h.cls = servable_class(h.entry)
            h.settings = h.cls.read_settings(env)
            ctx = ServableContext(name=name, version=h.version, model_dir=h.entry.version_dir(h.version),
                                  settings=h.settings, manifest=h.entry.manifest, core=self.cfg, registry=self)
            h.servable = h.cls(ctx)
        except (RepositoryError, ValueError) as exc:
            h.fail(str(exc))
            log.error("model %s cannot be served: %s", name, exc)
        except Exception as exc:  # a user's servable code failed to import or construct
            h.fail(f"{type(exc).__name__}: {exc}")
            log.exception("model %s: creating its servable failed", name)
        return h

    # --- loading -----------------------------------------------------------
    def load_all(self) -> None:
        with self._load_lock:
            try:
                for h in self.handles.values():
                    if h.status in ("failed", "disabled"):
                        continue
                    if self.cfg.model_loading == "off":
                        h.status, h.error = "disabled", "model loading is off (MODEL_LOADING=off)"
                        continue
                    self._load(h)
            finally:
                self._done.set()

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.load_all, name="model-loader", daemon=True)
        t.start()
        return t

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _load(self, h: ModelHandle) -> None:
        s = h.servable
        h.status = "loading"
        t0 = time.perf_counter()
        stage = "configuring thread pools"
        try:
            self.threads = threads.configure(self.cfg, s.frameworks)
            stage = "load"
            s.load()
            h.load_ms = round((time.perf_counter() - t0) * 1000, 1)
            stage = "reading artifacts"
            h.sha256 = {str(p.relative_to(s.model_dir)): sha256_file(p) for p in s.artifacts()}
            if s.max_batch_size > 0:
                h.batcher = Batcher(lambda items, key, h=h: self._timed_infer(h, items), s.max_batch_size,
                                    s.batch_wait_ms, on_batch=lambda n_req, n_items, key, h=h:
                                    metrics.observe_batch(h.labels, n_req, n_items),
                                    name=f"batcher-{h.name}")
            if self.cfg.model_warmup:
                stage = "warmup"
                t1 = time.perf_counter()
                s.warmup()
                h.warmup_ms = round((time.perf_counter() - t1) * 1000, 1)
        except Exception as exc:
            h.fail(f"{stage} failed: {type(exc).__name__}: {exc}")
            log.error("loading model %s (version %s) failed in %s:\n%s", h.name, h.version, stage,
                      traceback.format_exc())
            if h.batcher is not None:
                h.batcher.close()
                h.batcher = None
            return
        h.ready_ms = round((time.perf_counter() - t0) * 1000, 1)
        h.status = "ready"
        metrics.model_loaded(h.labels, h.artifact_sha256, h.ready_ms / 1000)
        log.info("model %s ready: version=%s load_ms=%s warmup_ms=%s pid=%d", h.name, h.version,
                 h.load_ms, h.warmup_ms, os.getpid())

    # --- access ------------------------------------------------------------
    @property
    def enabled(self) -> list[ModelHandle]:
        return [self.handles[n] for n in self.cfg.enabled_models]

    @property
    def ready(self) -> bool:
        """Every enabled model loaded and warmed (and at least one enabled)."""
        return bool(self.enabled) and all(h.status == "ready" for h in self.enabled)

    def not_ready(self) -> list[str]:
        return [h.name for h in self.enabled if h.status != "ready"]

    def handle(self, name: str, version: str | None = None) -> ModelHandle:
        """The handle of an enabled model (ModelNotFound otherwise; version: must be the served one)."""
        h = self.handles.get(name)
        if h is None:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {sorted(self.handles)}")
        if version is not None and version != h.version:
            raise ModelNotFound(f"model {name!r} version {version!r} is not served here; it serves {h.version!r}")
        return h

    def ready_handle(self, name: str, version: str | None = None) -> ModelHandle:
        h = self.handle(name, version)
        if h.status != "ready":
            raise ModelNotReady(name, h.status, h.error)
        return h

    def servable(self, name: str) -> Servable:
        """The servable instance (loaded or not), for its settings and validation."""
        h = self.handle(name)
        if h.servable is None:
            raise ModelNotReady(name, h.status, h.error)
        return h.servable

    # --- the request path -----------------------------------------------------
    def run(self, name: str, inputs: Mapping[str, Any] | None = None, parameters: Mapping[str, Any] | None = None,
            version: str | None = None, items: list | None = None, outputs: bool = True) -> Prediction:
        """preprocess (unless ``items`` are given) -> infer (locked or batched) -> postprocess."""
        parameters = parameters or {}
        if items is None:
            self.handle(name, version)
            items = self.servable(name).preprocess(inputs or {}, parameters)
        h = self.ready_handle(name, version)
        s = h.servable
        for observe in self.run_observers:
            observe(name)
        if self.usage_hook is not None:
            self.usage_hook(name, s.usage(items))  # quotas: may refuse the request (an ApiError)
        hit = s.cached(items) if items else None
        if hit is not None:
            metrics.CACHE_HITS.labels(*h.labels).inc()
            results, ms, cached = hit, 0.0, True
        else:
            results, ms = self._infer_grouped(h, items)
            cached = False
        out = s.postprocess(results, parameters, items) if outputs else None
        return Prediction(items=items, results=results, outputs=out, inference_ms=round(ms, 3), cached=cached)

    def _infer_grouped(self, h: ModelHandle, items: list) -> tuple[list, float]:
        """Items of one request, grouped by batch key (a request usually has one)."""
        groups: dict = defaultdict(list)
        for i, it in enumerate(items):
            groups[h.servable.batch_key(it)].append(i)
        results: list = [None] * len(items)
        total_ms = 0.0
        for key, idx in groups.items():
            out, ms = self._infer(h, [items[i] for i in idx], key)
            total_ms += ms
            for i, r in zip(idx, out):
                results[i] = r
        return results, total_ms

    def _infer(self, h: ModelHandle, items: list, key) -> tuple[list, float]:
        s = h.servable
        depth = metrics.QUEUE_DEPTH.labels(*h.labels)
        depth.inc()
        try:
            if h.batcher is not None:
                try:
                    return h.batcher.submit_timed(items, key, s.wait_timeout)
                except QueueTimeout:
                    raise ModelBusy(h.name, s.wait_timeout) from None
            if not h.lock.acquire(timeout=s.wait_timeout):
                raise ModelBusy(h.name, s.wait_timeout)
            try:
                t0 = time.perf_counter()
                return self._timed_infer(h, items), (time.perf_counter() - t0) * 1000
            finally:
                h.lock.release()
        finally:
            depth.dec()

    def _timed_infer(self, h: ModelHandle, items: list) -> list:
        """``infer`` with its checks and metrics (the batcher's function, or under the lock)."""
        t0 = time.perf_counter()
        out = h.servable.infer(items)
        seconds = time.perf_counter() - t0
        if len(out) != len(items):
            raise RuntimeError(f"{h.name}.infer returned {len(out)} results for {len(items)} items")
        metrics.INFERENCE.labels(*h.labels).observe(seconds)
        metrics.ITEMS.labels(*h.labels).inc(len(items))
        return out

    # --- description -----------------------------------------------------------
    def status(self) -> dict:
        return {name: h.as_dict() for name, h in self.handles.items()}

    def metadata(self, name: str, version: str | None = None) -> dict:
        """The model's metadata: the Open Inference Protocol's fields and ours."""
        h = self.handle(name, version)
        cls = h.cls
        meta = {"name": name, "versions": [h.version] if h.version else [],
                "platform": getattr(cls, "platform", "unknown") if cls else "unknown",
                "inputs": [t.as_metadata() for t in (cls.inputs if cls else ())],
                "outputs": [t.as_metadata() for t in (cls.outputs if cls else ())]}
        extra = {"status": h.status, "frameworks": list(cls.frameworks) if cls else [],
                 "description": (h.entry.manifest.get("description") if h.entry else None) or
                 (cls.description if cls else ""),
                 "sha256": h.sha256,
                 "batching": {"max_batch_size": h.servable.max_batch_size,
                              "batch_wait_ms": h.servable.batch_wait_ms} if h.servable else None}
        if h.error:
            extra["error"] = h.error
        if h.servable is not None and h.status == "ready":
            try:
                extra.update(h.servable.extra_metadata())
            except Exception:  # description must never fail a request
                log.exception("extra_metadata of %s failed", name)
        meta["parameters"] = extra
        return meta

    def repository_index(self) -> list[dict]:
        """Every model and version of the repository, and whether this worker serves it."""
        from .repository import list_models
        out = []
        for name in sorted(set(list_models(self.root)) | set(self.handles)):
            h = self.handles.get(name)
            try:
                entry = h.entry if h is not None and h.entry is not None else read_entry(self.root, name)
                versions = entry.versions or [None]
            except RepositoryError as exc:
                out.append({"name": name, "state": "UNAVAILABLE", "reason": str(exc)})
                continue
            for v in versions:
                row = {"name": name}
                if v is not None:
                    row["version"] = v
                if h is None or h.status == "disabled":
                    row.update(state="UNAVAILABLE", reason="not in ENABLED_MODELS")
                elif v != h.version:
                    row.update(state="UNAVAILABLE", reason=f"not the served version ({h.version})")
                elif h.status == "ready":
                    row["state"] = "READY"
                else:
                    row.update(state="LOADING" if h.status in ("pending", "loading") else "UNAVAILABLE",
                               reason=h.error or h.status)
                out.append(row)
        return out

