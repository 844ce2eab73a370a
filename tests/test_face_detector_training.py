"""The face detector's training code: a shipped frozen graph's weights go back into Keras
(train.py --init) so that a training continues the shipped model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PB = ROOT / "models" / "face_detector" / "1.0.0" / "face_detector.pb"


def test_warm_start_rebuilds_the_shipped_graph_in_keras():
    pytest.importorskip("tensorflow")
    import cv2
    from keras import layers
    from training.face_detector.model import build
    from training.warm_start import warm_start

    rng = np.random.default_rng(7)
    # smooth random images (a face-free scene): calibration batch and a different check image
    calib = cv2.GaussianBlur(rng.random((6, 96, 128, 3)).astype(np.float32).reshape(6 * 96, 128, 3),
                             (0, 0), 3).reshape(6, 96, 128, 3)
    check = rng.random((1, 64, 96, 3)).astype(np.float32)
    model = build(1.0, for_training=True)
    assert warm_start(model, PB, calib, check) < 1e-4  # Keras inference == OpenCV on the .pb

    # each BatchNorm's moving statistics are those of its input on the calibration images,
    # so a training pass (batch statistics) starts where the shipped model is
    import keras
    bns = [la for la in model.layers if isinstance(la, layers.BatchNormalization)]
    acts = keras.Model(model.input, [bn.input for bn in bns])(calib, training=False)
    for bn, a in zip(bns, acts):
        a = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
        np.testing.assert_allclose(bn.moving_mean.numpy(), a.mean(0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), a.var(0), rtol=1e-3, atol=1e-5)
    # a training pass on the calibration batch (its own statistics) gives the inference pass
    np.testing.assert_allclose(model(calib, training=True).numpy(), model(calib, training=False).numpy(),
                               atol=2e-3)
