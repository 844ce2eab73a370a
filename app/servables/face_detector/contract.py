"""The face detector's contract: preprocessing and decoding, shared by the server and by
the training code (training/face_detector), so both see exactly the same numbers.

Input: the image resized (aspect kept) so that its longer side is `size` px, padded on the
right and bottom with its edge pixels to a multiple of 32, BGR / 255, float32 NCHW.
Output (cv2.dnn): N x 5 x H/8 x W/8: face-centre probability, centre offset in cells (x, y),
log(width / 8), log(height / 8) in input pixels.  Decoding: local maxima of the probability
(3x3) above `min_score`, boxes mapped back to the image's pixels, then non-maximum
suppression (cv2.dnn.NMSBoxes).
"""
from __future__ import annotations

import cv2
import numpy as np

STRIDE = 8
SIZE_UNIT = 8.0
MULTIPLE = 32


def preprocess(img: np.ndarray, size: int = 320):
    """-> (blob 1x3xHxW float32, scale): input pixel = image pixel * scale."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    im = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    pw, ph = -nw % MULTIPLE, -nh % MULTIPLE
    if pw or ph:
        im = cv2.copyMakeBorder(im, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    # transposed as uint8, then scaled: the same numbers, ~9x faster than scaling first (1.1 ms
    # against 0.13 ms at 320x256: a quarter of the detector's own forward pass)
    blob = np.ascontiguousarray(np.transpose(im, [2, 0, 1])[None]).astype(np.float32) * np.float32(1 / 255)
    return blob, (nw / w + nh / h) / 2


def decode(out: np.ndarray, scale: float, min_score: float = 0.5, nms_iou: float = 0.4,
           max_faces: int = 100, image_wh=None):
    """One image's detector output (5 x gh x gw) -> (boxes (n, 4) x, y, w, h in image
    pixels, scores (n,)), highest score first."""
    heat = np.ascontiguousarray(out[0], np.float32)
    peak = (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8))) & (heat >= min_score)
    iy, ix = np.nonzero(peak)
    if not len(iy):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    sc = heat[iy, ix]
    cx = (ix + out[1, iy, ix]) * STRIDE / scale
    cy = (iy + out[2, iy, ix]) * STRIDE / scale
    bw = np.exp(np.clip(out[3, iy, ix], -3, 6)) * SIZE_UNIT / scale
    bh = np.exp(np.clip(out[4, iy, ix], -3, 6)) * SIZE_UNIT / scale
    boxes = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1).astype(np.float32)
    if image_wh is not None:  # clip to the image
        W, H = image_wh
        x0, y0 = boxes[:, 0].clip(0, W), boxes[:, 1].clip(0, H)
        x1, y1 = (boxes[:, 0] + boxes[:, 2]).clip(0, W), (boxes[:, 1] + boxes[:, 3]).clip(0, H)
        boxes = np.stack([x0, y0, x1 - x0, y1 - y0], 1)
    keep = cv2.dnn.NMSBoxes(boxes.tolist(), sc.astype(float).tolist(), float(min_score), float(nms_iou),
                            top_k=int(max_faces))
    keep = np.asarray(keep, dtype=int).reshape(-1)[:max_faces]
    order = keep[np.argsort(-sc[keep], kind="stable")]
    return boxes[order], sc[order].astype(np.float32)
