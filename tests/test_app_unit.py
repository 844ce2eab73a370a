"""The Flask app in-process (test client): validation, errors, readiness, pages.

The translator servable's model here is a stub defined in this test file only, so
validation and error paths are tested without loading TensorFlow models; the real
models are exercised by test_e2e.py.
"""
from __future__ import annotations

import base64
import threading

import pytest

from app import create_app
from app.config import Config
from app.servables.translator.model import InputTooLong, Sentence, Translation, split_sentences
from app.serving.registry import ModelRegistry
from conftest import ROOT, synthetic_face


NOSE, TRANSLATOR = "nose_tracker", "translator"


class StubTranslator:
    """Test double of the translator servable's model: upper-cases each sentence (never
    shipped); a question gets confidence 0.2, anything else 0.9; calibrated threshold 0.5."""

    metadata = {"confidence": {"threshold": 0.5}}
    placeholders = False

    def __init__(self):
        self.calls = []

    def translate(self, texts, beam=1):
        self.calls.append((list(texts), beam))
        return [Translation([[Sentence(s, s.upper(), 0.2 if s.endswith("?") else 0.9)
                              for s in split_sentences(line)] for line in t.splitlines()]) for t in texts]

    def cached(self, texts, beam=1):
        return None


def make_app(**env):
    cfg = Config.from_env({"ENABLED_MODELS": "nose_tracker,translator", "MODEL_LOADING": "off",
                           "MAX_BODY_BYTES": "65536", "MAX_IMAGE_PIXELS": "1000000", **env})
    reg = ModelRegistry(cfg)
    return cfg, reg, create_app(cfg, registry=reg)


def stub_translator(reg) -> StubTranslator:
    h = reg.handles[TRANSLATOR]
    h.servable.model, h.status, h.error = StubTranslator(), "ready", None
    return h.servable.model


@pytest.fixture(scope="module")
def loaded():
    cfg, reg, app = make_app()
    reg._load(reg.handles[NOSE])  # the real nose model
    assert reg.handles[NOSE].status == "ready", reg.handles[NOSE].error
    stub_translator(reg)
    return app.test_client(), reg


def test_not_ready_is_503_everywhere():
    _, reg, app = make_app()
    reg.load_all()  # MODEL_LOADING=off
    c = app.test_client()
    assert c.get("/healthz").status_code == 200
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json["error"]["code"] == "not_ready"
    assert r.json["error"]["models"]["translator"]["status"] == "disabled"
    img = base64.b64encode(synthetic_face()).decode()
    assert c.post("/image-64", json={"image": img}).status_code == 503
    r = c.post("/api/translate", json={"text": "hi"})
    assert r.status_code == 503 and r.json["error"]["code"] == "not_ready"
    r = c.post("/result", data={"English": "hello"})
    assert r.status_code == 503 and "not ready" in r.get_data(as_text=True)


def test_background_loading_readyz_turns_200():
    cfg = Config.from_env({"ENABLED_MODELS": "nose_tracker", "MODEL_LOADING": "background"})
    reg = ModelRegistry(cfg)
    gate = threading.Event()
    sv = reg.handles[NOSE].servable
    real = sv.load
    sv.load = lambda: (gate.wait(30), real())[1]
    reg.start_background()
    app = create_app(cfg, registry=reg)
    c = app.test_client()
    assert c.get("/readyz").status_code == 503  # still loading
    gate.set()
    assert reg.wait(60)
    r = c.get("/readyz")
    assert r.status_code == 200 and r.json["models"]["nose_tracker"]["status"] == "ready"


def test_flask_body_limit_413_json(loaded):
    c, _ = loaded
    r = c.post("/image-64", data=b"{" + b" " * 70000 + b"}", content_type="application/json")
    assert r.status_code == 413 and r.json["error"]["code"] == "payload_too_large"
    assert "65536" in r.json["error"]["message"]


def test_translate_batch_one_call(loaded):
    c, reg = loaded
    stub = reg.handles[TRANSLATOR].servable.model
    stub.calls.clear()
    r = c.post("/api/translate", json={"texts": ["a", "b", ""], "beam": 3})
    assert r.status_code == 200
    assert r.json["translations"] == ["A", "B", ""] and r.json["beam"] == 3
    assert stub.calls == [(["a", "b", ""], 3)]  # one batched call


def test_input_too_long_from_translator_is_422(loaded, monkeypatch):
    c, reg = loaded
    def raise_(texts, beam=1):
        raise InputTooLong("sentence too long for the model")

    monkeypatch.setattr(reg.handles[TRANSLATOR].servable.model, "translate", raise_)
    r = c.post("/api/translate", json={"text": "fine length"})
    assert r.status_code == 422 and r.json["error"]["message"] == "sentence too long for the model"


def test_result_page_escapes(loaded):
    c, _ = loaded
    r = c.post("/result", data={"English": "<script>x</script>"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "&lt;SCRIPT&gt;X&lt;/SCRIPT&gt;" in html
    assert "<script>" not in html.lower()


def test_low_confidence_sentences_marked_on_page_and_in_api(loaded):
    c, _ = loaded
    text = "It is fine. Is it?\nYes."
    html = c.post("/result", data={"English": text}).get_data(as_text=True)
    assert ('<p class="text" id="translation" lang="es" aria-describedby="confidence-note">'
            '<span title="Confidence 0.90">IT IS FINE.</span> <mark class="low-confidence" '
            'title="Low confidence (0.20): check this sentence">IS IT?</mark>\n'
            '<span title="Confidence 0.90">YES.</span></p>') in html
    assert "1 highlighted sentence\n    with low confidence (below 0.50)" in html
    r = c.post("/api/translate", json={"text": text}).json
    assert r["translation"] == "IT IS FINE. IS IT?\nYES." and r["confidence"] == 0.2
    assert [(s["translation"], s["low_confidence"]) for s in r["sentences"][0]] == [
        ("IT IS FINE.", False), ("IS IT?", True), ("YES.", False)]
    assert r["low_confidence_threshold"] == 0.5
    plain = c.post("/result", data={"English": "All good."}).get_data(as_text=True)
    assert "confidence-note" not in plain and "<mark" not in plain


def test_low_confidence_threshold_setting():
    _, reg, app = make_app(TRANSLATE_LOW_CONFIDENCE="0.95")
    stub_translator(reg)
    r = app.test_client().post("/api/translate", json={"text": "It is fine."}).json
    assert r["low_confidence_threshold"] == 0.95 and r["sentences"][0][0]["low_confidence"] is True
    for bad in ("1.5", "high"):  # a bad setting fails the model with a clear reason, not the app
        _, reg, _ = make_app(TRANSLATE_LOW_CONFIDENCE=bad)
        h = reg.handles[TRANSLATOR]
        assert h.status == "failed" and "TRANSLATE_LOW_CONFIDENCE" in h.error


def test_request_id_echo_and_generation(loaded):
    c, _ = loaded
    assert c.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    rid = c.get("/healthz", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert len(rid) == 32 and rid != "x" * 500


def test_json_404_405_for_api_html_for_pages(loaded):
    c, _ = loaded
    r = c.get("/api/unknown")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    r = c.delete("/api/translate")
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"
    r = c.put("/result")
    assert r.status_code == 405 and r.content_type.startswith("text/html")
    r = c.get("/elsewhere", headers={"Accept": "application/json"})
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"


def test_unhandled_exception_is_json_500(loaded, monkeypatch):
    c, reg = loaded

    def broken(blob):
        raise RuntimeError("boom")

    monkeypatch.setattr(reg.handles[NOSE].servable.model, "rows", broken)
    r = c.post("/image-64", json={"image": base64.b64encode(synthetic_face()).decode()})
    assert r.status_code == 500 and r.json["error"] == {"code": "internal_error", "message": "internal server error",
                                                        "request_id": r.headers["X-Request-ID"]}


def test_dashboard_renders_single_process(loaded):
    c, _ = loaded
    before = c.get("/api/stats").json["metrics"]["counts"].get("image_bin", 0)
    c.post("/image-bin", data={"image": (__import__("io").BytesIO(synthetic_face()), "f.jpg")},
           content_type="multipart/form-data")
    after = c.get("/api/stats").json["metrics"]["counts"]["image_bin"]
    assert after == before + 1
    html = c.get("/dashboard").get_data(as_text=True)
    assert f'<dd id="count-image_bin">{after}</dd>' in html


def test_too_much_text_in_one_request_is_422(loaded):
    c, _ = loaded
    r = c.post("/api/translate", json={"texts": ["x" * 5000] * 5})  # 25000 > MAX_TOTAL_CHARS 20000
    assert r.status_code == 422 and r.json["error"]["code"] == "too_much_text"


def test_busy_translator_is_503_with_retry_after():
    cfg, reg, app = make_app()
    stub_translator(reg)
    h = reg.handles[TRANSLATOR]
    h.servable.wait_timeout = 0.2
    c = app.test_client()
    assert c.post("/api/translate", json={"text": "free"}).status_code == 200
    assert h.lock.acquire(timeout=1)  # another request is translating
    try:
        r = c.post("/api/translate", json={"text": "queued"})
        assert r.status_code == 503 and r.json["error"]["code"] == "busy"
        assert r.headers["Retry-After"] == "5"
        r = c.post("/result", data={"English": "queued"})
        assert r.status_code == 503 and "busy" in r.get_data(as_text=True)
    finally:
        h.lock.release()
    assert c.post("/api/translate", json={"text": "free again"}).status_code == 200


def test_json_is_utf8_not_ascii_escaped(loaded):
    c, _ = loaded
    r = c.post("/api/translate", json={"text": "año señor"})
    assert r.status_code == 200
    assert "AÑO SEÑOR".encode() in r.data and b"\\u" not in r.data


def test_metrics_prune_live_gauges_of_dead_processes(tmp_path, monkeypatch):
    """Live-gauge files of a pid that no longer runs are dropped; the caller's own, a live
    process's and every counter file are kept."""
    import os
    import subprocess
    import sys

    from app.serving import metrics
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = [f"gauge_liveall_{gone.pid}.db", f"gauge_livesum_{gone.pid}.db", f"counter_{gone.pid}.db",
                 f"gauge_liveall_{alive.pid}.db", f"gauge_liveall_{os.getpid()}.db", f"gauge_all_{gone.pid}.db"]
        for n in names:
            (tmp_path / n).write_bytes(b"")
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        assert metrics.prune_dead_processes() == [gone.pid]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])  # counters, 'all' gauges kept
        assert metrics.prune_dead_processes() == []
    finally:
        alive.kill()
        alive.wait()
