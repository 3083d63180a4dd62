"""Keras-3-native quantization-aware training (QAT) for int8 TFLite export.

`tensorflow-model-optimization` refuses Keras 3 models, so this module rebuilds the idea with
plain Keras layers and TensorFlow's fake-quant ops (Jacob et al., "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018; the scheme TFMOT's
default 8-bit config implements):

* weights: symmetric int8, narrow range [-127, 127], per output channel for Conv2D / Dense and per
  channel (in * multiplier) for DepthwiseConv2D, range = max |w| of the channel (TFMOT's
  LastValueQuantizer); `tf.quantization.fake_quant_with_min_max_vars_per_channel`.
* activations: per tensor, asymmetric 8 bit, range = exponential moving average of the batch
  min / max (TFMOT's MovingAverageQuantizer, decay 0.999), `fake_quant_with_min_max_vars`.
  Inserted on the model input, after the in-graph normalisation and after every layer output,
  except where the output feeds a single ReLU / activation (TFLite fuses conv + ReLU, so only the
  post-activation tensor has its own scale).
* BatchNorm: folded into the preceding conv in the clone (w' = w·γ/√(σ²+ε), b' = β + (b−μ)·γ/√(σ²+ε));
  the folded conv trains with frozen BN statistics, which is also what the int8 model computes.

The converter reads the FakeQuant ranges of activations as the int8 scales and quantises the
(already on-grid) weights per channel, so `export_tflite(qat_model, ..., quantize="int8-qat")`
yields a full-integer model whose output matches the fake-quant Keras model to about one
quantisation step of the output (see tests/export/test_qat.py).

Quantization-aware distillation: pass the QAT model as the Distiller's student with the float
teacher (`Distiller(teacher, quantize_model(student, calib), alpha=...)`);
`quantization_aware_finetune` does that in one call (what `kdpose export --quantize int8-qat` runs).

Example:
>>> qat = quantize_model(student, calibration_data=crops[:32])   # doctest: +SKIP
>>> qat.compile(...); qat.fit(...)                                # doctest: +SKIP
>>> export_tflite(qat, "student_qat.tflite", quantize="int8-qat")  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kdpose_tf.data.pipeline import make_dataset
from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.models.graph import graph_nodes, layer_consumers, node_inputs
from kdpose_tf.models.lite_hrnet.lite_hrnet_layers import ChannelShuffle, ChannelSplit


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ActivationFakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric 8-bit fake quantisation with EMA-tracked min / max.

    Args:
        ema_decay: moving-average decay of the range (default 0.999, as TFMOT).
        num_bits: 8 (default).
        shared: one instance quantizes several tensors that int8 gives one scale (default False);
            its range is the union set by `calibrate` and stays fixed in training.

    Ranges start empty (min = max = 0): the first training batch (or `calibrate`) sets them.
    """

    def __init__(self, ema_decay=0.999, num_bits=8, shared=False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        if int(num_bits) not in (8,):
            raise ValueError(f"num_bits must be 8 (int8 export), got {num_bits!r}")
        self.ema_decay = float(ema_decay)
        self.num_bits = int(num_bits)
        self.shared = bool(shared)
        self.calibrating = False

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
        elif training and not self.shared:  # a shared range (several tensors) keeps its calibrated union
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
                "shared": self.shared}


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

    def _build_range(self):
        channels = int(self._channel_kernel().shape[-1])
        self.kernel_range = self.add_weight(name="kernel_range", shape=(channels,), initializer="ones",
                                            trainable=False)
        self.refresh_ranges()

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

    def build(self, input_shape):
        super().build(input_shape)
        self._build_range()

    def call(self, inputs, training=None):
        if self.groups != 1:
            raise ValueError(f"{self.name}: grouped convolutions are not supported by QAT, got groups={self.groups}")
        outputs = self.convolution_op(inputs, self.quantized_kernel(training))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package="kdpose_tf")
class QuantDepthwiseConv2D(_WeightQuantMixin, keras.layers.DepthwiseConv2D):
    """`DepthwiseConv2D` with per-channel (in x multiplier) symmetric int8 fake-quantised kernel."""

    def build(self, input_shape):
        super().build(input_shape)
        self._build_range()

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
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package="kdpose_tf")
class QuantDense(_WeightQuantMixin, keras.layers.Dense):
    """`Dense` with per-output-unit symmetric int8 fake-quantised kernel."""

    def build(self, input_shape):
        super().build(input_shape)
        self._build_range()

    def call(self, inputs, training=None):
        outputs = keras.ops.matmul(inputs, self.quantized_kernel(training))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


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


def _activation_quantizers(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, ActivationFakeQuant):
            out.append(layer)
        elif isinstance(layer, QuantRescaling):
            out.append(layer.mid_quant)
    return out


_QUANT_CLASSES = {
    keras.layers.Conv2D: QuantConv2D,
    keras.layers.DepthwiseConv2D: QuantDepthwiseConv2D,
    keras.layers.Dense: QuantDense,
}
_ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU)
# Layers whose output needs no range of its own (they pass the input's scale through: TFLite's
# RESHAPE / TRANSPOSE / PAD / SPLIT / STRIDED_SLICE keep the input's quantisation).
_PASSTHROUGH = (keras.layers.Reshape, keras.layers.Flatten, keras.layers.MaxPooling2D, keras.layers.Dropout,
                keras.layers.InputLayer, keras.layers.Identity, keras.layers.ZeroPadding2D, ChannelSplit,
                ChannelShuffle)


def _quant_class(layer):
    for base, quant in _QUANT_CLASSES.items():
        if type(layer) is base:
            return quant
    return None


def _fold_bn(conv, bn):
    """Folded (kernel, bias) of conv followed by BatchNormalization (inference statistics)."""
    w = conv.kernel.numpy()
    b = conv.bias.numpy() if conv.use_bias else None
    gamma = bn.gamma.numpy() if bn.scale else np.ones_like(bn.moving_mean.numpy())
    beta = bn.beta.numpy() if bn.center else np.zeros_like(bn.moving_mean.numpy())
    factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        kh, kw, cin, mult = w.shape
        w = w * factor.reshape(1, 1, cin, mult)
        if not conv.use_bias:
            b = np.zeros(cin * mult, np.float32)
    else:
        w = w * factor.reshape((1,) * (w.ndim - 1) + (-1,))
        if not conv.use_bias:
            b = np.zeros(w.shape[-1], np.float32)
    bias = beta + (b - bn.moving_mean.numpy()) * factor
    return w.astype(np.float32), bias.astype(np.float32)


def quantize_model(model, calibration_data=None, ema_decay=0.999, fold_batchnorm=True):
    """Clone a functional model with fake quantisation for QAT (see the module docstring).

    Args:
        model: functional keras.Model (or one with `inference_model()`), float images -> heatmaps;
            a model returning a list keeps its outputs (each gets its own range).
        calibration_data: optional images (N, H, W, 3) float32 in [0, 255] (or an iterable of
            batches) used to set the activation ranges before training, so the QAT model starts
            close to the float model. Without it the first training batch sets them.
        ema_decay: moving-average decay of the activation ranges (default 0.999).
        fold_batchnorm: fold BatchNormalization into the preceding conv (default True). With False
            BN layers stay (the converter folds them at export; training then sees unfolded weights).

    Returns:
        a new functional keras.Model named `<name>_qat` (original layer names kept for convs).
    """
    if hasattr(model, "inference_model") and not hasattr(model, "inputs"):
        model = model.inference_model()
    if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
        raise ValueError(f"quantize_model needs a functional keras.Model, got {type(model).__name__}")
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        # A PoseEstimator holds its backbone as a nested functional model: expand it in place.
        from kdpose_tf.models.graph import flatten_functional

        model = flatten_functional(model)
    nodes = graph_nodes(model)  # calls in this graph only (flattening adds a second call to each layer)
    consumers = layer_consumers(model, nodes)
    folded = {}  # id(conv) -> bn ; id(bn) -> conv
    if fold_batchnorm:
        for layer in model.layers:
            # exactly BatchNormalization: a subclass (GatedBatchNormalization: [x, gate]) is not conv + BN
            if type(layer) is keras.layers.BatchNormalization and len(nodes.get(id(layer), [])) == 1:
                prod = node_inputs(model, layer, nodes)[0]._keras_history.operation
                if _quant_class(prod) in (QuantConv2D, QuantDepthwiseConv2D) and len(consumers.get(id(prod), [])) == 1 \
                        and len(nodes.get(id(prod), [])) == 1 and prod.activation in (None, keras.activations.linear):
                    folded[id(prod)] = layer
                    folded[id(layer)] = prod

    new_layers = {}

    def clone_fn(layer):
        qc = _quant_class(layer)
        config = layer.get_config()
        if type(layer) is keras.layers.Rescaling:  # scalar or per-channel scale / offset
            new = QuantRescaling.from_config({**config, "ema_decay": ema_decay})
        elif qc is not None:
            if id(layer) in folded:
                config["use_bias"] = True
            new = qc.from_config(config)
        else:
            new = layer.__class__.from_config(config)
        new_layers[layer.name] = (layer, new)
        return new

    def needs_range(layer):
        if isinstance(layer, _PASSTHROUGH):
            return False
        users = consumers.get(id(layer), [])
        if len(users) == 1 and isinstance(users[0], _ACTIVATION_LAYERS):
            return False
        if len(users) == 1 and id(users[0]) in folded and isinstance(users[0], keras.layers.BatchNormalization):
            return False  # conv output feeding its folded BN: the range goes after the BN position
        return True

    names = {layer.name: layer for layer in model.layers}
    shared = _same_scale_groups(model, nodes, consumers, needs_range, ema_decay)

    input_quant = {}

    def quantize_inputs(value):
        # The model input (an InputLayer tensor) gets one shared input range.
        history = getattr(value, "_keras_history", None)
        if history is not None and isinstance(history.operation, keras.layers.InputLayer):
            key = id(value)
            if key not in input_quant:
                input_quant[key] = ActivationFakeQuant(ema_decay, name="input_act_quant")(value)
            return input_quant[key]
        return value

    def call_fn(layer, *args, **kwargs):
        args = keras.tree.map_structure(quantize_inputs, args)
        original = names.get(layer.name)
        if original is not None and isinstance(original, keras.layers.BatchNormalization) and id(original) in folded:
            out = args[0]
        else:
            out = layer(*args, **kwargs)
        if original is not None and id(original) in shared:
            out = shared[id(original)](out)
        elif original is not None and needs_range(original):
            if isinstance(out, (list, tuple)):  # a multi-output layer: one range per output
                out = [ActivationFakeQuant(ema_decay, name=f"{layer.name}_act_quant{i}")(o) for i, o in enumerate(out)]
            else:
                out = ActivationFakeQuant(ema_decay, name=f"{layer.name}_act_quant")(out)
        return out

    cloned = keras.models.clone_model(model, clone_function=clone_fn, call_function=call_fn)
    outputs = cloned.outputs if len(cloned.outputs) > 1 else cloned.outputs[0]
    qat = keras.Model(cloned.inputs[0], outputs, name=f"{model.name}_qat")
    # Copy (and fold) the weights.
    for name, (old, new) in new_layers.items():
        if isinstance(old, keras.layers.BatchNormalization) and id(old) in folded:
            continue
        if id(old) in folded:
            w, b = _fold_bn(old, folded[id(old)])
            new.kernel.assign(w)
            new.bias.assign(b)
        elif old.weights and not isinstance(new, QuantRescaling):
            new.set_weights(old.get_weights() + ([new.kernel_range.numpy()] if hasattr(new, "kernel_range") else []))
    refresh_weight_ranges(qat)
    if calibration_data is not None:
        calibrate(qat, calibration_data)
    return qat


def _same_scale_groups(model, nodes, consumers, needs_range, ema_decay):
    """id(layer) -> a shared `ActivationFakeQuant` for the layers whose outputs int8 must give one scale.

    TFLite's CONCATENATION takes its inputs at its output's scale, and RESHAPE / TRANSPOSE / SPLIT /
    PAD keep theirs, so in ShuffleNet-style blocks (concat -> shuffle -> split -> next concat) every
    tensor of a chain shares one scale. Separate FakeQuant ranges along such a chain make the
    converter fail ("violate the same scale constraint"); one range per chain is what int8 runs.
    A group: a Concatenate with the layers whose ranges reach its inputs through pass-through layers.
    `nodes` / `consumers`: the model's `graph_nodes` / `layer_consumers`.
    """

    def owner(tensor):
        layer = tensor._keras_history.operation
        while isinstance(layer, _PASSTHROUGH) and not isinstance(layer, keras.layers.InputLayer) \
                and len(nodes.get(id(layer), [])) == 1:
            layer = node_inputs(model, layer, nodes)[0]._keras_history.operation
        if isinstance(layer, keras.layers.InputLayer):
            return None
        users = consumers.get(id(layer), []) if not needs_range(layer) else []
        if len(users) == 1 and isinstance(users[0], _ACTIVATION_LAYERS):  # conv -> ReLU: the ReLU's range
            return users[0]
        return layer

    parent = {}

    def find(i):
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    members = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Concatenate) and len(nodes.get(id(layer), [])) == 1:
            members[id(layer)] = layer
            for t in node_inputs(model, layer, nodes):
                src = owner(t)
                if src is not None and len(nodes[id(src)][0].outputs) == 1:
                    members[id(src)] = src
                    parent[find(id(src))] = find(id(layer))
        elif isinstance(layer, keras.layers.Add) and len(nodes.get(id(layer), [])) == 1:
            inputs = node_inputs(model, layer, nodes)  # x + x: the converter folds it into x's chain
            src = owner(inputs[0])
            if src is not None and all(t is inputs[0] for t in inputs) and len(nodes[id(src)][0].outputs) == 1:
                members[id(layer)], members[id(src)] = layer, src
                parent[find(id(layer))] = find(id(src))
    groups = {}
    for key in members:
        groups.setdefault(find(key), []).append(key)
    shared = {}
    for root, keys in groups.items():
        if len(keys) > 1:
            quant = ActivationFakeQuant(ema_decay, shared=True, name=f"{members[root].name}_shared_act_quant")
            shared.update({k: quant for k in keys})
    return shared


def refresh_weight_ranges(qat_model):
    """Recompute every quantised kernel's per-channel range from its current weights.

    Call after training (the optimizer updates weights after the forward pass that stored the
    ranges) and before export; `export_tflite(quantize="int8-qat")` does not call it for you.
    """
    for layer in qat_model.layers:
        if isinstance(layer, _WeightQuantMixin):
            layer.refresh_ranges()
    return qat_model


def calibrate(qat_model, data, batch_size=8):
    """Set the activation ranges of a QAT model to the min / max seen on `data` (eager passes)."""
    quant_layers = _activation_quantizers(qat_model)
    if isinstance(data, np.ndarray):
        batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    else:
        batches = data
    for layer in quant_layers:
        layer.min_var.assign(0.0)
        layer.max_var.assign(0.0)
        layer.calibrating = True
    try:
        n = 0
        for x in batches:
            qat_model(np.asarray(x, np.float32), training=False)
            n += 1
        if n == 0:
            raise ValueError("calibration data is empty")
    finally:
        for layer in quant_layers:
            layer.calibrating = False
    return qat_model


def quantization_aware_finetune(model, samples, keypoint_set, epochs, calibration, batch_size=16, lr=1e-4):
    """Fake-quant copy of `model`, fine-tuned by distillation from the float model itself.

    Quantization-aware distillation: the QAT clone (ranges set on `calibration[:64]`) is the
    student, the float `model` the teacher (FPD, alpha 0.5), trained on `samples`.

    Args:
        model: the float PoseEstimator (with a `codec`).
        samples: list of PoseSample to fine-tune on.
        keypoint_set: KeypointSet of the samples (flip pairs for augmentation).
        epochs: fine-tuning epochs; 0 returns the calibrated clone untrained.
        calibration: (N, H, W, 3) float32 crops in [0, 255] for the initial activation ranges.
        batch_size: default 16. lr: Adam learning rate, default 1e-4.

    Returns:
        the QAT model, for `export_tflite(..., quantize="int8-qat")`.
    """
    qat_student = quantize_model(model, calibration_data=calibration[:64])
    if epochs <= 0:
        return qat_student
    distiller = Distiller(teacher=model, student=qat_student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(lr))
    data = make_dataset(samples, model.codec, keypoint_set, batch_size=batch_size, training=True,
                        drop_remainder=True)
    distiller.fit(data, epochs=epochs)
    return qat_student
