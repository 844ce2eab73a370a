"""Start a training from a shipped model: its frozen graph's weights put back into the Keras
model (`training/face_detector/train.py --init models/face_detector/<v>/face_detector.pb`,
`training/nose_tracker/train.py --init models/nose_tracker/<v>/nose_tracker.pb`).

The export folded each BatchNorm into its convolution (Conv2D: merged kernel + shift;
depthwise: kernel, then a per-channel scale and shift), so the graph holds the function but not
the batch statistics. The weights are set so that the Keras model's inference pass *is* that
function, then each BatchNorm's moving mean and variance are set to the statistics of its input
on sample training batches, with gamma and beta rescaled to keep the inference pass exact. A
training pass (batch statistics) then starts close to the shipped model instead of far from it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def graph_constants(pb: str | Path) -> dict[str, np.ndarray]:
    """name -> value of every Const node of a frozen GraphDef, the graph's name prefix dropped
    ("face_detector_1/stem_1/convolution/merged_input" -> "stem/convolution/merged_input")."""
    from tensorflow.core.framework import graph_pb2
    from tensorflow.python.framework import tensor_util
    g = graph_pb2.GraphDef()
    g.ParseFromString(Path(pb).read_bytes())
    out = {}
    for n in g.node:
        if n.op == "Const":
            parts = n.name.split("/")
            parts = [p[:-2] if p.endswith("_1") else p for p in parts[1:]]
            out["/".join(parts)] = tensor_util.MakeNdarray(n.attr["value"].tensor)
    return out


def set_from_graph(model, pb: str | Path) -> None:
    """Sets every trained weight of `model` (the face detector's or the nose tracker's `build`,
    either graph) from the frozen graph `pb`, BatchNorms as identity statistics. Layers with
    fixed weights only (the nose tracker's one-hot and cell-centre layers) keep theirs."""
    from keras import layers
    c = graph_constants(pb)
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, layers.BatchNormalization) or not layer.trainable_weights:
            continue
        if isinstance(layer, layers.DepthwiseConv2D):
            layer.set_weights([c[f"{name}/depthwise/ReadVariableOp"]])
            _set_bn(model.get_layer(name + "_bn"), c[f"{name}_bn/batchnorm/mul"], c[f"{name}_bn/batchnorm/sub"])
        elif isinstance(layer, layers.Conv2D) and not layer.use_bias:
            k = c[f"{name}/convolution/merged_input"]
            layer.set_weights([k])
            _set_bn(model.get_layer(name + "_bn"), np.ones(k.shape[-1], np.float32), c[f"{name}_bn/batchnorm/sub"])
        elif isinstance(layer, layers.Conv2D):
            bias = next(v for key, v in c.items() if key.startswith(name + "/") and v.size == layer.filters
                        and not key.endswith("ReadVariableOp"))
            layer.set_weights([c[f"{name}/convolution/ReadVariableOp"], bias.reshape(-1)])


def _set_bn(bn, scale, shift, mean=None, var=None):
    """BatchNorm weights whose inference pass is x * scale + shift, given moving statistics
    (default: mean 0, variance 1 - epsilon)."""
    ch = scale.shape[0]
    mean = np.zeros(ch, np.float32) if mean is None else mean
    var = np.full(ch, 1.0 - bn.epsilon, np.float32) if var is None else var
    sd = np.sqrt(var + bn.epsilon)
    bn.set_weights([(scale * sd).astype(np.float32), (shift + scale * mean).astype(np.float32),
                    mean.astype(np.float32), var.astype(np.float32)])


def calibrate_statistics(model, images: np.ndarray) -> None:
    """Moving statistics of every BatchNorm from its input on `images` (NHWC float32), the
    inference pass unchanged (gamma and beta rescaled)."""
    import keras
    from keras import layers
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    probe = keras.Model(model.input, [bn.input for bn in bns])
    acts = probe(images, training=False)
    for bn, a in zip(bns, acts):
        a = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
        gamma, beta, mean0, var0 = bn.get_weights()
        sd0 = np.sqrt(var0 + bn.epsilon)
        scale, shift = gamma / sd0, beta - gamma * mean0 / sd0  # the layer as x * scale + shift
        _set_bn(bn, scale, shift, a.mean(0).astype(np.float32), a.var(0).astype(np.float32))


def warm_start(model, pb: str | Path, images: np.ndarray, check_images: np.ndarray | None = None) -> float:
    """set_from_graph + calibrate_statistics; returns the largest difference between the Keras
    inference pass and OpenCV running `pb` on `check_images` (default: the first 2 images)."""
    import cv2
    set_from_graph(model, pb)
    calibrate_statistics(model, images)
    x = images[:2] if check_images is None else check_images
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    net.setInput(np.ascontiguousarray(np.transpose(x, [0, 3, 1, 2])))
    o = np.asarray(net.forward())
    k = model(x, training=False).numpy()
    if k.ndim == 4:  # a map (NHWC in Keras, NCHW from OpenCV)
        k = np.transpose(k, [0, 3, 1, 2])
    return float(np.abs(o - k).max())
