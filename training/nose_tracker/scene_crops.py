"""Landmark-net training samples as the face pipeline makes them: composed scenes (the face
detector's ``SceneMaker``: 1-6 pasted faces, neighbours, occluders, photo backgrounds,
lighting, blur, JPEG), the shipped face detector run on each (OpenCV, the server's
``preprocess``/``decode``), and every detected true face cropped with the server's own
``crop_blob`` (``CROP_MARGIN`` x the *detected* box). The targets are the face's true points in
the crop. So the net learns the crops it is given in production: the detector's box offsets,
a neighbour's face at the edge, a hand over the mouth.

Training split only (``SceneMaker`` over the training rows, its own seed): the dev and test
scene sets (``training/face_detector/evaluate.py``, seeds 1001/2002) use only their own
split's faces. The pool is built once before training (``build_pool``, two processes, a few
minutes) and cached under ``$NOSE_CACHE_DIR``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from training.nose_tracker.data import DEFAULT_CACHE, SIZE

#: canvases the scenes are drawn on (width, height), uniformly: webcam/phone frames
CANVASES = [(640, 480), (480, 640), (640, 360), (512, 512)]


def _crops_of_scene(pipe, img, gts, pts, min_score, margin):
    """(uint8 crops (k, 112, 112, 3), targets (k, 10) in [0, 1] of the crop) of the true faces a
    detection matched (IoU >= 0.5), cropped around the detection's box."""
    from app.servables.nose_tracker.faces import crop_blob
    from training.face_detector.evaluate import match, visible
    boxes, sc = pipe.detect(img, min_score)
    if not len(boxes) or not len(gts):
        return np.zeros((0, SIZE, SIZE, 3), np.uint8), np.zeros((0, 10), np.float32)
    clipped, vis = visible(gts, (img.shape[1], img.shape[0]))
    gt_det, _, _ = match(boxes, sc, clipped, min_score)
    xs, ys = [], []
    for g in np.flatnonzero((gt_det >= 0) & (vis >= 0.5)):
        blob, inv = crop_blob(img, boxes[gt_det[g]], 1.0, margin)
        xs.append(np.rint(np.transpose(blob[0], [1, 2, 0]) * 255).astype(np.uint8))
        q = (pts[g] - inv[:, 2]) / inv[0, 0] / SIZE  # image pixels -> crop, normalised
        ys.append(q.reshape(10).astype(np.float32))
    if not xs:
        return np.zeros((0, SIZE, SIZE, 3), np.uint8), np.zeros((0, 10), np.float32)
    return np.stack(xs), np.stack(ys)


def _worker(args):
    root, det_pb, min_score, margin, n_scenes, seed, part = args
    import cv2
    cv2.setNumThreads(1)
    from training.face_detector import data as D
    from training.face_detector.evaluate import Pipeline
    labels = D.load_labels(Path(root) / "labels.csv")
    split = D.split_indices(labels["source"], seed=0)
    tr = split[part]
    imgs, scales = D.load_images(Path(root), labels, tr, 400)
    maker = D.SceneMaker(labels, imgs, scales, tr, seed=seed)
    pipe = Pipeline(det_pb)
    xs, ys = [], []
    for _ in range(n_scenes):
        W, H = CANVASES[int(maker.rng.integers(len(CANVASES)))]
        img, gts, pts = maker.scene(W, H, min_w=24.0)
        x, y = _crops_of_scene(pipe, img, gts, pts, min_score, margin)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def build_pool(root: Path, det_pb: Path, n_scenes: int, seed: int = 7, workers: int = 2,
               cache_dir: Path = DEFAULT_CACHE, part: str = "train") -> dict:
    """{"x": uint8 (N, 112, 112, 3), "y": float32 (N, 10)} from ``n_scenes`` scenes of the
    ``part`` split (training; "dev" for the training's progress check), ``workers`` processes
    each with its own seed, cached by its arguments and the detector's bytes."""
    from app.servables.nose_tracker.faces import CROP_MARGIN
    det_pb = Path(det_pb)
    meta = json_meta(det_pb)
    key = hashlib.sha1(f"{n_scenes} {seed} {workers} {CROP_MARGIN} {meta['min_score']} {CANVASES} {part}".encode()
                       + det_pb.read_bytes()).hexdigest()[:12]
    cache_dir.mkdir(parents=True, exist_ok=True)
    f = cache_dir / f"scene_crops_{key}.pkl"
    if f.exists():
        with open(f, "rb") as fh:
            return pickle.load(fh)
    t0 = time.time()
    per = [n_scenes // workers + (k < n_scenes % workers) for k in range(workers)]
    jobs = [(str(root), str(det_pb), meta["min_score"], CROP_MARGIN, n, seed * 1000 + k, part) for k, n in enumerate(per)]
    # spawn: the caller may have TF loaded (its threads do not survive a fork)
    import multiprocessing as mp
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        parts = list(ex.map(_worker, jobs))
    pool = {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts]),
            "scenes": n_scenes, "detector": f"{det_pb.parent.name} (min_score {meta['min_score']})"}
    with open(f, "wb") as fh:
        pickle.dump(pool, fh, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"  scene crops: {len(pool['y'])} faces from {n_scenes} scenes in {time.time() - t0:.0f}s", flush=True)
    return pool


def json_meta(det_pb: Path) -> dict:
    import json
    return json.loads((Path(det_pb).parent / "metadata.json").read_text())


class PoolSampler:
    """Draws training samples from a scene-crop pool: a mild affine jitter (the detector's box
    varies a little from frame to frame), horizontal flips; colour and degradation as the
    other samples (``Augmenter``'s)."""

    def __init__(self, pool: dict, seed: int = 0):
        self.x, self.y = pool["x"], pool["y"]
        self.rng = np.random.default_rng(seed)

    def sample(self, out: np.ndarray) -> np.ndarray:
        """Writes one crop into ``out`` and returns its (5, 2) targets in [0, 1]."""
        import cv2
        rng = self.rng
        i = int(rng.integers(len(self.y)))
        q = self.y[i].reshape(5, 2).astype(np.float64)
        if rng.random() < 0.5:
            out[:] = self.x[i]
            return q
        ang = rng.normal(0, 4)
        s = np.exp(rng.normal(0, 0.06))
        M = cv2.getRotationMatrix2D((SIZE / 2 - 0.5, SIZE / 2 - 0.5), float(ang), float(s))
        M[:, 2] += rng.normal(0, 3, 2)
        out[:] = cv2.warpAffine(self.x[i], M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return ((np.c_[q * SIZE - 0.5, np.ones(5)] @ M.T) + 0.5) / SIZE


if __name__ == "__main__":  # time the pool: python -m training.nose_tracker.scene_crops N
    import sys
    from training.nose_tracker.data import data_dir
    from app.serving.repository import version_dir
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    t = time.time()
    p = build_pool(data_dir(None), version_dir("face_detector") / "face_detector.pb", n,
                   cache_dir=Path(os.environ.get("NOSE_CACHE_DIR", "/tmp/nose_scene_probe")))
    print(len(p["y"]), "crops", f"{time.time() - t:.1f}s")
