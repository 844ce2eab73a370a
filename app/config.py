"""All configuration of the model server, read from environment variables.

This module is the single place where every setting and its default lives:

* the Flask application reads its settings through :meth:`Config.from_env`;
* ``start.sh``, the e2e tests and the container entrypoint obtain the
  defaults of the *infrastructure* variables (uWSGI and nginx, used by
  ``app.ini`` and ``nginx/*.template``) from ``python -m app env``, which
  prints ``export NAME=value`` lines for every variable that is not already
  set in the environment.

Importing this module is cheap (no TensorFlow, no OpenCV).
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

#: Repository / install root (the directory that holds ``app/``).
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    group: str  # "app", "uwsgi" or "nginx"


def _s(group: str, name: str, default: str, help: str) -> Setting:
    return Setting(name=name, default=default, help=help, group=group)


#: Every environment variable the stack understands, with its default.
#: Paths that are relative are resolved against APP_ROOT; ``{NAME}`` in a
#: default stands for the value of an earlier setting.
SETTINGS: tuple[Setting, ...] = (
    # --- application -----------------------------------------------------
    _s("app", "APP_ROOT", str(ROOT), "Directory holding app/, models/, app.ini, nginx/."),
    _s("all", "RUN_DIR", "run", "Runtime state: pid files, sockets, logs, metrics files, rendered nginx config."),
    _s("app", "APP_REVISION", "dev", "Deployed revision string shown by /version."),
    _s("app", "APP_REVISION_FILE", "",
       "If set and the file exists, its first line overrides APP_REVISION (read at worker start)."),
    _s("app", "NOSE_MODEL_DIR", "models/nose_tracker", "Directory with nose_tracker.pb (+ metadata.json)."),
    _s("app", "TRANSLATOR_MODEL_DIR", "models/translator", "Directory of the exported translator."),
    _s("app", "ENABLED_MODELS", "nose_tracker,translator",
       "Models this deployment serves (comma-separated); /readyz waits for these only."),
    _s("app", "MODEL_LOADING", "sync",
       "When a worker loads its models: sync (before serving), background (serve at once, /readyz 503 "
       "until loaded) or off (no models; every model endpoint answers 503)."),
    _s("app", "MODEL_WARMUP", "1", "Run warm-up inferences after loading (1/0)."),
    _s("app", "TF_INTRA_OP_THREADS", "1", "TensorFlow intra-op threads per worker."),
    _s("app", "TF_INTER_OP_THREADS", "1", "TensorFlow inter-op threads per worker."),
    _s("app", "CV2_THREADS", "1", "OpenCV threads per worker (cv2.setNumThreads)."),
    _s("app", "MAX_BODY_BYTES", "10485760",
       "Largest request body (Flask MAX_CONTENT_LENGTH and nginx client_max_body_size)."),
    _s("app", "MAX_IMAGE_PIXELS", "40000000", "Largest image (width*height), checked from the header before decoding."),
    _s("app", "MAX_BATCH_TEXTS", "32", "Most texts in one /api/translate request."),
    _s("app", "MAX_TOTAL_CHARS", "20000",
       "Most characters in one /api/translate request (all texts together), so that the largest "
       "request finishes well within HARAKIRI."),
    _s("app", "TRANSLATE_WAIT_TIMEOUT", "60",
       "Seconds a request may wait for this worker's translator before a 503 (busy, Retry-After)."),
    _s("app", "MAX_BEAM", "4", "Largest beam accepted by /api/translate."),
    _s("app", "DEFAULT_BEAM", "1", "Beam used when a request gives none (and by the HTML form)."),
    _s("app", "TRANSLATE_BATCH_MAX", "32",
       "Dynamic batching: most texts decoded together in one call, collected from concurrent "
       "translation requests of a worker (0 turns batching off: one request at a time)."),
    _s("app", "TRANSLATE_BATCH_WAIT_MS", "2",
       "Dynamic batching: longest time (ms) the oldest queued request waits for others to join "
       "its batch (0: no waiting; batches then form only while the previous one decodes)."),
    _s("app", "TRANSLATE_CACHE_SIZE", "4096",
       "Sentences kept per worker in the translator's LRU cache (repeats skip decoding; 0 disables)."),
    _s("app", "IMAGE_REDUCED_DECODE", "1",
       "1: decode large JPEGs at 1/2, 1/4 or 1/8 scale (chosen from the header so both sides stay "
       ">= the model's 112 px input), which is faster; 0: always decode at full size."),
    _s("uwsgi", "PRELOAD_LIBRARIES", "1",
       "1: the uWSGI master imports TensorFlow, OpenCV & co. before forking (no op is run), so "
       "workers share those pages; models are still created in each worker after the fork."),
    _s("app", "TF_ENABLE_ONEDNN_OPTS", "0",
       "TensorFlow's oneDNN kernels (read when TF is first imported, so start.sh exports it before uWSGI "
       "starts). 0 (default): Eigen kernels; on this 2-core CPU they decoded mixed-size translation "
       "batches 29% faster and kept a worker's heap flat (+15 MB after 150 batches, against +320 MB with "
       "oneDNN's per-shape kernel cache). 1: TensorFlow's own default."),
    _s("app", "LOG_LEVEL", "INFO", "Python log level of the app logger."),
    _s("app", "API_KEYS", "",
       "Comma-separated API keys. When any key is set (here or in API_KEYS_FILE), the JSON API needs "
       "`Authorization: Bearer <key>` or `X-API-Key: <key>` (401 otherwise); /healthz, /readyz, "
       "/openapi.json, /docs and static files stay public. Empty: no authentication."),
    _s("app", "API_KEYS_FILE", "",
       "File with one API key per line (# comments allowed), added to API_KEYS; read at worker start."),
    _s("app", "PROTECT_PAGES", "0",
       "1: the HTML pages (/, /index, /result, /dashboard) need an API key too (when keys are set)."),
    _s("app", "PROMETHEUS_MULTIPROC_DIR", "{RUN_DIR}/prometheus",
       "prometheus_client multiprocess directory: exact metrics over all workers. start.sh and the "
       "container export it and empty it at start; when unset (dev server) metrics are per process."),
    # --- uWSGI (app.ini) ---------------------------------------------------
    _s("uwsgi", "APP_SOCKET", "127.0.0.1:3031", "Where uWSGI listens (uwsgi protocol) for nginx."),
    _s("uwsgi", "WORKERS", "2", "uWSGI worker processes."),
    _s("uwsgi", "THREADS", "16",
       "Request threads per worker. They only wait (sockets, model locks, the batch queue), so they do "
       "not count against the cores; more of them let dynamic batching form bigger batches "
       "(sweep on 2 cores: 16 best overall, see README Performance)."),
    _s("uwsgi", "HARAKIRI", "120", "Seconds after which a stuck request's worker is recycled."),
    _s("uwsgi", "MAX_REQUESTS", "100000",
       "Recycle a worker after this many requests (a safety net against leaks: a new worker reloads its "
       "models, seconds of CPU; at 5000 both workers recycled every ~17 s under benchmark load)..."),
    _s("uwsgi", "MAX_REQUESTS_DELTA", "10000", "...plus worker_id*delta (jitter, so workers do not recycle together)."),
    _s("uwsgi", "RELOAD_MERCY", "130", "Seconds a worker may take to finish its requests on reload/shutdown."),
    _s("uwsgi", "STATS_SOCKET", "{RUN_DIR}/uwsgi-stats.sock", "uWSGI stats server (unix socket path or host:port)."),
    _s("uwsgi", "APP_PIDFILE", "{RUN_DIR}/uwsgi.pid", "uWSGI master pid file."),
    _s("uwsgi", "TOUCH_RELOAD", "var/reload/reload", "Touch to gracefully reload the whole app."),
    _s("uwsgi", "TOUCH_CHAIN_RELOAD", "var/reload/chain-reload",
       "Touch to replace workers one at a time (zero downtime)."),
    # --- nginx (nginx/*.template) -----------------------------------------
    _s("nginx", "PORT", "8080", "Port nginx listens on."),
    _s("nginx", "BIND_HOST", "127.0.0.1", "Address nginx listens on (0.0.0.0 in the container)."),
    _s("nginx", "APP_UPSTREAM", "127.0.0.1:3031", "Where nginx finds uWSGI (host:port or unix:/path)."),
    _s("nginx", "UPSTREAM_TIMEOUT", "115",
       "Seconds nginx waits for uWSGI's answer. Keep it a few seconds BELOW HARAKIRI: a stuck request "
       "then gets nginx's 504 JSON, and harakiri recycles the worker a moment later."),
    _s("nginx", "RATE_LIMIT_RPS", "20",
       "Requests per second per client address that nginx passes to the app (limit_req; 0 disables)."),
    _s("nginx", "RATE_LIMIT_BURST", "40", "Requests a client may send above the rate at once before 429s."),
    _s("nginx", "RATE_LIMIT_EXEMPT", "127.0.0.1 ::1",
       "Space-separated client addresses/CIDRs never rate-limited (same-host health checks, benchmarks)."),
    _s("nginx", "NGINX_WORKER_PROCESSES", "1", "nginx worker processes."),
    _s("nginx", "NGINX_RUN_DIR", "{RUN_DIR}/nginx", "nginx pid, temp dirs and rendered config."),
    _s("nginx", "NGINX_ACCESS_LOG", "{NGINX_RUN_DIR}/access.log", "nginx access log (/dev/stdout in the container)."),
    _s("nginx", "NGINX_ERROR_LOG", "{NGINX_RUN_DIR}/error.log", "nginx error log (/dev/stderr in the container)."),
    _s("nginx", "STATIC_ROOT", "app/static", "Directory nginx serves /static/ from."),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}

_PATH_SETTINGS = {
    "NOSE_MODEL_DIR", "TRANSLATOR_MODEL_DIR", "APP_REVISION_FILE", "PROMETHEUS_MULTIPROC_DIR", "API_KEYS_FILE",
    "RUN_DIR", "APP_PIDFILE", "TOUCH_RELOAD", "TOUCH_CHAIN_RELOAD",
    "NGINX_RUN_DIR", "NGINX_ACCESS_LOG", "NGINX_ERROR_LOG", "STATIC_ROOT",
}


def apply_library_defaults(environ=os.environ) -> None:
    """Give the environment variables that libraries read at import time (TensorFlow's
    TF_ENABLE_ONEDNN_OPTS) our defaults when unset. Called before the serving code first
    imports TensorFlow (app/preload.py, the model registry, the translate CLI)."""
    for name in ("TF_ENABLE_ONEDNN_OPTS",):
        environ.setdefault(name, SETTINGS_BY_NAME[name].default)


def resolve_path(value: str, root: str | os.PathLike) -> str:
    """Relative paths are relative to APP_ROOT; /dev/* and absolute paths are kept."""
    if not value:
        return value
    p = Path(value)
    return str(p if p.is_absolute() else Path(root) / p)


def effective_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every setting's value: the environment's if set (even empty), else the default.

    Relative paths are made absolute against APP_ROOT, so the result can be
    handed to uWSGI/nginx, whose working directories differ.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    root = environ.get("APP_ROOT") or str(ROOT)
    for s in SETTINGS:  # in order: a default may use {EARLIER_SETTING}
        value = environ[s.name] if s.name in environ else s.default.format(**out)
        if s.name == "APP_ROOT":
            value = root
        elif s.name in _PATH_SETTINGS:
            value = resolve_path(value, root)
        out[s.name] = value
    # uWSGI's stats option takes either a path or host:port.
    stats = out["STATS_SOCKET"]
    if stats and ":" not in stats:
        out["STATS_SOCKET"] = resolve_path(stats, root)
    return out


def shell_exports(environ: Mapping[str, str] | None = None, only_missing: bool = True) -> str:
    """``export NAME=value`` lines (for ``eval`` in start.sh)."""
    environ = os.environ if environ is None else environ
    eff = effective_env(environ)
    lines = []
    for s in SETTINGS:
        if only_missing and s.name in environ and s.name not in _PATH_SETTINGS:
            continue
        lines.append(f"export {s.name}={shlex.quote(eff[s.name])}")
    return "\n".join(lines) + "\n"


def _int(env: Mapping[str, str], name: str, minimum: int | None = None) -> int:
    raw = env.get(name, SETTINGS_BY_NAME[name].default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"environment variable {name}={value} must be >= {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = str(env.get(name, SETTINGS_BY_NAME[name].default)).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"environment variable {name}={raw!r} is not a boolean")


def parse_api_keys(keys: str, keys_file: str = "") -> tuple:
    """API keys from a comma-separated list plus a file (one per line, # comments)."""
    found = [k.strip() for k in (keys or "").split(",")]
    if keys_file:
        try:
            with open(keys_file, encoding="utf-8") as fh:
                found += [ln.split("#", 1)[0].strip() for ln in fh]
        except OSError as exc:
            raise ValueError(f"API_KEYS_FILE={keys_file!r} cannot be read: {exc.strerror}") from None
    out = []
    for k in found:
        if not k:
            continue
        if len(k) < 16 or not k.isascii() or not k.isprintable() or " " in k:
            raise ValueError("every API key must be at least 16 printable ASCII characters without spaces")
        if k not in out:
            out.append(k)
    return tuple(out)


@dataclass(frozen=True)
class Config:
    """The application's settings (the uWSGI/nginx ones are only in SETTINGS)."""

    app_root: str
    revision: str
    revision_file: str
    nose_model_dir: str
    translator_model_dir: str
    enabled_models: tuple
    model_loading: str
    model_warmup: bool
    tf_intra_op_threads: int
    tf_inter_op_threads: int
    cv2_threads: int
    max_body_bytes: int
    max_image_pixels: int
    max_batch_texts: int
    max_total_chars: int
    translate_wait_timeout: float
    max_beam: int
    default_beam: int
    log_level: str
    prometheus_multiproc_dir: str
    api_keys: tuple = ()
    protect_pages: bool = False
    translate_batch_max: int = 32
    translate_batch_wait_ms: int = 2
    translate_cache_size: int = 4096
    image_reduced_decode: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Config":
        env = dict(os.environ if environ is None else environ)
        eff = effective_env(env)
        loading = eff["MODEL_LOADING"].strip().lower()
        if loading not in ("sync", "background", "off"):
            raise ValueError(f"MODEL_LOADING={loading!r}: expected sync, background or off")
        enabled = tuple(m.strip() for m in eff["ENABLED_MODELS"].split(",") if m.strip())
        unknown = set(enabled) - {"nose_tracker", "translator"}
        if unknown:
            raise ValueError(f"ENABLED_MODELS: unknown model(s) {sorted(unknown)}")
        revision = eff["APP_REVISION"]
        rev_file = eff["APP_REVISION_FILE"]
        if rev_file and os.path.isfile(rev_file):
            with open(rev_file, encoding="utf-8") as fh:
                revision = (fh.readline().strip() or revision)[:200]
        cfg = cls(
            app_root=eff["APP_ROOT"],
            revision=revision,
            revision_file=rev_file,
            nose_model_dir=eff["NOSE_MODEL_DIR"],
            translator_model_dir=eff["TRANSLATOR_MODEL_DIR"],
            enabled_models=enabled,
            model_loading=loading,
            model_warmup=_bool(eff, "MODEL_WARMUP"),
            tf_intra_op_threads=_int(eff, "TF_INTRA_OP_THREADS", 0),
            tf_inter_op_threads=_int(eff, "TF_INTER_OP_THREADS", 0),
            cv2_threads=_int(eff, "CV2_THREADS", 0),
            max_body_bytes=_int(eff, "MAX_BODY_BYTES", 1024),
            max_image_pixels=_int(eff, "MAX_IMAGE_PIXELS", 1),
            max_batch_texts=_int(eff, "MAX_BATCH_TEXTS", 1),
            max_total_chars=_int(eff, "MAX_TOTAL_CHARS", 1),
            translate_wait_timeout=float(_int(eff, "TRANSLATE_WAIT_TIMEOUT", 1)),
            max_beam=_int(eff, "MAX_BEAM", 1),
            default_beam=_int(eff, "DEFAULT_BEAM", 1),
            log_level=eff["LOG_LEVEL"].upper(),
            prometheus_multiproc_dir=eff["PROMETHEUS_MULTIPROC_DIR"],
            api_keys=parse_api_keys(eff["API_KEYS"], eff["API_KEYS_FILE"]),
            protect_pages=_bool(eff, "PROTECT_PAGES"),
            translate_batch_max=_int(eff, "TRANSLATE_BATCH_MAX", 0),
            translate_batch_wait_ms=_int(eff, "TRANSLATE_BATCH_WAIT_MS", 0),
            translate_cache_size=_int(eff, "TRANSLATE_CACHE_SIZE", 0),
            image_reduced_decode=_bool(eff, "IMAGE_REDUCED_DECODE"),
        )
        if overrides:
            cfg = cls(**{**cfg.__dict__, **overrides})
        if cfg.default_beam > cfg.max_beam:
            raise ValueError("DEFAULT_BEAM must not exceed MAX_BEAM")
        return cfg


def settings_markdown() -> str:
    """The configuration table of README.md (kept in sync by a test)."""
    rows = ["| Variable | Default | Used by | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default if s.name != "APP_ROOT" else "(repository root)"
        default = f"`{default}`" if default else "(empty)"
        rows.append(f"| `{s.name}` | {default} | {s.group} | {s.help} |")
    return "\n".join(rows) + "\n"
