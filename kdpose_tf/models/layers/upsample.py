"""`Upsample`: integer-factor upsampling that lowers to one TFLite RESIZE op.

Keras 3's `UpSampling2D(interpolation="nearest")` lowers to RESHAPE + TILE (repeat), and the
Edge TPU has no TILE: every op after it would run on the CPU. This layer resizes with
`keras.ops.image.resize`, which converts to RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR, both
Edge TPU ops. For integer factors the nearest result equals `UpSampling2D`'s.

Args:
    size: integer factor (same for height and width) or (fy, fx). Default 2.
    interpolation: "nearest" (default) or "bilinear".

Example:
>>> import numpy as np
>>> Upsample(2)(np.arange(4, dtype="float32").reshape(1, 2, 2, 1)).shape
TensorShape([1, 4, 4, 1])
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kdpose_tf")
class Upsample(keras.layers.Layer):
    def __init__(self, size=2, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise ValueError(f"size must be a positive int or a pair of them, got {size!r}")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.size = size
        self.interpolation = interpolation

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            shape = keras.ops.shape(x)
            h, w = shape[1], shape[2]
        return keras.ops.image.resize(
            x, (h * self.size[0], w * self.size[1]), interpolation=self.interpolation, data_format="channels_last"
        )

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.size[0], None if w is None else w * self.size[1], c)

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "interpolation": self.interpolation}
