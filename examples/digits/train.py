"""Train the digits MLP (NumPy only) and write version folder ``1/`` of this model.

    pip install -r examples/digits/requirements-train.txt    # scikit-learn: the data only
    python examples/digits/train.py                          # writes examples/digits/1/

Data: scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten Digits"
test set (1,797 8x8 images, pixel values 0..16; no download). Identical images are removed
(all copies when their labels disagree), then a seeded split per class gives train (70%),
dev (15%) and test (15%). The epoch kept is the one with the best dev accuracy; the test
split is scored once, at the end, and never used for any choice.

Model: 64 inputs (pixels / 16) -> 64 ReLU -> 10, softmax cross-entropy with L2 weight decay,
mini-batch Adam, fixed seed. Single-threaded BLAS, so a rerun on the same machine writes the
same weights file (same sha256).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mlp  # noqa: E402  (the forward pass and weights format shared with servable.py)

VERSION = "1"
DATA = {
    "name": "Optical Recognition of Handwritten Digits (UCI Machine Learning Repository), "
            "the copy bundled with scikit-learn (sklearn.datasets.load_digits)",
    "creators": "E. Alpaydin, C. Kaynak (1998)",
    "url": "https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits",
    "licence": "CC BY 4.0 (the UCI data); distributed inside scikit-learn, which is BSD-3-Clause",
}


def dedupe(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """One copy of each distinct image; images seen with different labels are dropped."""
    flat = images.reshape(len(images), -1).astype(np.uint8)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    keep, conflicting = [], 0
    for g, i in enumerate(first):
        group_labels = np.unique(labels[inverse == g])
        if len(group_labels) > 1:
            conflicting += 1
            continue
        keep.append(i)
    keep = np.sort(np.array(keep, dtype=np.int64))
    stats = {"images": int(len(images)), "distinct": int(len(first)),
             "duplicates_removed": int(len(images) - len(first)), "conflicting_groups_dropped": conflicting,
             "kept": int(len(keep))}
    return images[keep], labels[keep], stats


def split(labels: np.ndarray, seed: int, fractions=(0.70, 0.15, 0.15)) -> dict:
    """Indices of train/dev/test: a seeded permutation of each class, cut by ``fractions``."""
    rng = np.random.default_rng(seed)
    parts: dict = {"train": [], "dev": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_dev = int(round(fractions[1] * len(idx)))
        parts["train"].append(idx[:n_train])
        parts["dev"].append(idx[n_train:n_train + n_dev])
        parts["test"].append(idx[n_train + n_dev:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def init_params(hidden: int, rng) -> dict:
    n_in = mlp.SIDE * mlp.SIDE
    return {"W1": (rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "W2": (rng.standard_normal((hidden, mlp.CLASSES)) * np.sqrt(1.0 / hidden)).astype(np.float32),
            "b2": np.zeros(mlp.CLASSES, np.float32)}


def loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray, weight_decay: float) -> tuple[float, dict]:
    hidden, logits = mlp.forward(params, x)
    p = mlp.softmax(logits)
    n = len(x)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean()
                 + 0.5 * weight_decay * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2)))
    d_logits = p
    d_logits[np.arange(n), y] -= 1
    d_logits /= n
    d_hidden = (d_logits @ params["W2"].T) * (hidden > 0)
    grads = {"W2": hidden.T @ d_logits + weight_decay * params["W2"], "b2": d_logits.sum(0),
             "W1": x.T @ d_hidden + weight_decay * params["W1"], "b1": d_hidden.sum(0)}
    return loss, grads


def accuracy(params: dict, images: np.ndarray, labels: np.ndarray) -> float:
    return float((mlp.probabilities(params, images).argmax(1) == labels).mean())


def train(x_img, y, dev_img, dev_y, *, hidden, epochs, batch_size, lr, weight_decay, seed, log=print):
    """Mini-batch Adam; returns (parameters of the best dev epoch, history)."""
    rng = np.random.default_rng(seed)
    params = init_params(hidden, rng)
    x = mlp.scale(x_img)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    best = (-1.0, np.inf, 0, None)  # dev accuracy, dev loss, epoch, params
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            _, grads = loss_and_grads(params, x[idx], y[idx], weight_decay)
            step += 1
            for k in params:
                m[k] = b1 * m[k] + (1 - b1) * grads[k]
                v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
                m_hat = m[k] / (1 - b1 ** step)
                v_hat = v[k] / (1 - b2 ** step)
                params[k] = (params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
        dev_p = mlp.probabilities(params, dev_img)
        dev_acc = float((dev_p.argmax(1) == dev_y).mean())
        dev_loss = float(-np.log(dev_p[np.arange(len(dev_y)), dev_y] + 1e-12).mean())
        if dev_acc > best[0] or (dev_acc == best[0] and dev_loss < best[1]):
            best = (dev_acc, dev_loss, epoch, {k: p.copy() for k, p in params.items()})
        if epoch == 1 or epoch % 50 == 0:
            log(f"epoch {epoch:4d}  dev accuracy {dev_acc:.4f}  dev loss {dev_loss:.4f}")
    return best[3], {"best_epoch": best[2], "best_dev_accuracy": best[0], "best_dev_loss": round(best[1], 5)}


def model_card(meta: dict) -> str:
    acc, d, s, t = meta["metrics"], meta["data"], meta["data"]["split"], meta["training"]
    per_class = " | ".join(f"{c}: {a:.3f}" for c, a in meta["metrics"]["test_accuracy_per_class"].items())
    return f"""# digits {meta['version']}: handwritten digit classifier (NumPy MLP)

Classifies an 8x8 image of a handwritten digit (0-9): a small multilayer perceptron in plain NumPy
({meta['architecture']}, {meta['parameters']} parameters, float32 weights in {meta['weights_bytes']} bytes).
An example of a model brought to this server as a user would bring one (`examples/digits/`).

## Contract

* Input `image` FP32 [-1, 8, 8]: pixel values 0..16, ink high (as in scikit-learn's digits:
  the number of "on" pixels of each 4x4 block of a 32x32 bitmap; the digit fills the frame).
* Or input `png` BYTES [-1]: base64 encoded images (PNG, JPEG, ...) of any size, turned into
  the above by `mlp.digit_from_image` (grey; ink measured from the border colour, so dark on
  light or light on dark; cropped to the ink; centred on a square; averaged down to 8x8; scaled
  so the strongest block is 16).
* Outputs `label` INT32 [-1] (the most probable digit) and `probabilities` FP32 [-1, 10].

## Data and licence

{d['name']}, by {d['creators']}: <{d['url']}>.

Licence: {d['licence']}. The weights are derived from this data: keep the attribution.

{d['images']} images; {d['duplicates_removed']} exact duplicates removed, {d['conflicting_groups_dropped']} groups of identical
images with different labels dropped: {d['kept']} kept. Split per class with seed {meta['training']['seed']}:
train {s['train']}, dev {s['dev']}, test {s['test']}. The dev split picked the epoch; the test split
was scored once, at the end, and chose nothing.

## Metrics

| split | images | accuracy |
|---|---|---|
| train | {s['train']} | {acc['train_accuracy']:.4f} |
| dev | {s['dev']} | {acc['dev_accuracy']:.4f} |
| test | {s['test']} | {acc['test_accuracy']:.4f} |

Through the `png` input (each dev/test digit drawn at 32x32, dark on white, then converted back
to 8x8 by `mlp.digit_from_image`, as `servable.py` does): dev {acc['redrawn_dev_accuracy']:.4f}, test
{acc['redrawn_test_accuracy']:.4f}. The loss comes mostly from re-centring: cropping an already quantised 8x8
digit to its ink and centring it again can move it by half a block.

Test accuracy per digit: {per_class}.

Caveat: the dataset does not say which of its 13 writers wrote which image, so the same writers
are in train and test; accuracy on new writers, or on digits not normalised like NIST's
bitmaps (e.g. photos through the `png` input), is likely lower (not measured).

## Training

{t['optimizer']}, {t['epochs']} epochs of mini-batches of {t['batch_size']}, learning rate {t['learning_rate']},
weight decay {t['weight_decay']} (L2); epoch {t['best_epoch']} kept (best dev accuracy).
NumPy {t['numpy']}, scikit-learn {t['scikit_learn']} (the data only), Python {t['python']}.

## Artifact

`weights.npz` sha256 `{meta['sha256']['weights.npz']}`

## Reproduce

    pip install -r examples/digits/requirements-train.txt && python examples/digits/train.py

A few seconds on one CPU core. BLAS runs single-threaded and the zip timestamps are fixed, so a rerun
with the same NumPy on the same platform writes the same `weights.npz`, byte for byte (elsewhere the
floating-point sums may round differently: slightly different metrics and another sha256).
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / VERSION, help="version folder to write (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    args = ap.parse_args(argv)

    import sklearn
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    digits = load_digits()
    images, labels, data_stats = dedupe(digits.images.astype(np.float32), digits.target.astype(np.int64))
    parts = split(labels, args.seed)
    tr, dv, te = (parts[k] for k in ("train", "dev", "test"))
    with threadpool_limits(limits=1):  # deterministic float sums
        params, history = train(images[tr], labels[tr], images[dv], labels[dv], hidden=args.hidden,
                                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, seed=args.seed)
        test_pred = mlp.probabilities(params, images[te]).argmax(1)
        metrics = {"train_accuracy": round(accuracy(params, images[tr], labels[tr]), 4),
                   "dev_accuracy": round(accuracy(params, images[dv], labels[dv]), 4),
                   "test_accuracy": round(float((test_pred == labels[te]).mean()), 4),
                   "test_accuracy_per_class": {str(c): round(float((test_pred[labels[te] == c] == c).mean()), 4)
                                               for c in range(mlp.CLASSES)}}
        # the encoded-image path: each digit drawn at 32x32 (dark on white), converted back
        for part, idx in (("dev", dv), ("test", te)):
            redrawn = np.stack([mlp.digit_from_image(mlp.render(im)) for im in images[idx]])
            metrics[f"redrawn_{part}_accuracy"] = round(accuracy(params, redrawn, labels[idx]), 4)
    seconds = time.perf_counter() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "weights.npz"
    mlp.save_weights(params, weights)
    assert all(np.array_equal(a, params[k]) for k, a in mlp.load_weights(weights).items())
    n_params = int(sum(p.size for p in params.values()))
    meta = {
        "name": "digits", "version": VERSION, "framework": "numpy",
        "architecture": f"MLP 64-{args.hidden}(ReLU)-10, softmax",
        "parameters": n_params, "weights_bytes": weights.stat().st_size,
        "input": {"name": "image", "datatype": "FP32", "shape": [-1, 8, 8], "range": [0, 16],
                  "scaling": "pixel / 16"},
        "output": {"label": "INT32 [-1]", "probabilities": "FP32 [-1, 10]"},
        "metrics": metrics,
        "data": {**DATA, **data_stats, "split": {k: int(len(v)) for k, v in parts.items()},
                 "split_method": "seeded permutation per class, 70/15/15 train/dev/test"},
        "training": {"seed": args.seed, "optimizer": "Adam", "epochs": args.epochs, "batch_size": args.batch_size,
                     "learning_rate": args.lr, "weight_decay": args.weight_decay, **history,
                     "numpy": np.__version__, "scikit_learn": sklearn.__version__,
                     "python": platform.python_version(),
                     "command": "python examples/digits/train.py"},
        "sha256": {"weights.npz": hashlib.sha256(weights.read_bytes()).hexdigest()},
    }
    (args.out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (args.out / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    print(f"trained in {seconds:.1f} s: dev accuracy {metrics['dev_accuracy']:.4f}, "
          f"test accuracy {metrics['test_accuracy']:.4f} (epoch {history['best_epoch']}); "
          f"{weights} {meta['weights_bytes']} bytes sha256 {meta['sha256']['weights.npz'][:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
