"""`Upsample`: integer-factor upsampling built from ops every int8 delegate takes.

Keras 3's `UpSampling2D(interpolation="nearest")` lowers to RESHAPE + TILE (repeat), and the
Edge TPU has no TILE: every op after it would run on the CPU. `keras.ops.image.resize` lowers to
RESIZE_NEAREST_NEIGHBOR, which the Edge TPU maps but LiteRT's XNNPACK delegate does not take for
int8: each such op splits the XNNPACK graph and runs on a builtin kernel (58 of them in
Lite-HRNet-18, see benchmarks/results/latency.md). For a static spatial size this layer therefore
writes nearest upsampling as a broadcast product with a constant of ones between reshapes::

    x (B, H, W, C) -> RESHAPE (B, H*W, 1, C) -> MUL by ones (1, 1, fx, 1) -> (B, H*W, fx, C)
      -> RESHAPE (B, H, 1, fx*W*C) -> MUL by ones (1, 1, fy, 1) -> RESHAPE (B, fy*H, fx*W, C)

(pixel w's fx copies become columns fx*w .. fx*w+fx-1, then each row is copied fy times). In float
the result equals `UpSampling2D` / RESIZE_NEAREST_NEIGHBOR exactly (x * 1); in int8 the MUL by the
constant 1 requantizes to the same scale. CONCATENATION of [x] * f would be the obvious copy, but
TF 2.21's int8 quantizer rejects a tensor concatenated with itself after a STRIDED_SLICE ("same
scale constraint" error). Bilinear upsampling and dynamic shapes use `keras.ops.image.resize`
(RESIZE_BILINEAR is delegated).

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
from keras import ops

def repeat_pixels(x, fy, fx):
    """Nearest upsampling of a static (B, H, W, C) tensor by (fy, fx): RESHAPE, broadcast MUL, RESHAPE."""
    _, h, w, c = x.shape
    if fx > 1:
        x = ops.reshape(x, (-1, h * w, 1, c)) * ops.ones((1, 1, fx, 1), dtype=x.dtype)
        w *= fx
    if fy > 1:
        x = ops.reshape(ops.reshape(x, (-1, h, 1, w * c)) * ops.ones((1, 1, fy, 1), dtype=x.dtype), (-1, h * fy, w, c))
    return ops.reshape(x, (-1, h * fy, w, c))


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
        if self.interpolation == "nearest" and None not in x.shape[1:]:
            return repeat_pixels(x, *self.size)
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
