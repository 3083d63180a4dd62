"""Building blocks shared by Lite-HRNet and Dite-HRNet.

Lite-HRNet: Yu, Xiao, Gao, Yuan, Zhang, Sang, Wang, "Lite-HRNet: A Lightweight High-Resolution
Network", CVPR 2021. Layouts follow MMPose's ``litehrnet.py`` (stem, transition, conditional
channel weighting, fuse layers, iterative head).

Two small serializable layers (`ChannelSplit`, `ChannelShuffle`) and functional builders that add
named standard Keras layers to a graph. Every builder takes a `name` prefix; the resulting layer
names (``stage2_module0_block1_b0_dw`` ...) are stable and addressable for feature distillation.

Batch norm uses PyTorch's defaults (momentum 0.1 -> Keras 0.9, epsilon 1e-5).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from kdpose_tf.models.layers.pooling import BlockPool
from kdpose_tf.models.layers.upsample import Upsample
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.models.layers.psa import PolarizedSelfAttention



@keras.saving.register_keras_serializable(package="kdpose_tf")
class ChannelSplit(keras.layers.Layer):
    """Split the last axis into consecutive pieces of the given sizes; returns a list.

    Args:
        sizes: list of positive ints summing to the channel count.

    Example:
        >>> a, b = ChannelSplit([8, 8], name="split")(keras.Input((4, 4, 16)))
    """

    def __init__(self, sizes, **kwargs):
        sizes = [int(s) for s in sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"ChannelSplit: sizes must be positive ints, received {sizes!r}")
        super().__init__(**kwargs)
        self.sizes = sizes

    def build(self, input_shape):
        if input_shape[-1] is not None and int(input_shape[-1]) != sum(self.sizes):
            raise ValueError(
                f"ChannelSplit {self.name}: sizes {self.sizes} sum to {sum(self.sizes)}, "
                f"input has {input_shape[-1]} channels"
            )
        super().build(input_shape)

    def call(self, inputs):
        out, start = [], 0
        for s in self.sizes:
            out.append(inputs[..., start : start + s])
            start += s
        return out

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[:-1]) + (s,) for s in self.sizes]

    def channel_routes(self, channels):
        """[(output index, the input channel each of its channels copies)] for the input's `channels` ids.

        A layer with this method only moves channels: int8 keeps its input's scale (export/qat.py) and a
        per-channel rescaling follows each channel through it (export/equalization.py).
        """
        starts = np.cumsum([0] + list(self.sizes))
        return [(k, np.asarray(channels)[starts[k]:starts[k + 1]]) for k in range(len(self.sizes))]

    def get_config(self):
        config = super().get_config()
        config["sizes"] = list(self.sizes)
        return config


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle: channel ``i*(C/g)+j`` moves to ``j*g+i``.

    Implemented as reshape (B, H*W, g, C/g) -> transpose -> reshape, 4-D at most so it
    converts to TFLite builtins (XNNPACK takes the int8 TRANSPOSE). Spatial size must be static.
    Not a 1x1 conv with a constant permutation matrix: that is exact and faster per shuffle in
    XNNPACK, but adds C^2*H*W multiply-adds per shuffle (about +120 % for Lite-HRNet-18), which the
    Edge TPU would execute, and on whole int8 models it gains little at the mobile input size
    (measurements: benchmarks/results/README.md, "Delegate-friendly layers").

    Args:
        groups: number of groups (default 2); must divide the channel count.

    Example:
        >>> y = ChannelShuffle(2, name="shuffle")(keras.Input((4, 4, 16)))
    """

    def __init__(self, groups=2, **kwargs):
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"ChannelShuffle: groups must be an int >= 1, received {groups!r}")
        super().__init__(**kwargs)
        self.groups = groups

    def build(self, input_shape):
        c = input_shape[-1]
        if c is None or int(c) % self.groups:
            raise ValueError(f"ChannelShuffle {self.name}: {c} channels not divisible by groups={self.groups}")
        super().build(input_shape)

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        h, w, c = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        x = ops.reshape(inputs, (-1, h * w, self.groups, c // self.groups))
        x = ops.transpose(x, (0, 1, 3, 2))
        return ops.reshape(x, (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def channel_routes(self, channels):
        """[(0, the input channel each output channel copies)]: see `ChannelSplit.channel_routes`."""
        channels = np.asarray(channels)
        g = self.groups
        return [(0, channels.reshape(g, len(channels) // g).T.reshape(-1))]  # output j*g+i = input i*(C/g)+j

    def get_config(self):
        config = super().get_config()
        config["groups"] = self.groups
        return config


# --------------------------------------------------------------------------- functional builders


def bn(x, name):
    return layers.BatchNormalization(name=name, **BN_KWARGS)(x)


def conv_bn(x, filters, kernel_size=1, strides=1, act=None, name="conv", use_bias=False):
    """Conv2D (same padding, no bias) + BN [+ activation]."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias, name=f"{name}_conv")(x)
    x = bn(x, f"{name}_bn")
    if act:
        x = layers.Activation(act, name=f"{name}_{act}")(x)
    return x


def dw_bn(x, kernel_size=3, strides=1, act=None, name="dw"):
    """Depthwise conv (same padding, no bias) + BN [+ activation]."""
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = bn(x, f"{name}_bn")
    if act:
        x = layers.Activation(act, name=f"{name}_{act}")(x)
    return x


def lite_stem(x, stem_width, name="stem"):
    """Lite-HRNet stem: 3x3/2 conv, then a shuffle block with a stride-2 path on each half (1/4)."""
    x = conv_bn(x, stem_width, 3, strides=2, act="relu", name=f"{name}_conv1")
    half = stem_width // 2
    x1, x2 = ChannelSplit([stem_width - half, half], name=f"{name}_split")(x)
    x1 = dw_bn(x1, 3, strides=2, name=f"{name}_branch1_dw")
    x1 = conv_bn(x1, stem_width - half, 1, act="relu", name=f"{name}_branch1_pw")
    x2 = conv_bn(x2, stem_width, 1, act="relu", name=f"{name}_branch2_expand")
    x2 = dw_bn(x2, 3, strides=2, name=f"{name}_branch2_dw")
    x2 = conv_bn(x2, half, 1, act="relu", name=f"{name}_branch2_linear")
    x = layers.Concatenate(name=f"{name}_concat")([x1, x2])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def transition(xs, widths, name):
    """HRNet transition with depthwise-separable convs: adapt widths, add one stride-2 branch."""
    prev = [int(t.shape[-1]) for t in xs]
    out = []
    for i, c in enumerate(widths):
        if i < len(xs):
            if prev[i] != c:
                t = dw_bn(xs[i], 3, name=f"{name}_b{i}_dw")
                t = conv_bn(t, c, 1, act="relu", name=f"{name}_b{i}_pw")
            else:
                t = xs[i]
        else:
            t = xs[-1]
            steps = i + 1 - len(xs)
            for k in range(steps):
                c_out = c if k == steps - 1 else prev[-1]
                t = dw_bn(t, 3, strides=2, name=f"{name}_b{i}_down{k}_dw")
                t = conv_bn(t, c_out, 1, act="relu", name=f"{name}_b{i}_down{k}_pw")
        out.append(t)
    return out


def fuse(xs, name):
    """Multi-resolution fusion: 1x1 conv + nearest upsampling up, depthwise-separable stride-2 down."""
    widths = [int(t.shape[-1]) for t in xs]
    n = len(xs)
    out = []
    for i in range(n):
        terms = []
        for j in range(n):
            if j == i:
                terms.append(xs[j])
            elif j > i:
                t = conv_bn(xs[j], widths[i], 1, name=f"{name}_{i}_{j}")
                t = Upsample(2 ** (j - i), interpolation="nearest", name=f"{name}_{i}_{j}_up")(t)
                terms.append(t)
            else:
                t = xs[j]
                for k in range(i - j):
                    last = k == i - j - 1
                    t = dw_bn(t, 3, strides=2, name=f"{name}_{i}_{j}_down{k}_dw")
                    t = conv_bn(
                        t, widths[i] if last else widths[j], 1, act=None if last else "relu",
                        name=f"{name}_{i}_{j}_down{k}_pw",
                    )
                terms.append(t)
        y = layers.Add(name=f"{name}_{i}_add")(terms)
        out.append(layers.Activation("relu", name=f"{name}_{i}_relu")(y))
    return out


def split_halves(xs, name):
    """Split each branch into (first half, second half) along channels."""
    x1, x2 = [], []
    for i, t in enumerate(xs):
        c = int(t.shape[-1])
        a, b = ChannelSplit([c - c // 2, c // 2], name=f"{name}_b{i}_split")(t)
        x1.append(a)
        x2.append(b)
    return x1, x2


def merge_halves(x1, x2, name):
    out = []
    for i, (a, b) in enumerate(zip(x1, x2)):
        t = layers.Concatenate(name=f"{name}_b{i}_concat")([a, b])
        out.append(ChannelShuffle(2, name=f"{name}_b{i}_shuffle")(t))
    return out


def cross_resolution_weighting(xs, reduction, name):
    """Lite-HRNet H function: pool all branches to the smallest size, 2 x 1x1 convs, rescale."""
    widths = [int(t.shape[-1]) for t in xs]
    size = xs[-1].shape[1]
    pooled = []
    for i, t in enumerate(xs[:-1]):
        f = int(t.shape[1]) // int(size)
        pooled.append(BlockPool(f, name=f"{name}_pool{i}")(t))  # XNNPACK has no int8 AVERAGE_POOL_2D
    pooled.append(xs[-1])
    total = sum(widths)
    a = layers.Concatenate(name=f"{name}_concat")(pooled)
    a = conv_bn(a, total // reduction, 1, act="relu", name=f"{name}_conv1")
    a = conv_bn(a, total, 1, act="sigmoid", name=f"{name}_conv2")
    parts = ChannelSplit(widths, name=f"{name}_split")(a)
    out = []
    for i, (t, p) in enumerate(zip(xs, parts)):
        f = int(t.shape[1]) // int(size)
        if f > 1:
            p = Upsample(f, interpolation="nearest", name=f"{name}_up{i}")(p)
        out.append(layers.Multiply(name=f"{name}_mul{i}")([t, p]))
    return out


def spatial_weighting(x, ratio, name):
    """Lite-HRNet per-branch channel weighting (SE style): GAP, 1x1 + ReLU, 1x1 + sigmoid, rescale."""
    c = int(x.shape[-1])
    a = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
    a = layers.Conv2D(max(1, c // ratio), 1, activation="relu", name=f"{name}_conv1")(a)
    a = layers.Conv2D(c, 1, activation="sigmoid", name=f"{name}_conv2")(a)
    return layers.Multiply(name=f"{name}_mul")([x, a])


def conditional_channel_weighting(xs, reduction, psa, name):
    """Lite-HRNet block: split, cross-resolution weighting, 3x3 dw conv [+ PSA], spatial weighting."""
    x1, x2 = split_halves(xs, name)
    x2 = cross_resolution_weighting(x2, reduction, f"{name}_crw")
    out = []
    for i, t in enumerate(x2):
        t = dw_bn(t, 3, name=f"{name}_b{i}_dw")
        if psa:
            t = PolarizedSelfAttention(name=f"{name}_b{i}_psa")(t)
        out.append(spatial_weighting(t, 4, f"{name}_b{i}_sw"))
    return merge_halves(x1, out, name)


def iterative_head(xs, name="head"):
    """Lite-HRNet IterativeHead: top-down from the lowest resolution, depthwise-separable projections.

    Output widths (high -> low resolution): (w0, w0, w1, w2). Upsampling is bilinear x2 with
    half-pixel centres (the reference uses align_corners=True; a small, documented deviation).
    """
    rev = xs[::-1]
    widths = [int(t.shape[-1]) for t in rev]
    ys, last = [], None
    for i, s in enumerate(rev):
        level = len(xs) - 1 - i
        if last is not None:
            last = Upsample(2, interpolation="bilinear", name=f"{name}_{level}_up")(last)
            s = layers.Add(name=f"{name}_{level}_add")([s, last])
        c_out = widths[i + 1] if i < len(rev) - 1 else widths[i]
        s = dw_bn(s, 3, name=f"{name}_{level}_dw")
        s = conv_bn(s, c_out, 1, act="relu", name=f"{name}_{level}_pw")
        ys.append(s)
        last = s
    return ys[::-1]
