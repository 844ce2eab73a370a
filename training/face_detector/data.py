"""Synthetic face scenes for the face detector, made from ../shared/data/nose.

No data set here has boxes for every face in a crowded photo, so scenes are composed:
faces of the split's `cuhk_net` (and small `lfw_80`) photos are cut out with a feathered
elliptical or rectangular mask and pasted (1-6 of them; none in 8% of scenes) at random
scales, positions, rotations and flips over a background: a whole `lfw_80` news photo or a
whole `cuhk_net` photo (their own labelled face kept as a target), a mosaic of non-face
regions of the photos, or a procedural texture (colour fields, shapes, skin-coloured blobs
as hard negatives).  Then occlusions, lighting, blur, noise, JPEG and low-resolution
degradations.  The box of a face is its annotated face box; the five points come along, so
the same scenes measure the whole pipeline's nose error.

The split is the nose tracker's (`split_indices`, by image, seed 0): training scenes use
only training faces and images, the dev and test scene sets only their own split's.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path

import cv2
import numpy as np

from training.nose_tracker.data import FLIP_PERM, load_labels, split_indices  # noqa: F401

DEFAULT_CACHE = Path(os.environ.get("FACE_CACHE_DIR", "/tmp/face_detector_cache"))
STRIDE = 8
SIZE_UNIT = 8.0


def load_images(root: Path, labels: dict, idx: np.ndarray, max_side: int, cache_dir: Path = DEFAULT_CACHE):
    """Decode the images `idx` with max side <= max_side; returns (list of images, (N, 2)
    scales).  Pickled under cache_dir (outside the repository: never commit it)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(("%d\n" % max_side + "\n".join(labels["path"][idx].tolist())).encode()).hexdigest()[:12]
    f = cache_dir / f"imgs_{max_side}_{key}.pkl"
    if f.exists():
        with open(f, "rb") as fh:
            return pickle.load(fh)
    t0 = time.time()
    imgs, scales = [], []
    for p in labels["path"][idx]:
        im = cv2.imread(str(root / p), cv2.IMREAD_COLOR)
        if im is None:
            raise FileNotFoundError(root / p)
        h, w = im.shape[:2]
        s = min(1.0, max_side / max(h, w))
        if s < 1.0:
            im = cv2.resize(im, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
        scales.append((im.shape[1] / w, im.shape[0] / h))
        imgs.append(im)
    out = (imgs, np.array(scales))
    with open(f, "wb") as fh:
        pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"  decoded {len(imgs)} images in {time.time() - t0:.0f}s", flush=True)
    return out


def _affine_pts(M, pts):
    """Map corner-origin pixel coordinates through a cv2 (pixel-centre) affine matrix."""
    return (np.c_[pts - 0.5, np.ones(len(pts))] @ M.T) + 0.5


def _box_iou(a, b):
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(ua, 1e-6), inter / np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)


SKIN = np.array([[60, 90, 160], [80, 120, 190], [100, 140, 210], [50, 70, 120], [120, 160, 220],
                 [40, 55, 90]], np.float32)  # BGR skin tones for hard-negative blobs


class SceneMaker:
    """Composes scenes.  `faces` and `backs` are index arrays into `labels` (one split)."""

    def __init__(self, labels, imgs, scales, idx, seed=0, max_faces=6):
        self.labels, self.imgs, self.scales = labels, imgs, scales
        self.idx = np.asarray(idx)              # rows of labels, parallel to imgs
        self.rng = np.random.default_rng(seed)
        src = labels["source"][self.idx]
        self.cuhk = np.flatnonzero(src == "cuhk_net")
        self.lfw = np.flatnonzero(src == "lfw_80")
        self.max_faces = max_faces

    # -- labels of one cached image (in its cached pixels) -------------------------
    def _face(self, k):
        sx, sy = self.scales[k]
        r = self.idx[k]
        box = self.labels["box"][r] * [sx, sy, sx, sy]
        pts = self.labels["pts"][r] * [sx, sy]
        return self.imgs[k], box, pts

    # -- backgrounds ---------------------------------------------------------------
    def _texture(self, W, H):
        rng = self.rng
        g = max(2, int(rng.integers(2, 9)))
        base = rng.uniform(0, 255, (g, g, 3)).astype(np.float32)
        img = cv2.resize(base, (W, H), interpolation=cv2.INTER_CUBIC)
        fine = cv2.resize(rng.normal(0, 1, (H // 4 + 1, W // 4 + 1, 3)).astype(np.float32), (W, H))
        img += fine * rng.uniform(0, 30)
        for _ in range(int(rng.integers(0, 25))):
            col = tuple(float(v) for v in (SKIN[rng.integers(len(SKIN))] + rng.normal(0, 15, 3)
                                           if rng.random() < 0.25 else rng.uniform(0, 255, 3)))
            kind = rng.random()
            p = (int(rng.integers(0, W)), int(rng.integers(0, H)))
            if kind < 0.35:
                ax = (int(rng.integers(3, max(4, W // 4))), int(rng.integers(3, max(4, H // 4))))
                cv2.ellipse(img, p, ax, float(rng.uniform(0, 180)), 0, 360, col, -1)
            elif kind < 0.7:
                q = (int(rng.integers(0, W)), int(rng.integers(0, H)))
                cv2.rectangle(img, p, q, col, -1 if rng.random() < 0.7 else int(rng.integers(1, 6)))
            else:
                q = (int(rng.integers(0, W)), int(rng.integers(0, H)))
                cv2.line(img, p, q, col, int(rng.integers(1, 8)))
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 3)))
        return np.clip(img, 0, 255).astype(np.uint8)

    def _patch(self):
        """A region of a cuhk_net photo that does not touch its (expanded) face box."""
        rng = self.rng
        for _ in range(30):
            k = self.cuhk[rng.integers(len(self.cuhk))]
            im, box, _ = self._face(k)
            h, w = im.shape[:2]
            s = int(rng.integers(16, max(17, min(h, w) // 3)))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            cx, cy, bw, bh = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
            e = [cx - 0.75 * bw, cy - 0.9 * bh, cx + 0.75 * bw, cy + 1.0 * bh]
            if x + s <= e[0] or x >= e[2] or y + s <= e[1] or y >= e[3]:
                return im[y:y + s, x:x + s]
        return None

    def _mosaic(self, W, H):
        rng = self.rng
        n = int(rng.integers(1, 4))
        img = np.empty((H, W, 3), np.uint8)
        xs = np.linspace(0, W, n + 1).astype(int)
        ys = np.linspace(0, H, n + 1).astype(int)
        for i in range(n):
            for j in range(n):
                p = self._patch()
                tw, th = xs[i + 1] - xs[i], ys[j + 1] - ys[j]
                img[ys[j]:ys[j + 1], xs[i]:xs[i + 1]] = (cv2.resize(p, (tw, th)) if p is not None
                                                         else self._texture(tw, th))
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2)))
        return img

    def _photo(self, W, H, pool, smin, smax):
        """A whole photo scaled to cover the canvas; its labelled face is a target."""
        rng = self.rng
        k = pool[rng.integers(len(pool))]
        im, box, pts = self._face(k)
        h, w = im.shape[:2]
        s = max(W / w, H / h) * float(np.exp(rng.uniform(np.log(smin), np.log(smax))))
        nw, nh = w * s, h * s
        # keep the face centre inside the canvas
        cx, cy = (box[0] + box[2]) / 2 * s, (box[1] + box[3]) / 2 * s
        ox = float(rng.uniform(max(0, cx - W + 4), min(nw - W, cx - 4) + 1e-3)) if nw > W else 0.0
        oy = float(rng.uniform(max(0, cy - H + 4), min(nh - H, cy - 4) + 1e-3)) if nh > H else 0.0
        M = np.array([[s, 0, -ox + 0.5 * s - 0.5], [0, s, -oy + 0.5 * s - 0.5]])
        img = cv2.warpAffine(im, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        b = _affine_pts(M, box.reshape(2, 2)).reshape(4)
        p = _affine_pts(M, pts)
        if rng.random() < 0.5:
            img, b, p = img[:, ::-1].copy(), np.array([W - b[2], b[1], W - b[0], b[3]]), p[FLIP_PERM] * [-1, 1] + [W, 0]
        return img, [b], [p]

    def background(self, W, H):
        r = self.rng.random()
        # lfw news photos often hold other, unlabelled faces: use them less, and zoomed in on
        # the labelled one so that fewer others are in view
        if r < 0.12 and len(self.lfw):
            return self._photo(W, H, self.lfw, 1.3, 2.0)
        if r < 0.30:
            return self._photo(W, H, self.cuhk, 1.0, 1.5)
        if r < 0.65:
            return self._mosaic(W, H), [], []
        return self._texture(W, H), [], []

    # -- faces ---------------------------------------------------------------------
    def _paste(self, img, k, target_w, centre, boxes):
        rng = self.rng
        H, W = img.shape[:2]
        im, box, pts = self._face(k)
        bw, bh = box[2] - box[0], box[3] - box[1]
        # work on the source region around the face only
        r = 1.25 * max(bw, bh)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = int(max(0, cx - r)), int(max(0, cy - r))
        x1, y1 = int(min(im.shape[1], cx + r + 1)), int(min(im.shape[0], cy + r + 1))
        im = im[y0:y1, x0:x1]
        box = box - [x0, y0, x0, y0]
        pts = pts - [x0, y0]
        if rng.random() < 0.5:  # flip the source
            w = im.shape[1]
            im = im[:, ::-1]
            box = np.array([w - box[2], box[1], w - box[0], box[3]])
            pts = pts[FLIP_PERM] * [-1, 1] + [w, 0]
        s = target_w / bw * float(np.exp(rng.normal(0, 0.05)))
        ang = float(rng.normal(0, 10) if rng.random() < 0.9 else rng.uniform(-35, 35))
        bc = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        M = cv2.getRotationMatrix2D((bc[0] - 0.5, bc[1] - 0.5), ang, s)
        asp = float(np.exp(rng.normal(0, 0.05)))
        M[0] *= asp
        c = M @ np.array([bc[0] - 0.5, bc[1] - 0.5, 1.0])
        M[:, 2] += np.array(centre) - 0.5 - c
        # the mask: a feathered ellipse a bit larger than the face box (head and hair), or a
        # feathered rectangle (a photo of a photo); drawn in the source's pixels
        mask = np.zeros(im.shape[:2], np.float32)
        if rng.random() < 0.8:
            ax = (int(bw * rng.uniform(0.6, 0.95)), int(bh * rng.uniform(0.7, 1.1)))
            cv2.ellipse(mask, (int(bc[0]), int(bc[1] + bh * rng.uniform(-0.05, 0.12))), ax, 0, 0, 360, 1.0, -1)
        else:
            m = rng.uniform(1.2, 2.0)
            cv2.rectangle(mask, (int(bc[0] - bw * m / 2), int(bc[1] - bh * m / 2)),
                          (int(bc[0] + bw * m / 2), int(bc[1] + bh * m / 2)), 1.0, -1)
        feather = max(0.8, bw * rng.uniform(0.03, 0.15))
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
        # lighting of this face differs from the scene's
        face = im.astype(np.float32) * rng.uniform(0.7, 1.25) + rng.uniform(-30, 30)
        face *= rng.uniform(0.9, 1.1, 3)
        # warp only the region the mask can reach (the whole canvas cost ~5x more per scene)
        r = 1.5 * max(bw, bh) * s
        X0, Y0 = int(max(0, centre[0] - r)), int(max(0, centre[1] - r))
        X1, Y1 = int(min(W, centre[0] + r + 1)), int(min(H, centre[1] + r + 1))
        Mr = M.copy()
        Mr[:, 2] -= (X0, Y0)
        warped = cv2.warpAffine(face, Mr, (X1 - X0, Y1 - Y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        a = cv2.warpAffine(mask, Mr, (X1 - X0, Y1 - Y0), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        roi = img[Y0:Y1, X0:X1]
        roi[:] = np.clip(roi.astype(np.float32) * (1 - a) + warped * a, 0, 255).astype(np.uint8)
        b = _affine_pts(M, np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]]))
        # the annotated box, rotated: keep its size, centre on the mapped centre
        cx, cy = b[:, 0].mean(), b[:, 1].mean()
        nb = np.array([cx - bw * s * asp / 2, cy - bh * s / 2, cx + bw * s * asp / 2, cy + bh * s / 2])
        p = _affine_pts(M, pts)
        if rng.random() < 0.12:  # an occluder over part of the face (a hand, a microphone)
            ow, oh = nb[2] - nb[0], nb[3] - nb[1]
            x0 = nb[0] + rng.uniform(-0.3, 0.8) * ow
            y0 = nb[1] + rng.uniform(0.2, 0.9) * oh
            col = tuple(float(v) for v in rng.uniform(0, 255, 3))
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + ow * rng.uniform(0.2, 0.5)),
                                                   int(y0 + oh * rng.uniform(0.2, 0.5))), col, -1)
        return nb, p

    def scene(self, W, H, n_faces=None, min_w=10.0, max_w=None):
        """-> (uint8 HxWx3 BGR, boxes (n, 4) x0 y0 x1 y1, points (n, 5, 2)), pixels."""
        rng = self.rng
        img, boxes, pts = self.background(W, H)
        closeup = False
        if n_faces is None:
            r = rng.random()
            n_faces = 0 if r < 0.08 else 1 if r < 0.35 else int(rng.integers(2, self.max_faces + 1))
            # a close-up (a webcam frame, a selfie): one face of 55-95% of the frame, no other
            closeup = not boxes and rng.random() < 0.12
            if closeup:
                n_faces = 1
        max_w = max_w or min(W, H) * 0.75
        for _ in range(n_faces):
            for _try in range(15):
                use_lfw = len(self.lfw) and rng.random() < 0.15 and not closeup
                if use_lfw:  # lfw faces are ~25 px: only paste them small
                    tw = float(np.exp(rng.uniform(np.log(min_w), np.log(max(min_w + 1, 40)))))
                    k = self.lfw[rng.integers(len(self.lfw))]
                elif closeup:
                    tw = float(rng.uniform(0.55, 0.95) * min(W, H))
                    k = self.cuhk[rng.integers(len(self.cuhk))]
                else:
                    tw = float(np.exp(rng.uniform(np.log(min_w), np.log(max_w))))
                    k = self.cuhk[rng.integers(len(self.cuhk))]
                c = (rng.uniform(tw * 0.3, W - tw * 0.3), rng.uniform(tw * 0.3, H - tw * 0.3))
                cand = np.array([c[0] - tw / 2, c[1] - tw / 2, c[0] + tw / 2, c[1] + tw / 2])
                if boxes:
                    iou, cover = _box_iou(cand, np.array(boxes))
                    own = cover * (np.array(boxes)[:, 2:] - np.array(boxes)[:, :2]).prod(1) / (tw * tw)
                    if iou.max() > 0.1 or cover.max() > 0.25 or own.max() > 0.25:
                        continue
                nb, p = self._paste(img, k, tw, c, boxes)
                boxes.append(nb)
                pts.append(p)
                break
        self._photometric(img)
        return img, np.array(boxes, np.float64).reshape(-1, 4), np.array(pts, np.float64).reshape(-1, 5, 2)

    def _photometric(self, img):
        rng = self.rng
        H, W = img.shape[:2]
        x = img.astype(np.float32)
        if rng.random() < 0.1:
            x[:] = x.mean(-1, keepdims=True)
        x = (x - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-35, 35)
        x *= rng.uniform(0.88, 1.12, 3)
        if rng.random() < 0.3:  # uneven light
            g = cv2.resize(rng.uniform(0.6, 1.3, (2, 2)).astype(np.float32), (W, H))[..., None]
            x *= g
        img[:] = np.clip(x, 0, 255).astype(np.uint8)
        if rng.random() < 0.15:
            f = rng.uniform(0.3, 0.7)
            small = cv2.resize(img, (max(8, int(W * f)), max(8, int(H * f))), interpolation=cv2.INTER_AREA)
            img[:] = cv2.resize(small, (W, H))
        if rng.random() < 0.15:
            img[:] = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.5)))
        if rng.random() < 0.2:
            n = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
            img[:] = np.clip(img + n + 0.5, 0, 255).astype(np.uint8)
        if rng.random() < 0.2:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 85))])
            img[:] = cv2.imdecode(enc, cv2.IMREAD_COLOR)


def targets(boxes: np.ndarray, W: int, H: int):
    """Training targets on the stride-8 grid: heat (gh, gw) with a Gaussian per face centre
    (1.0 at the centre cell), and at each centre cell: mask, offset (x, y in cells, 0..1)
    and log(w / 8), log(h / 8).  Returns heat (gh, gw), reg (gh, gw, 4), mask (gh, gw)."""
    gw, gh = W // STRIDE, H // STRIDE
    heat = np.zeros((gh, gw), np.float32)
    reg = np.zeros((gh, gw, 4), np.float32)
    mask = np.zeros((gh, gw), np.float32)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = int(np.floor(cx)), int(np.floor(cy))
        if not (0 <= ix < gw and 0 <= iy < gh):
            continue
        sig = max(0.5, 0.1 * min(w, h) / STRIDE)
        g = np.exp(-((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) / (2 * sig * sig))
        np.maximum(heat, g, out=heat)
        heat[iy, ix] = 1.0
        mask[iy, ix] = 1.0
        reg[iy, ix] = (cx - ix, cy - iy, np.log(max(w, 1) / SIZE_UNIT), np.log(max(h, 1) / SIZE_UNIT))
    return heat, reg, mask


def batch(maker: SceneMaker, bs: int, size: int = 256):
    """-> uint8 images (B, size, size, 3), heat (B, g, g), reg (B, g, g, 4), mask (B, g, g)."""
    g = size // STRIDE
    xb = np.empty((bs, size, size, 3), np.uint8)
    hb = np.empty((bs, g, g), np.float32)
    rb = np.empty((bs, g, g, 4), np.float32)
    mb = np.empty((bs, g, g), np.float32)
    for i in range(bs):
        img, boxes, _ = maker.scene(size, size)
        xb[i] = img
        hb[i], rb[i], mb[i] = targets(boxes, size, size)
    return xb, hb, rb, mb


def eval_scenes(maker: SceneMaker, n: int, W: int = 640, H: int = 480, min_w: float = 24.0):
    """A fixed evaluation set: n scenes of W x H with 1-4 faces, widths 24 px up to 60% of
    the height (log-uniform) -> list of (image, boxes, points)."""
    out = []
    for _ in range(n):
        k = int(maker.rng.integers(1, 5))
        out.append(maker.scene(W, H, n_faces=k, min_w=min_w, max_w=H * 0.6))
    return out
