"""`BottleneckResidual`: the stacked-hourglass residual module (ResNet bottleneck).

Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016, Fig. 4 left:
1x1 conv to C/2, 3x3 conv at C/2, 1x1 conv to C, added to the input (a 1x1 conv projects the
input when the channel count changes). He et al., "Deep Residual Learning", CVPR 2016.
"""

from __future__ import annotations

import keras

from kdpose_tf.models.layers.inverted_residual import _make_psa
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.utils.args import check_int


@keras.saving.register_keras_serializable(package="kdpose_tf")
class BottleneckResidual(keras.layers.Layer):
    """Bottleneck residual block, post-activation by default.

    `preactivation=False` (default, ResNet v1 order): conv1x1-BN-ReLU, conv3x3-BN-ReLU, [PSA],
    conv1x1-BN, add shortcut, ReLU. Every BN follows a conv, so converters fold it into the conv
    weights (no extra MUL/ADD ops in TFLite, cleaner int8 graphs).
    `preactivation=True` (Newell's original torch code, ResNet v2 order): BN-ReLU-conv1x1,
    BN-ReLU-conv3x3, [PSA], BN-ReLU-conv1x1, add shortcut; no activation after the add.
    The parameter count is the same up to BN parameters (within 0.5 %).

    Args:
        filters: output channels C.
        bottleneck_ratio: hidden width = filters // bottleneck_ratio (default 2, as in Newell).
        stride: stride of the 3x3 conv, 1 or 2 (default 1).
        preactivation: see above (default False).
        psa: insert PolarizedSelfAttention (sequential) after the 3x3 conv (default False).
        **kwargs: `name`, `dtype`, ... passed to `keras.layers.Layer`.

    Example:
    >>> block = BottleneckResidual(32, name="res")
    >>> tuple(block(keras.ops.zeros((1, 16, 16, 16))).shape)
    (1, 16, 16, 32)
    """

    def __init__(self, filters, bottleneck_ratio=2, stride=1, preactivation=False, psa=False, **kwargs):
        check_int("filters", filters, owner="BottleneckResidual")
        check_int("bottleneck_ratio", bottleneck_ratio, owner="BottleneckResidual")
        if filters // bottleneck_ratio < 1:
            raise ValueError(
                f"BottleneckResidual: filters // bottleneck_ratio must be >= 1, received filters={filters}, "
                f"bottleneck_ratio={bottleneck_ratio}"
            )
        if stride not in (1, 2):
            raise ValueError(f"BottleneckResidual: `stride` must be 1 or 2, received {stride!r}")
        for arg, v in (("preactivation", preactivation), ("psa", psa)):
            if not isinstance(v, bool):
                raise ValueError(f"BottleneckResidual: `{arg}` must be a bool, received {v!r}")
        super().__init__(**kwargs)
        self.filters = filters
        self.bottleneck_ratio = bottleneck_ratio
        self.stride = stride
        self.preactivation = preactivation
        self.psa = psa

    def build(self, input_shape):
        in_ch = int(input_shape[-1])
        mid = self.filters // self.bottleneck_ratio
        n, dt = self.name, self.dtype_policy
        bn = dict(BN_KWARGS, dtype=dt)
        pre = self.preactivation
        self.conv1 = keras.layers.Conv2D(mid, 1, use_bias=pre, name=f"{n}_conv1", dtype=dt)
        self.conv2 = keras.layers.Conv2D(
            mid, 3, strides=self.stride, padding="same", use_bias=pre, name=f"{n}_conv2", dtype=dt
        )
        self.conv3 = keras.layers.Conv2D(self.filters, 1, use_bias=pre, name=f"{n}_conv3", dtype=dt)
        self.bn1 = keras.layers.BatchNormalization(name=f"{n}_bn1", **bn)
        self.bn2 = keras.layers.BatchNormalization(name=f"{n}_bn2", **bn)
        self.bn3 = keras.layers.BatchNormalization(name=f"{n}_bn3", **bn)
        self.attention = _make_psa(f"{n}_psa") if self.psa else None
        self.use_identity = self.stride == 1 and in_ch == self.filters
        if not self.use_identity:
            self.shortcut = keras.layers.Conv2D(
                self.filters, 1, strides=self.stride, use_bias=pre, name=f"{n}_shortcut", dtype=dt
            )
            if not pre:
                self.shortcut_bn = keras.layers.BatchNormalization(name=f"{n}_shortcut_bn", **bn)
        s0 = tuple(input_shape)
        s1 = self.conv1.compute_output_shape(s0)
        s2 = self.conv2.compute_output_shape(s1)
        s3 = self.conv3.compute_output_shape(s2)
        self.conv1.build(s0)
        self.conv2.build(s1)
        self.conv3.build(s2)
        if pre:  # BN before each conv
            self.bn1.build(s0)
            self.bn2.build(s1)
            self.bn3.build(s2)
        else:  # BN after each conv
            self.bn1.build(s1)
            self.bn2.build(s2)
            self.bn3.build(s3)
        if self.attention is not None:
            self.attention.build(s2)
        if not self.use_identity:
            self.shortcut.build(s0)
            if not pre:
                self.shortcut_bn.build(self.shortcut.compute_output_shape(s0))
        self.built = True

    def call(self, inputs, training=None):
        relu = keras.ops.relu
        if self.preactivation:
            x = self.conv1(relu(self.bn1(inputs, training=training)))
            x = self.conv2(relu(self.bn2(x, training=training)))
            if self.attention is not None:
                x = self.attention(x)
            x = self.conv3(relu(self.bn3(x, training=training)))
            skip = inputs if self.use_identity else self.shortcut(inputs)
            return x + skip
        x = relu(self.bn1(self.conv1(inputs), training=training))
        x = relu(self.bn2(self.conv2(x), training=training))
        if self.attention is not None:
            x = self.attention(x)
        x = self.bn3(self.conv3(x), training=training)
        if self.use_identity:
            skip = inputs
        else:
            skip = self.shortcut_bn(self.shortcut(inputs), training=training)
        return relu(x + skip)

    def compute_output_shape(self, input_shape):
        def down(d):
            return None if d is None else (d + self.stride - 1) // self.stride

        return (input_shape[0], down(input_shape[1]), down(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            bottleneck_ratio=self.bottleneck_ratio,
            stride=self.stride,
            preactivation=self.preactivation,
            psa=self.psa,
        )
        return config
