"""Face detector CNN: NHWC BGR/255 image (any size, multiple of 32) -> a stride-8 map of
5 channels: face-centre probability (sigmoid), sub-cell centre offset (x, y, in cells) and
box size (log of width and height in units of 8 px... see `decode`).

CenterNet-style, anchor-free: a depthwise-separable backbone to stride 32, a light
top-down path (nearest upsampling + add) back to stride 8, one head there.  Only ops
OpenCV's TensorFlow importer handles (Conv2D, DepthwiseConv2dNative, BiasAdd, Relu, AddV2,
ResizeNearestNeighbor, Sigmoid, ConcatV2); BatchNorm folds into the convolutions at
export.  Fully convolutional: trained on 256x256 crops, run on ~320x240 frames.
"""
from __future__ import annotations

import keras
from keras import layers

from training.nose_tracker.model import FusedBatchNorm, _conv_bn, _dws

STRIDE = 8
SIZE_UNIT = 8.0  # box sizes are predicted as log(size / SIZE_UNIT px at the net's input)


@keras.saving.register_keras_serializable(package="face_detector")
class Up2(layers.Layer):
    """Nearest-neighbour 2x upsampling written as Shape -> StridedSlice -> Mul ->
    ResizeNearestNeighbor, the pattern OpenCV's importer maps to its Resize layer with a
    zoom factor (Keras' UpSampling2D is a Repeat, which it cannot import)."""

    def call(self, x):
        import tensorflow as tf
        return tf.compat.v1.image.resize_nearest_neighbor(x, tf.shape(x)[1:3] * tf.constant([2, 2], tf.int32))

    def compute_output_shape(self, s):
        return (s[0], None if s[1] is None else 2 * s[1], None if s[2] is None else 2 * s[2], s[3])


def _up_add(coarse, fine, ch, name):
    """Nearest 2x upsampling of `coarse`, 1x1 projection of `fine`, sum, then a dws block."""
    c = Up2(name=name + "_up")(coarse)
    f = layers.Conv2D(ch, 1, use_bias=False, name=name + "_lat")(fine)
    f = FusedBatchNorm(name=name + "_lat_bn")(f)
    x = layers.Add(name=name + "_add")([c, f])
    return _dws(x, ch, 1, name=name + "_dws")


def build(width: float = 1.0, for_training: bool = False) -> keras.Model:
    """The detector.  `for_training` is accepted for symmetry with the nose tracker (the
    graphs are the same: fused BatchNorm only changes the training pass)."""
    c = lambda n: max(8, int(round(n * width / 8)) * 8)
    inp = keras.Input((None, None, 3), name="input")
    x = _conv_bn(inp, c(16), 3, 2, name="stem")     # /2
    x = _dws(x, c(32), 2, name="b1")                # /4
    x = _dws(x, c(32), 1, name="b2")
    x = _dws(x, c(48), 2, name="b3")                # /8
    x = _dws(x, c(48), 1, name="b4")
    s8 = _dws(x, c(48), 1, name="b5")
    x = _dws(s8, c(96), 2, name="c1")               # /16
    x = _dws(x, c(96), 1, name="c2")
    s16 = _dws(x, c(96), 1, name="c3")
    x = _dws(s16, c(128), 2, name="d1")             # /32
    x = _dws(x, c(128), 1, name="d2")
    x = _dws(x, c(128), 1, name="d3")
    s32 = layers.Conv2D(c(64), 1, use_bias=False, name="d_proj")(x)
    s32 = FusedBatchNorm(name="d_proj_bn")(s32)
    t16 = _up_add(s32, s16, c(64), "u16")
    t8 = _up_add(t16, s8, c(64), "u8")
    h = _dws(t8, c(64), 1, name="head")
    heat = layers.Conv2D(1, 1, name="heat_logit",
                         bias_initializer=keras.initializers.Constant(-4.6))(h)
    heat = layers.Activation("sigmoid", name="heat")(heat)
    reg = layers.Conv2D(4, 1, name="reg")(h)  # offset x, y (cells), log(w / 8), log(h / 8)
    out = layers.Concatenate(axis=-1, name="det")([heat, reg])
    return keras.Model(inp, out, name="face_detector")
