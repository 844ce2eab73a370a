"""Evaluation scenes and detection scores for the face detector (and the face pipeline).

Evaluation sets are built from one split's images only, with a fixed seed: 640x480 scenes
with 1-4 pasted faces (plus the background photo's own face when the background is a
photo), faces 24 px wide up to 60% of the height.  A detection is correct when its IoU with
a not-yet-matched true box is >= 0.5 (greedy, highest score first).  Recall and precision
count faces >= 40 px wide: true faces narrower than that, and detections matched to them or
narrower than 32 px, are left out of both; so are faces mostly (> 50%) outside the picture.
True boxes are clipped to the picture, as the detector's are.

    .venv/bin/python training/face_detector/evaluate.py --split dev [--pb models/face_detector/<version>/face_detector.pb]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SEEDS = {"dev": 1001, "test": 2002}
SIZE_BINS = [(24, 40), (40, 80), (80, 160), (160, 10_000)]


def scene_set(root, labels, split, part="dev", n=300, W=640, H=480):
    from training.face_detector import data as D
    idx = split[part]
    imgs, scales = D.load_images(root, labels, idx, 400)
    maker = D.SceneMaker(labels, imgs, scales, idx, seed=SEEDS[part])
    return D.eval_scenes(maker, n, W, H)


def dev_scene_set(root, labels, split, n=150):
    return scene_set(root, labels, split, "dev", n)


def detect_keras(model, img, size=320, min_score=0.3):
    from app.servables.face_detector.contract import decode, preprocess
    blob, s = preprocess(img, size)
    out = model(np.transpose(blob, [0, 2, 3, 1]), training=False).numpy()[0]
    return decode(np.transpose(out, [2, 0, 1]), s, min_score=min_score,
                  image_wh=(img.shape[1], img.shape[0]))


def _iou(b, gts):
    x0 = np.maximum(b[0], gts[:, 0]); y0 = np.maximum(b[1], gts[:, 1])
    x1 = np.minimum(b[0] + b[2], gts[:, 2]); y1 = np.minimum(b[1] + b[3], gts[:, 3])
    inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    return inter / (b[2] * b[3] + (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]) - inter + 1e-9)


def visible(gts, wh=(640, 480)):
    """True boxes clipped to the image, and the visible share of each (faces cut by the
    border: a detector's boxes are clipped to the image too)."""
    if not len(gts):
        return gts, np.zeros(0)
    c = gts.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, wh[0])
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, wh[1])
    area = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    return c, (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) / np.maximum(area, 1e-9)


def match(boxes, scores, gts, thr, iou_thr=0.5):
    """-> (for each gt the index of its detection or -1, for each kept detection its gt or -1).
    ``gts`` x0 y0 x1 y1 (clipped to the image: ``visible``)."""
    keep = np.flatnonzero(scores >= thr)
    gt_det = -np.ones(len(gts), int)
    det_gt = -np.ones(len(boxes), int)
    for d in keep[np.argsort(-scores[keep], kind="stable")]:
        if not len(gts):
            break
        iou = _iou(boxes[d], gts)
        iou[gt_det >= 0] = -1
        g = int(np.argmax(iou))
        if iou[g] >= iou_thr:
            gt_det[g], det_gt[d] = d, g
    return gt_det, det_gt, keep


def score(dets, scenes, thr, min_w=40.0):
    """dets: [(boxes xywh, scores)] per scene; scenes: [(img, gt boxes x0y0x1y1, pts)]."""
    tp = fn = fp = 0
    by = {f"{lo}-{hi if hi < 10_000 else ''}": [0, 0] for lo, hi in SIZE_BINS}
    for (boxes, sc), (img, gts, _) in zip(dets, scenes):
        gts, vis = visible(gts, (img.shape[1], img.shape[0]))
        gt_det, det_gt, keep = match(boxes, sc, gts, thr)
        gw = gts[:, 2] - gts[:, 0] if len(gts) else np.zeros(0)
        counted = (gw >= min_w) & (vis >= 0.5)  # faces mostly outside the picture are left out
        for g in range(len(gts)):
            if vis[g] < 0.5:
                continue
            for (lo, hi), k in zip(SIZE_BINS, by):
                if lo <= gw[g] < hi:
                    by[k][0] += 1
                    by[k][1] += int(gt_det[g] >= 0)
            if counted[g]:
                tp += int(gt_det[g] >= 0)
                fn += int(gt_det[g] < 0)
        for d in keep:
            if det_gt[d] < 0 and boxes[d][2] >= min_w * 0.8:
                fp += 1
    return {"recall": tp / max(tp + fn, 1), "precision": tp / max(tp + fp, 1), "tp": tp, "fn": fn, "fp": fp,
            "recall_by_width_px": {k: {"n": v[0], "recall": v[1] / max(v[0], 1)} for k, v in by.items()}}


# --- the whole pipeline through OpenCV (what the server runs) -------------------------------
def served_nose_pb() -> Path:
    """The landmark net the server runs: the model repository's current nose_tracker."""
    from app.serving.repository import version_dir
    return version_dir("nose_tracker") / "nose_tracker.pb"


class Pipeline:
    """Detector -> a crop per face -> the landmark net (default: the served one), with the
    server's own functions (app/servables/face_detector/contract.py, app/servables/nose_tracker/faces.py)."""

    def __init__(self, det_pb, nose_pb=None, size=320, margin=None, refine=False):
        import cv2
        from app.servables.nose_tracker.faces import CROP_MARGIN
        nose_pb = nose_pb or served_nose_pb()
        self.nose_version = Path(nose_pb).parent.name
        self.det = cv2.dnn.readNetFromTensorflow(str(det_pb))
        self.nose = cv2.dnn.readNetFromTensorflow(str(nose_pb))
        self.size, self.margin, self.refine = size, margin or CROP_MARGIN, refine

    def detect(self, img, min_score, size=None):
        """(boxes x, y, w, h, scores) in pixels of the image as displayed, ``size`` (width,
        height; default: img's own) when img was decoded at reduced scale."""
        from app.servables.face_detector.contract import decode, preprocess
        w, h = size or (img.shape[1], img.shape[0])
        blob, s = preprocess(img, self.size)
        self.det.setInput(blob)
        out = np.asarray(self.det.forward())[0]
        return decode(out, s * img.shape[1] / w, min_score=min_score, image_wh=(w, h))

    def from_bytes(self, data: bytes, min_score, max_pixels=10 ** 9):
        """An encoded image as the server takes it (detection_decode, then crop_source): (boxes,
        scores, (n, 5, 2) points) in pixels as displayed, largest box first."""
        from app.servables.face_detector.servable import detection_decode
        from app.servables.nose_tracker.faces import crop_source
        img, w, h = detection_decode(data, max_pixels, self.size)
        boxes, sc = self.detect(img, min_score, (w, h))
        order = sorted(range(len(boxes)), key=lambda k: (-float(boxes[k][2] * boxes[k][3]), -float(sc[k])))
        boxes, sc = boxes[order], sc[order]
        img = crop_source(data, img, w, boxes, max_pixels)
        return boxes, sc, self.landmarks(img, boxes, img.shape[1] / w)

    def landmarks(self, img, boxes, scale=1.0):
        """(n, 5, 2) pixel points of each box (one batch through the landmark net); ``scale``:
        decoded pixels per pixel as displayed."""
        from app.servables.nose_tracker.faces import crop_blob, crop_points, recentred
        if not len(boxes):
            return np.zeros((0, 5, 2))
        crops = [crop_blob(img, b, scale, self.margin) for b in boxes]
        self.nose.setInput(np.concatenate([c[0] for c in crops]))
        rows = np.asarray(self.nose.forward()).reshape(len(boxes), -1)
        pts = np.stack([crop_points(r, c[1]) for r, c in zip(rows, crops)])
        if self.refine:
            crops = [crop_blob(img, recentred(b, p), scale, self.margin) for b, p in zip(boxes, pts)]
            self.nose.setInput(np.concatenate([c[0] for c in crops]))
            rows = np.asarray(self.nose.forward()).reshape(len(boxes), -1)
            pts = np.stack([crop_points(r, c[1]) for r, c in zip(rows, crops)])
        return pts

    def whole(self, img):
        from app.servables.nose_tracker.contract import preprocess
        self.nose.setInput(preprocess(img))
        row = np.asarray(self.nose.forward()).reshape(-1)
        return row[:10].reshape(5, 2) * [img.shape[1], img.shape[0]]


def _nme(pred_nose, gt_pts):
    iod = np.linalg.norm(gt_pts[1] - gt_pts[2])
    return float(np.linalg.norm(pred_nose - gt_pts[0]) / max(iod, 1e-6))


def nme_summary(nmes, missed=0):
    a = np.asarray(nmes, np.float64)
    n = len(a) + missed
    return {"n_faces": int(n), "n_found": int(len(a)), "nme_mean": float(a.mean()) if len(a) else None,
            "nme_median": float(np.median(a)) if len(a) else None,
            "fail_rate_nme_gt_0.10": float((a > 0.10).mean()) if len(a) else None,
            "fail_or_missed_rate": float(((a > 0.10).sum() + missed) / max(n, 1))}


def scene_landmark_nme(pipe, scenes, min_score, min_w=40.0, found=None):
    """Nose NME of every true face >= min_w px matched by a detection (IoU >= 0.5); true faces
    no detection matched count as missed. ``found``: each scene's (boxes, scores, points)
    when already computed (default: the pipeline on the scene's pixels)."""
    nm, missed = [], 0
    for i, (img, gts, pts) in enumerate(scenes):
        if found is None:
            boxes, sc = pipe.detect(img, min_score)
            points = pipe.landmarks(img, boxes)
        else:
            boxes, sc, points = found[i]
        gts, vis = visible(gts, (img.shape[1], img.shape[0]))
        gt_det, _, _ = match(boxes, sc, gts, min_score)
        for g in range(len(gts)):
            if gts[g, 2] - gts[g, 0] < min_w or vis[g] < 0.5:
                continue
            if gt_det[g] < 0:
                missed += 1
            else:
                nm.append(_nme(points[gt_det[g]][0], pts[g]))
    return nme_summary(nm, missed)


def jpeg_decode_check(pipe, scenes, min_score, quality=90):
    """The scenes as JPEG files (quality 90), through a full decode and through the server's
    reduced decode (``Pipeline.from_bytes``): detection and nose NME of each."""
    import cv2
    jpegs = [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes() for img, _, _ in scenes]

    def full(data, thr):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        boxes, sc = pipe.detect(img, thr)
        return boxes, sc, pipe.landmarks(img, boxes)
    out = {}
    for name, run in (("full_decode", full), ("server_reduced_decode", pipe.from_bytes)):
        found = [run(data, min_score) for data in jpegs]
        r = score([(b, s) for b, s, _ in found], scenes, min_score)
        out[name] = {"recall": r["recall"], "precision": r["precision"],
                     "landmarks_on_scenes": scene_landmark_nme(pipe, scenes, min_score, found=found)}
    return out


def split_photos(root, labels, idx, frame=None):
    """The split's own photos, as a user uploads them: (image, its five true points); framed
    in a larger picture (``frame_photo``) when ``frame`` = (width, height)."""
    import cv2
    from training.nose_tracker.data import frame_photo
    for r in idx:
        img = cv2.imread(str(Path(root) / labels["path"][r]), cv2.IMREAD_COLOR)
        pts = labels["pts"][r]
        if frame:
            img, pts = frame_photo(img, pts, *frame)
        yield img, pts


def plain_photo_nme(pipe, root, labels, idx, min_score, frame=None):
    """The split's own photos fed whole (as a user uploads a face photo): the pipeline's most
    prominent face's nose, or the whole-image net when no face is found."""
    from app.servables.nose_tracker.faces import prominent
    nm, nm_legacy, no_face = [], [], []
    for img, pts in split_photos(root, labels, idx, frame):
        boxes, sc = pipe.detect(img, min_score)
        legacy = pipe.whole(img)[0]
        nm_legacy.append(_nme(legacy, pts))
        if len(boxes):
            p = pipe.landmarks(img, boxes[[prominent(boxes, sc)]])[0][0]
        else:
            p = legacy
        no_face.append(not len(boxes))
        nm.append(_nme(p, pts))
    out = nme_summary(nm)
    out["no_face_found"] = int(sum(no_face))
    out["whole_image_net"] = nme_summary(nm_legacy)
    # by source: lfw_80 photos are whole news photos of 80x80 px with a face ~25-30 px wide
    src = np.asarray(labels["source"])[np.asarray(idx)]
    nm, nm_legacy, no_face = np.asarray(nm), np.asarray(nm_legacy), np.asarray(no_face)
    out["by_source"] = {str(k): {**nme_summary(nm[src == k]), "no_face_found": int(no_face[src == k].sum()),
                                 "whole_image_net": nme_summary(nm_legacy[src == k])} for k in np.unique(src)}
    return out


def calibrate(pipe, scenes):
    """The score threshold of best F1 (faces >= 40 px) on these (dev) scenes."""
    dets = [pipe.detect(img, 0.05) for img, _, _ in scenes]
    best = None
    for thr in np.round(np.arange(0.10, 0.91, 0.025), 3):
        r = score(dets, scenes, float(thr))
        f1 = 2 * r["precision"] * r["recall"] / max(r["precision"] + r["recall"], 1e-9)
        if best is None or f1 > best[0] + 1e-12:
            best = (f1, float(thr), r)
    return best[1], dets


def bench_forward(pb, size=320, n=200, wh=(640, 480)):
    import time

    import cv2
    from app.servables.face_detector.contract import preprocess
    cv2.setNumThreads(1)
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    img = np.random.default_rng(0).integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8)
    blob, _ = preprocess(img, size)
    for _ in range(20):
        net.setInput(blob); net.forward()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        net.setInput(blob); net.forward()
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.median(ts))


def sweep(pipe, scenes, min_score):
    """Landmark NME on dev scenes for each crop margin, with and without the re-centred pass."""
    out = {}
    keep = (pipe.margin, pipe.refine)
    for m in (1.3, 1.6, 2.0):
        for refine in (False, True):
            pipe.margin, pipe.refine = m, refine
            out[f"margin {m}{' + recentred pass' if refine else ''}"] = scene_landmark_nme(pipe, scenes, min_score)
    pipe.margin, pipe.refine = keep
    return out


def evaluate_split(pb, root, labels, split, part, min_score, n=300, sizes=(256, 320, 416), do_sweep=False):
    pipe = Pipeline(pb)
    scenes = scene_set(root, labels, split, part, n)
    res = {"scenes": n, "faces": int(sum(len(g) for _, g, _ in scenes))}
    dets = [pipe.detect(img, 0.05) for img, _, _ in scenes]
    res["detection"] = score(dets, scenes, min_score)
    res["detection_by_input_size"] = {}
    for s in sizes:
        p2 = Pipeline(pb, size=s)
        d2 = [p2.detect(img, 0.05) for img, _, _ in scenes]
        r = score(d2, scenes, min_score)
        res["detection_by_input_size"][str(s)] = {k: r[k] for k in ("recall", "precision")}
        res["detection_by_input_size"][str(s)]["forward_ms_1thread"] = round(bench_forward(pb, s, 100), 2)
    res["landmarks_on_scenes"] = scene_landmark_nme(pipe, scenes, min_score)
    if do_sweep:
        res["landmark_sweep"] = sweep(pipe, scenes, min_score)
        res["prominence_sweep"] = prominence_sweep(pipe, root, labels, split[part], min_score)
    res["plain_photos"] = plain_photo_nme(pipe, root, labels, split[part], min_score)
    res["plain_photos_in_640x480"] = plain_photo_nme(pipe, root, labels, split[part], min_score, frame=(640, 480))
    return res


def _print(part, r):
    d = r["detection"]
    print(f"[{part}] {r['scenes']} scenes, {r['faces']} faces: recall {d['recall']:.4f} precision "
          f"{d['precision']:.4f} (tp {d['tp']} fn {d['fn']} fp {d['fp']})", flush=True)
    for k, v in d["recall_by_width_px"].items():
        print(f"    width {k:>8} px: n {v['n']:4d} recall {v['recall']:.3f}")
    for k, v in r["detection_by_input_size"].items():
        print(f"    input {k}: recall {v['recall']:.4f} precision {v['precision']:.4f} "
              f"forward {v['forward_ms_1thread']} ms")
    for k in ("landmarks_on_scenes", "plain_photos", "plain_photos_in_640x480"):
        print(f"  {k}: {json.dumps(r[k])}", flush=True)
    for k, v in r.get("landmark_sweep", {}).items():
        print(f"  sweep {k}: NME {v['nme_mean']} fail {v['fail_rate_nme_gt_0.10']} "
              f"fail or missed {v['fail_or_missed_rate']:.3f}", flush=True)


def export_and_evaluate(model, info, root, labels, split, version, test=False):
    """Freeze the detector for OpenCV, check it against Keras, calibrate the score threshold on
    the dev scenes, evaluate (test only with test=True) and write metadata.json."""
    import cv2
    from app.servables.face_detector.contract import preprocess
    from app.servables.nose_tracker.faces import CROP_MARGIN
    from training.nose_tracker.export import freeze_keras, sha256
    out = Path(__file__).resolve().parents[2] / "models" / "face_detector" / version
    pb = freeze_keras(model, out / "face_detector.pb", input_shape=(None, None, 3))
    dev = scene_set(root, labels, split, "dev", 300)
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    diff = 0.0
    for img, _, _ in dev[:4]:
        blob, _ = preprocess(img, 320)
        net.setInput(blob)
        o = np.asarray(net.forward())
        k = np.transpose(model(np.transpose(blob, [0, 2, 3, 1]), training=False).numpy(), [0, 3, 1, 2])
        diff = max(diff, float(np.abs(o - k).max()))
    print(f"exported {pb} ({pb.stat().st_size:,} bytes); max |keras - opencv| = {diff:.2e}", flush=True)
    pipe = Pipeline(pb)
    thr, _ = calibrate(pipe, dev)
    print(f"min_score calibrated on dev scenes (best F1, faces >= 40 px): {thr}", flush=True)
    metrics = {"dev": evaluate_split(pb, root, labels, split, "dev", thr, do_sweep=True)}
    _print("dev", metrics["dev"])
    if test:
        metrics["test"] = evaluate_split(pb, root, labels, split, "test", thr)
        _print("test", metrics["test"])
    meta = {"name": "face_detector", "version": version, "sha256": sha256(pb), "file": "face_detector.pb",
            "framework": "TensorFlow frozen GraphDef for cv2.dnn.readNetFromTensorflow",
            "input": {"shape": [1, 3, -1, -1], "dtype": "float32", "layout": "NCHW", "channels": "BGR",
                      "scale": "pixel/255", "preprocess": "app/servables/face_detector/contract.py: preprocess "
                      "(longer side to FACE_DETECT_SIZE, default 320; edge-padded to a multiple of 32)"},
            "output": {"shape": [1, 5, -1, -1], "channels": ["centre_probability", "offset_x", "offset_y",
                                                            "log_width_over_8", "log_height_over_8"],
                       "stride": 8, "decode": "app/servables/face_detector/contract.py: decode"},
            "min_score": thr, "crop_margin": CROP_MARGIN, "landmark_net_version": pipe.nose_version, "opencv_vs_keras_max_abs_diff": diff,
            "forward_ms_median_1thread_320x256": round(bench_forward(pb), 3),
            "size_bytes": pb.stat().st_size, "parameters": int(model.count_params()),
            "training": info, "metrics": metrics}
    (out / "metadata.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out / 'metadata.json'}", flush=True)
    return meta


def main():
    from training.nose_tracker.data import data_dir
    from training.face_detector.data import load_labels, split_indices
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pb", help="default: the newest version in models/face_detector")
    ap.add_argument("--data", default=None)
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--n", type=int, default=300, help="scenes")
    ap.add_argument("--min-score", type=float, default=None, help="default: the model's metadata.json")
    ap.add_argument("--sweep", action="store_true", help="crop margins and the re-centred pass (dev)")
    ap.add_argument("--decode-check", action="store_true",
                    help="only: the scenes as JPEG files, full decode against the server's reduced decode")
    a = ap.parse_args()
    if a.pb is None:
        from app.serving.repository import version_dir
        a.pb = str(version_dir("face_detector") / "face_detector.pb")
    root = data_dir(a.data)
    labels = load_labels(root / "labels.csv")
    split = split_indices(labels["source"], seed=0)
    thr = a.min_score
    if thr is None:
        thr = json.loads((Path(a.pb).parent / "metadata.json").read_text())["min_score"]
    if a.decode_check:
        r = jpeg_decode_check(Pipeline(a.pb), scene_set(root, labels, split, a.split, a.n), thr)
        print(json.dumps(r, indent=1))
        return
    r = evaluate_split(a.pb, root, labels, split, a.split, thr, a.n, do_sweep=a.sweep)
    _print(a.split, r)


if __name__ == "__main__":
    main()


def prominence_sweep(pipe, root, labels, idx, min_score, frame=None):
    """Which face of a photo is "the" face (the legacy x, y): nose NME of the split's photos for
    each rule. Dev only: it chose ``faces.prominent``."""
    rules = {"largest box": lambda b, s: b[:, 2] * b[:, 3], "best score": lambda b, s: s,
             "area x score": lambda b, s: b[:, 2] * b[:, 3] * s, "area x score^2": lambda b, s: b[:, 2] * b[:, 3] * s * s}
    out = {k: [] for k in rules}
    for img, pts in split_photos(root, labels, idx, frame):
        boxes, sc = pipe.detect(img, min_score)
        allp = pipe.landmarks(img, boxes) if len(boxes) else None
        for k, fn in rules.items():
            p = allp[int(np.argmax(fn(boxes, sc)))][0] if allp is not None else pipe.whole(img)[0]
            out[k].append(_nme(p, pts))
    return {k: nme_summary(v) for k, v in out.items()}
