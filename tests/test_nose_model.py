"""Tests for the shipped nose tracker (models/nose_tracker/nose_tracker.pb) and its export path.

Fast (< ~30 s): loads the .pb with OpenCV, checks the server contract, batch == one-by-one,
accuracy on a fixed few dozen held-out shared images (skipped when ../shared is absent),
and that a freshly built tiny Keras model survives the export function.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training" / "nose_tracker"))

MODEL_DIR = REPO / "models" / "nose_tracker"
PB = MODEL_DIR / "nose_tracker.pb"

# Held-out accuracy bound for the fixed 48-image subset of the TEST split below (whole
# image, per contract).  Measured on the shipped model (v1.2.0): test-split mean NME 0.051
# (1202 images), this subset 0.057 with per-image sd 0.044, i.e. standard error ~0.006 for
# 48 images.  0.080 = measured + ~3.5 SE: robust to a retrain landing on a slightly different
# model (the previous, 30-minute v1.1.0 scored 0.059 here), yet a broken model (floor ~0.46,
# the 4-minute early model ~0.36) fails loudly.
SUBSET_NME_BOUND = 0.080
N_SUBSET = 48


def contract_blob(img):
    # the server's preprocessing, verbatim
    return np.transpose(cv2.resize(img, (112, 112)) / 255, [2, 0, 1])[None].astype(np.float32)


@pytest.fixture(scope="module")
def net():
    cv2.setNumThreads(1)
    assert PB.exists(), f"{PB} missing"
    return cv2.dnn.readNetFromTensorflow(str(PB))


def _forward(net, blob):
    net.setInput(blob)
    return np.asarray(net.forward()).reshape(blob.shape[0], -1)


def test_pb_size_and_metadata():
    assert PB.stat().st_size < 5 * 1024 * 1024
    meta = json.loads((MODEL_DIR / "metadata.json").read_text())
    for k in ("name", "version", "sha256", "input", "output", "metrics"):
        assert k in meta
    assert meta["sha256"] == hashlib.sha256(PB.read_bytes()).hexdigest()
    assert meta["input"]["shape"] == [1, 3, 112, 112]


def test_contract_single_image(net):
    rng = np.random.default_rng(0)
    # a synthetic "face-like" image of odd size, through the exact server preprocessing
    img = rng.integers(0, 256, (300, 240, 3), dtype=np.uint8)
    blob = contract_blob(img)
    assert blob.shape == (1, 3, 112, 112) and blob.dtype == np.float32
    out = _forward(net, blob)
    assert out.shape[0] == 1 and out.shape[1] >= 2
    assert out.shape[1] == 10
    x, y = out[0, :2]
    assert 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


def test_batch_equals_one_by_one(net):
    rng = np.random.default_rng(1)
    blobs = rng.random((5, 3, 112, 112), dtype=np.float32)
    batched = _forward(net, blobs)
    single = np.concatenate([_forward(net, blobs[i:i + 1]) for i in range(5)])
    assert batched.shape == (5, 10)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def _shared_subset():
    from data import data_dir, load_labels, split_indices
    root = data_dir()
    if not (root / "labels.csv").exists():
        pytest.skip(f"shared nose data not found at {root} (set NOSE_DATA_DIR); skipping accuracy test")
    labels = load_labels(root / "labels.csv")
    test_idx = split_indices(labels["source"], seed=0)["test"]
    idx = test_idx[np.linspace(0, len(test_idx) - 1, N_SUBSET).astype(int)]  # both sources
    return root, {k: v[idx] for k, v in labels.items()}


def test_accuracy_on_shared_subset(net):
    root, lab = _shared_subset()
    blobs = np.concatenate([contract_blob(cv2.imread(str(root / p))) for p in lab["path"]])
    pred = _forward(net, blobs)[:, :2]
    px = np.linalg.norm(pred * lab["wh"] - lab["pts"][:, 0], axis=1)
    iod = np.linalg.norm(lab["pts"][:, 1] - lab["pts"][:, 2], axis=1)
    nme = px / iod
    assert nme.mean() < SUBSET_NME_BOUND, f"mean NME {nme.mean():.4f} on {N_SUBSET} held-out images"
    assert np.all((pred >= 0) & (pred <= 1))


def test_export_path_tiny_model(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from export import freeze_keras
    from model import build_tiny_model

    tf.config.threading.set_intra_op_parallelism_threads(1)
    m = build_tiny_model()
    rng = np.random.default_rng(2)
    # non-trivial weights and BN statistics so every folded constant matters
    for v in m.weights:
        val = rng.normal(0, 0.3, v.shape).astype(np.float32)
        if "variance" in v.path:
            val = np.abs(val) + 0.5
        v.assign(val)
    pb = freeze_keras(m, tmp_path / "tiny.pb")
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    x = rng.random((3, 112, 112, 3), dtype=np.float32)
    k = m(x, training=False).numpy()
    o = _forward(net, np.ascontiguousarray(np.transpose(x, [0, 3, 1, 2])))
    assert o.shape == k.shape
    np.testing.assert_allclose(o, k, atol=1e-4)
    o1 = _forward(net, np.ascontiguousarray(np.transpose(x[:1], [0, 3, 1, 2])))
    np.testing.assert_allclose(o1, k[:1], atol=1e-4)
