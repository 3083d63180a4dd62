"""BatchNormalization defaults, and `GatedBatchNormalization` (BN of a gated tensor, cheap at inference).

`BN_KWARGS`: Keras momentum 0.9 (PyTorch's momentum 0.1, as in HRNet / MMPose) and epsilon 1e-5
(PyTorch's default), so converted reference weights and our training statistics agree.

Example:
>>> import keras
>>> keras.layers.BatchNormalization(name="bn", **BN_KWARGS).momentum
0.9
"""

from __future__ import annotations

import keras
from keras import ops

BN_KWARGS = {"momentum": 0.9, "epsilon": 1e-5}


@keras.saving.register_keras_serializable(package="kdpose_tf")
class GatedBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization(x * g)`` for a per-channel gate g (B, 1, 1, C): inputs [x (B,H,W,C), g].

    The output of a squeeze-and-excitation style gate followed by BN, as in Dite-HRNet's global
    context modelling (Li et al., IJCAI 2022: ``BN(x * sigmoid(...))``). Training (batch statistics)
    is exactly ``BatchNormalization()(x * g)``: same arguments, weights and moving-statistics update.
    At inference the BN scale is folded into the small gate, ``x * (g * s) + (beta - mean * s)`` with
    ``s = gamma / sqrt(var + eps)``: one full-size multiply instead of two (TFLite cannot fold a BN
    that follows a Multiply into anything, so ``Multiply`` + ``BatchNormalization`` costs an extra
    full-size MUL in every exported model). Channels-last only (``axis=-1``).

    Args:
        Those of `keras.layers.BatchNormalization` (``axis`` must stay -1).

    Example:
        >>> import numpy as np
        >>> x = np.random.RandomState(0).normal(size=(2, 4, 4, 3)).astype("float32")
        >>> g = np.full((2, 1, 1, 3), 0.5, "float32")
        >>> layer = GatedBatchNormalization(name="gcm_bn")
        >>> y = layer([x, g])                                  # inference: x * 0.5 / sqrt(1 + 1e-3)
        >>> bool(np.allclose(y, x * 0.5 / np.sqrt(1.001), atol=1e-6))
        True
    """

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not all(
                isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"GatedBatchNormalization {self.name}: expects inputs [x, gate], received shapes {input_shape}")
        x_shape, g_shape = (tuple(s) for s in input_shape)
        if self.axis not in (-1, len(x_shape) - 1):
            raise ValueError(f"GatedBatchNormalization {self.name}: needs axis=-1 (channels last), received axis={self.axis}")
        if len(x_shape) != 4 or len(g_shape) != 4 or tuple(g_shape[1:3]) != (1, 1) or g_shape[-1] != x_shape[-1]:
            raise ValueError(
                f"GatedBatchNormalization {self.name}: expected x (B, H, W, C) and gate (B, 1, 1, C) with the same C, "
                f"received {x_shape} and {g_shape}"
            )
        super().build(x_shape)
        self.input_spec = [keras.InputSpec(ndim=4, axes={-1: x_shape[-1]})] * 2

    def call(self, inputs, training=None, mask=None):
        x, g = inputs
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if training and self.trainable:
            return super().call(x * g, training=training, mask=mask)
        # The BatchNormalization inference maths (float32, tf.nn.batch_normalization's order), scale on the gate.
        x = ops.cast(x, "float32")
        g = ops.cast(g, "float32")
        s = ops.rsqrt(ops.cast(self.moving_variance, "float32") + self.epsilon)
        if self.scale:
            s = s * ops.cast(self.gamma, "float32")
        shift = -ops.cast(self.moving_mean, "float32") * s
        if self.center:
            shift = shift + ops.cast(self.beta, "float32")
        return ops.cast(x * (g * s) + shift, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
