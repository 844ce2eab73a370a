"""Train the nose tracker, export it for OpenCV and write metadata.

Two commands (from the repo root) reproduce the shipped model (each version's MODEL_CARD.md
has its own):

    .venv/bin/python training/nose_tracker/train.py --minutes 45 --version 1.4.0 --test
    .venv/bin/python training/nose_tracker/train.py --init models/nose_tracker/1.4.0/nose_tracker.pb \
        --scenes 12000 --minutes 40 --lr 1e-3 --version 1.5.0 --test

What it does: split by image (80/10/10, stratified by source, seed 0) -> cache decoded
images in memory (and in $NOSE_CACHE_DIR, default /tmp/nose_tracker_cache) -> train with
augmented face crops + whole-image samples under a wall-clock budget (cosine LR over the
budget; pass --steps N to make the schedule step-based and exactly repeatable; the training
graph has fused BatchNorm and Reshape heads) -> copy the weights into the importer-safe graph
-> export models/nose_tracker/<version>/nose_tracker.pb (frozen + grappler constant folding) -> check OpenCV
against Keras -> evaluate dev (and test with --test) through OpenCV with the server's
whole-image preprocessing, and in the face pipeline (the shipped face detector's crops) on
composed scenes and on the split's photos -> write models/nose_tracker/<version>/metadata.json.

--init starts from a shipped graph (training/warm_start.py); --scenes N adds face-pipeline
crops of N composed training scenes (scene_crops.py) as a share --p-scene of the samples.

TF uses --threads intra-op threads (default 2) and OpenCV one.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data dir (default $NOSE_DATA_DIR or ../shared/data/nose)")
    ap.add_argument("--minutes", type=float, default=45.0, help="training wall-clock budget")
    ap.add_argument("--steps", type=int, default=0, help="fixed number of steps (overrides --minutes schedule)")
    ap.add_argument("--batch", type=int, default=64,
                    help="64: 624 samples/s against 503 with 32 (a fixed batch, fused BN, 96-channel deep blocks)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=5e-5)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--deep", type=int, default=128,
                    help="channels of the 14x14 blocks (96 up to v1.3.0: 0.85 ms forward; 128: 1.07-1.12 ms)")
    ap.add_argument("--p-whole", type=float, default=0.5, help="share of whole-image samples")
    ap.add_argument("--p-framed", type=float, default=0.4,
                    help="share of whole-image samples padded to another aspect ratio (e.g. a face in a 640x480 frame)")
    ap.add_argument("--turn-boost", type=float, default=2.0,
                    help="draw turned heads (nose off the eye midpoint) up to 1+B times as often")
    ap.add_argument("--threads", type=int, default=2,
                    help="TF intra-op threads (2: 274 vs 197 samples/s with 1 on this 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=float, default=4.0, help="minutes between dev evaluations")
    ap.add_argument("--run-dir", default=os.environ.get("NOSE_RUN_DIR", "/tmp/nose_tracker_runs/latest"))
    ap.add_argument("--version", required=True, help="the model version (its folder in the model repository)")
    ap.add_argument("--init", default=None, metavar="PB",
                    help="start from a shipped model's frozen graph (training/warm_start.py)")
    ap.add_argument("--scenes", type=int, default=0,
                    help="composed training scenes whose face-pipeline crops are training samples (scene_crops.py)")
    ap.add_argument("--p-scene", type=float, default=0.5, help="share of samples that are scene crops (with --scenes)")
    ap.add_argument("--detector", default=None, metavar="PB",
                    help="face detector that crops the scenes and runs the pipeline evaluation "
                         "(default: the model repository's current face_detector)")
    ap.add_argument("--out", default=None,
                    help="version directory to write (default: models/nose_tracker/<--version>)")
    ap.add_argument("--test", action="store_true", help="also evaluate the test split (do this once, at the end)")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--export-only", action="store_true",
                    help="do not train: export and evaluate the weights already in --run-dir")
    ap.add_argument("--jit", action="store_true",
                    help="XLA-compile the train step (measured 8x SLOWER on this CPU: depthwise convs)")
    a = ap.parse_args()

    import cv2
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)
    import keras

    from training.nose_tracker.data import (Augmenter, apply_photo, data_dir, load_cache, load_labels,
                                            nose_below_eyeline, normalised_targets, split_indices)
    from training.nose_tracker.model import build, transfer_weights
    from training.schedule import cosine_steps, start_producers

    keras.utils.set_random_seed(a.seed)
    root = data_dir(a.data)
    if a.detector is None:
        from app.serving.repository import version_dir
        a.detector = str(version_dir("face_detector") / "face_detector.pb")
    labels = load_labels(root / "labels.csv")
    split = split_indices(labels["source"], seed=0)
    d = nose_below_eyeline(labels["pts"])
    bad = d < 0.15  # nose at/above the eye line: label error (plus a few extreme pitches)
    train_idx = split["train"][~bad[split["train"]]]
    print(f"data {root}: {len(labels['path'])} rows; train {len(split['train'])} "
          f"(-{len(split['train']) - len(train_idx)} nose-above-eyeline) dev {len(split['dev'])} "
          f"test {len(split['test'])}", flush=True)
    t0 = time.time()
    cache = load_cache(root, labels)
    print(f"cache ready in {time.time() - t0:.0f}s", flush=True)

    sampler = dev_pool = None
    if a.scenes and not a.export_only:
        from training.nose_tracker.scene_crops import PoolSampler, build_pool
        pool = build_pool(root, Path(a.detector), a.scenes)
        print(f"scene crops: {len(pool['y'])} faces of {pool['scenes']} scenes, cropped by {pool['detector']}", flush=True)
        sampler = PoolSampler(pool, seed=a.seed + 1)
        dev_pool = build_pool(root, Path(a.detector), 400, seed=11, part="dev")
        print(f"dev scene crops (progress check): {len(dev_pool['y'])} faces of 400 dev scenes", flush=True)
    aug = Augmenter(labels, cache, train_idx, seed=a.seed, p_whole=a.p_whole, turn_boost=a.turn_boost,
                    p_framed=a.p_framed, scenes=sampler, p_scene=a.p_scene)
    run_dir = Path(a.run_dir)
    if a.export_only:  # the saved run's own architecture, not the command line's
        info = json.loads((run_dir / "train_info.json").read_text())
        a.width, a.deep = info["width"], info["deep"]
    model = build(a.width, a.deep, for_training=True)  # fused BN, Reshape heads: 2x faster steps
    print(f"model params {model.count_params():,}", flush=True)
    init = None
    if a.init and not a.export_only:
        from training.nose_tracker.export import sha256
        from training.warm_start import warm_start
        xs = np.concatenate([aug.batch(a.batch)[0] for _ in range(8)]).astype(np.float32) / 255
        diff = warm_start(model, a.init, xs)
        if diff > 1e-4:
            raise SystemExit(f"--init {a.init}: the Keras model differs from the graph by {diff:.2e}")
        prior = json.loads((Path(a.init).parent / "metadata.json").read_text())
        init = {"file": str(Path(a.init).resolve().relative_to(HERE.parents[1])), "sha256": sha256(a.init),
                "version": prior["version"], "training": prior["training"]}
        print(f"initialised from {init['file']} (v{init['version']}): max |keras - opencv| {diff:.1e}", flush=True)
    opt = keras.optimizers.AdamW(learning_rate=a.lr, weight_decay=a.wd, clipnorm=5.0)
    # loss weights per coordinate: nose x3, other points x1
    w = tf.constant([3, 3] + [1] * 8, tf.float32) / 11.0 * 10.0

    def wing(err, wd=10.0, eps=2.0):  # err in 112-px units
        c = wd - wd * np.log(1 + wd / eps)
        return tf.where(err < wd, wd * tf.math.log1p(err / eps), err - c)

    @tf.function(jit_compile=a.jit)
    def train_step(x_u8, params, y):
        x = apply_photo(x_u8, params)
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            err = tf.abs(p - y) * 112.0
            loss = tf.reduce_mean(wing(err) * w)
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, tf.reduce_mean(tf.abs(p[:, :2] - y[:, :2])) * 112.0

    @tf.function(jit_compile=a.jit)
    def predict(x):
        return model(x, training=False)

    whole_t = normalised_targets(labels)

    def dev_nme(idx):
        out = []
        for s in range(0, len(idx), 128):
            ii = idx[s:s + 128]
            out.append(predict(cache["whole"][ii].astype(np.float32) / 255.0).numpy())
        p = np.concatenate(out)
        wh = labels["wh"][idx]
        pts = labels["pts"][idx]
        err = np.linalg.norm((p[:, :2] - whole_t[idx, :2]) * wh, axis=1)
        iod = np.linalg.norm(pts[:, 1] - pts[:, 2], axis=1)
        nme = err / iod
        return nme.mean(), np.median(nme), (nme > 0.1).mean()

    def dev_scene_nme():  # keras on the detector's crops of dev scenes; points in crop units
        if dev_pool is None:
            return ""
        p = np.concatenate([predict(dev_pool["x"][s:s + 128].astype(np.float32) / 255.0).numpy()
                            for s in range(0, len(dev_pool["y"]), 128)])
        y = dev_pool["y"]
        nme = np.linalg.norm(p[:, :2] - y[:, :2], axis=1) / np.linalg.norm(y[:, 2:4] - y[:, 4:6], axis=1)
        return f"; [dev scene crops] NME mean {nme.mean():.4f} fail {100 * (nme > 0.1).mean():.1f}%"

    def train_loop(run_dir: Path) -> dict:
        q, stop = start_producers(lambda _k: lambda: aug.batch(a.batch), 1, maxsize=6)
        t_start = time.time()
        step, last_eval, last_log = 0, t_start - a.eval_every * 60 - 1, t_start  # an evaluation at step 1
        run_loss, run_px, n_run = 0.0, 0.0, 0
        for i, el, prog, lr in cosine_steps(a.minutes, a.steps, a.lr):
            opt.learning_rate = float(lr)
            x, prm, y = q.get()
            loss, px = train_step(tf.constant(x), tf.constant(prm), tf.constant(y))
            run_loss += float(loss); run_px += float(px); n_run += 1
            step = i + 1
            now = time.time()
            if now - last_log > 30 or step == 1:
                print(f"step {step:6d} {el / 60:5.1f}/{a.minutes:g} min ({100 * prog:4.1f}%) lr {lr:.2e} "
                      f"loss {run_loss / n_run:.3f} nose_L1@112 {run_px / n_run:.2f}px "
                      f"{step * a.batch / max(el, 1e-6):.0f} samples/s", flush=True)
                run_loss, run_px, n_run, last_log = 0.0, 0.0, 0, now
            if now - last_eval > a.eval_every * 60:
                m, md, f = dev_nme(split["dev"])
                print(f"  [dev whole-image, keras] NME mean {m:.4f} median {md:.4f} fail {100 * f:.1f}%{dev_scene_nme()}", flush=True)
                last_eval = time.time()
        stop.set()
        train_min = (time.time() - t_start) / 60
        m, md, f = dev_nme(split["dev"])
        print(f"done: {step} steps ({step * a.batch} samples) in {train_min:.1f} min; "
              f"[dev keras] NME mean {m:.4f} median {md:.4f} fail {100 * f:.1f}%{dev_scene_nme()}", flush=True)

        run_dir.mkdir(parents=True, exist_ok=True)
        model.save_weights(run_dir / "model.weights.h5")
        info = {"steps": step, "samples": step * a.batch, "batch": a.batch, "train_minutes": round(train_min, 1), "seed": a.seed,
                "lr": a.lr, "wd": a.wd, "arch": "integral", "width": a.width, "deep": a.deep, "p_whole": a.p_whole,
                "p_framed": a.p_framed, "turn_boost": a.turn_boost, "tf_threads": a.threads,
                "train_rows": int(len(train_idx)), "dropped_nose_above_eyeline": int(len(split["train"]) - len(train_idx)),
                "split_sizes": {k: int(len(v)) for k, v in split.items()}, "init": init}
        if sampler is not None:
            info.update(scenes=a.scenes, scene_crops=int(len(sampler.y)), p_scene=a.p_scene,
                        scene_detector=pool["detector"])
        (run_dir / "train_info.json").write_text(json.dumps(info, indent=1))
        return info

    if a.export_only:
        model.load_weights(run_dir / "model.weights.h5")
        print(f"loaded {run_dir / 'model.weights.h5'} ({info['steps']} steps)", flush=True)
    else:
        info = train_loop(run_dir)
    if a.no_export:
        return

    from training.nose_tracker.evaluate import evaluate_pb
    from training.nose_tracker.export import compare, freeze_keras, sha256
    out = Path(a.out) if a.out else HERE.parents[1] / "models" / "nose_tracker" / a.version
    trained = model
    model = build(a.width, a.deep)  # the importer-safe graph, same weights
    transfer_weights(trained, model)
    probe = cache["whole"][split["dev"][:16]].astype(np.float32) / 255.0
    gap = float(np.abs(trained(probe, training=False).numpy() - model(probe, training=False).numpy()).max())
    assert gap < 1e-5, f"export graph differs from the trained graph by {gap}"
    pb = freeze_keras(model, out / "nose_tracker.pb")
    rng = np.random.default_rng(1)
    x_rand = rng.random((8, 112, 112, 3), dtype=np.float32)
    diff = max(compare(model, pb, x_rand), compare(model, pb, probe))
    print(f"exported {pb} {pb.stat().st_size / 1e6:.2f} MB; max |keras - opencv| = {diff:.2e}", flush=True)
    from training.nose_tracker.bench import bench
    forward_ms = round(float(np.median(bench(pb, 300))), 3)
    print(f"forward (cv2.dnn, 1 thread, batch 1): median {forward_ms} ms", flush=True)
    metrics = {}
    floor_mean = whole_t[split["train"], :2].mean(0)
    for part in (["dev", "test"] if a.test else ["dev"]):
        sub = {k: v[split[part]] for k, v in labels.items()}
        metrics[part] = evaluate_pb(pb, sub, root, floor_xy=floor_mean, verbose=True, title=part)
        # robustness: the same faces as 640x480 uploads (the benchmark's input)
        metrics[part + "_640x480"] = evaluate_pb(pb, sub, root, verbose=True, title=part, frame=(640, 480))
        metrics[part + "_face_pipeline"] = pipeline_metrics(pb, Path(a.detector), root, labels, split, part)
        print(f"[{part}, face pipeline] {json.dumps(metrics[part + '_face_pipeline'])}", flush=True)
    meta = {
        "name": "nose_tracker",
        "version": a.version,
        "sha256": sha256(pb),
        "file": "nose_tracker.pb",
        "framework": "TensorFlow frozen GraphDef for cv2.dnn.readNetFromTensorflow",
        "input": {"shape": [1, 3, 112, 112], "dtype": "float32", "layout": "NCHW", "channels": "BGR",
                  "scale": "pixel/255", "preprocess": "np.transpose(cv2.resize(img, (112, 112)) / 255, [2, 0, 1])[None].astype(np.float32)",
                  "batch": "N x 3 x 112 x 112 accepted"},
        "output": {"shape": [1, 10], "order": ["nose_x", "nose_y", "leye_x", "leye_y", "reye_x", "reye_y",
                                               "lmouth_x", "lmouth_y", "rmouth_x", "rmouth_y"],
                   "units": "normalised to [0,1] of the input image (multiply x by width, y by height)"},
        "metrics": metrics,
        "opencv_vs_keras_max_abs_diff": diff,
        "forward_ms_median_1thread": forward_ms,
        "size_bytes": pb.stat().st_size,
        "training": info,
        "floor_mean_nose_xy": [float(v) for v in floor_mean],
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out / 'metadata.json'}", flush=True)


def pipeline_metrics(pb: Path, det_pb: Path, root: Path, labels: dict, split: dict, part: str) -> dict:
    """The landmark net as the server runs it on photos: behind the face detector, on the split's
    composed 640x480 scenes (1-4 faces) and on the split's own photos (plain, and framed in 640x480)."""
    from training.face_detector.evaluate import Pipeline, plain_photo_nme, scene_landmark_nme, scene_set
    thr = json.loads((det_pb.parent / "metadata.json").read_text())["min_score"]
    pipe = Pipeline(det_pb, nose_pb=pb)
    out = {"detector": f"{det_pb.parent.name} (min_score {thr})",
           "scenes_640x480": scene_landmark_nme(pipe, scene_set(root, labels, split, part, 300), thr)}
    for k, frame in (("photos", None), ("photos_in_640x480", (640, 480))):
        r = plain_photo_nme(pipe, root, labels, split[part], thr, frame)
        out[k] = {key: r[key] for key in ("n_faces", "nme_mean", "nme_median", "fail_rate_nme_gt_0.10", "no_face_found")}
        out[k]["by_source"] = {s: {key: v[key] for key in ("nme_mean", "fail_rate_nme_gt_0.10")}
                               for s, v in r["by_source"].items()}
    return out


if __name__ == "__main__":
    main()
