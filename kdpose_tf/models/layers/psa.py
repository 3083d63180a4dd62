"""Polarized Self-Attention (PSA).

Liu, Xu, Zhang, Fu, Zhang: "Polarized Self-Attention: Towards High-quality Pixel-wise
Regression", arXiv:2107.00782 (2021), in its sequential layout (channel branch, then spatial branch).

For an input X of shape (H, W, C):

* channel branch: ``A_ch = sigmoid(LN(W_z(softmax_HW(W_q(X)) · W_v(X))))``, with W_v a 1x1 conv
  to C/2, W_q a 1x1 conv to 1 channel (softmax over the H·W positions), the weighted sum over
  positions giving a C/2 vector, W_z a 1x1 conv back to C; ``Z_ch = A_ch ⊙ X`` per channel.
* spatial branch: ``A_sp = sigmoid(softmax_C(GAP(W_q'(X))) · W_v'(X))`` with W_q', W_v' 1x1 convs
  to C/2, giving an H×W map; ``Z_sp = A_sp ⊙ X`` per position.
* ``layout="sequential"``: spatial branch applied to the channel branch's output;
  ``layout="parallel"``: ``Z_ch + Z_sp`` (both on X).

TFLite: the two "matrix products" of the paper are written as broadcast multiplies followed by a
sum (MUL + SUM), so the layer converts to full-int8 TFLite with builtin ops only and needs
no BATCH_MATMUL. The LayerNorm is `LayerNormWithoutNegation`: Keras' `LayerNormalization` with
its call written as ``(z - mean) * rsqrt(var + eps) * gamma + beta`` (SUB, MUL, MEAN, RSQRT),
because Keras' own converts to ``beta - mean * ...`` with a float NEG that TF 2.21's int8
converter wraps in DEQUANTIZE / QUANTIZE: islands that split the XNNPACK graph and stop the Edge
TPU mapping (48 in the proposal student). Same weights and maths, float outputs equal within 1e-5.
Spatial size must be static (fixed-shape pose models).
"""

from __future__ import annotations

import keras
from keras import ops

_LAYOUTS = ("sequential", "parallel")
_MODES = ("both", "channel", "spatial")


@keras.saving.register_keras_serializable(package="kdpose_tf")
class LayerNormWithoutNegation(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` (same arguments, weights and float32 maths) whose call has no
    negation, so TF's int8 converter keeps it integer (see the module docstring). Centred and scaled
    only: ``rms_scaling`` is refused.

    Example:
        >>> import numpy as np
        >>> ln = LayerNormWithoutNegation(epsilon=1e-5)
        >>> np.round(np.asarray(ln(np.array([[1.0, 2.0, 3.0]], "float32")), "float64"), 4).tolist()
        [[-1.2247, 0.0, 1.2247]]
    """

    def build(self, input_shape):
        if self.rms_scaling or not (self.center and self.scale):
            raise ValueError(f"LayerNormWithoutNegation {self.name}: needs center=True, scale=True, rms_scaling=False")
        super().build(input_shape)

    def call(self, inputs):
        z = ops.cast(inputs, "float32")
        d = z - ops.mean(z, axis=self.axis, keepdims=True)
        var = ops.mean(d * d, axis=self.axis, keepdims=True)
        y = d * ops.rsqrt(var + self.epsilon) * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
        return ops.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class PolarizedSelfAttention(keras.layers.Layer):
    """Polarized Self-Attention block (Liu et al. 2021), output shape = input shape.

    Args:
        layout: "sequential" (spatial after channel, default) or "parallel" (sum of both).
        mode: "both" (default), "channel" (channel branch only) or "spatial" (spatial only).
        reduction: channel reduction of the value/query convs (default 2: C -> C/2).
        use_layer_norm: LayerNorm before the channel-branch sigmoid (default True, as in the paper).
        name: layer name.

    Example:
        >>> x = keras.Input((32, 32, 16))
        >>> y = PolarizedSelfAttention(name="psa")(x)   # (None, 32, 32, 16)
    """

    def __init__(self, layout="sequential", mode="both", reduction=2, use_layer_norm=True, name=None, **kwargs):
        if layout not in _LAYOUTS:
            raise ValueError(f"PolarizedSelfAttention: layout must be one of {_LAYOUTS}, received {layout!r}")
        if mode not in _MODES:
            raise ValueError(f"PolarizedSelfAttention: mode must be one of {_MODES}, received {mode!r}")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            raise ValueError(f"PolarizedSelfAttention: reduction must be an int >= 1, received {reduction!r}")
        super().__init__(name=name, **kwargs)
        self.layout = layout
        self.mode = mode
        self.reduction = reduction
        self.use_layer_norm = bool(use_layer_norm)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None or input_shape[3] is None:
            raise ValueError(
                f"PolarizedSelfAttention expects a static (batch, H, W, C) input, received {tuple(input_shape)}"
            )
        channels = int(input_shape[-1])
        inner = max(1, channels // self.reduction)
        self._inner = inner

        def conv(filters, name):
            return keras.layers.Conv2D(filters, 1, name=f"{self.name}_{name}", dtype=self.dtype_policy)

        if self.mode in ("both", "channel"):
            self.ch_wv = conv(inner, "ch_wv")
            self.ch_wq = conv(1, "ch_wq")
            self.ch_wz = conv(channels, "ch_wz")
            self.ch_wv.build(input_shape)
            self.ch_wq.build(input_shape)
            self.ch_wz.build((None, 1, 1, inner))
            if self.use_layer_norm:
                self.ch_ln = LayerNormWithoutNegation(
                    axis=-1, epsilon=1e-5, name=f"{self.name}_ch_ln", dtype=self.dtype_policy
                )
                self.ch_ln.build((None, 1, 1, channels))
        if self.mode in ("both", "spatial"):
            self.sp_wv = conv(inner, "sp_wv")
            self.sp_wq = conv(inner, "sp_wq")
            self.sp_wv.build(input_shape)
            self.sp_wq.build(input_shape)
        super().build(input_shape)

    def channel_weights(self, x):
        """The channel branch's attention A_ch of `x`, (B, 1, 1, C) in (0, 1)."""
        h, w = x.shape[1], x.shape[2]
        v = self.ch_wv(x)  # (B, H, W, C/2)
        q = ops.reshape(self.ch_wq(x), (-1, h * w))  # (B, HW)
        q = ops.reshape(ops.softmax(q, axis=-1), (-1, h, w, 1))
        z = ops.sum(v * q, axis=(1, 2), keepdims=True)  # (B, 1, 1, C/2)
        z = self.ch_wz(z)
        if self.use_layer_norm:
            z = self.ch_ln(z)
        return ops.sigmoid(z)

    def spatial_weights(self, x):
        """The spatial branch's attention A_sp of `x`, (B, H, W, 1) in (0, 1)."""
        v = self.sp_wv(x)  # (B, H, W, C/2)
        q = ops.mean(self.sp_wq(x), axis=(1, 2), keepdims=True)  # (B, 1, 1, C/2)
        q = ops.softmax(q, axis=-1)
        a = ops.sum(v * q, axis=-1, keepdims=True)  # (B, H, W, 1)
        return ops.sigmoid(a)

    def _channel(self, x):
        return x * self.channel_weights(x)

    def _spatial(self, x):
        return x * self.spatial_weights(x)

    def call(self, inputs):
        if self.mode == "channel":
            return self._channel(inputs)
        if self.mode == "spatial":
            return self._spatial(inputs)
        if self.layout == "sequential":
            return self._spatial(self._channel(inputs))
        return self._channel(inputs) + self._spatial(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layout": self.layout,
                "mode": self.mode,
                "reduction": self.reduction,
                "use_layer_norm": self.use_layer_norm,
            }
        )
        return config
