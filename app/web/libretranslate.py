"""LibreTranslate's API over the model registry, for the programs that already speak it
(Mastodon's LIBRE_TRANSLATE_ENDPOINT, Pleroma/Akkoma, the Discourse translator, Weblate,
Open WebUI, n8n, libretranslatepy, browser extensions).

It is a protocol layer like ``/v2``: it knows no model. Every served model whose servable
declares ``translation_pairs`` (``Servable.translation_pairs``) is offered; a request for
(source, target) runs on the ready servable declaring that pair, its texts checked by the
servable's own ``translation_items`` and decoded through ``registry.run`` (the same lock or
dynamic batcher, cache and metrics as every other entry point).

* ``POST /translate`` (JSON, form or multipart): ``q`` a string or a list of strings (one
  ``registry.run`` for a list), ``source`` (a code or ``auto``), ``target``, ``format``
  (``text`` | ``html``), ``alternatives``, ``api_key`` -> ``{"translatedText": ...}`` (a list
  for a list), with ``detectedLanguage`` for ``source=auto``, ``alternatives`` when asked for:
  always empty lists (our beam search keeps only its best hypothesis; LibreTranslate answers
  the same for HTML);
* ``GET /languages``: every language of a served pair with its ``targets``;
* ``POST /detect``: ``[{"language", "confidence"}]`` (0-100) from the offline detector
  (``app/web/language_detection.py``);
* ``GET /frontend/settings``: LibreTranslate's frontend settings object;
* ``POST /translate_file`` (multipart ``file``, ``source``, ``target``): ``.txt``, ``.srt`` and
  ``.html`` files -> ``{"translatedFileUrl": ".../download_file/<token>.<name>"}``; the file
  is stored under ``RUN_DIR`` (so any worker can serve it), downloadable once, deleted after
  ``TRANSLATE_FILE_TTL`` seconds, at most ``TRANSLATE_FILE_MAX_BYTES`` big.

Errors are LibreTranslate's ``{"error": "..."}``: 400 for bad input (a missing ``q``, "xx is not
supported", a text over the limits, non-English text with ``source=auto``), 403 for a missing or
wrong key when API keys are configured (the key in the body's ``api_key``, or our
``Authorization: Bearer`` / ``X-API-Key`` headers), 404 for an unknown or used download, 413
for a file over the limit, 503 when the model is not ready or busy. CORS for these paths when
``CORS_ORIGINS`` is set.
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request, send_file, url_for

from ..config import SETTINGS_BY_NAME, effective_env, parse_setting
from ..serving.errors import ApiError, OverLimit
from . import language_detection, textformats
from .errors import register_error_shape
from .helpers import core_config, endpoint, registry
from .security import check_credentials, credentials_required, presented_keys

bp = Blueprint("libretranslate", __name__)

#: Path prefixes answered with LibreTranslate's error shape (and CORS headers when configured).
PREFIXES = ("/translate", "/translate_file", "/detect", "/languages", "/frontend", "/download_file")

#: File types of /translate_file and the media type each is downloaded as.
FILE_TYPES = {".txt": "text/plain", ".srt": "application/x-subrip", ".html": "text/html", ".htm": "text/html"}
SUPPORTED_FILES_FORMAT = [".txt", ".srt", ".html"]
FRONTEND_TIMEOUT_MS = 500  # LibreTranslate's default
#: A detection is believed (a text refused as "xx is not supported") from this probability on.
AUTO_REFUSE_CONFIDENCE = 0.5
_TOKEN = re.compile(r"^[0-9a-f]{32}\.[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")

LANGUAGE_NAMES = {
    "ar": "Arabic", "az": "Azerbaijani", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish",
    "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French", "ga": "Irish",
    "gl": "Galician", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "ms": "Malay", "nb": "Norwegian",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sk": "Slovak", "sl": "Slovenian", "sq": "Albanian", "sv": "Swedish", "th": "Thai", "tl": "Tagalog",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# --- settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LtSettings:
    cors_origins: tuple
    file_ttl: int
    file_max_bytes: int
    detect_languages: tuple
    files_dir: Path


def parse_cors_origins(raw: str) -> tuple:
    out = []
    for o in re.split(r"[,\s]+", raw.strip()):
        if not o:
            continue
        if o != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", o):
            raise ValueError(f"CORS_ORIGINS: {o!r} is not an origin (scheme://host[:port], no path) or *")
        out.append(o.rstrip("/"))
    return tuple(dict.fromkeys(out))


def read_settings(environ) -> LtSettings:
    env = dict(environ) if environ else effective_env()
    if "RUN_DIR" not in env:
        env = {**effective_env(env), **env}
    langs = [c.strip().lower() for c in parse_setting(SETTINGS_BY_NAME["DETECT_LANGUAGES"], env).split(",") if c.strip()]
    bad = [c for c in langs if not re.fullmatch(r"[a-z]{2,3}", c)]
    if bad:
        raise ValueError(f"DETECT_LANGUAGES: {bad} are not ISO 639 codes")
    return LtSettings(
        cors_origins=parse_cors_origins(parse_setting(SETTINGS_BY_NAME["CORS_ORIGINS"], env)),
        file_ttl=parse_setting(SETTINGS_BY_NAME["TRANSLATE_FILE_TTL"], env),
        file_max_bytes=parse_setting(SETTINGS_BY_NAME["TRANSLATE_FILE_MAX_BYTES"], env),
        detect_languages=tuple(dict.fromkeys(langs)),
        files_dir=Path(env["RUN_DIR"]) / "translated-files",
    )


def settings() -> LtSettings:
    return current_app.extensions["libretranslate"]


# --- errors -----------------------------------------------------------------------------------

def lt_error_body(status: int, code: str, message: str, **extra) -> dict:
    return {"error": message}


def bad(message: str, status: int = 400, code: str = "invalid_request") -> ApiError:
    return ApiError(status, code, message)


def shown(value, limit: int = 40) -> str:
    """A client's value, safe to echo in a message (short, valid UTF-8)."""
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, default=str)
    s = s.encode("utf-8", "replace").decode("utf-8")
    return s if len(s) <= limit else s[:limit] + "..."


def _lt_errors(fn):
    """The servable's limits (422 elsewhere) answer 400, as LibreTranslate answers them."""
    from functools import wraps

    @wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except OverLimit as exc:
            raise bad("Invalid request: " + exc.message, code=exc.code) from None
    return wrapper


# --- request fields ---------------------------------------------------------------------------

def _fields() -> tuple[dict, bool]:
    """The request's fields and whether they came as JSON (else form, multipart or query)."""
    if request.is_json:
        raw = request.get_data(cache=True)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad("Invalid JSON format") from None
        except RecursionError:
            raise bad("Invalid JSON format: nested too deeply") from None
        if not isinstance(body, dict):
            raise bad("Invalid JSON format")
        return body, True
    return {k: request.values.get(k) for k in request.values.keys()}, False


def _check_key(fields: dict) -> None:
    """The API key in the body (``api_key``) or in our headers, when keys are configured."""
    key = fields.get("api_key")
    if key is not None and not isinstance(key, str):
        if credentials_required():
            raise bad("Invalid API key", 403, "invalid_api_key")
        raise bad("Invalid request: api_key must be a string")
    if not credentials_required():
        return
    given = [key.strip()] if key and key.strip() else presented_keys()
    if not given:
        raise bad("Please contact the server operator to get an API key", 403, "missing_api_key")
    if check_credentials(given) is not None:  # environment keys, database keys and access tokens
        raise bad("Invalid API key", 403, "invalid_api_key")


def _string_field(fields: dict, name: str, required: bool = True) -> str | None:
    v = fields.get(name)
    if v is None or v == "":
        if required:
            raise bad(f"Invalid request: missing {name} parameter")
        return None
    if not isinstance(v, str):
        raise bad(f"Invalid request: {name} must be a string")
    return v


def _texts(fields: dict, is_json: bool) -> tuple[list[str], bool]:
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise bad("Invalid request: missing q parameter")
    batch = isinstance(q, list)
    texts = q if batch else [q]
    if not all(isinstance(t, str) for t in texts):
        raise bad("Invalid request: q must be a string or an array of strings")
    if not is_json:  # as LibreTranslate: form line endings normalised, so limits count alike
        texts = ["\n".join(t.splitlines()) for t in texts]
    for t in texts:
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("Invalid request: q is not valid Unicode (lone surrogate)") from None
    return texts, batch


# --- models and pairs ---------------------------------------------------------------------------

def served_pairs() -> dict[tuple[str, str], list[str]]:
    """(source, target) -> the served models declaring it (ready ones first)."""
    reg = registry()
    out: dict[tuple[str, str], list[str]] = {}
    for name in reg.cfg.enabled_models:
        h = reg.handles.get(name)
        if h is None or h.cls is None or h.status == "failed":
            continue
        for pair in getattr(h.cls, "translation_pairs", ()) or ():
            out.setdefault((str(pair[0]), str(pair[1])), []).append(name)
    for names in out.values():
        names.sort(key=lambda n: reg.handles[n].status != "ready")
    return out


def _languages(pairs) -> list[str]:
    return list(dict.fromkeys([s for s, _ in pairs] + [t for _, t in pairs]))


def _resolve(source: str, target: str) -> tuple[list[str], str]:
    """The candidate sources (one, or all for auto) and the model, for a request's pair."""
    pairs = served_pairs()
    langs = _languages(pairs)
    if source != "auto" and source not in langs:
        raise bad(f"{shown(source)} is not supported")
    if target not in langs:
        raise bad(f"{shown(target)} is not supported")
    sources = [s for s, t in pairs if t == target] if source == "auto" else [source]
    if not any((s, target) in pairs for s in sources):
        src = sources[0] if sources else source
        raise bad(f"{language_name(target)} ({target}) is not available as a target language from "
                  f"{language_name(src)} ({src})" if src != "auto" else
                  f"{language_name(target)} ({target}) is not available as a target language")
    return sources, target


def _detect_langs(extra=()) -> tuple:
    pairs = served_pairs()
    return tuple(dict.fromkeys([*settings().detect_languages, *_languages(pairs), *extra]))


def detect_source(text: str, sources: list[str]) -> dict:
    """The source language of ``text`` among ``sources`` (for ``source=auto``), or 400 when the
    detector is confident it is another language."""
    ranked = language_detection.rank(text, _detect_langs())
    if not ranked:
        return {"confidence": 0.0, "language": sources[0]}
    top, p = ranked[0]
    if top in sources:
        return {"confidence": round(p * 100, 1), "language": top}
    if p >= AUTO_REFUSE_CONFIDENCE:
        raise bad(f"{top} is not supported (the detected language of the text; this server translates from "
                  f"{', '.join(sources)})")
    best = next(((c, q) for c, q in ranked if c in sources), (sources[0], 0.0))
    return {"confidence": round(best[1] * 100, 1), "language": best[0]}


def _limits(model: str) -> dict:
    lim = registry().servable(model).translation_limits() or {}
    return {k: lim.get(k) for k in ("max_texts", "max_chars", "max_total_chars")}


def _check_request_limits(texts: list[str], lim: dict) -> None:
    """LibreTranslate's limits of a request (its batch limit and char limit), from the servable's."""
    if lim["max_texts"] is not None and len(texts) > lim["max_texts"]:
        raise bad(f"Invalid request: request ({len(texts)}) exceeds text limit ({lim['max_texts']})")
    if lim["max_chars"] is not None:
        for t in texts:
            if len(t) > lim["max_chars"]:
                raise bad(f"Invalid request: request ({len(t)}) exceeds text limit ({lim['max_chars']})")
    total = sum(len(t) for t in texts)
    if lim["max_total_chars"] is not None and total > lim["max_total_chars"]:
        raise bad(f"Invalid request: request ({total}) exceeds text limit ({lim['max_total_chars']})")


def translator(model: str, source: str, target: str, where=None):
    """``translate(texts) -> translations`` on ``model``: the servable's own validation
    (``translation_items``) and ``registry.run``, in as few calls as its limits allow."""
    reg = registry()
    sv = reg.servable(model)
    lim = _limits(model)
    params = {"source": source, "target": target}

    def run(texts: list[str]) -> list[str]:
        items = sv.translation_items(texts, params, where)
        return [r if isinstance(r, str) else str(r) for r in reg.run(model, items=items, outputs=False).results]

    def translate(texts: list[str]) -> list[str]:
        out, chunk, chars = [], [], 0
        for t in texts:
            if chunk and ((lim["max_texts"] and len(chunk) >= lim["max_texts"]) or
                          (lim["max_total_chars"] and chars + len(t) > lim["max_total_chars"])):
                out += run(chunk)
                chunk, chars = [], 0
            chunk.append(t)
            chars += len(t)
        if chunk:
            out += run(chunk)
        return out
    return translate


# --- routes -----------------------------------------------------------------------------------

@bp.post("/translate")
@endpoint("lt_translate", "LibreTranslate API (POST /translate)", public=True)
@_lt_errors
def translate():
    fields, is_json = _fields()
    _check_key(fields)
    texts, batch = _texts(fields, is_json)
    source = _string_field(fields, "source")
    target = _string_field(fields, "target")
    alternatives = fields.get("alternatives", 0)
    if is_json:
        if isinstance(alternatives, bool) or not isinstance(alternatives, int):
            raise bad("Invalid request: alternatives parameter is not a number")
    else:
        try:
            alternatives = int(alternatives or 0)
        except (TypeError, ValueError):
            raise bad("Invalid request: alternatives parameter is not a number") from None
    alternatives = max(0, alternatives)
    fmt = fields.get("format")
    if fmt is None:
        fmt = "text"
    if fmt not in ("text", "html"):
        raise bad(f"{shown(fmt)} format is not supported")

    sources, target = _resolve(source, target)
    pairs = served_pairs()
    model_of = {s: pairs[(s, target)][0] for s in sources if (s, target) in pairs}
    lim = _limits(next(iter(model_of.values())))
    _check_request_limits(texts, lim)

    jobs = None
    if fmt == "html":
        try:
            jobs = [textformats.HtmlJob(t) for t in texts]
        except textformats.HtmlError as exc:
            raise bad(f"Invalid request: {exc}") from None
    detected = None
    if source == "auto":
        sample = "\n".join(j.visible_text() for j in jobs) if jobs else "\n".join(texts)
        detected = detect_source(sample, list(model_of))
        src = detected["language"]
    else:
        src = source
    model = model_of[src]
    where = (lambda i: "q" if not batch else f"q[{i}]") if fmt == "text" else (lambda i: "a text of q")
    tr = translator(model, src, target, where)
    out = tr(texts) if jobs is None else textformats.translate_jobs(jobs, tr)

    body: dict = {"translatedText": out if batch else out[0]}
    if detected is not None:
        body["detectedLanguage"] = [detected] * len(texts) if batch else detected
    if alternatives > 0:
        body["alternatives"] = [[] for _ in texts] if batch else []
    return jsonify(body)


@bp.get("/languages")
@endpoint("lt_languages", public=True)
def languages():
    pairs = served_pairs()
    return jsonify([{"code": c, "name": language_name(c), "targets": sorted({t for s, t in pairs if s == c})}
                    for c in _languages(pairs)])


@bp.post("/detect")
@endpoint("lt_detect", "LibreTranslate detection (POST /detect)", public=True)
def detect():
    fields, is_json = _fields()
    _check_key(fields)
    texts, _ = _texts(fields, is_json)
    text = "\n".join(texts)
    ranked = language_detection.rank(text, _detect_langs())
    if not ranked:  # as LibreTranslate: no clue -> the first language, confidence 0
        langs = _languages(served_pairs())
        return jsonify([{"confidence": 0.0, "language": langs[0] if langs else "en"}])
    out = [{"confidence": round(p * 100, 1), "language": c} for c, p in ranked[:3] if round(p * 100, 1) > 0]
    return jsonify(out or [{"confidence": round(ranked[0][1] * 100, 1), "language": ranked[0][0]}])


@bp.get("/frontend/settings")
@endpoint("lt_settings", public=True)
def frontend_settings():
    pairs = served_pairs()
    keys = credentials_required()
    target = next((t for _, t in pairs), "")
    lim = _limits(next(iter(pairs.values()))[0]) if pairs else {"max_chars": None}
    return jsonify({
        "charLimit": lim["max_chars"] if lim["max_chars"] is not None else -1,
        "frontendTimeout": FRONTEND_TIMEOUT_MS,
        "apiKeys": keys,
        "keyRequired": keys,
        "suggestions": False,
        "filesTranslation": True,
        "supportedFilesFormat": SUPPORTED_FILES_FORMAT,
        "language": {"source": {"code": "auto", "name": "Auto Detect"},
                     "target": {"code": target, "name": language_name(target) if target else ""}},
    })


# --- files ------------------------------------------------------------------------------------

_sweep_lock = threading.Lock()
_last_sweep = [0.0]


def _files_dir() -> Path:
    d = settings().files_dir
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def sweep(now: float | None = None) -> int:
    """Delete the translated files older than TRANSLATE_FILE_TTL (any worker's). Returns how many."""
    now = time.time() if now is None else now
    ttl, d, n = settings().file_ttl, settings().files_dir, 0
    if not d.is_dir():
        return 0
    for p in d.iterdir():
        try:
            if now - p.stat().st_mtime > ttl:
                p.unlink()
                n += 1
        except OSError:  # another worker took or deleted it
            pass
    return n


def _maybe_sweep() -> None:
    now = time.time()
    if now - _last_sweep[0] < 1.0 or not _sweep_lock.acquire(blocking=False):
        return
    try:
        _last_sweep[0] = now
        sweep(now)
    finally:
        _sweep_lock.release()


def _safe_name(filename: str, ext: str) -> str:
    from werkzeug.utils import secure_filename
    name = secure_filename(filename or "")[:100]
    if not name or not name.lower().endswith(ext) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        name = "file" + ext
    return name


@bp.post("/translate_file")
@endpoint("lt_translate_file", "LibreTranslate files (POST /translate_file)", public=True)
@_lt_errors
def translate_file():
    fields, is_json = _fields()
    _check_key(fields)
    f = request.files.get("file")
    if f is None:
        raise bad("Invalid request: missing file parameter")
    source = _string_field(fields, "source")
    target = _string_field(fields, "target")
    if not f.filename:
        raise bad("Invalid request: empty file")
    ext = os.path.splitext(f.filename)[1].lower()
    if ext not in FILE_TYPES:
        raise bad("Invalid request: file format not supported")
    sources, target = _resolve(source, target)
    limit = settings().file_max_bytes
    data = f.stream.read(limit + 1)
    if len(data) > limit:
        raise bad(f"Invalid request: the file is over the limit of {limit} bytes", 413, "payload_too_large")
    bom = data.startswith(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad("Invalid request: the file is not UTF-8 text") from None
    try:
        job = (textformats.SrtJob(text) if ext == ".srt" else
               textformats.TextJob(text) if ext == ".txt" else textformats.HtmlJob(text))
    except textformats.HtmlError as exc:
        raise bad(f"Invalid request: {exc}") from None
    pairs = served_pairs()
    model_of = {s: pairs[(s, target)][0] for s in sources if (s, target) in pairs}
    src = detect_source(job.visible_text(), list(model_of))["language"] if source == "auto" else source
    where = lambda i: "a line of the file"  # noqa: E731
    (out,) = textformats.translate_jobs([job], translator(model_of[src], src, target, where))

    _maybe_sweep()
    name = f"{secrets.token_hex(16)}.{_safe_name(f.filename, ext)}"
    d = _files_dir()
    tmp = d / f".{name}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write((b"\xef\xbb\xbf" if bom else b"") + out.encode("utf-8"))
    os.replace(tmp, d / name)  # complete before any worker can see it
    return jsonify({"translatedFileUrl": external_url(url_for("libretranslate.download_file", filename=name))})


def external_url(path: str) -> str:
    """``path`` as an absolute URL of this server. nginx passes the Host header without its port
    (Debian's uwsgi_params: ``HTTP_HOST $host``), so the port nginx listens on is added back
    when it is not the scheme's default."""
    host = request.host
    port = request.environ.get("SERVER_PORT", "")
    if ":" not in host.rsplit("]", 1)[-1] and port.isdigit() and \
            (request.scheme, port) not in (("http", "80"), ("https", "443")):
        host = f"{host}:{port}"
    return f"{request.scheme}://{host}{path}"


@bp.get("/download_file/<filename>")
@endpoint("lt_download", public=True)
def download_file(filename: str):
    """A translated file, once: the first download takes it (an atomic rename, so two workers
    never both serve it); an expired one is deleted and answers 404."""
    gone = bad("Invalid request: no such file (it was downloaded already or has expired)", 404, "not_found")
    _maybe_sweep()
    if not _TOKEN.fullmatch(filename):
        raise gone
    d = settings().files_dir
    path = d / filename
    taken = d / f".{filename}.{os.getpid()}.{threading.get_ident()}.taken"
    try:
        os.rename(path, taken)
    except OSError:
        raise gone from None
    try:
        expired = time.time() - taken.stat().st_mtime > settings().file_ttl
        data = b"" if expired else taken.read_bytes()
    finally:
        try:
            taken.unlink()
        except OSError:
            pass
    if expired:
        raise gone
    ext = os.path.splitext(filename)[1].lower()
    mimetype = FILE_TYPES.get(ext, "application/octet-stream")
    if mimetype.startswith("text/") or ext == ".srt":
        mimetype += "; charset=utf-8"
    resp = send_file(io.BytesIO(data), mimetype=mimetype, as_attachment=True,
                     download_name=filename.split(".", 1)[1], max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --- CORS -------------------------------------------------------------------------------------

def _ours(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


def _cors(resp):
    origins = current_app.extensions["libretranslate"].cors_origins
    if not origins or not _ours(request.path):
        return resp
    if "*" not in origins:
        resp.vary.add("Origin")
    origin = request.headers.get("Origin")
    if not origin:
        return resp
    if "*" in origins:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    elif origin.rstrip("/") in origins:
        resp.headers["Access-Control-Allow-Origin"] = origin
    else:
        return resp
    resp.headers["Access-Control-Expose-Headers"] = "X-Request-ID"
    if request.method == "OPTIONS":
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-API-Key, X-Request-ID"
        resp.headers["Access-Control-Max-Age"] = "600"
    return resp


# --- OpenAPI ----------------------------------------------------------------------------------

def openapi_paths() -> dict:
    """The path items of these routes for /openapi.json (merged by ``app.web.docs.build_spec``)."""
    from .docs import V2_ERROR, operation

    pairs = served_pairs()
    sources = sorted({s for s, _ in pairs})
    targets = sorted({t for _, t in pairs})
    lim = _limits(next(iter(pairs.values()))[0]) if pairs else {"max_texts": None, "max_chars": None,
                                                                 "max_total_chars": None}
    keyed = credentials_required()
    tags = ("libretranslate",)
    text = {"type": "string", "minLength": 1}
    item = {"type": "string"}
    if lim["max_chars"]:
        text["maxLength"] = item["maxLength"] = lim["max_chars"]
    batch = {"type": "array", "items": item, "minItems": 1}
    if lim["max_texts"]:
        batch["maxItems"] = lim["max_texts"]
    api_key = {"type": "string", "nullable": True,
               "description": "An API key of this server (or send it as Authorization: Bearer / X-API-Key)."
                              + ("" if keyed else " No key is needed here.")}
    detection = {"type": "object", "required": ["language", "confidence"],
                 "properties": {"language": {"type": "string"},
                                "confidence": {"type": "number", "minimum": 0, "maximum": 100}}}
    total = f" At most {lim['max_total_chars']} characters in all." if lim["max_total_chars"] else ""
    translate_body = {"required": True, "description": "Also accepted as application/x-www-form-urlencoded "
                      "or multipart/form-data (q then a string).", "content": {"application/json": {"schema": {
                          "type": "object", "required": ["q", "source", "target"],
                          "properties": {
                              "q": {"oneOf": [text, batch], "description": "Text(s) to translate." + total},
                              "source": {"type": "string", "enum": sources + ["auto"] if sources else ["auto"]},
                              "target": {"type": "string", "enum": targets or [""]},
                              "format": {"type": "string", "enum": ["text", "html", None], "default": "text",
                                         "nullable": True},
                              "alternatives": {"type": "integer", "default": 0,
                                               "description": "Alternative translations wanted: always answered "
                                                              "with an empty list (the model keeps one hypothesis)."},
                              "api_key": api_key},
                          "example": {"q": "The house is green.", "source": "en", "target": targets[0]
                                      if targets else "es", "format": "text"}}}}}
    translated = {"type": "object", "required": ["translatedText"], "properties": {
        "translatedText": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "detectedLanguage": {"oneOf": [detection, {"type": "array", "items": detection}]},
        "alternatives": {"type": "array", "items": {"oneOf": [{"type": "string"},
                                                               {"type": "array", "items": {"type": "string"}}]}}}}
    detect_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["q"],
        "properties": {"q": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1,
                                                                            "items": {"type": "string"}}]},
                       "api_key": api_key}}}}}
    file_body = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "source", "target"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "A UTF-8 " + ", ".join(SUPPORTED_FILES_FORMAT) + " file."},
                       "source": {"type": "string", "enum": sources + ["auto"] if sources else ["auto"]},
                       "target": {"type": "string", "enum": targets or [""]},
                       "api_key": api_key}}}}}
    kw = dict(secured=False, tags=tags, error_schema=V2_ERROR)

    def with_403(op: dict) -> dict:
        if keyed:
            op["responses"]["403"] = {"description": "Missing or invalid API key.",
                                      "content": {"application/json": {"schema": V2_ERROR}}}
        return op

    download = operation("Download a translated file (once)", "ltDownloadFile", {"type": "string"}, (404,),
                         parameters=[{"name": "filename", "in": "path", "required": True,
                                      "schema": {"type": "string"}}], **kw)
    download["responses"]["200"]["content"] = {t: {"schema": {"type": "string"}} for t in
                                               ("text/plain", "application/x-subrip", "text/html")}
    return {
        "/translate": {"post": with_403(operation("Translate text or HTML (LibreTranslate)", "ltTranslate",
                                                  translated, (400, 503), translate_body, **kw))},
        "/languages": {"get": operation("Languages and their targets (LibreTranslate)", "ltLanguages",
                                        {"type": "array", "items": {
                                            "type": "object", "required": ["code", "name", "targets"],
                                            "properties": {"code": {"type": "string"}, "name": {"type": "string"},
                                                           "targets": {"type": "array",
                                                                       "items": {"type": "string"}}}}}, **kw)},
        "/detect": {"post": with_403(operation("Detect the language of a text (LibreTranslate)", "ltDetect",
                                               {"type": "array", "items": detection}, (400,), detect_body, **kw))},
        "/frontend/settings": {"get": operation("Frontend settings (LibreTranslate)", "ltFrontendSettings",
                                                {"type": "object", "required": ["charLimit", "language"],
                                                 "additionalProperties": True}, **kw)},
        "/translate_file": {"post": with_403(operation(
            "Translate a .txt, .srt or .html file (LibreTranslate)", "ltTranslateFile",
            {"type": "object", "required": ["translatedFileUrl"],
             "properties": {"translatedFileUrl": {"type": "string"}}}, (400, 503), file_body, **kw))},
        "/download_file/{filename}": {"get": download},
    }


# --- wiring -----------------------------------------------------------------------------------

def init_app(app, registry_=None) -> None:
    """Register the routes, their error shape and CORS; the dashboard counts their requests for
    the model serving the first translation pair."""
    app.extensions["libretranslate"] = read_settings(app.extensions["config"].environ)
    for prefix in PREFIXES:
        register_error_shape(prefix, lt_error_body)
    app.register_blueprint(bp)
    app.after_request(_cors)
    if registry_ is not None:
        model = next((n for n in registry_.cfg.enabled_models if registry_.handles.get(n) is not None
                      and registry_.handles[n].cls is not None
                      and getattr(registry_.handles[n].cls, "translation_pairs", ())), None)
        for fn in (translate, detect, translate_file):
            fn.model = model if fn is not detect else None
