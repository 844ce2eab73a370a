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
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

#: Repository / install root (the directory that holds ``app/``).
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    """One environment variable. ``kind``: str, int, float or bool (checked by
    :func:`parse_setting`, with ``minimum`` for numbers and ``choices`` for strings).
    Servables declare theirs with the same class (``Servable.settings``)."""
    name: str
    default: str
    help: str
    group: str = "app"  # "app", "uwsgi", "nginx", "all" or a model's name
    kind: str = "str"
    minimum: float | None = None
    choices: tuple = ()


def _s(group: str, name: str, default: str, help: str, kind: str = "str", minimum=None, choices=()) -> Setting:
    return Setting(name=name, default=default, help=help, group=group, kind=kind, minimum=minimum,
                   choices=choices)


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
    _s("app", "MODEL_REPOSITORY", "models",
       "The model repository: <name>/model.json (which servable) and <name>/<version>/ (its files). "
       "Each model serves its highest version unless <NAME>_VERSION pins one (e.g. NOSE_TRACKER_VERSION=1.4.0)."),
    _s("app", "ENABLED_MODELS", "face_detector,nose_tracker,translator",
       "Models of the repository this deployment serves (comma-separated, loaded in this order); /readyz "
       "waits for these only. Without face_detector the nose tracker answers from the whole image only."),
    _s("app", "MODEL_LOADING", "sync",
       "When a worker loads its models: sync (before serving), background (serve at once, /readyz 503 "
       "until loaded) or off (no models; every model endpoint answers 503)."),
    _s("app", "MODEL_WARMUP", "1", "Run warm-up inferences after loading (1/0)."),
    _s("app", "TF_INTRA_OP_THREADS", "1", "TensorFlow intra-op threads per worker."),
    _s("app", "TF_INTER_OP_THREADS", "1", "TensorFlow inter-op threads per worker."),
    _s("app", "CV2_THREADS", "1", "OpenCV threads per worker (cv2.setNumThreads)."),
    _s("app", "NUMPY_THREADS", "1", "BLAS/OpenMP threads per worker for NumPy models (threadpoolctl)."),
    _s("app", "MAX_BODY_BYTES", "10485760",
       "Largest request body (Flask MAX_CONTENT_LENGTH and nginx client_max_body_size)."),
    _s("app", "MAX_IMAGE_PIXELS", "40000000", "Largest image (width*height), checked from the header before decoding."),
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
    # --- accounts (app/accounts) --------------------------------------------
    _s("accounts", "ACCOUNTS", "0",
       "1: users, database API keys and JWT access tokens (POST /auth/token): every non-public JSON "
       "endpoint then needs a key or token (API_KEYS keep working). Manage with python -m app users|keys.",
       "bool"),
    _s("accounts", "ACCOUNTS_REGISTRATION", "0",
       "1: anyone may create a user at /register (no admin rights, no API key); 0: only the CLI creates users.",
       "bool"),
    _s("accounts", "SESSION_HOURS", "12", "Lifetime of a signed-in browser session (/login), in hours.",
       "int", minimum=1),
    _s("accounts", "SESSION_COOKIE_SECURE", "auto",
       "The session cookie's Secure flag: auto (set when the request came over TLS), 1 (always), 0 (never).",
       choices=("auto", "1", "0")),
    _s("accounts", "HISTORY", "meta",
       "The inference history (ACCOUNTS=1): off; meta (who, when, endpoint, model, version, request id, latency, "
       "status, input sizes and sha256, the JSON answer); full (also the text, and the uploaded image in HISTORY_DIR).",
       choices=("off", "meta", "full")),
    _s("accounts", "HISTORY_DIR", "", "Where HISTORY=full keeps uploaded images; empty: RUN_DIR/history."),
    _s("accounts", "HISTORY_QUEUE", "10000",
       "Records a worker holds while the database is slow or down; past that they are dropped and counted "
       "(history_records_dropped_total).", "int", minimum=1),
    _s("accounts", "HISTORY_DAYS", "30", "Retention: python -m app history purge deletes records older than this.",
       "int", minimum=1),
    _s("accounts", "DATABASE_URL", "",
       "The accounts database (SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db); empty: "
       "a SQLite file RUN_DIR/modelserver.db. Migrated on first use."),
    _s("accounts", "JWT_SECRET", "",
       "HS256 secret of the access tokens (>= 32 characters); empty: JWT_SECRET_FILE, else one generated "
       "into RUN_DIR/jwt-secret (set the same one on every instance)."),
    _s("accounts", "JWT_SECRET_FILE", "", "File holding JWT_SECRET (e.g. a mounted Secret)."),
    _s("accounts", "JWT_MINUTES", "20", "Lifetime of an access token, minutes.", "int", 1),
    _s("app", "PROMETHEUS_MULTIPROC_DIR", "{RUN_DIR}/prometheus",
       "prometheus_client multiprocess directory: exact metrics over all workers. start.sh and the "
       "container export it and empty it at start; when unset (dev server) metrics are per process."),
    _s("app", "CORS_ORIGINS", "",
       "Origins (scheme://host[:port], comma-separated, or *) whose browser pages may call the "
       "LibreTranslate API (/translate, /detect, /languages, /frontend/settings, /translate_file, "
       "/download_file): CORS headers and preflight answers for them. Empty: no CORS headers."),
    _s("app", "TRANSLATE_FILE_TTL", "600",
       "Seconds a file translated by POST /translate_file stays downloadable from its translatedFileUrl "
       "(stored under {RUN_DIR}/translated-files, so any worker serves it); deleted at its first download "
       "or after this time.", "int", 1),
    _s("app", "TRANSLATE_FILE_MAX_BYTES", "65536",
       "Largest file POST /translate_file takes (413 above; keep it below MAX_BODY_BYTES). A file is "
       "translated within one request (about 3.6 KB of English text a second on one core, greedy), so "
       "this keeps the largest one well within HARAKIRI.", "int", 1),
    _s("app", "DETECT_LANGUAGES", "en,es,fr,de,it,pt,nl,ca,ro,pl,sv,ru,uk,zh,ja,ko,ar,hi,tr",
       "Languages the offline detector (POST /detect, source=auto) chooses among, besides those of the "
       "served translation pairs (ISO 639-1, comma-separated; fewer is faster and surer on short texts)."),
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
    _s("nginx", "APP_UPSTREAM", "127.0.0.1:3031",
       "Where nginx finds uWSGI (host:port or unix:/path); several app instances: addresses separated by "
       "spaces, balanced with passive health checks (UPSTREAM_MAX_FAILS, UPSTREAM_FAIL_TIMEOUT)."),
    _s("nginx", "UPSTREAM_MAX_FAILS", "1",
       "Failed connections to one app instance within UPSTREAM_FAIL_TIMEOUT that take it out of the "
       "upstream for UPSTREAM_FAIL_TIMEOUT (only with several instances).", "int", 0),
    _s("nginx", "UPSTREAM_FAIL_TIMEOUT", "10", "Seconds (see UPSTREAM_MAX_FAILS).", "int", 1),
    _s("nginx", "APP_UPSTREAM_RESOLVER", "",
       "A DNS server (e.g. Docker's 127.0.0.11) that nginx asks for APP_UPSTREAM's name every few seconds, "
       "balancing over every address it returns: `docker compose up --scale app=N`. Empty: resolved at start."),
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
    "MODEL_REPOSITORY", "APP_REVISION_FILE", "PROMETHEUS_MULTIPROC_DIR", "API_KEYS_FILE", "JWT_SECRET_FILE",
    "RUN_DIR", "APP_PIDFILE", "TOUCH_RELOAD", "TOUCH_CHAIN_RELOAD",
    "NGINX_RUN_DIR", "NGINX_ACCESS_LOG", "NGINX_ERROR_LOG", "STATIC_ROOT",
}


def apply_library_defaults(environ=os.environ) -> None:
    """Give the environment variables that libraries read at import time (TensorFlow's
    TF_ENABLE_ONEDNN_OPTS) our defaults when unset. Called before the serving code first
    imports TensorFlow (app/runtime/preload.py, the thread pools of app/serving/threads.py, the translate CLI)."""
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


def parse_setting(s: Setting, env: Mapping[str, str]):
    """The typed value of setting ``s`` in ``env`` (its default when unset); ValueError if invalid."""
    raw = str(env.get(s.name, s.default)).strip()
    if s.kind == "bool":
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"environment variable {s.name}={raw!r} is not a boolean")
    if s.kind in ("int", "float"):
        try:
            value = int(raw) if s.kind == "int" else float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"environment variable {s.name}={raw!r} is not {'an integer' if s.kind == 'int' else 'a number'}") from None
        if s.kind == "float" and value != value:
            raise ValueError(f"environment variable {s.name}={raw!r} is not a number")
        if s.minimum is not None and value < s.minimum:
            raise ValueError(f"environment variable {s.name}={value} must be >= {s.minimum:g}")
        return value
    if s.choices and raw.lower() not in s.choices:
        raise ValueError(f"{s.name}={raw!r}: expected {', '.join(s.choices)}")
    return raw.lower() if s.choices else raw


def _int(env: Mapping[str, str], name: str, minimum: int | None = None) -> int:
    return parse_setting(Setting(name, SETTINGS_BY_NAME[name].default, "", kind="int", minimum=minimum), env)


def _bool(env: Mapping[str, str], name: str) -> bool:
    return parse_setting(Setting(name, SETTINGS_BY_NAME[name].default, "", kind="bool"), env)


_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def model_env_prefix(name: str) -> str:
    """nose_tracker -> NOSE_TRACKER (the prefix of a model's own variables, e.g. NOSE_TRACKER_VERSION)."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


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
    """The core settings (a servable's own are read by the servable: ``Servable.read_settings``).
    ``environ`` is the environment they were read from, so that the registry reads the
    servables' settings and version pins from the same source."""

    revision: str
    revision_file: str
    model_repository: str
    enabled_models: tuple
    model_loading: str
    model_warmup: bool
    tf_intra_op_threads: int
    tf_inter_op_threads: int
    cv2_threads: int
    numpy_threads: int
    max_body_bytes: int
    max_image_pixels: int
    log_level: str
    prometheus_multiproc_dir: str
    api_keys: tuple = ()
    protect_pages: bool = False
    accounts: bool = False
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Config":
        env = dict(os.environ if environ is None else environ)
        eff = effective_env(env)
        loading = parse_setting(Setting("MODEL_LOADING", "sync", "", choices=("sync", "background", "off")), eff)
        enabled = tuple(dict.fromkeys(m.strip() for m in eff["ENABLED_MODELS"].split(",") if m.strip()))
        bad = [m for m in enabled if not _MODEL_NAME.match(m)]
        if bad:
            raise ValueError(f"ENABLED_MODELS: invalid model name(s) {bad} (lower-case letters, digits, _ . -)")
        revision = eff["APP_REVISION"]
        rev_file = eff["APP_REVISION_FILE"]
        if rev_file and os.path.isfile(rev_file):
            with open(rev_file, encoding="utf-8") as fh:
                revision = (fh.readline().strip() or revision)[:200]
        cfg = cls(
            revision=revision,
            revision_file=rev_file,
            model_repository=eff["MODEL_REPOSITORY"],
            enabled_models=enabled,
            model_loading=loading,
            model_warmup=_bool(eff, "MODEL_WARMUP"),
            tf_intra_op_threads=_int(eff, "TF_INTRA_OP_THREADS", 0),
            tf_inter_op_threads=_int(eff, "TF_INTER_OP_THREADS", 0),
            cv2_threads=_int(eff, "CV2_THREADS", 0),
            numpy_threads=_int(eff, "NUMPY_THREADS", 0),
            max_body_bytes=_int(eff, "MAX_BODY_BYTES", 1024),
            max_image_pixels=_int(eff, "MAX_IMAGE_PIXELS", 1),
            log_level=eff["LOG_LEVEL"].upper(),
            prometheus_multiproc_dir=eff["PROMETHEUS_MULTIPROC_DIR"],
            api_keys=parse_api_keys(eff["API_KEYS"], eff["API_KEYS_FILE"]),
            protect_pages=_bool(eff, "PROTECT_PAGES"),
            accounts=_bool(eff, "ACCOUNTS"),
            environ={**env, **eff},
        )
        if overrides:
            cfg = cls(**{**cfg.__dict__, **overrides})
        return cfg


def settings_markdown() -> str:
    """The configuration table of README.md (kept in sync by a test): the core settings, then
    those of the built-in servables."""
    from .servables import BUILTIN
    rows = ["| Variable | Default | Used by | Meaning |", "|---|---|---|---|"]
    builtin = [s for cls in BUILTIN.values() for s in cls.settings]
    for s in (*SETTINGS, *builtin):
        default = s.default if s.name != "APP_ROOT" else "(repository root)"
        default = f"`{default}`" if default else "(empty)"
        rows.append(f"| `{s.name}` | {default} | {s.group} | {s.help} |")
    return "\n".join(rows) + "\n"
