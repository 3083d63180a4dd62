"""`BiasAdd`: add a per-channel bias (channels last), the part of a BatchNormalization left after folding.

When a BatchNormalization's scale has been moved into the convolutions before it
(`kdpose_tf.export.bn_folding`), what remains is ``y = x + shift`` per channel. Keeping that as a
BatchNormalization with unit statistics leaves a multiply by ``rsqrt(var + eps)`` in the graph whose
value is 1.0 or not depending on the CPU's rsqrt kernel; a `BiasAdd` is an exact ADD on every
machine. It has one weight, ``bias`` (C,), so a BN's shift is set with ``set_weights([shift])``.

Args:
    bias_initializer: initializer of the bias (default "zeros"; any `keras.initializers.get` name or object).

Example:
>>> import numpy as np
>>> layer = BiasAdd(name="b")
>>> layer.build((None, 2, 2, 3))
>>> layer.set_weights([np.array([1.0, -2.0, 0.5], "float32")])
>>> layer(np.zeros((1, 2, 2, 3), "float32"))[0, 0, 0].numpy().tolist()
[1.0, -2.0, 0.5]
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kdpose_tf")
class BiasAdd(keras.layers.Layer):
    def __init__(self, bias_initializer="zeros", **kwargs):
        try:
            initializer = keras.initializers.get(bias_initializer)
        except (ValueError, TypeError) as e:
            raise ValueError(f"BiasAdd: bias_initializer must be a Keras initializer, received {bias_initializer!r}") from e
        if initializer is None:
            raise ValueError(f"BiasAdd: bias_initializer must be a Keras initializer, received {bias_initializer!r}")
        super().__init__(**kwargs)
        self.bias_initializer = initializer
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"BiasAdd {self.name}: expected (B, ..., C) with a static C, received {tuple(input_shape)}")
        self.bias = self.add_weight(name="bias", shape=(int(input_shape[-1]),), initializer=self.bias_initializer)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: int(input_shape[-1])})
        super().build(input_shape)

    def call(self, x, mask=None):
        return ops.add(x, ops.cast(self.bias, x.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
