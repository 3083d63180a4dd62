"""Fake-quantisation layers of kdpose_tf's Keras-3-native QAT (`kdpose_tf.export.qat`).

Activations: `ActivationFakeQuant` (per tensor, asymmetric 8 bit, EMA min / max as TFMOT's
MovingAverageQuantizer). Weights: `QuantConv2D`, `QuantDepthwiseConv2D`, `QuantDense` (symmetric,
narrow-range int8 per output channel as TFMOT's LastValueQuantizer). `QuantRescaling` gives the
product of a Rescaling (MUL then ADD in TFLite) its own range. All serialize
(`keras.saving.register_keras_serializable`), so a QAT model saves and loads as `.keras`.

Example:
>>> import numpy as np
>>> q = ActivationFakeQuant(name="q")
>>> _ = q(np.zeros((1, 4), "float32"))
>>> q.calibrating = True
>>> _ = q(np.array([[-1.0, 0.0, 0.5, 2.0]], "float32"))
>>> round(float(q.min_var.numpy()), 3), round(float(q.max_var.numpy()), 3)
(-1.0, 2.0)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ActivationFakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric 8-bit fake quantisation with EMA-tracked min / max.

    Args:
        ema_decay: moving-average decay of the range (default 0.999, as TFMOT).
        num_bits: 8 (default).
        shared: one instance quantizes several tensors that int8 gives one scale (default False);
            its range is the union set by `calibrate` and stays fixed in training.
        frozen: the range stays as `calibrate` set it in training (default False: EMA of the batch
            min / max). `calibrate(method="mse")` freezes the clipped ranges it chooses, which the
            moving average would otherwise widen back towards the batch extremes.

    Ranges start empty (min = max = 0): the first training batch (or `calibrate`) sets them.
    """

    def __init__(self, ema_decay=0.999, num_bits=8, shared=False, frozen=False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        if int(num_bits) not in (8,):
            raise ValueError(f"num_bits must be 8 (int8 export), got {num_bits!r}")
        self.ema_decay = float(ema_decay)
        self.num_bits = int(num_bits)
        self.shared = bool(shared)
        self.frozen = bool(frozen)
        self.calibrating = False
        self.sampler = None  # set by `calibrate(method="mse")`: a callable given each input it sees

    def build(self, input_shape):
        self.min_var = self.add_weight(name="min", shape=(), initializer="zeros", trainable=False)
        self.max_var = self.add_weight(name="max", shape=(), initializer="zeros", trainable=False)
        self.built = True

    def call(self, x, training=None):
        x = tf.convert_to_tensor(x)
        if self.calibrating:
            # Eager pass over calibration data: running min / max (ranges always include 0).
            self.min_var.assign(tf.minimum(self.min_var, tf.reduce_min(x)))
            self.max_var.assign(tf.maximum(self.max_var, tf.reduce_max(x)))
        if self.sampler is not None:
            self.sampler(x)
        if training and not self.calibrating and not (self.shared or self.frozen):  # shared: keeps its union
            bmin = tf.minimum(tf.reduce_min(x), 0.0)
            bmax = tf.maximum(tf.reduce_max(x), 0.0)
            empty = tf.equal(self.min_var, self.max_var)
            d = self.ema_decay
            self.min_var.assign(tf.where(empty, bmin, d * self.min_var + (1 - d) * bmin))
            self.max_var.assign(tf.where(empty, bmax, d * self.max_var + (1 - d) * bmax))
        # The variables go straight into the op (min <= 0 <= max holds by construction), so the
        # frozen graph has constant ranges the converter turns into int8 scales.
        return tf.quantization.fake_quant_with_min_max_vars(
            x, self.min_var, self.max_var, num_bits=self.num_bits, narrow_range=False
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay, "num_bits": self.num_bits,
                "shared": self.shared, "frozen": self.frozen}


def _per_channel_abs_max(kernel2d):
    """max |w| over all axes but the last (the channel axis)."""
    return tf.reduce_max(tf.abs(kernel2d), axis=list(range(len(kernel2d.shape) - 1)))


class _WeightQuantMixin:
    """Symmetric, narrow-range, per-channel int8 fake quantisation of `self.kernel`.

    The per-channel range (max |w|) lives in a non-trainable variable `kernel_range`, refreshed
    in every training call and by `refresh_ranges()` (TFMOT's LastValueQuantizer); inference uses
    the stored range, so the exported graph has constant ranges.
    """

    def _channel_kernel(self):
        return self.kernel  # (..., C): channel axis last

    def _restore_kernel(self, q):
        return q

    def build(self, input_shape):
        super().build(input_shape)  # the Keras layer's kernel / bias
        self._build_range()

    def _bias_and_activation(self, outputs):
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def _build_range(self):
        channels = int(self._channel_kernel().shape[-1])
        self.kernel_range = self.add_weight(name="kernel_range", shape=(channels,), initializer="ones",
                                            trainable=False)
        self.refresh_ranges()

    # Keras' Conv / Dense save only kernel and bias: `kernel_range` is stored after them so a QAT
    # model's .keras file reloads (and keeps the ranges it was exported with).
    def save_own_variables(self, store):
        super().save_own_variables(store)
        key = str(2 if self.use_bias else 1)
        if self.built and key not in store:  # DepthwiseConv2D's (Layer's) save already stores every variable
            store[key] = self.kernel_range

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self.kernel_range.assign(store[str(2 if self.use_bias else 1)])

    def refresh_ranges(self):
        self.kernel_range.assign(tf.maximum(_per_channel_abs_max(self._channel_kernel()), 1e-8))

    def quantized_kernel(self, training=None):
        k = self._channel_kernel()
        if training:
            self.kernel_range.assign(tf.maximum(tf.stop_gradient(_per_channel_abs_max(k)), 1e-8))
        r = self.kernel_range
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(k, -r, r, num_bits=8, narrow_range=True)
        return self._restore_kernel(q)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class QuantConv2D(_WeightQuantMixin, keras.layers.Conv2D):
    """`Conv2D` whose kernel is fake-quantised per output channel (symmetric int8) in every call."""

    def call(self, inputs, training=None):
        if self.groups != 1:
            raise ValueError(f"{self.name}: grouped convolutions are not supported by QAT, got groups={self.groups}")
        outputs = self.convolution_op(inputs, self.quantized_kernel(training))
        return self._bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class QuantDepthwiseConv2D(_WeightQuantMixin, keras.layers.DepthwiseConv2D):
    """`DepthwiseConv2D` with per-channel (in x multiplier) symmetric int8 fake-quantised kernel."""

    def _channel_kernel(self):
        kh, kw, cin, mult = self.kernel.shape  # TFLite's channel axis is in * mult
        return tf.reshape(self.kernel, (kh, kw, cin * mult))

    def _restore_kernel(self, q):
        return tf.reshape(q, tuple(self.kernel.shape))

    def call(self, inputs, training=None):
        outputs = keras.ops.depthwise_conv(
            inputs, self.quantized_kernel(training), strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        return self._bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class QuantDense(_WeightQuantMixin, keras.layers.Dense):
    """`Dense` with per-output-unit symmetric int8 fake-quantised kernel."""

    def call(self, inputs, training=None):
        outputs = keras.ops.matmul(inputs, self.quantized_kernel(training))
        return self._bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class QuantRescaling(keras.layers.Rescaling):
    """`Rescaling` (x * scale + offset) with a fake-quant range on the intermediate product.

    TFLite runs Rescaling as MUL then ADD; both outputs need an int8 range, and only the final one
    gets an `ActivationFakeQuant` after the layer, so the product gets its own here.
    """

    def __init__(self, scale, offset=0.0, ema_decay=0.999, **kwargs):
        super().__init__(scale, offset, **kwargs)
        self.ema_decay = float(ema_decay)

    def build(self, input_shape):
        self.mid_quant = ActivationFakeQuant(self.ema_decay, name=f"{self.name}_mul_quant")
        self.mid_quant.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = tf.cast(inputs, self.compute_dtype) * tf.cast(self.scale, self.compute_dtype)
        if np.any(np.asarray(self.offset) != 0):
            x = self.mid_quant(x, training=training)
            x = x + tf.cast(self.offset, self.compute_dtype)
        return x

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}
