"""Activation equalization before int8 conversion: per-channel rescaling between convolutions, exact in float.

Why: TFLite quantizes each activation tensor with one scale (per tensor) and each conv's weights per
output channel. When one channel of a tensor spans 0..90 and its neighbour 0..2, the small channel is
left with a handful of int8 steps; if the next layer multiplies it by large weights (BatchNorm folded
into a depthwise conv gives |w| up to ~10 in PP-TinyPose), the rounding error is amplified. TF's
quantization debugger on the imported PP-TinyPose 128x96 put its largest per-layer errors (10 output
steps RMS) on exactly those depthwise convs.

What: for a convolution P (or a BatchNormalization, whose gamma and beta scale its output) whose
output reaches exactly one convolution C, directly or through a
ReLU (positively homogeneous: relu(s*x) = s*relu(x) for s > 0), channel i of P's output (kernel and
bias) is multiplied by s_i and C's weights reading channel i are divided by s_i. The float model is
unchanged (up to rounding); the int8 model now sees every channel of that tensor over (nearly) the
same range. s_i = clip(R / r_i, 1, max_scale), r_i = channel i's largest |activation| on calibration
crops and R = the largest r_i. This is the data-driven, activation-side variant of cross-layer
equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019), which balances weight ranges instead; with TFLite's per-channel weights the
activations are what per-tensor quantization hurts. On PP-TinyPose the gain is small (heatmap error
-4 %, see `dense`): most of its int8 error is elsewhere (ADD / CONCATENATION inputs sharing one scale). A depthwise C takes any s (its channels are
quantized separately); a regular C's weights are quantized per output channel, so shrinking the weights
of one input channel costs them precision: those pairs are off unless `dense=True` (then capped lower,
`max_scale_dense`).

Example:
>>> import numpy as np, keras
>>> x = keras.Input((8, 8, 3))
>>> y = keras.layers.Conv2D(4, 1, name="a")(x)
>>> y = keras.layers.DepthwiseConv2D(3, padding="same", name="b")(keras.layers.ReLU()(y))
>>> model = keras.Model(x, y)
>>> crops = np.random.RandomState(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
>>> before = model.predict(crops, verbose=0)
>>> pairs = equalize_activations(model, crops)   # depthwise consumers (dense=True: all convolutions)
>>> [(p["producer"], p["consumer"]) for p in pairs]
[('a', 'b')]
>>> bool(np.allclose(before, model.predict(crops, verbose=0), rtol=1e-4, atol=1e-3))
True
"""

from __future__ import annotations

import keras
import numpy as np

from kdpose_tf.models.graph import layer_consumers

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _linear(layer):
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _plain_relu(layer):
    return (type(layer) is keras.layers.ReLU and layer.max_value is None and not layer.negative_slope
            and not layer.threshold)


def _is_conv(layer):
    if type(layer) not in _CONVS or not _linear(layer):
        return False
    return isinstance(layer, keras.layers.DepthwiseConv2D) or layer.groups == 1


def _is_producer(layer):
    """A convolution, or a BatchNormalization (its gamma and beta scale its output per channel)."""
    if type(layer) is keras.layers.BatchNormalization:
        return layer.scale and layer.center and layer.axis in (-1, [-1], 3, [3])
    return _is_conv(layer)


def _graphs(model):
    """`model` and the functional models nested in it (a PoseEstimator's backbone) that read its images."""
    from kdpose_tf.models.graph import _is_functional

    yield model
    for layer in model.layers:
        if _is_functional(layer) and len(layer.inputs) == 1 and tuple(layer.inputs[0].shape) == tuple(
                model.inputs[0].shape):
            yield layer


def find_pairs(model):
    """[(graph, producer, [ReLU / ZeroPadding2D layers between], consumer)] of convolutions that can be
    equalized (see the module docstring); `graph` is the functional model holding them."""
    pairs = []
    for graph in _graphs(model):
        users = layer_consumers(graph)
        for p in graph.layers:
            if not _is_producer(p) or len(p._inbound_nodes) != 1 or len(users.get(id(p), [])) != 1:
                continue
            path, c = [], users[id(p)][0]
            # ReLU (positively homogeneous) and zero padding commute with a positive per-channel scale
            while (_plain_relu(c) or type(c) is keras.layers.ZeroPadding2D) and len(c._inbound_nodes) == 1 \
                    and len(users.get(id(c), [])) == 1:
                path.append(c)
                c = users[id(c)][0]
            if _is_conv(c) and len(c._inbound_nodes) == 1:
                pairs.append((graph, p, path, c))
    return pairs


def equalize_activations(model, calibration, dense=False, max_scale=256.0, max_scale_dense=32.0, batch_size=16):
    """Rescale channels between convolutions of `model` in place (see the module docstring).

    Args:
        model: a functional Keras model (nested functional models, e.g. a `PoseEstimator`'s backbone,
            are looked into); its weights are changed, its float outputs are not.
        calibration: float32 crops (N, H, W, 3) in [0, 255] (the int8 calibration set).
        dense: also equalize pairs whose consumer is a regular convolution (default False). Its weights
            are quantized per *output* channel, so dividing the weights of one input channel by s_i
            costs them precision. Measured (int8 vs float heatmaps on PARSE 1-100, which neither model
            trained on): PP-TinyPose 128x96 heatmap RMSE 0.0232 without, 0.0223 depthwise pairs only,
            0.0226 all pairs (body-12 PCK 70.0 / 69.8 / 70.5: within noise, float 74.1); our
            Lite-HRNet-18 BatchNorm student: depthwise pairs leave it unchanged (PARSE 101-305 int8
            body-12 49.1), all pairs cost it 1.2 points. The large gains are on unbalanced layers
            (tests/export/test_equalization.py: 33x lower error), which trained BatchNorm nets rarely have.
        max_scale: largest s_i when the consumer is depthwise (default 256).
        max_scale_dense: largest s_i when the consumer is a regular convolution (default 32). Uncapped
            scales are harmful: PP-TinyPose's int8 body-12 PCK fell to 56.6.
        batch_size: crops per forward pass when measuring ranges (default 16).

    Returns:
        one dict per equalized pair: producer, consumer, channels, largest and median scale.
    """
    if not (max_scale >= 1 and max_scale_dense >= 1):
        raise ValueError(f"max_scale and max_scale_dense must be >= 1, got {max_scale}, {max_scale_dense}")
    pairs = find_pairs(model)
    calibration = np.asarray(calibration, np.float32)
    ranges = []
    for graph in dict.fromkeys(g for g, *_ in pairs):  # one probe per graph, in order
        probe = keras.Model(graph.inputs, [c.input for g, _, _, c in pairs if g is graph])
        found = None
        for i in range(0, len(calibration), batch_size):
            outs = probe(calibration[i:i + batch_size], training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            batch = [np.max(np.abs(keras.ops.convert_to_numpy(o)), axis=(0, 1, 2)) for o in outs]
            found = batch if found is None else [np.maximum(a, b) for a, b in zip(found, batch)]
        ranges += found
    report = []
    for (_, p, _, c), r in zip(pairs, ranges):
        top = float(r.max())
        if top <= 0:
            continue
        if not dense and not isinstance(c, keras.layers.DepthwiseConv2D):
            continue
        cap = max_scale if isinstance(c, keras.layers.DepthwiseConv2D) else max_scale_dense
        s = np.where(r > 0, np.clip(top / np.maximum(r, 1e-12), 1.0, cap), 1.0).astype(np.float32)
        if np.all(s == 1.0):
            continue
        _scale_outputs(p, s)
        _scale_inputs(c, 1.0 / s)
        report.append({"producer": p.name, "consumer": c.name, "channels": int(s.size),
                       "max_scale": float(s.max()), "median_scale": float(np.median(s))})
    return report


def _scale_outputs(layer, s):
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.gamma.assign(layer.gamma.numpy() * s)
        layer.beta.assign(layer.beta.numpy() * s)
        return
    weights = layer.get_weights()
    k = weights[0]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (kh, kw, C, m): output channel c*m + j
        k = k * s.reshape(k.shape[2], k.shape[3])[None, None]
    else:
        k = k * s.reshape(1, 1, 1, -1)
    weights[0] = k
    if layer.use_bias:
        weights[1] = weights[1] * s
    layer.set_weights(weights)


def _scale_inputs(layer, inv):
    """Divide the weights reading input channel i by s_i (axis 2 of both Conv2D and DepthwiseConv2D kernels)."""
    weights = layer.get_weights()
    weights[0] = weights[0] * inv.reshape(1, 1, -1, 1)
    layer.set_weights(weights)
