"""Evaluate the exported nose tracker (.pb through OpenCV, not Keras) on a labelled CSV.

Each image is fed WHOLE, resized to 112x112, exactly as the server does
(np.transpose(cv2.resize(img, (112, 112)) / 255, [2, 0, 1])[None].astype(np.float32)).
Prints mean/median NME (nose error / inter-ocular distance), share with NME > 0.10,
mean pixel error (in the original image), overall and per source, and the same for the
floor (always predicting the training split's mean nose position in normalised coords).

Examples (from the repo root):
  # held-out test split of the shared data
  .venv/bin/python training/nose_tracker/evaluate.py --split test
  # the same faces as 640x480 photos (edge pixels around them, as many uploads look)
  .venv/bin/python training/nose_tracker/evaluate.py --split test --frame 640x480
  # any CSV in the shared format; images resolved relative to --images-root
  .venv/bin/python training/nose_tracker/evaluate.py --csv other/labels.csv --images-root other/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from training.nose_tracker.data import contract_blob, data_dir, frame_photo, load_labels, split_indices

HERE = Path(__file__).resolve().parent



def _summary(nme, px):
    return {"n": int(len(nme)), "nme_mean": float(nme.mean()), "nme_median": float(np.median(nme)),
            "fail_rate_nme_gt_0.10": float((nme > 0.10).mean()), "pixel_err_mean": float(px.mean())}


def evaluate_pb(pb, labels: dict, root: Path, floor_xy=None, verbose=True, title="", batch=32,
                frame: tuple[int, int] | None = None):
    """labels: dict from data.load_labels (possibly subset). Returns metrics dict.
    frame=(W, H): first put each image in a W x H frame (`data.frame_photo`, e.g. a
    face photo as a 640x480 upload) and score in that frame's pixels."""
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    n = len(labels["path"])
    preds = np.zeros((n, 2))
    pts_all, wh = labels["pts"].copy(), labels["wh"].copy()
    for s in range(0, n, batch):
        blobs = []
        for j, p in enumerate(labels["path"][s:s + batch], start=s):
            img = cv2.imread(str(Path(root) / p), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(Path(root) / p)
            if frame:
                img, pts_all[j] = frame_photo(img, pts_all[j], *frame)
                wh[j] = frame
            blobs.append(contract_blob(img))
        net.setInput(np.concatenate(blobs))
        out = np.asarray(net.forward()).reshape(len(blobs), -1)
        preds[s:s + len(blobs)] = out[:, :2]
    nose = pts_all[:, 0]
    iod = np.linalg.norm(pts_all[:, 1] - pts_all[:, 2], axis=1)
    res = {}
    rows = [("model", preds)]
    if floor_xy is not None:
        rows.append(("floor", np.broadcast_to(np.asarray(floor_xy, float), preds.shape)))
    for name, p in rows:
        px = np.linalg.norm(p * wh - nose, axis=1)
        nme = px / np.maximum(iod, 1e-6)
        r = {"all": _summary(nme, px)}
        for src in sorted(set(labels["source"].tolist())):
            m = labels["source"] == src
            r[src] = _summary(nme[m], px[m])
        res[name] = r
    if verbose:
        how = f"in a {frame[0]}x{frame[1]} frame" if frame else "whole image"
        print(f"== {title} ({how} -> 112x112, OpenCV {Path(pb).name})")
        print(f"{'':6s} {'subset':10s} {'n':>5s} {'NME mean':>9s} {'median':>8s} {'>0.10':>7s} {'px err':>7s}")
        for name, r in res.items():
            for sub, v in r.items():
                print(f"{name:6s} {sub:10s} {v['n']:5d} {v['nme_mean']:9.4f} {v['nme_median']:8.4f} "
                      f"{100 * v['fail_rate_nme_gt_0.10']:6.1f}% {v['pixel_err_mean']:7.2f}")
        sys.stdout.flush()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=None, help="labels CSV (default: <data>/labels.csv)")
    ap.add_argument("--images-root", default=None, help="paths in the CSV are relative to this (default: CSV's dir)")
    ap.add_argument("--data", default=None, help="shared data dir (default $NOSE_DATA_DIR or ../shared/data/nose)")
    ap.add_argument("--split", choices=["all", "train", "dev", "test"], default="all",
                    help="for the shared labels.csv: which split to score (seed-0 split used in training)")
    ap.add_argument("--pb", default=None, help="default: the model repository's current nose_tracker")
    ap.add_argument("--floor", default=None, help="mean nose 'x,y' for the floor (default: from metadata.json)")
    ap.add_argument("--frame", default=None, metavar="WxH",
                    help="put each image in a WxH frame first (edge pixels around it), e.g. 640x480")
    ap.add_argument("--json", default=None, help="write metrics JSON here")
    a = ap.parse_args()
    if a.pb is None:
        from training.face_detector.evaluate import served_nose_pb
        a.pb = str(served_nose_pb())
    cv2.setNumThreads(1)

    csv = Path(a.csv) if a.csv else data_dir(a.data) / "labels.csv"
    root = Path(a.images_root) if a.images_root else csv.parent
    labels = load_labels(csv)
    if a.split != "all":
        idx = split_indices(labels["source"], seed=0)[a.split]
        labels = {k: v[idx] for k, v in labels.items()}
    floor = None
    if a.floor:
        floor = [float(v) for v in a.floor.split(",")]
    else:
        meta = Path(a.pb).with_name("metadata.json")
        if meta.exists():
            floor = json.loads(meta.read_text()).get("floor_mean_nose_xy")
    frame = tuple(int(v) for v in a.frame.lower().split("x")) if a.frame else None
    res = evaluate_pb(a.pb, labels, root, floor_xy=floor, title=f"{csv} split={a.split}", frame=frame)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
