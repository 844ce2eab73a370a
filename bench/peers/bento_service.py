"""Peer 2: BentoML (current class API) serving the SAME models with the same input formats.

    .venv-bench/bin/bentoml serve bench.peers.bento_service:NoseAndTranslator --port 3000
    (bench/run.py starts it; BENTO_WORKERS / BENTO_THREADS set the service's workers/threads)

Endpoints (request formats identical to our server's):
  POST /image-bin      multipart/form-data, file field ``image``
  POST /image-64       JSON {"image": "<base64>"}
  POST /api/translate  JSON {"text": "..."} (greedy unless "beam" is given)

Each worker loads the nose .pb with cv2.dnn and the translator with the project's own
model code (app.nose / app.translator / app.imaging), TF and OpenCV at 1 thread per worker
like our workers, and the translator's LRU cache sized by TRANSLATE_CACHE_SIZE.
"""
from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import bentoml

# app/ comes from the repository: bentoml serve runs from its root (bench/run.py: cwd and
# PYTHONPATH), in the separate .venv-bench where the project is not installed
from app.serving.repository import version_dir

WORKERS = int(os.environ.get("BENTO_WORKERS", "2"))
THREADS = int(os.environ.get("BENTO_THREADS", "4"))


@bentoml.service(name="nose_and_translator", workers=WORKERS, threads=THREADS,
                 traffic={"timeout": 120})
class NoseAndTranslator:
    def __init__(self) -> None:
        import cv2
        import tensorflow as tf
        cv2.setNumThreads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from app.servables.nose_tracker.model import NoseTracker
        from app.servables.translator.model import Translator
        self.nose = NoseTracker.load(str(version_dir("nose_tracker")))
        self.translator = Translator.load(version_dir("translator"),
                                          cache_size=int(os.environ.get("TRANSLATE_CACHE_SIZE", "4096")))
        self.nose.warmup()
        self.translator.warmup()
        self.lock = threading.Lock()  # one translation at a time per worker, like ours without batching

    def _nose(self, data: bytes) -> dict:
        from app.serving.imaging import decode_image
        img = decode_image(data, 40_000_000)
        p = self.nose.predict(img)
        return {**p.as_dict(), "model_version": self.nose.version}

    @bentoml.api(route="/image-bin")
    def image_bin(self, image: Path) -> dict:
        return self._nose(Path(image).read_bytes())

    @bentoml.api(route="/image-64")
    def image_64(self, image: str) -> dict:
        return self._nose(base64.b64decode(image, validate=True))

    @bentoml.api(route="/api/translate")
    def translate(self, text: str, beam: int = 1) -> dict:
        with self.lock:
            out = self.translator.translate([text], beam=beam)
        return {"translation": out[0], "translations": out, "beam": beam,
                "model_version": self.translator.metadata.get("version")}
