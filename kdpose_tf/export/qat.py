"""Keras-3-native quantization-aware training (QAT) for int8 TFLite export.

`tensorflow-model-optimization` refuses Keras 3 models, so this module rebuilds the idea with
plain Keras layers and TensorFlow's fake-quant ops (Jacob et al., "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018; the scheme TFMOT's
default 8-bit config implements):

* weights: symmetric int8, narrow range [-127, 127], per output channel for Conv2D / Dense and per
  channel (in * multiplier) for DepthwiseConv2D, range = max |w| of the channel (TFMOT's
  LastValueQuantizer); `tf.quantization.fake_quant_with_min_max_vars_per_channel`.
* activations: per tensor, asymmetric 8 bit, range = exponential moving average of the batch
  min / max (TFMOT's MovingAverageQuantizer, decay 0.999), `fake_quant_with_min_max_vars`; or, with
  `range_method="mse"`, the clip of the calibrated min / max with the least 8-bit squared error
  (the "mse" calibrator of NVIDIA's pytorch-quantization does the same search), frozen in training.
  Inserted on the model input, after the in-graph normalisation and after every layer output,
  except where the output feeds a single ReLU / ReLU6 (TFLite fuses conv + ReLU, so only the
  post-activation tensor has its own scale). A conv with an activation TFLite does not fuse
  (sigmoid attention) is split into conv, range, `Activation`, range: CONV_2D then LOGISTIC (TFMOT
  also quantizes sigmoid / tanh / softmax inputs: its QuantizeAwareActivation's pre-quant set).
  Named outputs (a neck's {"P3": ...}) get one range each.
* BatchNorm: folded into the preceding conv in the clone (w' = w·γ/√(σ²+ε), b' = β + (b−μ)·γ/√(σ²+ε));
  the folded conv trains with frozen BN statistics, which is also what the int8 model computes.
  A BN after anything else (Dite-HRNet's sum of dynamic kernels) becomes a 1x1 depthwise conv of the
  same name (kernel γ/√(σ²+ε), bias β − μ·γ/√(σ²+ε): one weight per channel, exactly on the int8
  grid); a `GatedBatchNormalization` BN(x · gate) becomes Multiply, range, that conv.
* Composite layers (PSA, context pooling, `InvertedResidual`) keep float internals in training; the
  converter calibrates their inner tensors on the representative set passed to `export_tflite`.

The converter reads the FakeQuant ranges of activations as the int8 scales and quantises the
(already on-grid) weights per channel, so `export_tflite(qat_model, ..., quantize="int8-qat")`
yields a full-integer model whose output matches the fake-quant Keras model to about one
quantisation step of the output (see tests/export/test_qat.py).

Quantization-aware distillation: pass the QAT model as the Distiller's student with the float
teacher (`Distiller(teacher, quantize_model(student, calib), alpha=...)`);
`kdpose_tf.distillation.qat_finetune.quantization_aware_finetune` does that in one call (what
`kdpose export --quantize int8-qat` runs). This module knows models, not how they are trained.

Example:
>>> qat = quantize_model(student, calibration_data=crops[:32])   # doctest: +SKIP
>>> qat.compile(...); qat.fit(...)                                # doctest: +SKIP
>>> export_tflite(qat, "student_qat.tflite", quantize="int8-qat")  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kdpose_tf.export.bn_folding import batchnorm_affine
from kdpose_tf.export.qat_layers import (  # noqa: F401  (re-exported: the public QAT names live here)
    ActivationFakeQuant,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantRescaling,
    _WeightQuantMixin,
)
from kdpose_tf.export.targets import RANGE_METHODS
from kdpose_tf.models.graph import flatten_functional, graph_nodes, layer_consumers, node_inputs
from kdpose_tf.models.layers.norm import GatedBatchNormalization


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
_FUSED_ACTIVATIONS = ("linear", "relu", "relu6")  # TFLite fuses these into CONV_2D / DEPTHWISE_CONV_2D / FC
_ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU)
# Layers whose output needs no range of its own (they pass the input's scale through: TFLite's
# RESHAPE / TRANSPOSE / PAD / SPLIT / STRIDED_SLICE keep the input's quantisation). A kdpose_tf layer
# that only moves channels says so with a `channel_routes` method (ChannelSplit, ChannelShuffle).
_PASSTHROUGH = (keras.layers.Reshape, keras.layers.Flatten, keras.layers.MaxPooling2D, keras.layers.Dropout,
                keras.layers.InputLayer, keras.layers.Identity, keras.layers.ZeroPadding2D)

CLIP_GRID = np.linspace(0.02, 1.0, 50)  # shrink factors of the calibrated [min, max] that "mse" tries


def _passthrough(layer):
    return isinstance(layer, _PASSTHROUGH) or callable(getattr(layer, "channel_routes", None))


def _fused_activation(layer):
    """True for a ReLU / ReLU6 layer, which TFLite fuses into the op before it (sigmoid, LeakyReLU: own ops)."""
    if type(layer) is keras.layers.ReLU:
        return layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6)
    return type(layer) is keras.layers.Activation and keras.activations.serialize(layer.activation) in _FUSED_ACTIVATIONS


def _quant_class(layer):
    for base, quant in _QUANT_CLASSES.items():
        if type(layer) is base:
            return quant
    return None


def _fold_bn(conv, bn):
    """Folded (kernel, bias) of conv followed by BatchNormalization (inference statistics)."""
    w = conv.kernel.numpy()
    factor, shift = batchnorm_affine(bn)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        kh, kw, cin, mult = w.shape
        w = w * factor.reshape(1, 1, cin, mult)
    else:
        w = w * factor.reshape((1,) * (w.ndim - 1) + (-1,))
    channels = factor.shape[0]
    b = conv.bias.numpy() if conv.use_bias else np.zeros(channels, np.float32)
    return w.astype(np.float32), (shift + b * factor).astype(np.float32)


def _standalone_bn(model, layer, nodes):
    """True for a BatchNormalization (or GatedBatchNormalization) over the last axis of a 4-D tensor,
    called once in `model`: QAT runs it as a 1x1 depthwise conv (per-channel scale + bias)."""
    if not isinstance(layer, keras.layers.BatchNormalization) or len(nodes.get(id(layer), [])) != 1:
        return False
    if type(layer) is not keras.layers.BatchNormalization and not isinstance(layer, GatedBatchNormalization):
        return False  # another subclass: its maths may differ
    shape = node_inputs(model, layer, nodes)[0].shape
    return len(shape) == 4 and layer.axis in (-1, 3)


def quantize_model(model, calibration_data=None, ema_decay=0.999, fold_batchnorm=True, range_method="minmax"):
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
        range_method: how `calibration_data` sets the ranges, "minmax" (default) or "mse" (clipped
            ranges, frozen in training; see `calibrate`).

    Returns:
        a new functional keras.Model named `<name>_qat` (original layer names kept for convs).
    """
    if hasattr(model, "inference_model") and not hasattr(model, "inputs"):
        model = model.inference_model()
    if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
        raise ValueError(f"quantize_model needs a functional keras.Model, got {type(model).__name__}")
    if range_method not in RANGE_METHODS:
        raise ValueError(f"range_method must be one of {RANGE_METHODS}, got {range_method!r}")
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        # A PoseEstimator holds its backbone as a nested functional model: expand it in place.
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
    # BatchNorms after something other than a conv (a sum of dynamic kernels, a gate): TFLite runs
    # them as MUL + ADD whose product has no range; QAT runs them as a 1x1 depthwise conv instead.
    affine = {id(layer) for layer in model.layers
              if fold_batchnorm and id(layer) not in folded and _standalone_bn(model, layer, nodes)}
    split_activation = {}  # id(conv) -> activation TFLite does not fuse (sigmoid): its input needs a range
    for layer in model.layers:
        act = keras.activations.serialize(layer.activation) if _quant_class(layer) is not None else "linear"
        if isinstance(act, str) and act not in _FUSED_ACTIVATIONS:
            split_activation[id(layer)] = act
    used = {layer.name for layer in model.layers}

    def fresh(base):
        """A layer name not used in the model or by an earlier inserted layer."""
        base = base.replace("/", "_")  # a dict key may hold one; layer names may not
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    new_layers = {}

    def clone_fn(layer):
        qc = _quant_class(layer)
        config = layer.get_config()
        if type(layer) is keras.layers.Rescaling:  # scalar or per-channel scale / offset
            new = QuantRescaling.from_config({**config, "ema_decay": ema_decay})
        elif id(layer) in affine:
            new = QuantDepthwiseConv2D(1, use_bias=True, data_format="channels_last", name=layer.name,
                                       dtype=layer.dtype_policy, trainable=layer.trainable)
        elif qc is not None:
            if id(layer) in folded:
                config["use_bias"] = True
            if id(layer) in split_activation:
                config["activation"] = "linear"
            new = qc.from_config(config)
        else:
            new = layer.__class__.from_config(config)
        new_layers[layer.name] = (layer, new)
        return new

    def needs_range(layer):
        if _passthrough(layer):
            return False
        if id(layer) in split_activation:
            return True  # its output is the sigmoid's: no ReLU fuses into LOGISTIC
        users = consumers.get(id(layer), [])
        if len(users) == 1 and _fused_activation(users[0]):
            return False  # conv -> ReLU: TFLite fuses them, only the ReLU's output has a scale
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
                input_quant[key] = ActivationFakeQuant(ema_decay, name=fresh("input_act_quant"))(value)
            return input_quant[key]
        return value

    def call_fn(layer, *args, **kwargs):
        args = keras.tree.map_structure(quantize_inputs, args)
        original = names.get(layer.name)
        if original is not None and isinstance(original, keras.layers.BatchNormalization) and id(original) in folded:
            out = args[0]
        elif original is not None and isinstance(original, GatedBatchNormalization) and id(original) in affine:
            # BN(x * gate): the product gets its range, then the BN as a 1x1 depthwise conv.
            gated = keras.layers.Multiply(name=fresh(f"{layer.name}_gate_mul"))(list(args[0]))
            out = layer(ActivationFakeQuant(ema_decay, name=fresh(f"{layer.name}_gate_mul_act_quant"))(gated))
        elif original is not None and id(original) in affine:
            out = layer(args[0])
        else:
            out = layer(*args, **kwargs)
        if original is not None and id(original) in split_activation:
            # conv -> sigmoid: TFLite runs CONV_2D then LOGISTIC, so the conv's output needs a range too.
            out = ActivationFakeQuant(ema_decay, name=fresh(f"{layer.name}_preact_quant"))(out)
            out = keras.layers.Activation(split_activation[id(original)], name=fresh(f"{layer.name}_activation"))(out)
        if original is not None and id(original) in shared:
            out = shared[id(original)](out)
        elif original is not None and needs_range(original):
            if isinstance(out, (list, tuple)):  # a multi-output layer: one range per output
                out = [ActivationFakeQuant(ema_decay, name=fresh(f"{layer.name}_act_quant{i}"))(o) for i, o in enumerate(out)]
            elif isinstance(out, dict):  # named outputs (a neck's {"P3": ..., "P4": ...})
                out = {k: ActivationFakeQuant(ema_decay, name=fresh(f"{layer.name}_act_quant_{k}"))(o)
                       for k, o in out.items()}
            else:
                out = ActivationFakeQuant(ema_decay, name=fresh(f"{layer.name}_act_quant"))(out)
        return out

    cloned = keras.models.clone_model(model, clone_function=clone_fn, call_function=call_fn)
    outputs = cloned.outputs if len(cloned.outputs) > 1 else cloned.outputs[0]
    qat = keras.Model(cloned.inputs[0], outputs, name=f"{model.name}_qat")
    # Copy (and fold) the weights.
    for name, (old, new) in new_layers.items():
        if isinstance(old, keras.layers.BatchNormalization) and id(old) in folded:
            continue
        if id(old) in affine:
            scale, shift = batchnorm_affine(old)
            new.kernel.assign(scale.reshape(1, 1, -1, 1))
            new.bias.assign(shift)
            continue
        if id(old) in folded:
            w, b = _fold_bn(old, folded[id(old)])
            new.kernel.assign(w)
            new.bias.assign(b)
        elif old.weights and not isinstance(new, QuantRescaling):
            new.set_weights(old.get_weights() + ([new.kernel_range.numpy()] if hasattr(new, "kernel_range") else []))
    refresh_weight_ranges(qat)
    if calibration_data is not None:
        calibrate(qat, calibration_data, method=range_method)
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
        while _passthrough(layer) and not isinstance(layer, keras.layers.InputLayer) \
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


def calibrate(qat_model, data, batch_size=8, method="minmax", samples_per_batch=20000, seed=0):
    """Set the activation ranges of a QAT model from `data` (eager passes).

    Args:
        qat_model: a model from `quantize_model`.
        data: images (N, H, W, 3) float32 in [0, 255], or an iterable of such batches.
        batch_size: images per pass when `data` is an array (default 8).
        method: "minmax" (default): the min / max seen, what TFMOT and the TFLite converter use.
            "mse": then, per range, the clip [f·min, f·max] (f on `CLIP_GRID`) whose 8-bit fake
            quantization of the values seen has the least squared error (`mse_clip_range`), and the
            ranges are frozen for training (`ActivationFakeQuant.frozen`). Min / max spends the 256
            steps of a tensor whose bulk lies in 0..40 on rare values near 1000 (a distilled
            PP-TinyPose student has several such adds and concats); clipping those few costs less
            than the rounding of all the others.
        samples_per_batch: "mse": values drawn per range and batch (default 20000).
        seed: "mse": seed of that draw.
    """
    if method not in RANGE_METHODS:
        raise ValueError(f"method must be one of {RANGE_METHODS}, got {method!r}")
    quant_layers = _activation_quantizers(qat_model)
    if isinstance(data, np.ndarray):
        batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    else:
        batches = list(data) if method == "mse" else data  # "mse" passes over the data twice
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
    if method == "mse":
        _mse_ranges(qat_model, quant_layers, batches, samples_per_batch, np.random.default_rng(seed))
    return qat_model


def _mse_ranges(qat_model, quant_layers, batches, samples_per_batch, rng):
    """Second pass of `calibrate(method="mse")`: sample each range's inputs, clip, freeze."""
    seen = {id(layer): [] for layer in quant_layers}

    def sampler(key):
        def take(x):
            flat = np.ravel(keras.ops.convert_to_numpy(x))
            if flat.size > samples_per_batch:
                flat = flat[rng.choice(flat.size, samples_per_batch, replace=False)]
            seen[key].append(flat.astype(np.float32))
        return take

    for layer in quant_layers:
        layer.sampler = sampler(id(layer))
    try:
        for x in batches:
            qat_model(np.asarray(x, np.float32), training=False)
    finally:
        for layer in quant_layers:
            layer.sampler = None
    for layer in quant_layers:
        lo, hi = float(layer.min_var.numpy()), float(layer.max_var.numpy())
        if seen[id(layer)] and hi > lo:
            lo, hi = mse_clip_range(np.concatenate(seen[id(layer)]), lo, hi)
            layer.min_var.assign(lo)
            layer.max_var.assign(hi)
        layer.frozen = True


def mse_clip_range(values, lo, hi, grid=CLIP_GRID, num_bits=8):
    """(f·lo, f·hi) for the f in `grid` whose fake quantization of `values` has the least squared error.

    `lo <= 0 <= hi` is the calibrated range; the quantizer is TensorFlow's
    `fake_quant_with_min_max_vars` (asymmetric, nudged zero point), the op QAT trains with and the
    converter's int8 scale. Ties go to the widest range.

    A heavy-tailed tensor (Laplace, b = 1, 100k values: max |v| ~ 12, the squared error's best clip
    near 10 b) is clipped; a uniform one is not:

    >>> v = np.random.default_rng(0).laplace(0.0, 1.0, 100_000).astype("float32")
    >>> lo, hi = mse_clip_range(v, v.min(), v.max())
    >>> bool(0.5 * v.max() < hi < 0.95 * v.max())
    True
    >>> mse_clip_range(np.linspace(0.0, 10.0, 1000, dtype="float32"), 0.0, 10.0)
    (0.0, 10.0)
    """
    values = np.asarray(values, np.float32)
    lo, hi = float(lo), float(hi)
    best, best_err = 1.0, None
    for f in sorted(np.asarray(grid, np.float64), reverse=True):
        q = tf.quantization.fake_quant_with_min_max_vars(values, lo * f, hi * f, num_bits=num_bits,
                                                          narrow_range=False).numpy()
        err = np.mean(np.square(q.astype(np.float64) - values))  # float64: float32 rounding decides no tie
        if best_err is None or err < best_err:
            best, best_err = float(f), err
    return lo * best, hi * best
