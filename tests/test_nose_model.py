"""Tests for the shipped nose tracker (models/nose_tracker/<version>/nose_tracker.pb) and its export path.

Fast (< ~30 s): loads the .pb with OpenCV, checks the server contract, batch == one-by-one,
accuracy on a fixed few dozen held-out shared images (skipped when ../shared is absent),
and that a freshly built tiny Keras model survives the export function.
"""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from app.serving.repository import version_dir

MODEL_DIR = version_dir("nose_tracker")
PB = MODEL_DIR / "nose_tracker.pb"

# Held-out accuracy bounds for the fixed 48-image subset of the TEST split below. Measured on
# the shipped model (v1.4.0): whole images (per contract) mean NME 0.046 with per-image sd
# 0.024, i.e. standard error ~0.0035 (test split: 0.043 over 1,202 images); the same faces
# framed as 640x480 photos (data.frame_photo) 0.064, sd 0.050, SE ~0.007 (test split: 0.059).
# The whole-image bound is the measurement + ~4 SE: a retrain that lands on a slightly
# different model passes (v1.3.0 scores 0.053 here, v1.2.0 0.057), a broken one (floor ~0.46,
# a 4-minute model ~0.36) fails loudly. The framed bound is the measurement + 2 SE (the subset
# is fixed, so a retrain of the same recipe moves less than the per-image spread): v1.3.0
# passes (0.069), v1.2.0, trained without framed samples, fails (0.091).
SUBSET_NME_BOUND = 0.060
FRAMED_NME_BOUND = 0.080
N_SUBSET = 48


# the server's preprocessing: its one copy (test_nose_unit.py checks it against the written contract)
from app.servables.nose_tracker.contract import preprocess as contract_blob  # noqa: E402


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
    from training.nose_tracker.data import data_dir, load_labels, split_indices
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


def test_accuracy_on_shared_subset_framed_640x480(net):
    """The same faces as 640x480 uploads (edge pixels around the photo), squashed to 112x112."""
    from training.nose_tracker.data import frame_photo
    root, lab = _shared_subset()
    nme = []
    for p, pts in zip(lab["path"], lab["pts"]):
        img, pts = frame_photo(cv2.imread(str(root / p)), pts, 640, 480)
        pred = _forward(net, contract_blob(img))[0, :2] * [640, 480]
        nme.append(np.linalg.norm(pred - pts[0]) / np.linalg.norm(pts[1] - pts[2]))
    assert np.mean(nme) < FRAMED_NME_BOUND, f"mean NME {np.mean(nme):.4f} on {N_SUBSET} framed held-out images"


def test_export_path_tiny_model(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from training.nose_tracker.export import freeze_keras
    from training.nose_tracker.model import build_tiny_model

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # another test module already ran TF ops in this process (as test_translator.py)
        pass
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


@pytest.mark.parametrize("mode", ["whole", "framed", "crop"])
def test_augmented_targets_follow_the_pixels(mode):
    """Every kind of training sample moves its labels with its pixels: on a synthetic image
    with one coloured dot per landmark, each target lands on a dot of its point's colour,
    or, in a mirrored sample, on the dot of the point it was swapped with (left/right)."""
    from training.nose_tracker.data import FLIP_PERM, Augmenter
    colours = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0], [255, 255, 0], [0, 255, 255]], np.uint8)
    h, w = 180, 150
    pts = np.array([[75, 100], [50, 70], [100, 70], [55, 130], [95, 130]], float)
    img = np.full((h, w, 3), 128, np.uint8)
    for c, (x, y) in zip(colours, pts):
        cv2.circle(img, (int(x), int(y)), 7, tuple(int(v) for v in c), -1)
    labels = {"path": np.array(["synthetic"]), "source": np.array(["cuhk_net"]), "wh": np.array([[w, h]], float),
              "box": np.array([[30, 40, 120, 150]], float), "pts": pts[None]}
    cache = {"imgs": [img], "scales": np.array([[1.0, 1.0]]),
             "whole": cv2.resize(img, (112, 112))[None]}
    aug = Augmenter(labels, cache, [0], seed=3, p_whole=0.0 if mode == "crop" else 1.0,
                    p_framed=1.0 if mode == "framed" else 0.0)
    aug._degrade = lambda im: None  # blur/JPEG would smear the dots
    x, _, y = aug.batch(24)
    checked, flipped = 0, 0
    for k in range(len(x)):
        q = y[k].reshape(5, 2) * 112
        centres = {}
        for j, c in enumerate(colours):
            d = np.abs(x[k].astype(int) - c.astype(int)).sum(-1)
            ys, xs = np.nonzero(d < 60)
            if len(xs) >= 10:  # else the dot left the crop
                centres[j] = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        errs = {name: max((np.linalg.norm(centres[perm[j]] - q[j]) for j in range(5) if perm[j] in centres),
                          default=0.0)
                for name, perm in (("plain", list(range(5))), ("mirrored", FLIP_PERM))}
        best = min(errs, key=errs.get)
        assert errs[best] < 1.5, (mode, k, errs, centres, q)
        checked += len(centres)
        flipped += best == "mirrored"
    assert checked >= 60 and 0 < flipped < len(x)


def test_fused_batch_norm_trains_like_keras_batch_norm():
    """train.py's FusedBatchNorm (TF's fused kernel, 1.5x faster steps) must give the stock
    layer's outputs and moving statistics, so the exported graph means what training saw."""
    pytest.importorskip("tensorflow")
    from keras import layers
    from training.nose_tracker.model import FusedBatchNorm

    rng = np.random.default_rng(3)
    x = (rng.normal(2.0, 3.0, (4, 8, 8, 6))).astype(np.float32)
    ref, fused = layers.BatchNormalization(momentum=0.9), FusedBatchNorm(momentum=0.9)
    ref.build(x.shape), fused.build(x.shape)
    w = [rng.normal(1, 0.2, 6), rng.normal(0, 0.2, 6), rng.normal(0, 1, 6), rng.random(6) + 0.5]
    ref.set_weights([v.astype(np.float32) for v in w]), fused.set_weights([v.astype(np.float32) for v in w])
    np.testing.assert_allclose(fused(x, training=True).numpy(), ref(x, training=True).numpy(), atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
    # the fused kernel feeds the moving variance the unbiased batch variance (n = 256 here)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=5e-3)
    np.testing.assert_allclose(fused(x, training=False).numpy(), ref(x, training=False).numpy(), rtol=5e-3, atol=1e-3)


def test_training_graph_weights_move_to_the_export_graph():
    """The training graph (Reshape heads) and the export graph (one-hot conv heads) compute
    the same function once weights are transferred by layer name."""
    pytest.importorskip("tensorflow")
    from training.nose_tracker.model import build, transfer_weights

    trained, export = build(0.5, for_training=True), build(0.5)
    rng = np.random.default_rng(4)
    for v in trained.weights:
        if v.trainable or "moving" in v.path:
            val = rng.normal(0, 0.2, v.shape)
            v.assign((np.abs(val) + 0.5 if "variance" in v.path else val).astype(np.float32))
    assert transfer_weights(trained, export) > 0
    x = rng.random((2, 112, 112, 3), dtype=np.float32)
    np.testing.assert_allclose(export(x, training=False).numpy(), trained(x, training=False).numpy(), atol=1e-5)
    export.get_layer("pt0_heat").set_weights([np.zeros_like(w) for w in export.get_layer("pt0_heat").get_weights()])
    assert not np.allclose(export(x, training=False).numpy(), trained(x, training=False).numpy(), atol=1e-5)


def test_warm_start_rebuilds_the_shipped_graph_in_keras():
    """train.py --init: the shipped graph's weights go back into the Keras training graph, whose
    inference pass then is the shipped model (OpenCV on the .pb)."""
    pytest.importorskip("tensorflow")
    from training.nose_tracker.model import build
    from training.warm_start import warm_start

    info = json.loads((MODEL_DIR / "metadata.json").read_text())["training"]
    rng = np.random.default_rng(5)
    calib = cv2.GaussianBlur(rng.random((8 * 112, 112, 3)).astype(np.float32), (0, 0), 3).reshape(8, 112, 112, 3)
    check = rng.random((1, 112, 112, 3)).astype(np.float32)
    model = build(info.get("width", 1.0), info.get("deep", 128), for_training=True)
    assert warm_start(model, PB, calib, check) < 1e-4
