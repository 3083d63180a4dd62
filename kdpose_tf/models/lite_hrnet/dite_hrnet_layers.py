"""Dite-HRNet blocks: dynamic split convolution and adaptive context modelling.

Li, Zhang, Xie, Song, Zhao: "Dite-HRNet: Dynamic Lightweight High-Resolution Network for Human
Pose Estimation", IJCAI 2022. Layouts follow the authors' ``ditehrnet.py``:

* dynamic kernel aggregation (DKA): attention a = sigmoid(1x1(ReLU(BN(1x1(GAP(x)))))) over K
  kernels; the reference convolves with ``sum_k a_k W_k``. Here each of the K kernels is its own
  conv layer (``{name}_kernel{k}``, a plain depthwise or 1x1 conv) and the outputs are summed with
  the weights a_k: ``sum_k a_k * conv(x, W_k)`` (`parallel_kernels`). Because the convs are linear
  and bias-free, ``conv(x, sum_k a_k W_k) = sum_k a_k conv(x, W_k)`` exactly; the parameter count
  is identical and the graph is static (full-int8 TFLite with builtin ops). Each product is a MUL
  by a (1, 1, 1, 1) scalar and the sum a chain of ADDs, both delegated to XNNPACK. The BN after
  the sum cannot be folded by TFLite (it reads an ADD, not a conv); `export_tflite` folds its scale
  into the K kernels first (`kdpose_tf.export.bn_folding`). Not one conv with depth multiplier K
  summed by `KernelAggregate` (a broadcast MUL and a SUM over a size-K last axis): XNNPACK runs
  both slowly in int8 (benchmarks/results/README.md, "Delegate-friendly layers"). A Dite model
  saved with that older layout (one ``{name}_conv`` of K*C channels) does not load into this
  graph, Keras names the missing ``{name}_kernel{k}`` layers; the zoo ships no Dite weights.
  `KernelAggregate` stays registered for code that uses it directly.
* dynamic split convolution (DSC): channel groups with kernels 3, 5, 7, 9 (groups 1/1/2/4 and
  K = 4/4/2/1 kernels for branches 0..3), then channel shuffle.
* global context modelling (GCM): softmax-weighted global pooling, SE-style gating, BN
  (`GatedBatchNormalization`: BN(x * gate) with the BN scale folded into the gate at inference,
  so TFLite runs no full-size MUL and ADD for a BatchNorm it cannot fold). Keras 3 keys saved
  weights by class name and order, so a Dite model saved with the older `Multiply` +
  `BatchNormalization` layout does not load into this graph (Keras reports the objects it could
  not load); as above, the zoo ships no Dite weights.
* dense context modelling (DCM): softmax-weighted pooling of every branch down to the smallest
  branch size, joint gating across branches. The reference reshapes NCHW memory in a way that
  mixes channels and positions; this implementation uses the intended window pooling
  (softmax over all positions, weighted sum over each window).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kdpose_tf.models.layers.norm import BN_KWARGS, GatedBatchNormalization
from kdpose_tf.models.layers.pooling import BlockPool
from kdpose_tf.models.layers.psa import PolarizedSelfAttention
from kdpose_tf.models.layers.upsample import Upsample
from kdpose_tf.models.lite_hrnet.lite_hrnet_layers import (
    ChannelShuffle,
    ChannelSplit,
    bn,
    conv_bn,
    merge_halves,
    split_halves,
)

DSC_GROUPS = (1, 1, 2, 4)
DSC_KERNELS = (4, 4, 2, 1)
GCM_REDUCTION = (4, 4, 8, 8)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class KernelAggregate(keras.layers.Layer):
    """Weighted sum of K parallel conv outputs: inputs [y (B,H,W,C*K), a (B,1,1,K)] -> (B,H,W,C).

    No longer used by the Dite graphs (they use `parallel_kernels`, faster in XNNPACK); kept for code
    that uses it directly.

    Channel ``c*K + k`` of y is the output of kernel k for channel c (the order of a depthwise
    conv with depth multiplier K). Spatial size must be static.

    Args:
        num_kernels: K (>= 2).

    Example:
        >>> y = KernelAggregate(4, name="agg")([keras.Input((8, 8, 64)), keras.Input((1, 1, 4))])
    """

    def __init__(self, num_kernels, **kwargs):
        if not isinstance(num_kernels, int) or isinstance(num_kernels, bool) or num_kernels < 2:
            raise ValueError(f"KernelAggregate: num_kernels must be an int >= 2, received {num_kernels!r}")
        super().__init__(**kwargs)
        self.num_kernels = num_kernels

    def build(self, input_shape):
        y_shape, a_shape = input_shape
        if y_shape[-1] is None or int(y_shape[-1]) % self.num_kernels or a_shape[-1] != self.num_kernels:
            raise ValueError(
                f"KernelAggregate {self.name}: expected y channels divisible by {self.num_kernels} and "
                f"attention with {self.num_kernels} channels, received {tuple(y_shape)} and {tuple(a_shape)}"
            )
        super().build(input_shape)

    def call(self, inputs):
        y, a = inputs
        h, w, ck = y.shape[1], y.shape[2], y.shape[3]
        c = ck // self.num_kernels
        y = ops.reshape(y, (-1, h * w, c, self.num_kernels))
        a = ops.reshape(a, (-1, 1, 1, self.num_kernels))
        return ops.reshape(ops.sum(y * a, axis=-1), (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        y_shape = input_shape[0]
        c = None if y_shape[-1] is None else int(y_shape[-1]) // self.num_kernels
        return tuple(y_shape[:-1]) + (c,)

    def get_config(self):
        config = super().get_config()
        config["num_kernels"] = self.num_kernels
        return config


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ContextPool(keras.layers.Layer):
    """Softmax-weighted pooling: inputs [x (B,H,W,C), logits (B,H,W,1)].

    The softmax runs over all H*W positions; the weighted features are summed over windows of
    ``pool_size`` (or over the whole map when ``pool_size`` is None, giving (B,1,1,C)).

    Args:
        pool_size: window size (int) or None for global (default None).

    Example:
        >>> g = ContextPool(name="cp")([keras.Input((8, 8, 16)), keras.Input((8, 8, 1))])  # (None,1,1,16)
    """

    def __init__(self, pool_size=None, **kwargs):
        if pool_size is not None and (not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1):
            raise ValueError(f"ContextPool: pool_size must be None or an int >= 1, received {pool_size!r}")
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def build(self, input_shape):
        if self.pool_size is not None and self.pool_size > 1:
            # Window sum as a constant depthwise conv (XNNPACK has no int8 AVERAGE_POOL_2D).
            self._window_sum = BlockPool(self.pool_size, mode="sum", name=f"{self.name}_sum")
            self._window_sum.build(input_shape[0])
        super().build(input_shape)

    def call(self, inputs):
        x, logits = inputs
        h, w = x.shape[1], x.shape[2]
        m = ops.softmax(ops.reshape(logits, (-1, h * w)), axis=-1)
        x = x * ops.reshape(m, (-1, h, w, 1))
        if self.pool_size is None:
            return ops.sum(x, axis=(1, 2), keepdims=True)
        if self.pool_size == 1:
            return x
        return self._window_sum(x)

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0]
        if self.pool_size is None:
            return (x_shape[0], 1, 1, x_shape[3])
        p = self.pool_size
        return (x_shape[0], x_shape[1] // p, x_shape[2] // p, x_shape[3])

    def get_config(self):
        config = super().get_config()
        config["pool_size"] = self.pool_size
        return config


def kernel_attention(x, num_kernels, name, reduction=4):
    c = int(x.shape[-1])
    mid = num_kernels if c == 3 else max(1, c // reduction)
    a = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
    a = layers.Conv2D(mid, 1, use_bias=False, name=f"{name}_conv1")(a)
    a = bn(a, f"{name}_bn")
    a = layers.Activation("relu", name=f"{name}_relu")(a)
    return layers.Conv2D(num_kernels, 1, activation="sigmoid", name=f"{name}_conv2")(a)


def parallel_kernels(x, a, filters, kernel_size, strides, name):
    """``sum_k a_k * conv(x, W_k)``: K plain convs (depthwise when ``filters`` is None, else to
    ``filters``), layers ``{name}_kernel{k}``, each output scaled by its attention channel a[..., k]."""
    k = int(a.shape[-1])
    weights = ChannelSplit([1] * k, name=f"{name}_att_split")(a)
    terms = []
    for i, w in enumerate(weights):
        if filters is None:
            y = layers.DepthwiseConv2D(kernel_size, strides, padding="same", use_bias=False, name=f"{name}_kernel{i}")(x)
        else:
            y = layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}_kernel{i}")(x)
        terms.append(layers.Multiply(name=f"{name}_kernel{i}_mul")([y, w]))
    return layers.Add(name=f"{name}_sum")(terms)


def dynamic_conv_bn(x, filters=None, kernel_size=3, strides=1, num_kernels=4, act=None, name="dconv"):
    """Conv (depthwise when ``filters`` is None, else 1x1 to ``filters``) with dynamic kernel
    aggregation over ``num_kernels`` kernels (`parallel_kernels`), then BN [+ activation]."""
    if num_kernels == 1:
        if filters is None:
            y = layers.DepthwiseConv2D(kernel_size, strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
        else:
            y = layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        a = kernel_attention(x, num_kernels, f"{name}_att")
        y = parallel_kernels(x, a, filters, kernel_size, strides, name)
    y = bn(y, f"{name}_bn")
    if act:
        y = layers.Activation(act, name=f"{name}_{act}")(y)
    return y


def global_context(x, reduction, name):
    """GCM: softmax-weighted global pooling -> 1x1/BN/ReLU -> 1x1/sigmoid -> BN(x * gate).

    BN(x * gate) is one `GatedBatchNormalization` layer ``{name}_bn`` (the BN's weights; at inference
    its scale is folded into the gate, saving a full-size MUL per GCM in TFLite)."""
    c = int(x.shape[-1])
    logits = layers.Conv2D(1, 1, name=f"{name}_mask")(x)
    g = ContextPool(None, name=f"{name}_pool")([x, logits])
    g = conv_bn(g, max(1, c // reduction), 1, act="relu", name=f"{name}_att1")
    g = layers.Conv2D(c, 1, activation="sigmoid", name=f"{name}_att2_conv")(g)
    return GatedBatchNormalization(name=f"{name}_bn", **BN_KWARGS)([x, g])


def dense_context(xs, reduction, name):
    """DCM: weighted pooling of all branches to the smallest size, joint gating, rescale."""
    widths = [int(t.shape[-1]) for t in xs]
    size = int(xs[-1].shape[1])
    pooled = []
    for i, t in enumerate(xs[:-1]):
        f = int(t.shape[1]) // size
        logits = layers.Conv2D(1, 1, name=f"{name}_mask{i}")(t)
        pooled.append(ContextPool(f, name=f"{name}_pool{i}")([t, logits]))
    pooled.append(xs[-1])
    total = sum(widths)
    a = layers.Concatenate(name=f"{name}_concat")(pooled)
    a = conv_bn(a, total // reduction, 1, act="relu", name=f"{name}_att1")
    a = layers.Conv2D(total, 1, activation="sigmoid", name=f"{name}_att2_conv")(a)
    parts = ChannelSplit(widths, name=f"{name}_split")(a)
    out = []
    for i, (t, p) in enumerate(zip(xs, parts)):
        f = int(t.shape[1]) // size
        if f > 1:
            p = Upsample(f, interpolation="nearest", name=f"{name}_up{i}")(p)
        out.append(layers.Multiply(name=f"{name}_mul{i}")([t, p]))
    return out


def dynamic_split_conv(x, branch, name):
    """DSC on branch `branch` (0..3): groups with kernels 3, 5, 7, 9 and dynamic kernels."""
    groups = DSC_GROUPS[min(branch, len(DSC_GROUPS) - 1)]
    kernels = DSC_KERNELS[min(branch, len(DSC_KERNELS) - 1)]
    c = int(x.shape[-1])
    if groups == 1:
        return dynamic_conv_bn(x, None, 3, 1, kernels, name=f"{name}_g0")
    sizes = [c // groups] * groups
    sizes[0] += c - sum(sizes)
    parts = ChannelSplit(sizes, name=f"{name}_split")(x)
    outs = [dynamic_conv_bn(p, None, 2 * j + 3, 1, kernels, name=f"{name}_g{j}") for j, p in enumerate(parts)]
    y = layers.Concatenate(name=f"{name}_concat")(outs)
    if c % groups == 0:
        y = ChannelShuffle(groups, name=f"{name}_shuffle")(y)
    return y


def dynamic_context_block(xs, reduction, psa, name):
    """Dite-HRNet dynamic multi-scale context block: split, DCM, DSC [+ PSA], GCM, shuffle."""
    x1, x2 = split_halves(xs, name)
    x2 = dense_context(x2, reduction, f"{name}_dcm")
    out = []
    for i, t in enumerate(x2):
        t = dynamic_split_conv(t, i, f"{name}_b{i}_dsc")
        if psa:
            t = PolarizedSelfAttention(name=f"{name}_b{i}_psa")(t)
        t = global_context(t, GCM_REDUCTION[min(i, 3)], f"{name}_b{i}_gcm")
        out.append(t)
    return merge_halves(x1, out, name)


def dite_stem(x, stem_width, name="stem"):
    """Dite-HRNet stem: 3x3/2 conv, then two dynamic paths with global context (output 1/4)."""
    x = conv_bn(x, stem_width, 3, strides=2, act="relu", name=f"{name}_conv1")
    half = stem_width // 2
    mid = max(1, half // 4)
    x1, x2 = ChannelSplit([stem_width - half, half], name=f"{name}_split")(x)
    c1 = stem_width - half
    x1 = dynamic_conv_bn(x1, None, 3, 2, 4, name=f"{name}_branch1_dw")
    x1 = global_context(x1, 4, f"{name}_branch1_gcm")
    x1 = dynamic_conv_bn(x1, c1, 1, 1, 4, act="relu", name=f"{name}_branch1_pw")
    x2 = dynamic_conv_bn(x2, None, 3, 1, 4, name=f"{name}_branch2_dw1")
    x2 = global_context(x2, 4, f"{name}_branch2_gcm")
    x2 = dynamic_conv_bn(x2, mid, 1, 1, 4, act="relu", name=f"{name}_branch2_reduce")
    x2 = dynamic_conv_bn(x2, half, 1, 1, 4, name=f"{name}_branch2_expand")
    x2 = dynamic_conv_bn(x2, None, 3, 2, 4, act="relu", name=f"{name}_branch2_dw2")
    x = layers.Concatenate(name=f"{name}_concat")([x1, x2])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)
