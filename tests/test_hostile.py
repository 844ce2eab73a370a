"""Hostile input through nginx: every case asserts its exact status, the JSON error shape
(or the page / result it must give), and that afterwards the server is still ready with
the very same worker processes (nothing crashed, nothing was recycled).

The hostile files are made at test time (Pillow / numpy / hand-written bytes); the
EXIF check also uses real faces from ../shared (never copied into the repo).
"""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from conftest import b64, shared_faces, synthetic_face

JSON_CT = {"Content-Type": "application/json"}


# --- hostile files -------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(size: int = 30000, full: bool = False) -> bytes:
    """A 1-bit greyscale PNG of size x size pixels (900 Mpx for 30000). full=False: the IDAT
    holds only the first rows (a few hundred bytes in all); full=True: every row, all
    zero, deflated (about 110 KB)."""
    ihdr = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (size + 7) // 8)
    comp = zlib.compressobj(9)
    rows = size if full else 16
    idat = b"".join(comp.compress(row) for _ in range(rows)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(w: int, h: int) -> bytes:
    """A small real JPEG whose SOF header is rewritten to claim w x h pixels."""
    data = bytearray(synthetic_face(64, 48, 1))
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", h, w)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def gif_claiming(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", w, h)  # logical screen size
    return bytes(data)


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def face_rgb(w=240, h=180, seed=4) -> Image.Image:
    bgr = cv2.imdecode(np.frombuffer(synthetic_face(w, h, seed, ".png"), np.uint8), cv2.IMREAD_COLOR)
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def animated_gif() -> bytes:
    frames = [face_rgb(seed=s).convert("P") for s in (4, 5, 6)]
    return pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)


def png16(channels: int) -> bytes:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 65535, size=(90, 120) if channels == 1 else (90, 120, 3), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    assert Image.open(io.BytesIO(buf.tobytes())).mode in ("I;16", "I;16B", "I", "RGB")  # 16-bit really
    return buf.tobytes()


def exif_rotated(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(face_rgb(240, 160, 7), "JPEG", exif=exif.tobytes())


def corrupt(data: bytes, at: float, n: int = 64) -> bytes:
    b = bytearray(data)
    i = int(len(b) * at)
    b[i:i + n] = b"\x00" * n
    return bytes(b)


def jpeg_without_huffman_tables() -> bytes:
    """JPEG with its DHT segments removed: the scan cannot be decoded."""
    data = synthetic_face(120, 90, 2)
    out, i = bytearray(data[:2]), 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:
            out += data[i:]
            break
        if marker != 0xC4:
            out += data[i:i + 2 + length]
        i += 2 + length
    return bytes(out)


def noise_png() -> bytes:
    """1.7 MB of incompressible PNG: more than nginx's 1 MB body buffer, under the 2 MB test limit."""
    data = pil_bytes(Image.fromarray(np.random.default_rng(9).integers(0, 256, (700, 820, 3), dtype=np.uint8)), "PNG")
    assert 1_048_576 < len(data) < 2_000_000, len(data)
    return data


def patch_sof(offset: int, value: int) -> bytes:
    """A real JPEG with one byte of its SOF0 segment (at offset from the marker) changed."""
    data = bytearray(synthetic_face(120, 90, 2))
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + offset] = value
    return bytes(data)


JPEG = synthetic_face(200, 150, 8)
PNG = synthetic_face(200, 150, 8, ".png")


def b64_wrapped(data: bytes) -> str:
    return base64.encodebytes(data).decode()  # MIME style: a newline every 76 characters


def urlsafe_with_both_specials() -> tuple[str, bytes]:
    """An image whose base64 needs both '+' and '/', sent in the URL-safe alphabet, no padding."""
    for seed in range(50):
        data = synthetic_face(160, 120, seed)
        std = base64.b64encode(data).decode()
        if "+" in std and "/" in std and std.endswith("="):
            return base64.urlsafe_b64encode(data).decode().rstrip("="), data
    raise AssertionError("no suitable image")


URLSAFE, URLSAFE_RAW = urlsafe_with_both_specials()


# --- the cases -----------------------------------------------------------------------------
# (id, method, path, request kwargs, expected status, expected error code or a check function)

def nose_ok(w: int, h: int):
    def check(r):
        body = r.json()
        assert (body["width"], body["height"]) == (w, h), body
        assert 0 <= body["x"] <= 1 and 0 <= body["y"] <= 1
    return check


def translation_ok(r):
    body = r.json()
    assert isinstance(body["translation"], str) and body["translations"] == [body["translation"]]


def html_page(*must_contain: str):
    def check(r):
        assert r.headers["Content-Type"].startswith("text/html")
        for s in must_contain:
            assert s in r.text, s
    return check


def bin_file(data: bytes, name="x.jpg", ctype="image/jpeg") -> dict:
    return {"files": {"image": (name, data, ctype)}}


def j64(value) -> dict:
    return {"json": {"image": value}}


def raw(data, ctype: str | None) -> dict:
    return {"data": data, "headers": {"Content-Type": ctype} if ctype else {}}


def _chunked(total: int, step: int = 65536):
    sent = 0
    while sent < total:
        yield b"A" * min(step, total - sent)
        sent += step


CASES = [
    # decompression bombs and size claims
    ("png-bomb-30000x30000-few-KB", "post", "/image-bin", lambda: bin_file(png_bomb(), "bomb.png", "image/png"),
     413, "image_too_large"),
    ("png-bomb-30000x30000-full-deflate", "post", "/image-64", lambda: j64(b64(png_bomb(full=True))),
     413, "image_too_large"),
    ("jpeg-header-claims-30000x30000", "post", "/image-bin", lambda: bin_file(jpeg_claiming(30000, 30000)),
     413, "image_too_large"),
    ("jpeg-header-claims-65500x65500", "post", "/image-64", lambda: j64(b64(jpeg_claiming(65500, 65500))),
     413, "image_too_large"),
    ("gif-screen-claims-65535x65535", "post", "/image-bin", lambda: bin_file(gif_claiming(65535, 65535), "g.gif",
                                                                               "image/gif"), 413, "image_too_large"),
    ("png-6325x6325-just-over-limit", "post", "/image-bin",
     lambda: bin_file(png_bomb(6325, full=True), "edge.png", "image/png"), 413, "image_too_large"),
    # truncated and corrupt files
    ("jpeg-truncated-half", "post", "/image-bin", lambda: bin_file(JPEG[:len(JPEG) // 2]), 400, "not_an_image"),
    ("jpeg-truncated-after-header", "post", "/image-bin", lambda: bin_file(JPEG[:400]), 400, "not_an_image"),
    ("jpeg-missing-eoi", "post", "/image-64", lambda: j64(b64(JPEG[:-2])), 400, "not_an_image"),
    ("jpeg-soi-only", "post", "/image-bin", lambda: bin_file(b"\xff\xd8\xff"), 400, "not_an_image"),
    ("jpeg-no-huffman-tables-uses-defaults", "post", "/image-bin", lambda: bin_file(jpeg_without_huffman_tables()),
     200, nose_ok(120, 90)),  # as in Motion-JPEG frames: libjpeg's standard tables apply
    ("jpeg-sof-zero-sampling", "post", "/image-bin", lambda: bin_file(patch_sof(11, 0)), 400, "not_an_image"),
    ("jpeg-sof-bad-quant-table", "post", "/image-64", lambda: j64(b64(patch_sof(12, 9))), 400, "not_an_image"),
    ("jpeg-sof-two-components", "post", "/image-bin", lambda: bin_file(patch_sof(9, 2)), 400, "not_an_image"),
    ("jpeg-zeroed-scan-data-still-decodes", "post", "/image-bin", lambda: bin_file(corrupt(JPEG, 0.6)),
     200, nose_ok(200, 150)),
    ("png-truncated-half", "post", "/image-bin", lambda: bin_file(PNG[:len(PNG) // 2], "t.png", "image/png"),
     400, "not_an_image"),
    ("png-truncated-no-iend", "post", "/image-64", lambda: j64(b64(PNG[:-12])), 400, "not_an_image"),
    ("png-corrupt-idat", "post", "/image-bin", lambda: bin_file(corrupt(PNG, 0.5), "c.png", "image/png"),
     400, "not_an_image"),
    ("png-signature-only", "post", "/image-bin", lambda: bin_file(b"\x89PNG\r\n\x1a\n", "s.png", "image/png"),
     400, "not_an_image"),
    # odd but valid images: handled, not rejected
    ("gif-animated-first-frame", "post", "/image-bin", lambda: bin_file(animated_gif(), "a.gif", "image/gif"),
     200, nose_ok(240, 180)),
    ("png-16-bit-grey", "post", "/image-bin", lambda: bin_file(png16(1), "g16.png", "image/png"), 200, nose_ok(120, 90)),
    ("png-16-bit-rgb", "post", "/image-64", lambda: j64(b64(png16(3))), 200, nose_ok(120, 90)),
    ("jpeg-greyscale", "post", "/image-bin", lambda: bin_file(pil_bytes(face_rgb().convert("L"), "JPEG")),
     200, nose_ok(240, 180)),
    ("png-greyscale-alpha", "post", "/image-bin", lambda: bin_file(pil_bytes(face_rgb().convert("LA"), "PNG"),
                                                                   "la.png", "image/png"), 200, nose_ok(240, 180)),
    ("png-rgba-transparent", "post", "/image-64", lambda: j64(b64(pil_bytes(face_rgb().convert("RGBA"), "PNG"))),
     200, nose_ok(240, 180)),
    ("png-palette", "post", "/image-bin", lambda: bin_file(pil_bytes(face_rgb().convert("P"), "PNG"), "p.png",
                                                           "image/png"), 200, nose_ok(240, 180)),
    ("jpeg-cmyk", "post", "/image-bin", lambda: bin_file(pil_bytes(face_rgb().convert("CMYK"), "JPEG")),
     200, nose_ok(240, 180)),
    ("jpeg-progressive", "post", "/image-bin", lambda: bin_file(pil_bytes(face_rgb(), "JPEG", progressive=True)),
     200, nose_ok(240, 180)),
    ("tiff-rgb", "post", "/image-bin", lambda: bin_file(pil_bytes(face_rgb(), "TIFF"), "t.tif", "image/tiff"),
     200, nose_ok(240, 180)),
    ("png-1x1", "post", "/image-bin", lambda: bin_file(pil_bytes(Image.new("L", (1, 1), 128), "PNG"), "1.png",
                                                       "image/png"), 200, nose_ok(1, 1)),
    ("jpeg-1x1", "post", "/image-64", lambda: j64(b64(pil_bytes(Image.new("RGB", (1, 1), (9, 9, 9)), "JPEG"))),
     200, nose_ok(1, 1)),
    ("png-1x4000-sliver", "post", "/image-bin", lambda: bin_file(pil_bytes(Image.new("RGB", (1, 4000)), "PNG"),
                                                                 "s.png", "image/png"), 200, nose_ok(1, 4000)),
    ("jpeg-exif-rotated-90", "post", "/image-bin", lambda: bin_file(exif_rotated(6)), 200, nose_ok(160, 240)),
    ("jpeg-exif-rotated-180", "post", "/image-64", lambda: j64(b64(exif_rotated(3))), 200, nose_ok(240, 160)),
    ("png-1.7MB-upload-buffered-to-disk", "post", "/image-bin", lambda: bin_file(noise_png(), "n.png", "image/png"),
     200, nose_ok(820, 700)),
    # base64 variants
    ("b64-mime-newlines", "post", "/image-64", lambda: j64(b64_wrapped(JPEG)), 200, nose_ok(200, 150)),
    ("b64-spaces-tabs-crlf", "post", "/image-64", lambda: j64(" \t" + "\r\n ".join(b64(JPEG)[i:i + 50] for i in
                                                                                    range(0, len(b64(JPEG)), 50))),
     200, nose_ok(200, 150)),
    ("b64-urlsafe-unpadded", "post", "/image-64", lambda: j64(URLSAFE), 200, nose_ok(160, 120)),
    ("b64-data-url-with-params", "post", "/image-64", lambda: j64("data:image/jpeg;name=face.jpg;base64," + b64(JPEG)),
     200, nose_ok(200, 150)),
    ("b64-padding-in-the-middle", "post", "/image-64", lambda: j64(b64(JPEG)[:40] + "=" + b64(JPEG)[40:]),
     400, "invalid_base64"),
    ("b64-bad-length", "post", "/image-64", lambda: j64(b64(JPEG).rstrip("=") + "A" * (
        (1 - len(b64(JPEG).rstrip("="))) % 4)), 400, "invalid_base64"),
    ("b64-mixed-alphabets", "post", "/image-64", lambda: j64(URLSAFE[:100] + "+/" + URLSAFE[102:]),
     400, "invalid_base64"),
    ("b64-non-ascii", "post", "/image-64", lambda: j64("ÿØÿà" + b64(JPEG)), 400, "invalid_base64"),
    ("b64-empty-string", "post", "/image-64", lambda: j64(""), 400, "invalid_base64"),
    ("b64-only-whitespace", "post", "/image-64", lambda: j64(" \n\t "), 400, "invalid_base64"),
    ("b64-data-url-text-html", "post", "/image-64", lambda: j64("data:text/html;base64," + b64(b"<script>1</script>")),
     400, "not_an_image"),
    ("b64-of-a-pdf", "post", "/image-64", lambda: j64(b64(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n")),
     400, "not_an_image"),
    # non-image bytes with an image content type
    ("bin-text-as-image-jpeg", "post", "/image-bin", lambda: bin_file(b"hello, I am not a JPEG"), 400, "not_an_image"),
    ("bin-html-as-image-png", "post", "/image-bin", lambda: bin_file(b"<html><script>x</script></html>", "x.png",
                                                                     "image/png"), 400, "not_an_image"),
    ("bin-svg-as-image", "post", "/image-bin", lambda: bin_file(b'<svg xmlns="http://www.w3.org/2000/svg"/>',
                                                                "x.svg", "image/svg+xml"), 400, "not_an_image"),
    ("bin-empty-file", "post", "/image-bin", lambda: bin_file(b""), 400, "not_an_image"),
    ("bin-random-bytes", "post", "/image-bin", lambda: bin_file(np.random.default_rng(5).bytes(4096)),
     400, "not_an_image"),
    ("bin-image-as-text-field", "post", "/image-bin", lambda: {"data": {"image": "not a file"},
                                                               "files": {"other": ("o", b"x")}}, 400, "invalid_field"),
    ("bin-multipart-without-boundary", "post", "/image-bin", lambda: raw(JPEG, "multipart/form-data"),
     400, "missing_field"),
    # empty bodies, JSON that is not an object, wrong field types
    ("json-empty-body", "post", "/image-64", lambda: raw(b"", "application/json"), 400, "invalid_json"),
    ("json-array", "post", "/image-64", lambda: {"json": [{"image": b64(JPEG)}]}, 400, "invalid_json"),
    ("json-string", "post", "/image-64", lambda: {"json": "image"}, 400, "invalid_json"),
    ("json-null", "post", "/api/translate", lambda: raw(b"null", "application/json"), 400, "invalid_json"),
    ("json-number", "post", "/api/translate", lambda: raw(b"42", "application/json"), 400, "invalid_json"),
    ("json-deeply-nested", "post", "/api/translate", lambda: raw(b'{"text":' + b"[" * 100000 + b"]" * 100000 + b"}",
                                                                 "application/json"), 400, "invalid_json"),
    ("json-not-utf8", "post", "/api/translate", lambda: raw('{"text": "caf\u00e9"}'.encode("latin-1"),
                                                             "application/json"), 400, "invalid_json"),
    ("json-trailing-garbage", "post", "/api/translate", lambda: raw(b'{"text": "hi"} {"text": "again"}',
                                                                     "application/json"), 400, "invalid_json"),
    ("image-null", "post", "/image-64", lambda: j64(None), 400, "invalid_field"),
    ("image-number", "post", "/image-64", lambda: j64(12345), 400, "invalid_field"),
    ("image-list", "post", "/image-64", lambda: j64([b64(JPEG)]), 400, "invalid_field"),
    ("image-object", "post", "/image-64", lambda: j64({"data": b64(JPEG)}), 400, "invalid_field"),
    ("image-true", "post", "/image-64", lambda: j64(True), 400, "invalid_field"),
    ("text-number", "post", "/api/translate", lambda: {"json": {"text": 7}}, 400, "invalid_field"),
    ("texts-with-non-string", "post", "/api/translate", lambda: {"json": {"texts": ["a", None]}}, 400, "invalid_field"),
    ("texts-nested-list", "post", "/api/translate", lambda: {"json": {"texts": [["a"]]}}, 400, "invalid_field"),
    ("beam-infinite", "post", "/api/translate", lambda: raw(b'{"text": "hi", "beam": 1e999}', "application/json"),
     400, "invalid_field"),
    ("beam-nan", "post", "/api/translate", lambda: raw(b'{"text": "hi", "beam": NaN}', "application/json"),
     400, "invalid_field"),
    ("beam-true", "post", "/api/translate", lambda: {"json": {"text": "hi", "beam": True}}, 400, "invalid_field"),
    ("beam-float", "post", "/api/translate", lambda: {"json": {"text": "hi", "beam": 2.0}}, 400, "invalid_field"),
    ("unknown-field", "post", "/api/translate", lambda: {"json": {"text": "hi", "bean": 2}}, 400, "unknown_field"),
    # wrong and missing content types
    ("image-64-text-plain", "post", "/image-64", lambda: raw(json.dumps({"image": b64(JPEG)}), "text/plain"),
     415, "unsupported_media_type"),
    ("image-64-no-content-type", "post", "/image-64", lambda: raw(json.dumps({"image": b64(JPEG)}).encode(), None),
     415, "unsupported_media_type"),
    ("image-64-form-urlencoded", "post", "/image-64", lambda: {"data": {"image": b64(JPEG)}},
     415, "unsupported_media_type"),
    ("image-bin-json", "post", "/image-bin", lambda: j64(b64(JPEG)), 415, "unsupported_media_type"),
    ("image-bin-raw-image-png", "post", "/image-bin", lambda: raw(PNG, "image/png"), 415, "unsupported_media_type"),
    ("image-bin-no-content-type", "post", "/image-bin", lambda: raw(JPEG, None), 415, "unsupported_media_type"),
    ("translate-multipart", "post", "/api/translate", lambda: {"files": {"text": ("t.txt", b"hi")}},
     415, "unsupported_media_type"),
    # text: huge, odd, hostile
    ("text-1MB", "post", "/api/translate", lambda: {"json": {"text": "word " * 200000}}, 422, "text_too_long"),
    ("texts-over-total", "post", "/api/translate", lambda: {"json": {"texts": ["x" * 4000] * 6}}, 422, "too_much_text"),
    ("text-only-punctuation", "post", "/api/translate", lambda: {"json": {"text": "?!.,;:-()[]{}...!!!"}},
     200, translation_ok),
    ("text-null-bytes", "post", "/api/translate", lambda: {"json": {"text": "Hello\u0000 world\u0000."}},
     200, translation_ok),
    ("text-control-chars", "post", "/api/translate", lambda: {"json": {"text": "\u0007\u001b[31mred\u001b[0m\ufeff"}},
     200, translation_ok),
    ("text-html-js-api", "post", "/api/translate",
     lambda: {"json": {"text": "<script>alert(1)</script><img src=x onerror=alert(2)>"}}, 200, translation_ok),
    ("text-emoji-rtl-combining", "post", "/api/translate",
     lambda: {"json": {"text": "I love \U0001F600 \u05e9\u05dc\u05d5\u05dd e\u0301\u0301\u0301"}}, 200, translation_ok),
    ("text-lone-surrogate", "post", "/api/translate", lambda: raw(b'{"text": "\\udc80x"}', "application/json"),
     400, "invalid_field"),
    # the HTML form
    ("form-html-js-escaped", "post", "/result",
     lambda: {"data": {"English": "<script>alert('x')</script> & \"quotes\""}}, 200,
     html_page("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;")),
    ("form-non-utf8", "post", "/result",
     lambda: raw(b"English=caf\xe9+au+lait", "application/x-www-form-urlencoded"), 400, html_page("UTF-8")),
    ("form-1MB", "post", "/result", lambda: {"data": {"English": "a" * 1_000_000}}, 400, html_page("too long")),
    ("form-missing-field", "post", "/result", lambda: {"data": {"French": "bonjour"}}, 400, html_page("Please enter")),
    ("form-as-json", "post", "/result", lambda: {"json": {"English": "hi"}}, 400, html_page("Please enter")),
    # paths, methods, headers, body framing
    ("unknown-api-path", "get", "/api/v2/translate", lambda: {}, 404, "not_found"),
    ("unknown-path-json-accept", "get", "/wp-login.php", lambda: {"headers": {"Accept": "application/json"}},
     404, "not_found"),
    ("unknown-path-html-accept", "get", "/wp-login.php", lambda: {"headers": {"Accept": "text/html"}},
     404, html_page("404")),
    ("static-missing-file", "get", "/static/no-such.css", lambda: {}, 404, "not_found"),
    # (the client library removes the dot segments: the app's own 404 page, no file)
    ("static-dot-dot-traversal", "get", "/static/../../app/config.py", lambda: {}, 404, html_page("404")),
    ("static-encoded-traversal", "get", "/static/..%2f..%2fapp%2fconfig.py", lambda: {}, 400, "bad_request"),
    ("static-post", "post", "/static/style.css", lambda: {"data": b"x"}, 405, "method_not_allowed"),
    ("delete-image-64", "delete", "/image-64", lambda: {}, 405, "method_not_allowed"),
    ("put-translate", "put", "/api/translate", lambda: {"json": {"text": "hi"}}, 405, "method_not_allowed"),
    ("post-healthz", "post", "/healthz", lambda: {}, 405, "method_not_allowed"),
    ("get-image-bin", "get", "/image-bin", lambda: {}, 405, "method_not_allowed"),
    ("oversized-header", "get", "/healthz", lambda: {"headers": {"X-Junk": "a" * 20000}}, 431, "header_too_large"),
    ("oversized-cookies", "post", "/api/translate", lambda: {"json": {"text": "hi"}, "headers": {
        "Cookie": "; ".join(f"c{i}={'v' * 900}" for i in range(40))}}, 431, "header_too_large"),
    ("uri-too-long", "get", "/api/" + "a" * 20000, lambda: {}, 414, "uri_too_long"),
    ("chunked-body-over-limit", "post", "/image-64", lambda: {"data": _chunked(3 * 1024 * 1024), "headers": JSON_CT},
     413, "payload_too_large"),
    ("request-id-injection", "get", "/api/nope", lambda: {"headers": {"X-Request-ID": '"><script>x</script>'}},
     404, "not_found"),
]

assert len(CASES) >= 50


def assert_json_error(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] == r.headers["X-Request-ID"]
    return err


@pytest.fixture(scope="module")
def baseline(stack):
    return stack.worker_pids()


@pytest.mark.parametrize("name,method,path,make,status,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile_case(stack, baseline, name, method, path, make, status, expect):
    kw = make()
    kw.setdefault("timeout", 120)
    r = requests.request(method, stack.url(path), **kw)
    if isinstance(expect, str):
        err = assert_json_error(r, status, expect)
        if name == "request-id-injection":
            assert "<" not in err["request_id"] and "script" not in r.text
    else:
        assert r.status_code == status, (r.status_code, r.text[:300])
        expect(r)
    assert r.status_code < 500
    ready = stack.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert stack.worker_pids() == baseline, "a worker died or was replaced"


def test_exif_rotation_on_real_faces(stack):
    """A real face stored rotated with an EXIF orientation tag gives the nose at the same place
    in the displayed picture as the upright upload (EXIF applied, not rejected)."""
    for face in shared_faces(3):
        upright = Image.open(io.BytesIO(face["bytes"])).convert("RGB")
        w, h = upright.size
        ref = stack.post("/image-bin", files={"image": ("u.jpg", pil_bytes(upright, "JPEG", quality=95), "image/jpeg")})
        assert ref.status_code == 200, ref.text
        ref = ref.json()
        # orientation 6: stored rotated 90 degrees counter-clockwise, the viewer turns it clockwise
        # orientation 8: the opposite; 3: upside down
        for tag, stored in ((6, upright.transpose(Image.Transpose.ROTATE_90)),
                            (8, upright.transpose(Image.Transpose.ROTATE_270)),
                            (3, upright.transpose(Image.Transpose.ROTATE_180))):
            exif = Image.Exif()
            exif[0x0112] = tag
            data = pil_bytes(stored, "JPEG", quality=95, exif=exif.tobytes())
            r = stack.post("/image-bin", files={"image": ("r.jpg", data, "image/jpeg")})
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["width"], body["height"]) == (w, h), (tag, body)
            # same place in the displayed image (JPEG re-encoding of the rotated pixels moves it a little)
            assert abs(body["x"] - ref["x"]) < 0.02 and abs(body["y"] - ref["y"]) < 0.02, (face["path"], tag, body, ref)
            assert float(face["face_left"]) <= body["x_px"] <= float(face["face_right"])
            assert float(face["face_top"]) <= body["y_px"] <= float(face["face_bottom"])
    assert stack.get("/readyz").status_code == 200
