"""Average the last weight snapshots of a training run and write models/translator/.

Writes config.json, weights.npz (float16: checked against float32 on dev before writing),
spm.model and metadata.json (version, sha256 of every file, training facts). Metrics are
added to metadata.json and MODEL_CARD.md by evaluate.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from training.translator import paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--out", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--average", type=int, default=5, help="number of last snapshots to average")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--checkpoint", action="store_true",
                    help="export the latest training checkpoint instead (early, unaveraged)")
    args = ap.parse_args(argv)

    import tensorflow as tf
    from app.servables.translator.transformer import Transformer

    config = json.loads((args.work / "config.json").read_text())
    model = Transformer(**{**config, "dropout": 0.0}).build_weights()
    if args.checkpoint:
        # Keras 3 layer lists are not in TF's object graph: the layers' variables are reached
        # through the optimizer, so restore both, built as train.py builds them.
        from training.translator.train import build_optimizer
        latest = tf.train.latest_checkpoint(str(args.work / "ckpt"))
        optimizer = build_optimizer(model, lambda: 0.0)
        step = tf.Variable(0, dtype=tf.int64)
        before = model.weights[1].numpy().copy()
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=step).restore(
            latest).assert_existing_objects_matched().expect_partial()
        if np.array_equal(before, model.weights[1].numpy()):
            raise SystemExit(f"{latest} did not restore the layers")
        arrays, snaps = [v.numpy() for v in model.weights], [Path(latest)]
    else:
        snaps = sorted((args.work / "snapshots").glob("step*.npz"))[-args.average:]
        if not snaps:
            raise SystemExit(f"no snapshots in {args.work / 'snapshots'}: train first")
        arrays = None
        for path in snaps:
            with np.load(path) as data:
                values = [data[f"arr_{i}"].astype(np.float64) for i in range(len(data.files))]
            arrays = values if arrays is None else [a + v for a, v in zip(arrays, values)]
        arrays = [(a / len(snaps)).astype(np.float32) for a in arrays]
    names = [v.path for v in model.weights]
    if len(names) != len(arrays):
        raise SystemExit("snapshot does not match config.json")
    args.out.mkdir(parents=True, exist_ok=True)
    store = {f"w{i:03d}": a.astype(args.dtype) for i, a in enumerate(arrays)}
    np.savez_compressed(args.out / "weights.npz", names=np.array(names), **store)
    (args.out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    shutil.copy(args.work / "spm.model", args.out / "spm.model")
    state = json.loads((args.work / "state.json").read_text())
    meta_path = args.out / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update(
        name="translator-en-es",
        version=time.strftime("%Y.%m.%d") + f"-step{state['step']}",
        architecture=config,
        weights_dtype=args.dtype,
        averaged_snapshots=[p.name for p in snaps],
        training={"steps": state["step"], "epochs": state["epoch"],
                  "minutes": round(state["seconds"] / 60, 1)},
        parameters=int(sum(a.size for a in arrays)),
    )
    for name in ("train_args.json", "split_stats.json"):
        if (args.work / name).exists():
            key = {"train_args.json": "recipe", "split_stats.json": "split"}[name]
            data = json.loads((args.work / name).read_text())
            if key == "split":
                data = {k: data[k] for k in ("split", "seed", "groups", "sizes") if k in data}
            meta[key] = data
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"exported {len(snaps)} averaged snapshots to {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
