"""Train the face detector on synthetic scenes, export it for OpenCV, evaluate it.

One command (from the repo root) reproduces the shipped model:

    .venv/bin/python training/face_detector/train.py --minutes 50 --version 1.0.0 --test
    .venv/bin/python training/face_detector/train.py --init models/face_detector/1.0.0/face_detector.pb \
        --minutes 115 --lr 1e-3 --version 1.1.0 --test

(the second run continues the first: --init puts a shipped graph's weights back into Keras).

Split: the nose tracker's (by image, stratified by source, seed 0).  Training scenes are
composed from training images only (training/face_detector/data.py), 256x256, batch 32;
CenterNet-style losses: penalty-reduced focal loss on the centre heat map, L1 on the
centre offset and log box size at centre cells.  Cosine learning rate over the wall-clock
budget (--steps N: step-based and repeatable).  Two scene-producer threads feed TF
(intra-op threads --threads, default 2).  Every --eval-every minutes: recall/precision on
a fixed set of dev scenes; then export (frozen graph + grappler constant folding),
OpenCV-vs-Keras check, and evaluation (evaluate.py) of dev (and test with --test) scenes,
written to models/face_detector/<version>/metadata.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data dir (default $NOSE_DATA_DIR or ../shared/data/nose)")
    ap.add_argument("--minutes", type=float, default=50.0)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256, help="training crop side")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=5e-5)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=float, default=8.0)
    ap.add_argument("--run-dir", default=os.environ.get("FACE_RUN_DIR", "/tmp/face_detector_runs/latest"))
    ap.add_argument("--version", default="1.1.0")
    ap.add_argument("--init", default=None, metavar="PB",
                    help="start from a shipped detector's frozen graph (training/warm_start.py)")
    ap.add_argument("--test", action="store_true", help="also evaluate the test scenes (once, at the end)")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--bench-steps", type=int, default=0, help="time N train steps and exit")
    a = ap.parse_args()

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import cv2
    cv2.setNumThreads(1)
    import keras

    from training.face_detector import data as D
    from training.face_detector.model import build
    from training.nose_tracker.data import data_dir
    from training.schedule import cosine_steps, start_producers

    keras.utils.set_random_seed(a.seed)
    root = data_dir(a.data)
    labels = D.load_labels(root / "labels.csv")
    split = D.split_indices(labels["source"], seed=0)
    tr = split["train"]
    imgs, scales = D.load_images(root, labels, tr, 256)
    model = build(a.width, for_training=True)
    print(f"model params {model.count_params():,}", flush=True)
    init = None
    if a.init and not a.export_only:
        from training.warm_start import warm_start
        from training.nose_tracker.export import sha256
        maker = D.SceneMaker(labels, imgs, scales, tr, seed=a.seed * 100 + 99)
        xs = np.concatenate([D.batch(maker, a.batch, a.size)[0] for _ in range(8)]).astype(np.float32) / 255
        diff = warm_start(model, a.init, xs)
        if diff > 1e-4:
            raise SystemExit(f"--init {a.init}: the Keras model differs from the graph by {diff:.2e}")
        prior = json.loads((Path(a.init).parent / "metadata.json").read_text())
        init = {"file": str(Path(a.init).resolve().relative_to(REPO)), "sha256": sha256(a.init),
                "version": prior["version"], "training": prior["training"]}
        print(f"initialised from {init['file']} (v{init['version']}): max |keras - opencv| {diff:.1e}", flush=True)
    run_dir = Path(a.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    def batches(k):  # producer thread k: its own scene maker and random stream
        maker = D.SceneMaker(labels, imgs, scales, tr, seed=a.seed * 100 + k)
        return lambda: D.batch(maker, a.batch, a.size)

    opt = keras.optimizers.AdamW(learning_rate=a.lr, weight_decay=a.wd, clipnorm=10.0)

    @tf.function
    def train_step(x_u8, heat_t, reg_t, mask):
        x = tf.cast(x_u8, tf.float32) * (1.0 / 255.0)
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            p = tf.clip_by_value(out[..., 0], 1e-4, 1 - 1e-4)
            pos = tf.cast(heat_t >= 1.0, tf.float32)
            n_pos = tf.maximum(tf.reduce_sum(pos), 1.0)
            focal = -(tf.reduce_sum(pos * tf.math.log(p) * (1 - p) ** 2)
                      + tf.reduce_sum((1 - pos) * tf.math.log(1 - p) * p ** 2 * (1 - heat_t) ** 4)) / n_pos
            m = mask[..., None]
            l1 = tf.abs(out[..., 1:] - reg_t) * m
            off = tf.reduce_sum(l1[..., :2]) / n_pos
            size = tf.reduce_sum(l1[..., 2:]) / n_pos
            loss = focal + off + size
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss, focal, off, size

    from training.face_detector.evaluate import detect_keras, dev_scene_set, score

    if a.bench_steps:
        q, stop = start_producers(batches, a.producers)
        b = q.get()
        train_step(*map(tf.constant, b))
        t = time.time()
        for _ in range(a.bench_steps):
            train_step(*map(tf.constant, q.get()))
        dt = (time.time() - t) / a.bench_steps
        print(f"{dt * 1000:.0f} ms/step, {a.batch / dt:.0f} scenes/s (queue {q.qsize()})")
        stop.set()
        return

    dev_set = dev_scene_set(root, labels, split, n=150)

    def dev_eval(tag):
        dets = [detect_keras(model, img, 320, min_score=0.05) for img, _, _ in dev_set]
        r = {thr: score(dets, dev_set, thr) for thr in (0.3, 0.4, 0.5)}
        print(f"  [{tag} dev scenes, keras, size 320] " + "  ".join(
            f"thr {t}: R {v['recall']:.3f} P {v['precision']:.3f}" for t, v in r.items()), flush=True)
        return r

    if not a.export_only:
        q, stop = start_producers(batches, a.producers)
        t0 = time.time()
        step, last_log, last_eval = 0, t0, t0
        acc = np.zeros(4)
        n_acc = 0
        for i, el, prog, lr in cosine_steps(a.minutes, a.steps, a.lr):
            opt.learning_rate = float(lr)
            vals = train_step(*map(tf.constant, q.get()))
            acc += [float(v) for v in vals]
            n_acc += 1
            step = i + 1
            now = time.time()
            if now - last_log > 60 or step == 1:
                l, f, o, s_ = acc / n_acc
                print(f"step {step:6d} {el / 60:5.1f}/{a.minutes:g} min lr {lr:.2e} loss {l:.3f} "
                      f"(focal {f:.3f} off {o:.3f} size {s_:.3f}) {step * a.batch / max(el, 1e-6):.0f} scenes/s "
                      f"queue {q.qsize()}", flush=True)
                acc[:] = 0
                n_acc = 0
                last_log = now
            if now - last_eval > a.eval_every * 60:
                model.save_weights(run_dir / "model.weights.h5")
                try:
                    dev_eval(f"step {step}")
                except Exception as exc:  # a check must never cost the run
                    print(f"  dev evaluation failed: {type(exc).__name__}: {exc}", flush=True)
                last_eval = time.time()
        stop.set()
        train_min = (time.time() - t0) / 60
        model.save_weights(run_dir / "model.weights.h5")
        info = {"steps": step, "scenes": step * a.batch, "batch": a.batch, "size": a.size,
                "train_minutes": round(train_min, 1), "seed": a.seed, "lr": a.lr, "wd": a.wd,
                "width": a.width, "tf_threads": a.threads, "train_images": int(len(tr))}
        if init:
            info["init"] = init
        (run_dir / "train_info.json").write_text(json.dumps(info, indent=1))
        print(f"done: {step} steps in {train_min:.1f} min", flush=True)
    else:
        info = json.loads((run_dir / "train_info.json").read_text())
        model = build(info["width"])
        model.load_weights(run_dir / "model.weights.h5")
    dev_eval("final")
    if a.no_export:
        return

    from training.face_detector.evaluate import export_and_evaluate
    export_and_evaluate(model, info, root, labels, split, a.version, test=a.test)


if __name__ == "__main__":
    main()
