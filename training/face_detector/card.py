"""The face detector's model card, MODEL_CARD.md, written from its metadata.json (every figure
in it comes from evaluate.py through train.py / export_and_evaluate).

    .venv/bin/python training/face_detector/card.py [--version 1.0.0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def num(v, k=4):
    return "n/a" if v is None else f"{v:.{k}f}"


def detection_rows(m):
    d = m["detection"]
    rows = [f"| all >= 40 px | {d['tp'] + d['fn']} | **{pct(d['recall'])}** | **{pct(d['precision'])}** | "
            f"{d['fp']} |"]
    for k, v in d["recall_by_width_px"].items():
        rows.append(f"| {k} px wide | {v['n']} | {pct(v['recall'])} | | |")
    return rows


def landmark_row(name, r):
    return (f"| {name} | {r['n_faces']} | {r['n_found']} | {num(r['nme_mean'])} | {num(r['nme_median'])} | "
            f"{pct(r['fail_rate_nme_gt_0.10'])} | {pct(r['fail_or_missed_rate'])} |")


def _one_run(t) -> str:
    return (f"{t['train_minutes']} minutes on 2 CPU cores, {t['steps']:,} steps of {t['batch']} scenes of "
            f"{t['size']}x{t['size']} ({t['scenes']:,} scenes), AdamW lr {t['lr']} cosine, seed {t['seed']}")


def training_lines(t) -> list[str]:
    if "init" not in t:
        return [f"Training: {_one_run(t)}."]
    i = t["init"]
    return [f"Training, in two runs of `train.py`: v{i['version']}'s ({_one_run(i['training'])}), then this one,",
            f"started from v{i['version']}'s graph (`--init`, its weights put back into Keras by",
            f"`warm_start.py`, sha256 `{i['sha256'][:12]}...`): {_one_run(t)}."]


def reproduce_lines(meta) -> list[str]:
    t, v = meta["training"], meta["version"]
    cmd = ".venv/bin/python training/face_detector/train.py"
    if "init" not in t:
        return [f"    {cmd} --minutes {t['train_minutes']:g} --version {v} --test"]
    i = t["init"]
    return [f"    {cmd} --minutes {i['training']['train_minutes']:g} --version {i['version']} --test",
            f"    {cmd} --init {i['file']} --minutes {t['train_minutes']:g} --lr {t['lr']:g} \\",
            f"        --version {v} --test"]


def card(meta: dict) -> str:
    v = meta["version"]
    t = meta["training"]
    dev, test = meta["metrics"]["dev"], meta["metrics"].get("test")
    parts = [f"# Model card: face_detector (v{v})", "",
             "Finds every face of a photo: a box and a score per face. Our own small CNN, trained here on",
             "scenes composed from `../shared/data/nose`; a frozen TensorFlow graph that",
             "`cv2.dnn.readNetFromTensorflow` loads. It is the first stage of the nose tracker's pipeline:",
             "each face it finds is cropped and given to the landmark net (`models/nose_tracker`).", "",
             "| | |", "|---|---|",
             f"| file | `models/face_detector/{v}/face_detector.pb`, {meta['size_bytes']:,} bytes |",
             f"| sha256 | `{meta['sha256']}` |",
             f"| parameters | {meta['parameters']:,} |",
             f"| forward, cv2.dnn, 1 thread, 320x256 input | **{meta['forward_ms_median_1thread_320x256']} ms median** |",
             f"| OpenCV vs Keras | max abs diff {meta['opencv_vs_keras_max_abs_diff']:.1e} |",
             f"| score threshold (`min_score`) | **{meta['min_score']}**, the best F1 on the dev scenes |", "",
             "## Contract", "",
             "* **Input**: the image resized, aspect kept, so that its longer side is `FACE_DETECT_SIZE`",
             "  (320) px, padded right and bottom with edge pixels to a multiple of 32, BGR / 255, float32",
             "  NCHW (`app/servables/face_detector/contract.py: preprocess`). Any size; batches of one size.",
             "* **Output**: `N x 5 x H/8 x W/8`: the face-centre probability (sigmoid), the centre's offset",
             "  in its cell (x, y) and log(width / 8 px), log(height / 8 px). Decoding",
             "  (`contract.py: decode`): 3x3 local maxima above `min_score`, boxes mapped back to the image,",
             "  clipped to it, then `cv2.dnn.NMSBoxes` at IoU 0.4.", "",
             "## Architecture", "",
             "CenterNet-style and anchor-free: a depthwise-separable backbone (the nose tracker's blocks) to",
             "stride 32, a top-down path back to stride 8 (nearest 2x upsampling written as",
             "`ResizeNearestNeighbor` with a `[2, 2]` zoom, the pattern OpenCV imports; Keras' `UpSampling2D`",
             "is a `Repeat` it cannot import) and one head there. Training loss: penalty-reduced focal loss",
             "on the heat map (Gaussian per face centre), L1 on offset and log size at the centre cell.", "",
             "## Data", "",
             "`../shared/data/nose` (not in this repository): 12,027 photos with one annotated face each, the",
             "Multi-Task Facial Landmark / CUHK sets. **No licence is granted for redistribution; research and",
             "training use only.** No data set here has every face of a crowded photo boxed, so scenes are",
             "composed (`training/face_detector/data.py`): faces of `cuhk_net` photos (and small `lfw_80` ones)",
             "cut out with a feathered ellipse or rectangle, pasted 0-6 at a time at random scales, positions,",
             "rotations and flips over a whole `lfw_80` or `cuhk_net` photo (its own face kept as a target), a",
             "mosaic of face-free regions of the photos, or a procedural texture with skin-coloured blobs as",
             "hard negatives; 12% of the scenes are close-ups (one face of 55-95% of the frame). Then",
             "occluders, lighting, blur, noise, JPEG and low-resolution degradations. The split is the nose",
             "tracker's (by image, stratified by source, seed 0): training scenes are made of training images",
             "only; the dev and test scene sets (fixed seeds) of their own split's images only.", "",
             *training_lines(t), "",
             "## Metrics", "",
             "Evaluation scenes: 640x480, 1-4 pasted faces 24 px wide up to 60% of the height, plus the",
             "background photo's own face when the background is a photo (`evaluate.py`). A detection is",
             "right when its IoU with a true face is >= 0.5. Recall and precision count faces >= 40 px wide;",
             "faces more than half outside the picture are left out. Everything runs through OpenCV with",
             "the server's own functions; the server's answers are tested equal to these",
             "(`tests/test_faces.py::test_server_equals_the_evaluated_pipeline`).", ""]
    for name, m in (("Test", test), ("Dev", dev)):
        if m is None:
            continue
        parts += [f"**{name}** ({m['scenes']} scenes, {m['faces']} faces)", "",
                  "| faces | n | recall | precision | false positives |", "|---|---|---|---|---|",
                  *detection_rows(m), ""]
    parts += ["By input size (dev; `FACE_DETECT_SIZE`):", "", "| input (longer side) | recall | precision | forward ms |",
              "|---|---|---|---|"]
    for k, r in dev["detection_by_input_size"].items():
        parts.append(f"| {k} | {pct(r['recall'])} | {pct(r['precision'])} | {r['forward_ms_1thread']} |")
    parts += ["", f"**The whole pipeline**: detector, then the landmark net (v{meta.get('landmark_net_version', '1.4.0')}) on a square crop of "
              f"{meta.get('crop_margin', 1.3)}x each box's longer side.",
              "Nose NME = nose error / inter-ocular distance; \"missed\" faces (no detection) count as failures",
              "in the last column. *Scenes*: the faces >= 40 px of the scenes above. *Photos*: the split's own",
              "photos fed whole, as a user uploads a face photo (the most prominent face, the largest box area x",
              "score^2; the whole-image net",
              "when no face is found); *in 640x480*: the same photos framed in a 640x480 picture. The `lfw_80`",
              "photos are whole news photos of 80x80 px with the face ~25-30 px wide: small faces.", "",
              "| set | faces | found | NME mean | NME median | NME > 0.10 | > 0.10 or missed |",
              "|---|---|---|---|---|---|---|"]
    for name, m in (("test", test), ("dev", dev)):
        if m is None:
            continue
        parts.append(landmark_row(f"{name} scenes", m["landmarks_on_scenes"]))
        parts.append(landmark_row(f"{name} photos", m["plain_photos"]))
        parts.append(landmark_row(f"{name} photos, whole-image net (before)", m["plain_photos"]["whole_image_net"]))
        for src, r in m["plain_photos"].get("by_source", {}).items():
            parts.append(landmark_row(f"{name} photos, {src} only", r))
            parts.append(landmark_row(f"{name} photos, {src} only, whole-image net (before)", r["whole_image_net"]))
        parts.append(landmark_row(f"{name} photos in 640x480", m["plain_photos_in_640x480"]))
        parts.append(landmark_row(f"{name} photos in 640x480, whole-image net (before)",
                                  m["plain_photos_in_640x480"]["whole_image_net"]))
    if "landmark_sweep" in dev:
        parts += ["", "Crop margin and a second, re-centred pass (dev scenes; chosen here, on dev):", "",
                  "| crop | NME mean | NME > 0.10 |", "|---|---|---|"]
        for k, r in dev["landmark_sweep"].items():
            parts.append(f"| {k} | {num(r['nme_mean'])} | {pct(r['fail_rate_nme_gt_0.10'])} |")
    if "prominence_sweep" in dev:
        parts += ["", "Which face is \"the\" face of a photo (the legacy `x`, `y`; dev photos; chosen here, on dev).",
                  "About a quarter of the photos have a second face found: a real second person (the `lfw_80`",
                  "news photos) or a false detection.", "", "| rule | NME mean | NME > 0.10 |", "|---|---|---|"]
        for k, r in dev["prominence_sweep"].items():
            parts.append(f"| {k} | {num(r['nme_mean'])} | {pct(r['fail_rate_nme_gt_0.10'])} |")
    parts += ["", "## Reproduce", "",
              "From the repository root (training, export, calibration on dev, dev and test evaluation):", "",
              *reproduce_lines(meta), "",
              "then this card: `.venv/bin/python training/face_detector/card.py`. The wall-clock budget sets the",
              "cosine schedule, so a busier or faster machine trains a slightly different model (`--steps N`",
              "makes it step-based); the sha256 pins the file. Evaluate again:",
              "`.venv/bin/python training/face_detector/evaluate.py --split dev`.", ""]
    return "\n".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", help="default: the newest in models/face_detector")
    a = ap.parse_args()
    if a.version is None:
        from app.serving.repository import version_dir
        d = version_dir("face_detector")
    else:
        d = ROOT / "models" / "face_detector" / a.version
    meta = json.loads((d / "metadata.json").read_text())
    (d / "MODEL_CARD.md").write_text(card(meta))
    print(f"wrote {d / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
