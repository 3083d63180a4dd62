"""`BlockPool`: non-overlapping p x p average (or sum) pooling as a constant depthwise convolution.

LiteRT's XNNPACK delegate takes AVERAGE_POOL_2D in float only: in an int8 model every average pool
runs on a builtin kernel and splits the XNNPACK graph in two (32 of them in Lite-HRNet-18's
cross-resolution weighting, see benchmarks/results/latency.md). A p x p window with stride p is the
depthwise convolution with a constant kernel of 1/p^2 (mean) or 1 (sum) per channel, which XNNPACK,
the builtin kernels and the Edge TPU all run in int8; the constant is exact in per-channel int8
(every weight is the channel's maximum, 127). The layer has no trainable weights, so it can replace
`keras.layers.AveragePooling2D(p, strides=p)` under the same name without touching a checkpoint.

Args:
    pool_size: window size and stride p (int >= 1; default 2).
    mode: "mean" (default, = AveragePooling2D(p, strides=p, padding="valid")) or "sum" (p^2 x that).

Example:
>>> import numpy as np
>>> BlockPool(2)(np.ones((1, 4, 4, 3), "float32")).shape
TensorShape([1, 2, 2, 3])
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_MODES = ("mean", "sum")


@keras.saving.register_keras_serializable(package="kdpose_tf")
class BlockPool(keras.layers.Layer):
    def __init__(self, pool_size=2, mode="mean", **kwargs):
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"BlockPool: pool_size must be an int >= 1, received {pool_size!r}")
        if mode not in _MODES:
            raise ValueError(f"BlockPool: mode must be one of {_MODES}, received {mode!r}")
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.mode = mode

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"BlockPool {self.name}: expected (B, H, W, C) with static C, received {input_shape}")
        p = self.pool_size
        value = 1.0 / (p * p) if self.mode == "mean" else 1.0
        self._kernel = np.full((p, p, int(input_shape[-1]), 1), value, dtype="float32")
        super().build(input_shape)

    def call(self, x):
        p = self.pool_size
        if p == 1:
            return x
        kernel = ops.cast(ops.convert_to_tensor(self._kernel), x.dtype)
        return ops.depthwise_conv(x, kernel, strides=p, padding="valid")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        p = self.pool_size
        return (b, None if h is None else h // p, None if w is None else w // p, c)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "mode": self.mode}
