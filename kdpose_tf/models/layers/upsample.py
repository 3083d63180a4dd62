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
    # Each channel alone, commuting with a positive per-channel scale (export/equalization.py follows it).
    channelwise = True

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


def _align_corners_matrix(n_in, n_out):
    """(n_out, n_in) bilinear weights with align_corners=True: output i samples input i*(n_in-1)/(n_out-1)."""
    import numpy as np

    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        src = 0.0 if n_out == 1 else i * (n_in - 1) / (n_out - 1)
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1.0 - (src - lo)
        m[i, hi] += src - lo
    return m


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ResizeBilinear(keras.layers.Layer):
    """Bilinear resize to a fixed (height, width), with PaddlePaddle/PyTorch's `align_corners` option.

    `keras.ops.image.resize` only has half-pixel centres; models imported from Paddle or PyTorch
    (e.g. PP-TinyPose's fusion layers) need align_corners=True to give the same numbers. On the
    TensorFlow backend this is one RESIZE_BILINEAR op (align_corners flag; XNNPACK and the Edge TPU
    take it); other backends use the same maths as two small constant matrix products.

    Args:
        size: (height, width) of the output.
        align_corners: map corner pixels onto corner pixels (default True); False = half-pixel centres.

    Example:
    >>> import numpy as np
    >>> y = ResizeBilinear((3, 3))(np.array([[0.0, 2.0], [4.0, 6.0]], "float32").reshape(1, 2, 2, 1))
    >>> np.asarray(y)[0, :, :, 0].tolist()
    [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]]
    """

    channelwise = True  # see Upsample.channelwise

    def __init__(self, size, align_corners=True, **kwargs):
        size = tuple(size) if isinstance(size, (list, tuple)) else None
        if size is None or len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise ValueError(f"ResizeBilinear: size must be (height, width) of positive ints, received {size!r}")
        if not isinstance(align_corners, bool):
            raise ValueError(f"ResizeBilinear: align_corners must be a bool, received {align_corners!r}")
        super().__init__(**kwargs)
        self.size = size
        self.align_corners = align_corners

    def call(self, x):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # the ResizeBilinear op itself: tf.image.resize has no align_corners, and the
            # tf.compat.v1 wrapper of the same op logs a deprecation warning on every trace
            return tf.raw_ops.ResizeBilinear(
                images=x, size=self.size, align_corners=self.align_corners, half_pixel_centers=not self.align_corners
            )
        if not self.align_corners:
            return keras.ops.image.resize(x, self.size, interpolation="bilinear")
        mh = ops.convert_to_tensor(_align_corners_matrix(x.shape[1], self.size[0]), dtype=x.dtype)
        mw = ops.convert_to_tensor(_align_corners_matrix(x.shape[2], self.size[1]), dtype=x.dtype)
        return ops.einsum("ih,bhwc,jw->bijc", mh, x, mw)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "align_corners": self.align_corners}
