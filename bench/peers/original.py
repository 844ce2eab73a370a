"""Peer 1: the ORIGINAL design as first written: one Flask process holding both models
behind ONE global lock, served by Flask's built-in threaded server or gevent's WSGIServer.

    .venv/bin/python bench/peers/original.py --server flask|gevent --port 5000

Same models, same model code (app.nose / app.translator / app.imaging, full-size decode),
same endpoints and input formats as our server: /image-bin, /image-64, /api/translate,
/result (HTML form) and /readyz. As one process it may use both cores: TensorFlow intra-op
and OpenCV threads default to the number of cores (ORIGINAL_THREADS overrides).
"""
from __future__ import annotations

import argparse
import base64
import html
import os
import threading

from app.serving.repository import version_dir


def build_app(threads: int, cache_size: int):
    import cv2
    import tensorflow as tf
    from flask import Flask, jsonify, request

    cv2.setNumThreads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from app.serving.imaging import decode_image
    from app.servables.nose_tracker.model import NoseTracker
    from app.servables.translator.model import Translator

    nose = NoseTracker.load(str(version_dir("nose_tracker")))
    translator = Translator.load(version_dir("translator"), cache_size=cache_size)
    nose.warmup()
    translator.warmup()
    lock = threading.Lock()  # the one global model lock
    app = Flask("original")

    def nose_answer(data: bytes):
        with lock:
            img = decode_image(data, 40_000_000)
            return jsonify(nose.predict(img).as_dict())

    @app.post("/image-bin")
    def image_bin():
        return nose_answer(request.files["image"].read())

    @app.post("/image-64")
    def image_64():
        return nose_answer(base64.b64decode(request.get_json()["image"]))

    @app.post("/api/translate")
    def api_translate():
        p = request.get_json()
        with lock:
            out = translator.translate([p["text"]], beam=int(p.get("beam", 1)))
        return jsonify({"translation": out[0], "translations": out})

    @app.post("/result")
    def result():
        text = request.form["English"]
        with lock:
            out = translator.translate([text], beam=1)[0]
        return (f"<!doctype html><title>Translation</title><p>{html.escape(text)}</p>"
                f"<p>{html.escape(out)}</p>")

    @app.get("/readyz")
    def readyz():
        return jsonify({"status": "ready", "pid": os.getpid()})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=("flask", "gevent"), default="flask")
    ap.add_argument("--port", type=int, default=5000)
    a = ap.parse_args()
    threads = int(os.environ.get("ORIGINAL_THREADS", str(os.cpu_count() or 1)))
    app = build_app(threads, int(os.environ.get("TRANSLATE_CACHE_SIZE", "4096")))
    if a.server == "flask":
        app.run(host="127.0.0.1", port=a.port, threaded=True)
    else:
        from gevent.pywsgi import WSGIServer
        WSGIServer(("127.0.0.1", a.port), app).serve_forever()  # default access log, like Flask's


if __name__ == "__main__":
    main()
