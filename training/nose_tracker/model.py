"""Landmark CNNs (NHWC, 112x112x3 BGR/255 -> 10 normalised coords, nose first).

Only ops OpenCV's TensorFlow importer handles: Conv2D, DepthwiseConv2dNative, BatchNorm
(constant-folded to Mul/Add), Relu, Add, Mean (global pool), MatMul, Softmax, ConcatV2.

build_integral_model (shipped): depthwise-separable backbone to a 14x14 map, then per
point a soft-argmax ("integral regression") head.  It trained about 4x more
sample-efficiently than a global-pool regression head in our runs (model card).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

SIZE = 112


@keras.saving.register_keras_serializable(package="nose_tracker")
class FusedBatchNorm(layers.BatchNormalization):
    """BatchNormalization whose training pass is TF's fused kernel (NHWC).

    Keras 3 computes batch moments with separate Mean/Sub/SquaredDifference/Tile ops:
    on this 2-core CPU they took ~40% of a train step.  The fused kernel made a step 1.5x
    faster (bs 32: 296 -> 459 samples/s).  Inference (and so the export) is the stock
    layer's; the weights are the same four vectors."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True,
            data_format="NHWC")[:3]
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
        return y


def _conv_bn(x, ch, k=3, s=1, name=None):
    x = layers.Conv2D(ch, k, strides=s, padding="same", use_bias=False, name=name)(x)
    x = FusedBatchNorm(momentum=0.99, epsilon=1e-3, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def _dws(x, ch, s=1, name=None, k=3):
    """Depthwise-separable block (k x k depthwise); residual when shapes match."""
    inp = x
    y = layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=False, name=name + "_dw")(x)
    y = FusedBatchNorm(name=name + "_dw_bn")(y)
    y = layers.ReLU(name=name + "_dw_relu")(y)
    y = layers.Conv2D(ch, 1, use_bias=False, name=name + "_pw")(y)
    y = FusedBatchNorm(name=name + "_pw_bn")(y)
    if s == 1 and inp.shape[-1] == ch:
        y = layers.Add(name=name + "_add")([inp, y])
    return layers.ReLU(name=name + "_pw_relu")(y)


GRID = 14


def soft_argmax(feat, name, flat: bool = False):
    """Heat logits on the GRIDxGRID map -> softmax over positions -> expected (x, y) in [0,1].

    Written with importer-safe ops only: a FIXED one-hot GRIDxGRID 'valid' conv moves the
    G*G positions into channels (layout-independent, unlike Flatten), Mean squeezes the 1x1
    map to (N, G*G), Softmax over the last axis of a 2-D tensor (the same axis in NHWC and
    NCHW), and a FIXED Dense holds the cell-centre coordinates.

    flat=True (training only) replaces the one-hot conv + Mean by a Reshape: the same
    numbers in NHWC (position i*G+j), ~10% less time per train step, but a layout the
    importer cannot follow.  Trained weights move to the export graph by layer name."""
    g = GRID
    h = layers.Conv2D(1, 1, name=name + "_heat")(feat)
    if flat:
        z = layers.Reshape((g * g,), name=name + "_flat")(h)
    else:
        s2c = layers.Conv2D(g * g, g, padding="valid", use_bias=False, trainable=False, name=name + "_s2c")
        z = s2c(h)
        s2c.set_weights([np.eye(g * g, dtype=np.float32).reshape(g, g, 1, g * g)])
        z = layers.GlobalAveragePooling2D(name=name + "_sq")(z)
    p = layers.Softmax(axis=-1, name=name + "_softmax")(z)
    c = (np.arange(g, dtype=np.float32) + 0.5) / g
    xy = np.stack([np.tile(c[None, :], (g, 1)).ravel(), np.tile(c[:, None], (1, g)).ravel()], 1)
    ex = layers.Dense(2, use_bias=False, trainable=False, name=name + "_xy")
    o = ex(p)
    ex.set_weights([xy])
    return o


def build_integral_model(width: float = 1.0, name: str = "nose_tracker", k: int = 3,
                         blocks: int = 5, deep: int = 128, for_training: bool = False) -> keras.Model:
    """Backbone to a 14x14 (stride 8) map with a large receptive field (5x5 depthwise
    kernels by default 3x3), `blocks` residual blocks of `deep` channels there (96 up to
    v1.3.0, 128 since v1.4.0), then one soft-argmax head per point (integral regression):
    nose, leye, reye, lmouth, rmouth -> (N, 10).  for_training: the faster training graph
    (Reshape heads); copy its weights into the export graph with `transfer_weights`."""
    c = lambda n: max(8, int(round(n * width / 8)) * 8)
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    x = _conv_bn(inp, c(16), 3, 2, name="stem")       # 56
    x = _dws(x, c(32), 2, name="b1")                  # 28
    x = _dws(x, c(32), 1, name="b2")
    x = _dws(x, c(64), 2, name="b3")                  # 14
    for i in range(1, blocks + 1):  # 5x5 depthwise is 2.5x slower in cv2.dnn: default 3x3
        x = _dws(x, c(deep), 1, name=f"c{i}", k=k)
    outs = [soft_argmax(x, f"pt{i}", flat=for_training) for i in range(5)]
    out = layers.Concatenate(axis=-1, name="points")(outs)
    return keras.Model(inp, out, name=name)


def build_tiny_model() -> keras.Model:
    """A tiny model with the shipped model's op types (conv/BN/depthwise/residual Add and
    the soft-argmax heads), used to test the export path quickly."""
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    x = _conv_bn(inp, 8, 3, 4, name="stem")   # 28
    x = _dws(x, 8, 1, name="b1")
    x = _dws(x, 16, 2, name="b2")             # 14
    x = _dws(x, 16, 1, name="c1")
    outs = [soft_argmax(x, f"pt{i}") for i in range(5)]
    out = layers.Concatenate(axis=-1, name="points")(outs)
    return keras.Model(inp, out, name="tiny")


def build(width: float = 1.0, deep: int = 128, for_training: bool = False) -> keras.Model:
    return build_integral_model(width, deep=deep, for_training=for_training)


def transfer_weights(src: keras.Model, dst: keras.Model) -> int:
    """Copy weights layer by layer, by name (the training graph -> the export graph).
    Layers only `dst` has must be fixed (non-trainable, e.g. the one-hot s2c convs).
    Returns the number of layers copied."""
    by_name = {l.name: l for l in src.layers}
    n = 0
    for layer in dst.layers:
        if not layer.weights:
            continue
        if layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            n += 1
        elif layer.trainable_weights:
            raise ValueError(f"no trained weights for layer {layer.name!r}")
    return n
