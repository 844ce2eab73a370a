"""``annotate=1``: the picture with each face's box and five points drawn, as PNG."""
from __future__ import annotations

import cv2
import numpy as np

#: BGR colours: box, then nose, eyes, mouth corners
BOX = (80, 220, 60)
NOSE = (40, 40, 255)
EYES = (255, 160, 40)
MOUTH = (230, 60, 230)


def annotate_png(img: np.ndarray, faces: list, scale: float = 1.0) -> bytes:
    """PNG of ``img`` (decoded at ``scale`` x the displayed size) with every face drawn."""
    out = img.copy()
    t = max(1, int(round(max(out.shape[:2]) / 400)))
    for f in faces:
        x, y, w, h = (float(v) * scale for v in f["box"])
        cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), BOX, t,
                      cv2.LINE_AA)
        r = max(2, int(round(min(w, h) / 30)))
        for i, (px, py) in enumerate(np.asarray(f["points"], np.float64) * scale):
            colour = NOSE if i == 0 else EYES if i in (1, 2) else MOUTH
            cv2.circle(out, (int(round(px)), int(round(py))), r + (1 if i == 0 else 0), colour, -1, cv2.LINE_AA)
        cv2.putText(out, f"{f['score']:.2f}", (int(x), max(10, int(y) - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * t, BOX, max(1, t // 2), cv2.LINE_AA)
    ok, enc = cv2.imencode(".png", out)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return enc.tobytes()
