"""Data loading, split, in-memory cache and augmentation for the nose tracker.

Coordinates convention: labels are pixel coordinates with the origin at the image's
top-left *corner* (x = W is the right edge), so the normalised target is simply
x / W, y / H.  cv2.resize preserves this exactly; for cv2.warpAffine (which works on
pixel-centre indices) we shift by 0.5 px before/after the transform.

Point order everywhere: nose, left eye, right eye, left mouth, right mouth
(left/right as seen in the image) -> 10 values (x, y) per sample.
"""
from __future__ import annotations

import csv
import os
import pickle
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nose"
DEFAULT_CACHE = Path(os.environ.get("NOSE_CACHE_DIR", "/tmp/nose_tracker_cache"))
SIZE = 112
POINTS = ["nose", "leye", "reye", "lmouth", "rmouth"]
# index permutation of the 5 points under a horizontal flip
FLIP_PERM = [0, 2, 1, 4, 3]
CACHE_MAX_SIDE = 224  # decoded images are cached with max side <= this


def data_dir(arg: str | None = None) -> Path:
    """CLI arg > $NOSE_DATA_DIR > ../shared/data/nose (relative to the repo)."""
    return Path(arg or os.environ.get("NOSE_DATA_DIR") or DEFAULT_DATA)


def load_labels(csv_path: Path) -> dict:
    """Read a labels CSV in the shared format. Returns dict of numpy arrays."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    pts = np.array([[[float(r[p + "_x"]), float(r[p + "_y"])] for p in POINTS] for r in rows],
                   dtype=np.float64)
    box = np.array([[float(r["face_left"]), float(r["face_top"]), float(r["face_right"]),
                     float(r["face_bottom"])] for r in rows], dtype=np.float64)
    wh = np.array([[float(r["width"]), float(r["height"])] for r in rows], dtype=np.float64)
    return {
        "path": np.array([r["path"] for r in rows]),
        "source": np.array([r.get("source", "unknown") for r in rows]),
        "wh": wh,
        "box": box,
        "pts": pts,  # (N, 5, 2) pixel coords
    }


def nose_below_eyeline(pts: np.ndarray) -> np.ndarray:
    """Signed distance of the nose below the eye line, in inter-ocular units."""
    le, re, n = pts[:, 1], pts[:, 2], pts[:, 0]
    v = re - le
    iod = np.linalg.norm(v, axis=1)
    normal = np.stack([-v[:, 1], v[:, 0]], 1) / np.maximum(iod, 1e-6)[:, None]
    return ((n - (le + re) / 2) * normal).sum(1) / np.maximum(iod, 1e-6)


def head_turn(pts: np.ndarray) -> np.ndarray:
    """Head-turn proxy: the nose's horizontal offset from the eye midpoint, in inter-ocular
    distances (0 = frontal; > 0.3 = clearly turned, where the model fails most)."""
    le, re, n = pts[:, 1], pts[:, 2], pts[:, 0]
    iod = np.linalg.norm(re - le, axis=1)
    return np.abs(n[:, 0] - (le[:, 0] + re[:, 0]) / 2) / np.maximum(iod, 1e-6)


def split_indices(sources: np.ndarray, seed: int = 0, frac=(0.8, 0.1, 0.1)):
    """Split by image (one row per image), stratified by source. Returns dict of index arrays."""
    rng = np.random.default_rng(seed)
    out = {"train": [], "dev": [], "test": []}
    for s in sorted(set(sources.tolist())):
        idx = np.flatnonzero(sources == s)
        idx = idx[rng.permutation(len(idx))]
        n_tr = int(round(frac[0] * len(idx)))
        n_dev = int(round(frac[1] * len(idx)))
        out["train"].append(idx[:n_tr])
        out["dev"].append(idx[n_tr:n_tr + n_dev])
        out["test"].append(idx[n_tr + n_dev:])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def contract_blob(img: np.ndarray) -> np.ndarray:
    """The server's exact preprocessing (the one copy: app/servables/nose_tracker/contract.py):
    whole image -> 1x3x112x112 float32 BGR/255 NCHW."""
    from app.servables.nose_tracker.contract import preprocess
    return preprocess(img)


def frame_photo(img: np.ndarray, pts: np.ndarray, width: int = 640, height: int = 480):
    """The image scaled to fit a width x height frame and centred in it, the rest filled
    with its edge pixels (a face photo as a 640x480 upload); the landmarks follow."""
    h, w = img.shape[:2]
    s = min(height / h, width / w)
    nw, nh = int(round(w * s)), int(round(h * s))
    im = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
    left, top = (width - nw) // 2, (height - nh) // 2
    im = cv2.copyMakeBorder(im, top, height - nh - top, left, width - nw - left, cv2.BORDER_REPLICATE)
    return im, pts * [nw / w, nh / h] + [left, top]


def load_cache(root: Path, labels: dict, cache_dir: Path = DEFAULT_CACHE, verbose=True):
    """Decode every image once and keep (a) a copy with max side <= 224 for crops and
    (b) the whole image resized to 112x112 exactly as the server does.  Pickled to
    cache_dir (outside the repo; never commit it)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    import hashlib
    key = "cache_%s.pkl" % hashlib.sha1("\n".join(labels["path"].tolist()).encode()).hexdigest()[:12]
    f = cache_dir / key
    if f.exists():
        with open(f, "rb") as fh:
            return pickle.load(fh)
    t0 = time.time()
    imgs, scales, whole = [], [], np.zeros((len(labels["path"]), SIZE, SIZE, 3), np.uint8)
    for i, p in enumerate(labels["path"]):
        im = cv2.imread(str(root / p), cv2.IMREAD_COLOR)
        if im is None:
            raise FileNotFoundError(root / p)
        h, w = im.shape[:2]
        whole[i] = cv2.resize(im, (SIZE, SIZE))
        s = min(1.0, CACHE_MAX_SIDE / max(h, w))
        if s < 1.0:
            nw, nh = int(round(w * s)), int(round(h * s))
            im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA)
            scales.append((nw / w, nh / h))
        else:
            scales.append((1.0, 1.0))
        imgs.append(im)
        if verbose and (i + 1) % 2000 == 0:
            print(f"  decoded {i + 1}/{len(labels['path'])} images ({time.time() - t0:.0f}s)", flush=True)
    cache = {"imgs": imgs, "scales": np.array(scales), "whole": whole}
    with open(f, "wb") as fh:
        pickle.dump(cache, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return cache


def normalised_targets(labels: dict) -> np.ndarray:
    """(N, 10) targets for the whole image: pixel coords / (W, H)."""
    return (labels["pts"] / labels["wh"][:, None, :]).reshape(len(labels["pts"]), 10).astype(np.float32)


class Augmenter:
    """Generates (batch_images NHWC float32 BGR/255, targets (B,10) in [0,1]) from the cache."""

    def __init__(self, labels, cache, indices, seed=0, p_whole=0.3, turn_boost=0.0, p_framed=0.0,
                 scenes=None, p_scene=0.0):
        self.labels, self.cache = labels, cache
        # face-pipeline crops of composed scenes (scene_crops.PoolSampler), a share p_scene of samples
        self.scenes, self.p_scene = scenes, p_scene if scenes is not None else 0.0
        self.idx = np.asarray(indices)
        self.rng = np.random.default_rng(seed)
        # draw turned heads more often: weight 1 + turn_boost * ramp(turn 0.15 -> 0.30)
        w = 1.0 + turn_boost * np.clip((head_turn(labels["pts"][self.idx]) - 0.15) / 0.15, 0, 1)
        self.p = w / w.sum()
        self.p_whole = p_whole
        self.p_framed = p_framed  # share of whole-image samples put in a wider/taller frame
        self.whole_targets = normalised_targets(labels)

    # -- geometry -----------------------------------------------------------------
    def _crop_sample(self, i, out):
        rng = self.rng
        im = self.cache["imgs"][i]
        sx, sy = self.cache["scales"][i]
        pts = self.labels["pts"][i] * [sx, sy]
        l, t, r, b = self.labels["box"][i] * [sx, sy, sx, sy]
        cx, cy = (l + r) / 2, (t + b) / 2
        fs = max(r - l, b - t)
        small = self.labels["source"][i] == "lfw_80"
        # crop side relative to the face box: tight to very loose (user uploads)
        lo, hi = (1.2, 3.2) if small else (1.05, 3.0)
        side = fs * np.exp(rng.uniform(np.log(lo), np.log(hi)))
        # shift the crop centre, keep the nose well inside
        shift = rng.uniform(-0.5, 0.5, 2) * (side - fs * 0.9).clip(min=0) * 0.5
        shift += rng.normal(0, 0.06, 2) * fs
        ccx, ccy = cx + shift[0], cy + shift[1]
        ang = rng.normal(0, 8) if rng.random() < 0.9 else rng.uniform(-25, 25)
        # the server squashes any image to 112x112: emulate non-square sources
        aspect = np.exp(rng.uniform(-0.37, 0.37)) if rng.random() < 0.5 else np.exp(rng.normal(0, 0.06))
        s = SIZE / side
        M = cv2.getRotationMatrix2D((float(ccx) - 0.5, float(ccy) - 0.5), float(ang), float(s))
        M[0, :] *= aspect ** 0.5
        M[1, :] /= aspect ** 0.5
        # move the crop centre to the output centre (index coords)
        c_out = M @ np.array([ccx - 0.5, ccy - 0.5, 1.0])
        M[:, 2] += (SIZE / 2 - 0.5) - c_out
        border = cv2.BORDER_REPLICATE if rng.random() < 0.7 else cv2.BORDER_CONSTANT
        val = tuple(int(v) for v in rng.integers(0, 256, 3))
        out[:] = cv2.warpAffine(im, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=border,
                                borderValue=val)
        q = (np.c_[pts - 0.5, np.ones(5)] @ M.T) + 0.5
        return q / SIZE

    def _framed_sample(self, i, out):
        """The whole image inside a wider (or taller) frame, squashed to 112x112 as the
        server does: a 400x400 face padded to a 640x480 photo.  Without these samples
        side padding made the vertical error 2.4x larger (dev: NME 0.054 -> 0.101)."""
        rng = self.rng
        im = self.cache["imgs"][i]
        h, w = im.shape[:2]
        pts = self.labels["pts"][i] * self.cache["scales"][i]
        r = np.exp(rng.uniform(np.log(0.55), np.log(1.9)))  # target width / height
        if r * h >= w:
            nw, nh = int(round(r * h)), h
        else:
            nw, nh = w, int(round(w / r))
        left = int(rng.integers(0, nw - w + 1))
        top = int(rng.integers(0, nh - h + 1))
        # edge pixels or a flat colour; no reflection: it would mirror the face
        border = cv2.BORDER_REPLICATE if rng.random() < 0.6 else cv2.BORDER_CONSTANT
        val = tuple(int(v) for v in rng.integers(0, 256, 3))
        framed = cv2.copyMakeBorder(im, top, nh - h - top, left, nw - w - left, border, value=val)
        out[:] = cv2.resize(framed, (SIZE, SIZE))
        return (pts + [left, top]) / [nw, nh]

    def _whole_sample(self, i, out):
        rng = self.rng
        t = self.whole_targets[i].reshape(5, 2)
        if rng.random() < self.p_framed:
            return self._framed_sample(i, out)
        if rng.random() < 0.5:
            out[:] = self.cache["whole"][i]
            return t.copy()
        # mild affine on the server-style 112x112 image
        ang = rng.normal(0, 6)
        s = np.exp(rng.normal(0, 0.08))
        M = cv2.getRotationMatrix2D((SIZE / 2 - 0.5, SIZE / 2 - 0.5), float(ang), float(s))
        M[:, 2] += rng.normal(0, 4, 2)
        out[:] = cv2.warpAffine(self.cache["whole"][i], M, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        q = (np.c_[t * SIZE - 0.5, np.ones(5)] @ M.T) + 0.5
        return q / SIZE

    # -- photometric ----------------------------------------------------------------
    def _degrade(self, img):
        """Per-sample resolution/blur/JPEG degradation (cv2, releases the GIL)."""
        rng = self.rng
        if rng.random() < 0.15:  # low resolution: down then up
            n = max(8, int(SIZE * rng.uniform(0.3, 0.7)))
            img[:] = cv2.resize(cv2.resize(img, (n, n), interpolation=cv2.INTER_AREA), (SIZE, SIZE))
        if rng.random() < 0.15:
            img[:] = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.4)))
        if rng.random() < 0.15:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 80))])
            img[:] = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        if rng.random() < 0.2:  # sensor noise, drawn here: TF's RNG took ~44 ms a batch in the step
            noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
            img[:] = np.clip(img + noise + 0.5, 0, 255).astype(np.uint8)

    def photo_params(self, bs):
        """Per-sample colour-jitter parameters (B, 6): sat, cast b/g/r, contrast, brightness.
        Applied by `apply_photo` (inside the TF train step: cheap there)."""
        rng = self.rng
        sat = rng.uniform(0.5, 1.4, bs)
        gray = rng.random(bs) < 0.1
        sat[gray] = 0.0
        cast = rng.uniform(0.85, 1.15, (bs, 3))
        cast[gray] = 1.0
        con = rng.uniform(0.6, 1.4, bs)
        bri = rng.uniform(-40, 40, bs)
        return np.c_[sat, cast, con, bri].astype(np.float32)

    def batch(self, bs):
        """-> (uint8 NHWC images, (B,6) colour params, (B,10) targets in [0,1])."""
        rng = self.rng
        ids = self.idx[rng.choice(len(self.idx), bs, p=self.p)]
        xb = np.empty((bs, SIZE, SIZE, 3), np.uint8)
        yb = np.empty((bs, 10), np.float32)
        tmp = np.empty((SIZE, SIZE, 3), np.uint8)
        for k, i in enumerate(ids):
            if rng.random() < self.p_scene:
                q = self.scenes.sample(tmp)
            elif rng.random() < self.p_whole:
                q = self._whole_sample(i, tmp)
            else:
                q = self._crop_sample(i, tmp)
            img = tmp
            if rng.random() < 0.5:
                img = img[:, ::-1].copy()
                q = q[FLIP_PERM]
                q[:, 0] = 1.0 - q[:, 0]
            img = np.ascontiguousarray(img)
            self._degrade(img)
            xb[k] = img
            yb[k] = q.reshape(10)
        return xb, self.photo_params(bs), yb


def apply_photo(x_u8, params):
    """TF: colour jitter from `photo_params`, returns float32 BGR/255."""
    import tensorflow as tf
    x = tf.cast(x_u8, tf.float32)
    p = params[:, None, None, :]
    g = tf.reduce_mean(x, axis=-1, keepdims=True)
    x = (g + (x - g) * p[..., 0:1]) * p[..., 1:4]
    x = (x - 128.0) * p[..., 4:5] + 128.0 + p[..., 5:6]
    return tf.clip_by_value(x, 0.0, 255.0) * (1.0 / 255.0)
