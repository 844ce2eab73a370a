"""Compact landmark CNN (NHWC, 112x112x3 BGR/255 -> 10 normalised coords, nose first).

Only ops OpenCV's TensorFlow importer handles: Conv2D, DepthwiseConv2dNative,
FusedBatchNorm (folded by OpenCV), Relu, Add, Mean (global pool), MatMul/BiasAdd.
The head is a "global depthwise conv" (7x7 valid depthwise conv on the 7x7 map, as in
MobileFaceNet): a learned, spatially-aware pooling that avoids Flatten/Reshape layout
issues in the importer.
"""
from __future__ import annotations

import keras
from keras import layers

SIZE = 112


def _conv_bn(x, ch, k=3, s=1, name=None):
    x = layers.Conv2D(ch, k, strides=s, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def _dws(x, ch, s=1, name=None):
    """Depthwise-separable block; residual when shapes match."""
    inp = x
    y = layers.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=name + "_dw")(x)
    y = layers.BatchNormalization(name=name + "_dw_bn")(y)
    y = layers.ReLU(name=name + "_dw_relu")(y)
    y = layers.Conv2D(ch, 1, use_bias=False, name=name + "_pw")(y)
    y = layers.BatchNormalization(name=name + "_pw_bn")(y)
    if s == 1 and inp.shape[-1] == ch:
        y = layers.Add(name=name + "_add")([inp, y])
    return layers.ReLU(name=name + "_pw_relu")(y)


def build_model(width: float = 1.0, name: str = "nose_tracker") -> keras.Model:
    c = lambda n: max(8, int(round(n * width / 8)) * 8)
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    x = _conv_bn(inp, c(16), 3, 2, name="stem")        # 56
    x = _dws(x, c(32), 2, name="b1")                  # 28
    x = _dws(x, c(32), 1, name="b2")
    x = _dws(x, c(64), 2, name="b3")                  # 14
    x = _dws(x, c(64), 1, name="b4")
    x = _dws(x, c(64), 1, name="b5")
    x = _dws(x, c(128), 2, name="b6")                 # 7
    x = _dws(x, c(128), 1, name="b7")
    x = layers.Conv2D(c(256), 1, use_bias=False, name="expand")(x)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = layers.ReLU(name="expand_relu")(x)
    # global depthwise conv 7x7 -> 1x1
    x = layers.DepthwiseConv2D(7, padding="valid", use_bias=False, name="gdconv")(x)
    x = layers.BatchNormalization(name="gdconv_bn")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)   # 1x1 -> vector (Mean op)
    x = layers.Dense(128, name="fc1")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    out = layers.Dense(10, name="points")(x)
    return keras.Model(inp, out, name=name)


def build_tiny_model() -> keras.Model:
    """A tiny model with the same op types, used to test the export path quickly."""
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    x = _conv_bn(inp, 8, 3, 4, name="stem")   # 28
    x = _dws(x, 8, 1, name="b1")
    x = _dws(x, 16, 4, name="b2")             # 7
    x = layers.DepthwiseConv2D(7, padding="valid", use_bias=False, name="gdconv")(x)
    x = layers.BatchNormalization(name="gdconv_bn")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, name="points")(x)
    return keras.Model(inp, out, name="tiny")
