"""Property-based tests (hypothesis) of every decoding and validation function.

Each property states what must hold for *any* input: a clean result or our own 4xx
ApiError / ValueError, never another exception. The API-body validation runs the real
Flask app (no models loaded, MODEL_LOADING=off: a request that passes validation
reaches the model check and gets 503 not_ready, so 503 means "accepted as valid").
"""
from __future__ import annotations

import base64
import io
import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.config import SETTINGS_BY_NAME, Config, _bool, _int, parse_api_keys
from app.serving.errors import ApiError
from app.serving.imaging import decode_base64_image, decode_image, decode_image_scaled, image_size, reduced_flag
from app.web.security import key_matches, needs_key
from app.servables import BUILTIN, TranslatorServable
from app.servables.translator.model import MAX_CHARS, is_shouting, sentence_case, split_sentences

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- base64 -----------------------------------------------------------------------------

def _insert_ws(s: str, positions: list[int], ws: str) -> str:
    for p in sorted(positions, reverse=True):
        p = p % (len(s) + 1)
        s = s[:p] + ws + s[p:]
    return s


@FAST
@given(data=st.binary(min_size=1, max_size=2048), urlsafe=st.booleans(), strip_pad=st.booleans(),
       ws=st.sampled_from([" ", "\n", "\r\n", "\t"]), positions=st.lists(st.integers(0, 4000), max_size=8),
       prefix=st.sampled_from(["", "data:image/png;base64,", "DATA:image/jpeg;base64,", "data:;base64,",
                               "data:image/webp;charset=x;base64,"]))
def test_base64_round_trip(data, urlsafe, strip_pad, ws, positions, prefix):
    enc = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if strip_pad:
        enc = enc.rstrip("=")
    assert decode_base64_image(prefix + _insert_ws(enc, positions, ws)) == data


@FAST
@given(value=st.one_of(st.text(max_size=300), st.text(alphabet=string.ascii_letters + string.digits + "+/-_=",
                                                      max_size=300)))
@example(value="=")
@example(value="A")
@example(value="ab=c")
@example(value="+-")
def test_base64_any_string_decodes_or_400(value):
    try:
        out = decode_base64_image(value)
    except ApiError as exc:
        assert exc.status == 400 and exc.code in ("invalid_base64", "not_an_image")
        return
    assert isinstance(out, bytes)
    # what was accepted is exactly base64 of the result, in one of the two alphabets
    core = "".join(value.split()).split(",", 1)[-1] if value.lower().startswith("data:") else "".join(value.split())
    core = core.rstrip("=")
    assert len(out) == len(core) * 3 // 4
    # re-encoding gives the same text, but for unused low bits of a last partial group
    encs = (base64.b64encode(out).decode().rstrip("="), base64.urlsafe_b64encode(out).decode().rstrip("="))
    cut = len(core) - (1 if len(core) % 4 else 0)
    assert core[:cut] in (encs[0][:cut], encs[1][:cut])


@FAST
@given(value=st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
                       st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                    st.text(max_size=3), max_size=2)))
def test_base64_non_string_is_invalid_field(value):
    with pytest.raises(ApiError) as ei:
        decode_base64_image(value)
    assert (ei.value.status, ei.value.code) == (400, "invalid_field")


@FAST
@given(mime=st.from_regex(r"[a-z]{1,8}/[a-z0-9.+-]{1,10}", fullmatch=True))
def test_data_url_media_type_must_be_image(mime):
    value = f"data:{mime};base64," + base64.b64encode(b"x" * 12).decode()
    if mime.startswith("image/"):
        assert decode_base64_image(value) == b"x" * 12
    else:
        with pytest.raises(ApiError) as ei:
            decode_base64_image(value)
        assert ei.value.code == "not_an_image"


# --- images -----------------------------------------------------------------------------

MAX_PIXELS = 40_000_000


@SLOW
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    try:
        img = decode_image(data, MAX_PIXELS)
    except ApiError as exc:
        assert exc.status in (400, 413)
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


_SIGNATURES = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP",
               b"II*\x00", b"MM\x00*", b"P6\n"]


@SLOW
@given(sig=st.sampled_from(_SIGNATURES), tail=st.binary(max_size=2048))
def test_image_signatures_with_garbage_never_crash(sig, tail):
    try:
        img = decode_image(sig + tail, MAX_PIXELS)
    except ApiError as exc:
        assert exc.status in (400, 413)
        return
    assert img.ndim == 3 and img.shape[2] == 3


@st.composite
def real_images(draw):
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK", "LA", "I;16", "1"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF"]))
    ok = {"JPEG": {"RGB", "L", "CMYK"}, "PNG": {"RGB", "L", "RGBA", "P", "LA", "I;16", "1"},
          "BMP": {"RGB", "L", "P", "1"}, "WEBP": {"RGB", "RGBA"}, "TIFF": {"RGB", "L", "RGBA", "CMYK", "1"},
          "GIF": {"L", "P", "1"}}[fmt]
    assume(mode in ok)
    seed = draw(st.integers(0, 2 ** 16))
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA").convert("RGB")
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue(), fmt, w, h


@SLOW
@given(item=real_images())
def test_valid_images_decode_to_their_size(item):
    data, fmt, w, h = item
    assert image_size(data)[1:] == (w, h)
    img = decode_image(data, MAX_PIXELS)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    # the pixel limit is exact: one pixel less than the image is refused with 413
    if w * h > 1:
        with pytest.raises(ApiError) as ei:
            decode_image(data, w * h - 1)
        assert ei.value.status == 413


@SLOW
@given(item=real_images(), cut=st.floats(0.0, 0.95))
def test_truncated_images_are_400_or_decode(item, cut):
    data, fmt, w, h = item
    part = data[:int(len(data) * cut)]
    try:
        img = decode_image(part, MAX_PIXELS)
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "not_an_image"
        return
    assert img.shape == (h, w, 3)  # some formats (BMP, TIFF strips) tolerate a short file


@FAST
@given(fmt=st.sampled_from(["JPEG", "PNG", "GIF"]), w=st.integers(1, 100000), h=st.integers(1, 100000),
       min_side=st.integers(1, 1000))
def test_reduced_flag_keeps_both_sides_large_enough(fmt, w, h, min_side):
    factor, _ = reduced_flag(fmt, w, h, min_side)
    assert factor in (1, 2, 4, 8)
    if fmt != "JPEG":
        assert factor == 1
    if factor > 1:
        assert min(w, h) // factor >= min_side
        assert factor == 8 or min(w, h) // (factor * 2) < min_side  # the largest factor that fits


@SLOW
@given(w=st.integers(200, 1200), h=st.integers(200, 1200), orientation=st.sampled_from([1, 3, 6, 8]))
def test_reduced_decode_reports_full_displayed_size(w, h, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 150)).save(buf, "JPEG", exif=exif.tobytes())
    img, dw, dh = decode_image_scaled(buf.getvalue(), MAX_PIXELS, min_side=112)
    assert (dw, dh) == ((h, w) if orientation in (6, 8) else (w, h))
    ih, iw = img.shape[:2]
    assert (iw >= ih) == (dw >= dh) or abs(iw - ih) <= 1


# --- API bodies (the real app, no models) ----------------------------------------------------

@pytest.fixture(scope="module")
def client():
    from app import create_app
    cfg = Config.from_env({"MODEL_LOADING": "off", "PROMETHEUS_MULTIPROC_DIR": ""})
    return create_app(cfg).test_client(), cfg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10 ** 6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)

translate_like = st.fixed_dictionaries({}, optional={
    "text": st.one_of(st.text(max_size=40), st.integers(), st.none(), st.just("x" * (MAX_CHARS + 1))),
    "texts": st.one_of(st.lists(st.text(max_size=20), max_size=40), st.text(max_size=5),
                       st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3)),
    "beam": st.one_of(st.integers(-2, 8), st.booleans(), st.floats(allow_nan=False), st.text(max_size=2)),
    "extra": st.integers(),
})


def _valid_translate(p, cfg) -> bool:
    """An independent statement of what /api/translate accepts."""
    if not isinstance(p, dict) or set(p) - {"text", "texts", "beam"} or ("text" in p) == ("texts" in p):
        return False
    texts = [p["text"]] if "text" in p else p["texts"]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return False
    ts = TranslatorServable.read_settings(cfg.environ)
    beam = p.get("beam", ts["DEFAULT_BEAM"])
    if type(beam) is not int or not 1 <= beam <= ts["MAX_BEAM"]:
        return False
    return (len(texts) <= ts["MAX_BATCH_TEXTS"] and all(len(t) <= MAX_CHARS for t in texts)
            and sum(map(len, texts)) <= ts["MAX_TOTAL_CHARS"])


def _assert_error_shape(r):
    body = r.get_json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    assert body["error"]["request_id"] == r.headers["X-Request-ID"]


@FAST
@given(payload=st.one_of(translate_like, json_values))
def test_translate_validation(client, payload):
    c, cfg = client
    r = c.post("/api/translate", data=json.dumps(payload), content_type="application/json")
    assert r.status_code in (400, 422, 503), r.status_code
    _assert_error_shape(r)
    assert (r.status_code == 503) == _valid_translate(payload, cfg), (payload, r.get_json())


@FAST
@given(payload=st.one_of(json_values, st.fixed_dictionaries({"image": st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "+/=\n", max_size=64), json_values)})))
def test_image_64_validation(client, payload):
    c, _ = client
    r = c.post("/image-64", data=json.dumps(payload), content_type="application/json")
    assert r.status_code in (400, 503), r.status_code
    _assert_error_shape(r)
    valid = False
    if isinstance(payload, dict) and isinstance(payload.get("image"), str):
        try:
            decode_base64_image(payload["image"])
            valid = True
        except ApiError:
            pass
    assert (r.status_code == 503) == valid  # no model here: a valid body reaches the model check


@FAST
@given(body=st.binary(max_size=300), ctype=st.sampled_from(["application/json", "text/plain", "",
                                                            "application/json; charset=utf-8",
                                                            "multipart/form-data", "application/x-www-form-urlencoded"]),
       path=st.sampled_from(["/api/translate", "/image-64", "/image-bin"]))
def test_any_body_gets_a_4xx_or_503_json(client, body, ctype, path):
    c, _ = client
    r = c.post(path, data=body, headers={"Content-Type": ctype} if ctype else {})
    assert r.status_code in (400, 413, 415, 422, 503), (r.status_code, r.data[:200])
    _assert_error_shape(r)


# --- translator input handling ---------------------------------------------------------------

@FAST
@given(text=st.text(max_size=400))
def test_split_sentences_keeps_every_visible_character(text):
    parts = split_sentences(text)
    assert all(p and p == p.strip() for p in parts)
    assert "".join("".join(p.split()) for p in parts) == "".join("".join(line.split()) for line in text.splitlines())


@FAST
@given(s=st.text(alphabet=string.printable, max_size=100))
def test_sentence_case_and_shouting(s):
    out = sentence_case(s)
    assert sentence_case(out) == out  # idempotent
    assert out.lower() == s.lower()  # only the case changes
    assert not any(c.isupper() for c in out[1:].replace("I", ""))  # capital first letter and "I" only
    if sum(c.isalpha() for c in out) >= 3 and sum(c.isupper() for c in out) <= 1:
        assert not is_shouting(out)


# --- configuration ---------------------------------------------------------------------------

@FAST
@given(raw=st.text(max_size=12))
def test_int_settings_parse_or_refuse(raw):
    try:
        v = _int({"WORKERS": raw}, "WORKERS", 1)
    except ValueError:
        try:
            assert int(raw) < 1
        except ValueError:
            pass
        return
    assert v == int(raw) and v >= 1


@FAST
@given(raw=st.text(max_size=8))
def test_bool_settings_parse_or_refuse(raw):
    norm = raw.strip().lower()
    try:
        v = _bool({"MODEL_WARMUP": raw}, "MODEL_WARMUP")
    except ValueError:
        assert norm not in ("1", "true", "yes", "on", "0", "false", "no", "off", "")
        return
    assert v == (norm in ("1", "true", "yes", "on"))


@FAST
@given(env=st.dictionaries(st.sampled_from(sorted(SETTINGS_BY_NAME)), st.text(max_size=10), max_size=6))
def test_config_from_any_env_is_a_config_or_value_error(env):
    env = {k: v for k, v in env.items() if k not in ("APP_ROOT", "API_KEYS_FILE", "APP_REVISION_FILE")}
    try:
        cfg = Config.from_env(env)
    except ValueError:
        return
    assert cfg.max_body_bytes >= 1024


SERVABLE_SETTINGS = sorted({s.name for cls in BUILTIN.values() for s in cls.settings})


@FAST
@given(env=st.dictionaries(st.sampled_from(SERVABLE_SETTINGS), st.text(max_size=10), max_size=6))
def test_servable_settings_from_any_env_are_valid_or_value_error(env):
    for cls in BUILTIN.values():
        try:
            values = cls.read_settings(env)
        except ValueError:
            continue
        for s in cls.settings:
            if s.kind in ("int", "float") and s.minimum is not None:
                assert values[s.name] >= s.minimum
        if cls is TranslatorServable:
            assert values["DEFAULT_BEAM"] <= values["MAX_BEAM"]


key_alphabet = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=",#")


@FAST
@given(keys=st.lists(st.text(alphabet=key_alphabet, min_size=16, max_size=40), max_size=5),
       junk=st.lists(st.sampled_from(["", " ", "  "]), max_size=3))
def test_api_keys_parse_and_match(keys, junk):
    raw = ",".join(keys + junk)
    parsed = parse_api_keys(raw)
    assert parsed == tuple(dict.fromkeys(keys))
    for k in keys:
        assert key_matches(k, parsed)
        assert not key_matches(k + "x", parsed) and not key_matches(k[:-1], parsed)


@FAST
@given(key=st.text(max_size=40))
def test_bad_keys_refused(key):
    k = key.strip()
    assume("," not in key)
    ok = len(k) >= 16 and k.isascii() and k.isprintable() and " " not in k
    if ok or not k:
        assert parse_api_keys(key) == ((k,) if k else ())
    else:
        with pytest.raises(ValueError):
            parse_api_keys(key)


@FAST
@given(presented=st.text(max_size=50), keys=st.lists(st.text(alphabet=key_alphabet, min_size=16, max_size=20),
                                                     min_size=1, max_size=3))
def test_key_matches_only_exact(presented, keys):
    assert key_matches(presented, tuple(keys)) == (presented in keys)


_VIEWS: dict = {}


def _views() -> dict:
    if not _VIEWS:
        from app import create_app
        _VIEWS.update(create_app(Config.from_env({"MODEL_LOADING": "off", "PROMETHEUS_MULTIPROC_DIR": ""})).view_functions)
    return _VIEWS


PUBLIC = ("api.healthz", "api.readyz", "docs.openapi", "docs.ui", "static", "v2.server_metadata", "v2.live", "v2.ready")
PAGES = ("translator.index", "translator.result", "pages.dashboard", "docs.ui")


@FAST
@given(endpoint=st.one_of(st.none(), st.sampled_from([*PUBLIC, "translator.translate", "nose_tracker.image_64",
                                                      "nose_tracker.image_bin", "api.version", "api.metrics_endpoint",
                                                      "v2.infer", "v2.model_metadata", "v2.repository_index",
                                                      *PAGES])),
       protect_pages=st.booleans())
def test_needs_key_table(endpoint, protect_pages):
    need = needs_key(endpoint, _views().get(endpoint), protect_pages)
    if endpoint is None or endpoint in PUBLIC:
        assert not need
    elif endpoint in PAGES:
        assert need == protect_pages
    else:
        assert need
