"""app/servables/nose_tracker: contract.py: the preprocessing contract, post-processing, thread safety (real model)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from app.servables.nose_tracker import model as nose
from app.serving.repository import version_dir  # noqa: E402
from conftest import ROOT, shared_faces, synthetic_face

MODEL_DIR = version_dir("nose_tracker")


@pytest.fixture(scope="module")
def tracker():
    if not (MODEL_DIR / nose.MODEL_FILE).exists():
        pytest.fail(f"{MODEL_DIR / nose.MODEL_FILE} is missing")
    return nose.NoseTracker.load(str(MODEL_DIR))


def test_preprocess_is_exactly_the_contract():
    img = np.random.default_rng(0).integers(0, 256, (57, 91, 3), dtype=np.uint8)
    expected = np.transpose(cv2.resize(img, (112, 112)) / 255, [2, 0, 1])[None].astype(np.float32)
    blob = nose.preprocess(img)
    assert blob.dtype == np.float32 and blob.shape == (1, 3, 112, 112)
    assert np.array_equal(blob, expected)
    assert blob[0, 0].mean() == pytest.approx(cv2.resize(img, (112, 112))[:, :, 0].mean() / 255, rel=1e-5)


def test_postprocess_pixels_and_clipping():
    assert nose.postprocess([0.25, 0.5, 9, 9], 400, 200) == {
        "x": 0.25, "y": 0.5, "x_px": 100.0, "y_px": 100.0, "width": 400, "height": 200}
    p = nose.postprocess([-0.1, 1.3], 10, 10)
    assert (p["x"], p["y"], p["x_px"], p["y_px"]) == (0.0, 1.0, 0.0, 10.0)


def test_metadata(tracker):
    import hashlib
    md = tracker.metadata
    assert md["sha256"] == hashlib.sha256((MODEL_DIR / nose.MODEL_FILE).read_bytes()).hexdigest()
    assert md["version"] and md["load_ms"] >= 0 and md["name"] == "nose_tracker"


def test_predict_ranges(tracker):
    img = cv2.imdecode(np.frombuffer(synthetic_face(333, 222), np.uint8), cv2.IMREAD_COLOR)
    p = tracker.predict(img)
    assert 0 <= p.x <= 1 and 0 <= p.y <= 1
    assert (p.width, p.height) == (333, 222)
    assert p.x_px == pytest.approx(p.x * 333, abs=0.01)
    with pytest.raises(ValueError):
        tracker.predict(np.zeros((10, 10), np.uint8))


def test_real_faces_inside_face_box(tracker):
    for face in shared_faces(4):
        img = cv2.imread(str(face["file"]))
        p = tracker.predict(img)
        assert float(face["face_left"]) <= p.x_px <= float(face["face_right"]), face["path"]
        assert float(face["face_top"]) <= p.y_px <= float(face["face_bottom"]), face["path"]


def test_threads_share_one_net_safely(tracker):
    imgs = [cv2.imdecode(np.frombuffer(synthetic_face(100 + 13 * i, 90 + 7 * i, seed=i), np.uint8),
                         cv2.IMREAD_COLOR) for i in range(8)]
    sequential = [(tracker.predict(im).x, tracker.predict(im).y) for im in imgs]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda i: (tracker.predict(imgs[i % 8]).x, tracker.predict(imgs[i % 8]).y), range(64)))
    assert got == [sequential[i % 8] for i in range(64)]


def test_missing_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        nose.NoseTracker.load(str(tmp_path))
