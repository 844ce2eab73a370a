"""Export a Keras model to a frozen TF graph that cv2.dnn.readNetFromTensorflow loads.

A graph frozen with convert_variables_to_constants_v2 alone crashes OpenCV's importer
(ReadVariableOp/Identity chains around the constants); running grappler constant
folding on the frozen graph first produces a plain Const->Conv2D/... graph that
OpenCV imports and that matches Keras to ~1e-7.

Usage:
  .venv/bin/python training/nose_tracker/export.py --weights W.weights.h5 --out models/nose_tracker/1.4.0/nose_tracker.pb
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

SIZE = 112


def freeze_keras(model, path: str | Path, input_shape=(SIZE, SIZE, 3)) -> Path:
    """Freeze `model` (NHWC float32 input of `input_shape`, None for a free dimension) to
    `path` as a binary GraphDef. Returns path."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.grappler import tf_optimizer

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(fn)
    graph_def = frozen.graph.as_graph_def()

    # grappler: constant folding (+ pruning of identities) on the frozen graph
    meta = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=frozen.graph)
    fetch = meta_graph_pb2.CollectionDef()
    for t in frozen.outputs:
        fetch.node_list.value.append(t.name)
    meta.collection_def["train_op"].CopyFrom(fetch)
    cfg = config_pb2.ConfigProto()
    rw = cfg.graph_options.rewrite_options
    rw.optimizers.extend(["constfold", "dependency"])
    rw.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    optimized = tf_optimizer.OptimizeGraph(cfg, meta)
    _adds_to_biasadd(optimized)
    _expand_splat_consts(optimized)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(optimized.SerializeToString())
    return path


def _adds_to_biasadd(graph_def) -> int:
    """Rewrite AddV2(x, Const[C]) as BiasAdd(x, Const[C]) (same maths for a 1-D constant).

    After constant folding, BatchNorm after a Conv2D becomes Conv2D(merged weights) ->
    AddV2(const).  OpenCV 5.0's importer mis-handles that AddV2 for batches > 1
    ("expected: 'end <= dims'"), while Conv2D -> BiasAdd is its standard pattern."""
    from tensorflow.core.framework import attr_value_pb2, types_pb2
    from tensorflow.python.framework import tensor_util

    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    ops = {n.name: n.op for n in graph_def.node}
    changed = 0
    for n in graph_def.node:
        if n.op not in ("AddV2", "Add") or len(n.input) != 2:
            continue
        a, b = n.input
        if a in consts and b not in consts:
            a, b = b, a
        if b not in consts or a in consts:
            continue
        if ops.get(a.split(":")[0]) not in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
            continue  # e.g. Mul -> AddV2 (unfolded BN scale) works as is; BiasAdd there does not
        if tensor_util.MakeNdarray(consts[b].attr["value"].tensor).ndim != 1:
            continue
        n.op = "BiasAdd"
        del n.input[:]
        n.input.extend([a, b])
        n.attr["data_format"].CopyFrom(attr_value_pb2.AttrValue(s=b"NHWC"))
        n.attr["T"].CopyFrom(attr_value_pb2.AttrValue(type=types_pb2.DT_FLOAT))
        changed += 1
    return changed


def _expand_splat_consts(graph_def) -> int:
    """Store small int32 constants element by element.  TF keeps a constant whose elements
    are all equal as one value plus a shape (e.g. the [2, 2] zoom of an upsampling);
    OpenCV's importer reads the stored values only and sees one."""
    from tensorflow.python.framework import tensor_util

    changed = 0
    for n in graph_def.node:
        if n.op != "Const":
            continue
        t = n.attr["value"].tensor
        arr = tensor_util.MakeNdarray(t)
        if arr.dtype == np.int32 and 1 < arr.size <= 16 and not t.tensor_content:
            n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(arr))
            changed += 1
    return changed


def load_cv2(path: str | Path):
    import cv2
    net = cv2.dnn.readNetFromTensorflow(str(path))
    return net


def cv2_forward(net, blob_nchw: np.ndarray) -> np.ndarray:
    net.setInput(np.ascontiguousarray(blob_nchw, dtype=np.float32))
    return np.asarray(net.forward()).reshape(blob_nchw.shape[0], -1)


def compare(model, pb_path, x_nhwc: np.ndarray) -> float:
    """Max abs difference between Keras (NHWC) and OpenCV (fed the same data as NCHW)."""
    k = model(x_nhwc.astype(np.float32), training=False).numpy()
    net = load_cv2(pb_path)
    o = cv2_forward(net, np.transpose(x_nhwc, [0, 3, 1, 2]))
    return float(np.abs(k - o).max())


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main():
    from training.nose_tracker.model import build, transfer_weights

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="weights saved by train.py (its training graph)")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--deep", type=int, default=128, help="channels of the 14x14 blocks (train.py --deep)")
    ap.add_argument("--out", required=True, help="the .pb to write, e.g. models/nose_tracker/1.5.0/nose_tracker.pb")
    a = ap.parse_args()
    trained = build(a.width, a.deep, for_training=True)
    trained.load_weights(a.weights)
    m = build(a.width, a.deep)
    transfer_weights(trained, m)
    p = freeze_keras(m, a.out)
    x = np.random.default_rng(0).random((4, SIZE, SIZE, 3), dtype=np.float32)
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB) sha256={sha256(p)} "
          f"max|keras-opencv|={compare(m, p, x):.2e}")


if __name__ == "__main__":
    main()
