"""Does decoding JPEGs at reduced scale (IMAGE_REDUCED_DECODE) change the nose model's accuracy?

For every image of a held-out split (--split, default dev) of ../shared/data/nose (never copied into the repo)
it runs the server's own code path (app.imaging.decode_image_scaled + NoseTracker.predict) on
  * the original image, and
  * the same face upscaled and padded to a 640x480 photo (the benchmark's input),
once with full decoding and once with reduced decoding at each minimum side, and prints mean /
median NME (nose error / inter-ocular distance) plus the decode+predict time per image.

    .venv/bin/python bench/nose_reduced_decode.py [--limit N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from app.serving.imaging import decode_image_scaled
from app.serving.repository import version_dir
from app.servables.nose_tracker.model import NoseTracker


def main() -> int:
    from training.nose_tracker.data import data_dir, frame_photo, load_labels, split_indices
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["dev", "test"], default="dev")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    ap.add_argument("--json")
    a = ap.parse_args()
    root = data_dir()
    if not (root / "labels.csv").exists():
        print(f"shared nose data not found at {root}: nothing to measure")
        return 2
    cv2.setNumThreads(1)
    model = NoseTracker.load(str(version_dir("nose_tracker")))
    lab = load_labels(root / "labels.csv")
    idx = split_indices(lab["source"], seed=0)[a.split]
    if a.limit:
        idx = idx[:a.limit]
    variants = {"full decode": None, "reduced, min side 224": 224, "reduced, min side 112": 112}
    rows = []
    for inp in ("original image", "640x480 JPEG (q90)"):
        nme = {k: [] for k in variants}
        ms = {k: 0.0 for k in variants}
        reduced = {k: 0 for k in variants}
        for i in idx:
            data = (root / lab["path"][i]).read_bytes()
            pts = lab["pts"][i]
            if inp != "original image":
                img, pts = frame_photo(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), pts, 640, 480)
                data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            iod = np.linalg.norm(pts[1] - pts[2])
            for k, min_side in variants.items():
                t0 = time.perf_counter()
                img, w, h = decode_image_scaled(data, 10 ** 9, min_side)
                p = model.predict(img, size=(w, h))
                ms[k] += time.perf_counter() - t0
                reduced[k] += img.shape[1] != w
                nme[k].append(np.hypot(p.x_px - pts[0][0], p.y_px - pts[0][1]) / iod)
        for k in variants:
            v = np.array(nme[k])
            rows.append({"input": inp, "decode": k, "images": len(v), "reduced": reduced[k],
                         "nme_mean": round(float(v.mean()), 4), "nme_median": round(float(np.median(v)), 4),
                         "over_0.10": round(float((v > 0.10).mean()), 4),
                         "ms_per_image": round(ms[k] / len(v) * 1000, 3)})
    print("| Input | Decode | Images (reduced) | NME mean | NME median | > 0.10 | decode+predict ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['decode']} | {r['images']} ({r['reduced']}) | {r['nme_mean']:.4f} | "
              f"{r['nme_median']:.4f} | {r['over_0.10']:.1%} | {r['ms_per_image']:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
