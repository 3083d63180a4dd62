"""`InvertedResidual`: the MobileNetV2 inverted residual block (with optional PSA).

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018; used as the
hourglass block of the lightweight stacked hourglass (LSHM) students.
"""

from __future__ import annotations

import keras

from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.models.layers.psa import PolarizedSelfAttention
from kdpose_tf.utils.args import check_int

_ACTIVATIONS = ("relu6", "relu", "swish", "hard_swish")


def _make_psa(name):
    """PolarizedSelfAttention in the sequential layout (channel then spatial branch)."""
    return PolarizedSelfAttention(layout="sequential", mode="both", name=name)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class InvertedResidual(keras.layers.Layer):
    """MobileNetV2 inverted residual block.

    1x1 expand (x `expansion`) + BN + act, 3x3 depthwise (stride `stride`) + BN + act,
    [PolarizedSelfAttention], 1x1 project to `filters` + BN (linear). The shortcut is the identity
    when stride is 1 and the channel count is unchanged, else a 1x1 conv (stride `stride`) + BN.
    Unlike MobileNetV2 (no shortcut when shapes change) the projection shortcut keeps every block
    residual, as the hourglass blocks that change width need (LSHM uses it the same way).

    Args:
        filters: output channels.
        expansion: expansion factor t of the hidden 1x1 conv (default 2, as in LSHM).
        stride: depthwise stride, 1 or 2 (default 1).
        activation: "relu6" (default), "relu", "swish" or "hard_swish".
        psa: insert PolarizedSelfAttention (sequential) after the 3x3 depthwise conv (default False).
        **kwargs: `name`, `dtype`, ... passed to `keras.layers.Layer`.

    Example:
    >>> block = InvertedResidual(32, expansion=2, name="block")
    >>> tuple(block(keras.ops.zeros((1, 16, 16, 16))).shape)
    (1, 16, 16, 32)
    """

    def __init__(self, filters, expansion=2, stride=1, activation="relu6", psa=False, **kwargs):
        check_int("filters", filters, owner="InvertedResidual")
        check_int("expansion", expansion, owner="InvertedResidual")
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: `stride` must be 1 or 2, received {stride!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"InvertedResidual: `activation` must be one of {_ACTIVATIONS}, received {activation!r}")
        if not isinstance(psa, bool):
            raise ValueError(f"InvertedResidual: `psa` must be a bool, received {psa!r}")
        super().__init__(**kwargs)
        self.filters = filters
        self.expansion = expansion
        self.stride = stride
        self.activation = activation
        self.psa = psa

    def _act(self, name):
        if self.activation == "relu6":
            return keras.layers.ReLU(max_value=6.0, name=name, dtype=self.dtype_policy)
        return keras.layers.Activation(self.activation, name=name, dtype=self.dtype_policy)

    def build(self, input_shape):
        in_ch = int(input_shape[-1])
        hidden = in_ch * self.expansion
        n = self.name
        dt = self.dtype_policy
        bn = dict(BN_KWARGS, dtype=dt)
        self.expand = keras.layers.Conv2D(hidden, 1, use_bias=False, name=f"{n}_expand", dtype=dt)
        self.expand_bn = keras.layers.BatchNormalization(name=f"{n}_expand_bn", **bn)
        self.expand_act = self._act(f"{n}_expand_act")
        self.depthwise = keras.layers.DepthwiseConv2D(
            3, strides=self.stride, padding="same", use_bias=False, name=f"{n}_depthwise", dtype=dt
        )
        self.depthwise_bn = keras.layers.BatchNormalization(name=f"{n}_depthwise_bn", **bn)
        self.depthwise_act = self._act(f"{n}_depthwise_act")
        self.attention = _make_psa(f"{n}_psa") if self.psa else None
        self.project = keras.layers.Conv2D(self.filters, 1, use_bias=False, name=f"{n}_project", dtype=dt)
        self.project_bn = keras.layers.BatchNormalization(name=f"{n}_project_bn", **bn)
        self.use_identity = self.stride == 1 and in_ch == self.filters
        if not self.use_identity:
            self.shortcut = keras.layers.Conv2D(
                self.filters, 1, strides=self.stride, use_bias=False, name=f"{n}_shortcut", dtype=dt
            )
            self.shortcut_bn = keras.layers.BatchNormalization(name=f"{n}_shortcut_bn", **bn)
        shape = tuple(input_shape)
        self.expand.build(shape)
        shape = self.expand.compute_output_shape(shape)
        self.expand_bn.build(shape)
        self.depthwise.build(shape)
        shape = self.depthwise.compute_output_shape(shape)
        self.depthwise_bn.build(shape)
        if self.attention is not None:
            self.attention.build(shape)
        self.project.build(shape)
        self.project_bn.build(self.project.compute_output_shape(shape))
        if not self.use_identity:
            self.shortcut.build(tuple(input_shape))
            self.shortcut_bn.build(self.shortcut.compute_output_shape(tuple(input_shape)))
        self.built = True

    def call(self, inputs, training=None):
        x = self.expand_act(self.expand_bn(self.expand(inputs), training=training))
        x = self.depthwise_act(self.depthwise_bn(self.depthwise(x), training=training))
        if self.attention is not None:
            x = self.attention(x)
        x = self.project_bn(self.project(x), training=training)
        if self.use_identity:
            skip = inputs
        else:
            skip = self.shortcut_bn(self.shortcut(inputs), training=training)
        return x + skip

    def compute_output_shape(self, input_shape):
        def down(d):
            return None if d is None else (d + self.stride - 1) // self.stride

        return (input_shape[0], down(input_shape[1]), down(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            expansion=self.expansion,
            stride=self.stride,
            activation=self.activation,
            psa=self.psa,
        )
        return config
