"""End-to-end: every endpoint and error through nginx -> uWSGI (2 workers x 4 threads) -> Flask."""
from __future__ import annotations

import hashlib
import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from conftest import ROOT, b64, shared_faces, start_nginx, stop_process, free_port, wait_port, synthetic_face
from app.serving.repository import version_dir  # noqa: E402

JSON = {"Content-Type": "application/json"}


def assert_json_error(r: requests.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


# --- health, readiness, version -------------------------------------------------

def test_healthz(stack):
    r = stack.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_readyz_every_worker_ready(stack):
    pids = set()
    for _ in range(20):
        r = stack.get("/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert body["models"]["nose_tracker"]["status"] == "ready"
        assert body["models"]["translator"]["status"] == "ready"
        pids.add(body["pid"])
    assert pids <= set(stack.worker_pids())


def test_version_reports_models(stack):
    r = stack.get("/version")
    assert r.status_code == 200
    v = r.json()
    assert v["app"]["version"] == "1.0.0"
    assert v["app"]["revision"] == "rev-1"
    nose = v["models"]["nose_tracker"]
    pb = (version_dir("nose_tracker") / "nose_tracker.pb").read_bytes()
    assert nose["sha256"] == hashlib.sha256(pb).hexdigest()
    assert nose["version"] and nose["load_ms"] > 0
    tr = v["models"]["translator"]
    assert tr["status"] == "ready" and tr["version"] and len(tr["sha256"]) == 64 and tr["load_ms"] > 0
    w = v["worker"]
    assert w["server"] == "uwsgi" and w["workers_configured"] == 2 and w["pid"] in stack.worker_pids()
    # thread pools set from the config, per worker
    assert v["threads"]["cv2_threads_effective"] == 1
    assert v["threads"]["tf_intra_op_threads"] == 1 and v["threads"]["tf_inter_op_threads"] == 1
    # TF_ENABLE_ONEDNN_OPTS=0 reached TensorFlow in the worker (it is read at TF's first import)
    assert v["threads"]["tf_onednn"] is False


# --- HTML pages ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/index"])
def test_form_page(stack, path):
    r = stack.get(path)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    html = r.text
    assert '<form' in html and 'action="/result"' in html and 'method="post"' in html
    assert '<label for="English">' in html
    assert re.search(r'<textarea id="English" name="English"', html)
    assert 'href="/static/style.css"' in html
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"


def test_static_css_served_by_nginx(stack):
    r = stack.get("/static/style.css")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/css")
    assert r.content == (ROOT / "app" / "static" / "style.css").read_bytes()
    # nginx served it: the app would have logged (and echoed) a request id
    assert "X-Request-ID" not in r.headers


def test_result_page_translates_and_escapes(stack):
    text = "The <b>cat</b> & the dog."
    r = stack.post("/result", data={"English": text})
    assert r.status_code == 200, r.text
    html = r.text
    assert "The &lt;b&gt;cat&lt;/b&gt; &amp; the dog." in html
    assert "<b>cat</b>" not in html
    expected = stack.post("/api/translate", json={"text": text}).json()["translation"]
    m = re.search(r'<p class="text" id="translation" lang="es"[^>]*>(.*?)</p>', html, re.S)
    assert m, html
    import html as _html
    assert _html.unescape(re.sub(r"<[^>]+>", "", m.group(1))) == expected
    assert 'href="/index"' in html  # back link


@pytest.mark.parametrize("text", ["", "   "])
def test_result_empty_rerenders_form(stack, text):
    r = stack.post("/result", data={"English": text})
    assert r.status_code == 400
    assert 'role="alert"' in r.text and "Please enter" in r.text
    assert '<textarea id="English" name="English"' in r.text


def test_result_too_long_rerenders_form(stack):
    r = stack.post("/result", data={"English": "a" * 5001})
    assert r.status_code == 400
    assert "too long" in r.text and "5001" in r.text and "5000" in r.text


# --- nose tracking -------------------------------------------------------------------

def _check_nose(body: dict, w: int, h: int):
    assert body["width"] == w and body["height"] == h
    assert 0 <= body["x"] <= 1 and 0 <= body["y"] <= 1
    assert body["x_px"] == pytest.approx(body["x"] * w, abs=0.01)
    assert body["y_px"] == pytest.approx(body["y"] * h, abs=0.01)
    assert body["model_version"]
    assert body["inference_ms"] > 0


def test_image_64_real_faces(stack):
    """Real faces (../shared): the nose lands inside the annotated face box and the answer
    equals the pipeline (face detector + landmark net on the face crop) run in-process on the
    same image; the whole-image net (max_faces=0, the answer before the detector) agrees
    with the in-process model too."""
    from app.serving.imaging import REDUCED_MIN_SIDE, decode_image_scaled
    from app.servables.nose_tracker.faces import prominent
    from app.servables.nose_tracker.model import NoseTracker
    from training.face_detector.evaluate import Pipeline
    local = NoseTracker.load(str(version_dir("nose_tracker")))
    pipe = Pipeline(version_dir("face_detector") / "face_detector.pb", version_dir("nose_tracker") / "nose_tracker.pb")
    thr = stack.get("/v2/models/face_detector").json()["parameters"]["min_score"]
    for face in shared_faces(4):
        r = stack.post("/image-64", json={"image": b64(face["bytes"])})
        assert r.status_code == 200, r.text
        body = r.json()
        _check_nose(body, int(face["width"]), int(face["height"]))
        assert float(face["face_left"]) <= body["x_px"] <= float(face["face_right"]), (face["path"], body)
        assert float(face["face_top"]) <= body["y_px"] <= float(face["face_bottom"]), (face["path"], body)
        img = cv2.imdecode(np.frombuffer(face["bytes"], np.uint8), cv2.IMREAD_COLOR)  # 400x400: not reduced
        boxes, scores = pipe.detect(img, thr)
        assert body["face_found"] and len(boxes) == len(body["faces"]) >= 1
        nose = pipe.landmarks(img, boxes[[prominent(boxes, scores)]])[0][0]
        assert body["x_px"] == pytest.approx(nose[0], abs=0.02) and body["y_px"] == pytest.approx(nose[1], abs=0.02)
        # without detection: the whole image as before (a 400x400 JPEG is decoded at 1/2 scale)
        r = stack.post("/image-64", json={"image": b64(face["bytes"]), "max_faces": 0})
        whole = r.json()
        assert whole["faces"] == [] and whole["face_found"] is False
        small, w, h = decode_image_scaled(face["bytes"], 10 ** 8, REDUCED_MIN_SIDE)
        p = local.predict(small, size=(w, h))
        assert whole["x"] == pytest.approx(p.x, abs=1e-5) and whole["y"] == pytest.approx(p.y, abs=1e-5)
        full = local.predict(img)
        assert abs(full.x - p.x) < 0.01 and abs(full.y - p.y) < 0.01


def test_image_64_data_url_and_bin_agree(stack):
    data = synthetic_face(300, 200, seed=3)
    a = stack.post("/image-64", json={"image": "data:image/jpeg;base64," + b64(data)})
    b = stack.post("/image-bin", files={"image": ("face.jpg", data, "image/jpeg")})
    c = stack.post("/image-64", json={"image": b64(data)})
    for r in (a, b, c):
        assert r.status_code == 200, r.text
        _check_nose(r.json(), 300, 200)
    keys = ("x", "y", "x_px", "y_px", "width", "height")
    assert {k: a.json()[k] for k in keys} == {k: b.json()[k] for k in keys} == {k: c.json()[k] for k in keys}


@pytest.mark.parametrize("fmt", [".png", ".bmp", ".webp"])
def test_image_formats(stack, fmt):
    r = stack.post("/image-bin", files={"image": ("x" + fmt, synthetic_face(160, 120, 5, fmt), "application/octet-stream")})
    assert r.status_code == 200, r.text
    _check_nose(r.json(), 160, 120)


def test_exif_orientation_honoured(stack):
    arr = cv2.cvtColor(cv2.imdecode(np.frombuffer(synthetic_face(240, 160, 7), np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", exif=exif.tobytes())
    r = stack.post("/image-bin", files={"image": ("rot.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (160, 240)  # as displayed, not as stored


@pytest.fixture(scope="module")
def fresh_texts_cli():
    """Sentences no worker has seen (the translator keeps an LRU cache), translated one by one by
    `python -m app translate` in a separate process with the workers' thread settings."""
    import random
    import subprocess
    import sys
    rnd = random.Random(time.time_ns())
    vocab = ("the a man woman child house car dog cat river city green red big small old new walks runs "
             "eats sees loves reads buys today tomorrow with under near book table water bread garden").split()
    texts = [" ".join(rnd.choice(vocab) for _ in range(rnd.randint(5, 12))).capitalize() + "." for _ in range(10)]
    lines = texts[:5] + [""] + texts[5:]
    proc = subprocess.run([sys.executable, "-m", "app", "translate", "--threads", "1", "--chunk", "1"], cwd=ROOT,
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.split("\n")[:-1]
    assert len(out) == len(lines) and out[5] == ""  # the translate CLI: one line out per line in
    assert all(o.strip() for i, o in enumerate(out) if i != 5)
    expected = out[:5] + out[6:]
    return texts, expected


def test_concurrent_requests_equal_sequential(stack, fresh_texts_cli):
    """Different images and texts at once (16 client threads, 2 workers x 4 threads): every answer
    equals the sequential one. Texts are new to the server, so each is decoded under concurrency
    and compared with a separate process's sequential translation."""
    images = [synthetic_face(200 + 20 * i, 180 + 10 * i, seed=i) for i in range(6)]
    try:
        images += [f["bytes"] for f in shared_faces(2)]
    except pytest.skip.Exception:
        pass
    texts, expected = fresh_texts_cli

    def nose(data):
        r = stack.post("/image-64", json={"image": b64(data)})
        assert r.status_code == 200, r.text
        return {k: r.json()[k] for k in ("x", "y", "width", "height")}

    sequential = [nose(im) for im in images]
    jobs = [("img", i) for i in range(len(images))] * 3 + [("txt", i) for i in range(len(texts))]
    import random
    random.Random(1).shuffle(jobs)

    def run(job):
        kind, i = job
        if kind == "img":
            return nose(images[i])
        r = stack.post("/api/translate", json={"text": texts[i]})
        assert r.status_code == 200, r.text
        return r.json()["translation"]

    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(run, jobs))
    for (kind, i), res in zip(jobs, results):
        assert res == (sequential[i] if kind == "img" else expected[i]), (kind, i)


# --- translation API ---------------------------------------------------------------------

def test_largest_single_text_completes(stack):
    """A 5000-character text of distinct sentences at the largest beam is answered, no 5xx."""
    import random
    rnd = random.Random(0)
    vocab = ("the a man woman child house car dog river city green big small walks sees loves "
             "today with under near book table water bread").split()
    text = ""
    while len(text) < 4900:
        text += " ".join(rnd.choice(vocab) for _ in range(rnd.randint(6, 14))).capitalize() + ". "
    text = text[:5000]
    r = stack.post("/api/translate", json={"text": text, "beam": 4}, timeout=200)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["translation"]) > 1000


def test_translate_single_and_batch(stack):
    r = stack.post("/api/translate", json={"text": "Hello."})
    assert r.status_code == 200, r.text
    one = r.json()
    assert isinstance(one["translation"], str) and one["translation"].strip()
    assert one["translations"] == [one["translation"]] and one["beam"] == 1 and one["model_version"]
    r = stack.post("/api/translate", json={"texts": ["Hello.", "", "Thank you very much."], "beam": 2})
    assert r.status_code == 200, r.text
    b = r.json()
    assert len(b["translations"]) == 3 and b["translations"][1] == "" and b["beam"] == 2
    assert "translation" not in b and "confidence" not in b


def test_translate_confidence_per_sentence(stack):
    """Each sentence's confidence; a text's confidence is its lowest; the empty text has none."""
    r = stack.post("/api/translate", json={"texts": ["I have a house. Where is the station?", "", "Xqzt vlorp."]})
    assert r.status_code == 200, r.text
    b = r.json()
    low = b["low_confidence_threshold"]
    assert 0 < low < 1
    first, empty, junk = b["sentences"]
    assert [s["source"] for s in first] == ["I have a house.", "Where is the station?"]
    assert " ".join(s["translation"] for s in first) == b["translations"][0]
    assert all(0 < s["confidence"] <= 1 and s["low_confidence"] == (s["confidence"] < low) for s in first + junk)
    assert b["confidences"][0] == min(s["confidence"] for s in first)
    assert empty == [] and b["confidences"][1] == 1.0
    assert b["confidences"][2] < min(s["confidence"] for s in first)
    one = stack.post("/api/translate", json={"text": "I have a house."}).json()
    assert one["confidence"] == one["confidences"][0] == first[0]["confidence"]


# --- errors: JSON shape, statuses, no 5xx, workers survive -------------------------------

def test_error_statuses(stack):
    pids_before = stack.worker_pids()
    png_huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(png_huge, "PNG")  # 48 Mpx > 40 Mpx, tiny file
    cases = [
        # (method, path, kwargs, status, code)
        ("post", "/image-64", {"data": "{not json", "headers": JSON}, 400, "invalid_json"),
        ("post", "/image-64", {"data": "", "headers": JSON}, 400, "invalid_json"),
        ("post", "/image-64", {"json": ["image"]}, 400, "invalid_json"),
        ("post", "/image-64", {"data": "[" * 200000, "headers": JSON}, 400, "invalid_json"),
        ("post", "/image-64", {"data": b'{"image": "\xff\xfe"}', "headers": JSON}, 400, "invalid_json"),
        ("post", "/api/translate", {"data": '{"text": "\\ud800 lone"}', "headers": JSON}, 400, "invalid_field"),
        ("post", "/image-64", {"json": {"img": "x"}}, 400, "missing_field"),
        ("post", "/image-64", {"json": {"image": 12}}, 400, "invalid_field"),
        ("post", "/image-64", {"json": {"image": "@@@not base64@@@"}}, 400, "invalid_base64"),
        ("post", "/image-64", {"json": {"image": b64(b"hello, I am text")}}, 400, "not_an_image"),
        ("post", "/image-64", {"json": {"image": b64(synthetic_face()[:300])}}, 400, "not_an_image"),
        ("post", "/image-64", {"json": {"image": "data:text/plain;base64," + b64(b"x")}}, 400, "not_an_image"),
        ("post", "/image-64", {"json": {"image": b64(png_huge.getvalue())}}, 413, "image_too_large"),
        ("post", "/image-64", {"data": b64(synthetic_face()), "headers": {"Content-Type": "text/plain"}},
         415, "unsupported_media_type"),
        ("post", "/image-bin", {"data": synthetic_face(), "headers": {"Content-Type": "image/jpeg"}},
         415, "unsupported_media_type"),
        ("post", "/image-bin", {"files": {"picture": ("a.jpg", synthetic_face(), "image/jpeg")}}, 400,
         "missing_field"),
        ("post", "/image-bin", {"files": {"image": ("a.txt", b"plain text", "text/plain")}}, 400, "not_an_image"),
        ("post", "/image-bin", {"files": {"image": ("big.png", png_huge.getvalue(), "image/png")}}, 413,
         "image_too_large"),
        ("post", "/api/translate", {"json": {"text": "a" * 5001}}, 422, "text_too_long"),
        ("post", "/api/translate", {"json": {"texts": ["ok", "b" * 5001]}}, 422, "text_too_long"),
        ("post", "/api/translate", {"json": {"texts": ["x"] * 33}}, 422, "too_many_texts"),
        ("post", "/api/translate", {"json": {"texts": ["y" * 5000] * 5}}, 422, "too_much_text"),
        ("post", "/api/translate", {"json": {"texts": []}}, 400, "invalid_field"),
        ("post", "/api/translate", {"json": {"texts": "not a list"}}, 400, "invalid_field"),
        ("post", "/api/translate", {"json": {"text": "hi", "texts": ["hi"]}}, 400, "missing_field"),
        ("post", "/api/translate", {"json": {}}, 400, "missing_field"),
        ("post", "/api/translate", {"json": {"text": "hi", "beam": 0}}, 400, "invalid_field"),
        ("post", "/api/translate", {"json": {"text": "hi", "beam": 99}}, 400, "invalid_field"),
        ("post", "/api/translate", {"json": {"text": "hi", "beam": "2"}}, 400, "invalid_field"),
        ("post", "/api/translate", {"data": "text=hi", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         415, "unsupported_media_type"),
        ("get", "/api/nope", {}, 404, "not_found"),
        ("get", "/image-64", {}, 405, "method_not_allowed"),
        ("get", "/api/translate", {}, 405, "method_not_allowed"),
        ("post", "/healthz", {}, 405, "method_not_allowed"),
    ]
    for method, path, kw, status, code in cases:
        r = getattr(stack, method)(path, **kw)
        err = assert_json_error(r, status, code)
        assert err["request_id"] == r.headers["X-Request-ID"]
    # 405 carries Allow
    assert "POST" in stack.get("/image-64").headers.get("Allow", "")
    # unknown non-API page: HTML 404
    r = stack.get("/no-such-page", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")
    # nothing crashed: same workers, still healthy
    assert stack.worker_pids() == pids_before
    assert stack.get("/readyz").status_code == 200


def test_body_over_limit_nginx_413_json(stack):
    limit = int(stack.env["MAX_BODY_BYTES"])
    body = json.dumps({"image": "A" * (limit + 10)})
    r = stack.post("/image-64", data=body, headers=JSON)
    err = assert_json_error(r, 413, "payload_too_large")
    assert str(limit) in err["message"]
    assert r.headers["X-Request-ID"] == err["request_id"]
    r = stack.post("/image-bin", files={"image": ("a.jpg", b"\xff" * (limit + 10), "image/jpeg")})
    assert_json_error(r, 413, "payload_too_large")


def test_truncated_and_random_bytes_never_5xx(stack):
    rng = np.random.default_rng(1)
    good = synthetic_face(200, 150, 9)
    payloads = [good[:n] for n in (2, 10, 100, 1000, len(good) - 10)]
    payloads += [rng.bytes(500), b"\x89PNG\r\n\x1a\n" + rng.bytes(100), b"GIF89a" + rng.bytes(50)]
    for p in payloads:
        r = stack.post("/image-bin", files={"image": ("x.bin", p, "application/octet-stream")})
        assert r.status_code in (200, 400), (r.status_code, r.text)
        if r.status_code == 400:
            assert_json_error(r, 400)


@pytest.mark.parametrize("status,code", [(502, "bad_gateway"), (504, "gateway_timeout")])
def test_nginx_own_errors_json(stack, tmp_path, status, code):
    """nginx's own 502 (upstream down) and 504 (upstream silent) in the API's JSON shape:
    a second nginx from the same templates, pointed at a dead / a mute upstream."""
    import socket
    env = dict(stack.env)
    port, upstream = free_port(), free_port()
    mute = None
    if status == 504:  # accepts connections (backlog) but never answers
        mute = socket.socket()
        mute.bind(("127.0.0.1", upstream))
        mute.listen(8)
    env.update({"PORT": str(port), "APP_UPSTREAM": f"127.0.0.1:{upstream}", "NGINX_RUN_DIR": str(tmp_path / "ng"),
                "NGINX_ACCESS_LOG": str(tmp_path / "a.log"), "NGINX_ERROR_LOG": str(tmp_path / "e.log"),
                "UPSTREAM_TIMEOUT": "1"})
    proc = start_nginx(env, tmp_path / "out.log")
    try:
        wait_port(port)
        r = requests.get(f"http://127.0.0.1:{port}/readyz", headers={"X-Request-ID": f"req-{status}-test"}, timeout=20)
        err = assert_json_error(r, status, code)
        assert err["request_id"] == f"req-{status}-test" == r.headers["X-Request-ID"]
    finally:
        import signal
        stop_process(proc, signal.SIGQUIT)
        if mute:
            mute.close()


def test_nginx_own_405_allow_comes_from_the_app_routes(stack):
    """TRACE is refused by nginx itself (405, in the API's JSON shape); its Allow header comes
    from the map the launcher wrote from the app's routes (`python -m app nginx-allow`, as
    start.sh does) and render.sh put into the config."""
    allow_map = open(stack.env["NGINX_ALLOW_MAP"]).read()
    assert "/v2/models/[^/?]+/infer" in allow_map
    rendered = open(f"{stack.env['NGINX_RUN_DIR']}/conf/modelserver.conf").read()
    assert allow_map.strip() in rendered
    for path, allow in (("/v2/models/translator/infer", "OPTIONS, POST"), ("/image-64?x=1", "OPTIONS, POST"),
                        ("/static/style.css", "GET, HEAD"), ("/healthz", "GET, HEAD, OPTIONS")):
        r = requests.request("TRACE", stack.url(path), timeout=10)
        assert r.status_code == 405, (path, r.status_code, r.text[:200])
        assert r.headers["Allow"] == allow, (path, r.headers.get("Allow"))
        assert r.json()["error"]["code"] == "method_not_allowed"


# --- request ids and logs ------------------------------------------------------------------

def test_request_id_propagated_and_logged(stack):
    rid = f"test-{time.time_ns()}"
    r = stack.post("/image-bin", files={"image": ("a.png", synthetic_face(fmt=".png"), "image/png")},
                   headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == rid and r.json()["request_id"] == rid
    recs = stack.request_log(rid)
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["method"] == "POST" and rec["path"] == "/image-bin" and rec["status"] == 200
    assert rec["duration_ms"] > 0 and rec["pid"] in stack.worker_pids()


def test_request_id_generated_by_nginx(stack):
    r = stack.get("/healthz")
    rid = r.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)  # nginx $request_id
    assert stack.request_log(rid)[0]["status"] == 200
    bad = stack.get("/healthz", headers={"X-Request-ID": "bad id\twith junk"})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-ID"])


def test_one_log_line_per_request(stack):
    rids = [f"count-{i}-{time.time_ns()}" for i in range(5)]
    for rid in rids:
        stack.get("/healthz", headers={"X-Request-ID": rid})
    for rid in rids:
        assert len(stack.request_log(rid)) == 1


# --- dashboard and metrics: exact across workers ---------------------------------------------

def _dashboard_counts(stack) -> dict:
    html = stack.get("/dashboard").text
    out = {}
    for key in ("image_64", "image_bin", "translate_api", "translate_form", "errors", "total"):
        m = re.search(rf'<dd id="count-{key}">(\d+)</dd>', html)
        assert m, key
        out[key] = int(m.group(1))
    return out


def test_dashboard_counts_exact_across_workers(stack):
    before = _dashboard_counts(stack)
    img = b64(synthetic_face(120, 90, 11))
    n = 100

    pids_seen = set()

    def one_pid(_):
        r = stack.post("/image-64", json={"image": img})
        assert r.status_code == 200
        return r.headers.get("X-Request-ID")

    with ThreadPoolExecutor(8) as ex:
        rids = list(ex.map(one_pid, range(n)))
    assert len(set(rids)) == n
    for rid in rids:
        pids_seen.update(rec["pid"] for rec in stack.request_log(rid))
    bad = stack.post("/image-64", json={})  # one error
    assert bad.status_code == 400
    after = _dashboard_counts(stack)
    assert after["image_64"] - before["image_64"] == n + 1
    assert after["errors"] - before["errors"] == 1
    assert after["image_bin"] == before["image_bin"]
    # the count is exact although more than one worker served the requests
    assert len(pids_seen) == 2, pids_seen
    html = stack.get("/dashboard").text
    for pid in stack.worker_pids():
        assert f"<td>{pid}</td>" in html
    assert "Uptime" in html and "nose_tracker" in html and "translator" in html


def test_metrics_exposition(stack):
    stack.post("/api/translate", json={"text": "One more."})
    text = stack.get("/metrics").text
    assert "# TYPE http_requests_total counter" in text
    total = sum(float(v) for v in re.findall(r'^http_requests_total\{[^}]*endpoint="image_64"[^}]*\} (\S+)$', text, re.M))
    stats = stack.get("/api/stats").json()
    assert total == stats["metrics"]["counts"]["image_64"]
    assert re.search(r'^http_request_duration_seconds_bucket\{endpoint="translate_api",le="\+Inf"\} [1-9]', text, re.M)
    nose_v = re.escape(version_dir("nose_tracker").name)  # the served version
    assert re.search(r'^model_inference_seconds_count\{model="nose_tracker",version="%s"\} [1-9]' % nose_v, text, re.M)
    assert re.search(r'^model_inference_seconds_count\{model="translator",version="[^"]+"\} [1-9]', text, re.M)
    info_pids = {int(p) for p in re.findall(r'^model_info\{[^}]*model="nose_tracker"[^}]*pid="(\d+)"', text, re.M)}
    assert info_pids == set(stack.worker_pids())


def test_container_healthcheck_over_uwsgi_protocol(stack):
    """The app container's HEALTHCHECK talks the uwsgi protocol straight to uWSGI."""
    import subprocess
    import sys
    from app.runtime.healthcheck import request as uwsgi_get
    status, raw = uwsgi_get(stack.env["APP_SOCKET"], "/healthz")
    assert status == 200 and b'"status":"ok"' in raw
    ok = subprocess.run([sys.executable, "-m", "app", "healthcheck", "--socket", stack.env["APP_SOCKET"],
                         "--path", "/readyz"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dead = subprocess.run([sys.executable, "-m", "app", "healthcheck", "--socket", f"127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert dead.returncode == 1 and "unhealthy" in dead.stdout
