"""Activation equalization before int8 conversion: per-channel rescaling between convolutions, exact in float.

Why: TFLite quantizes each activation tensor with one scale (per tensor) and each conv's weights per
output channel. When one channel of a tensor spans 0..90 and its neighbour 0..2, the small channel is
left with a handful of int8 steps; if the next layer multiplies it by large weights (BatchNorm folded
into a depthwise conv gives |w| up to ~10 in PP-TinyPose), the rounding error is amplified. TF's
quantization debugger on the imported PP-TinyPose 128x96 put its largest per-layer errors (10 output
steps RMS) on exactly those depthwise convs.

What: for a convolution P (or a BatchNormalization, whose gamma and beta scale its output per channel),
channel i of P's output (kernel and bias) is multiplied by s_i and every convolution reading that channel
has its weights for it divided by s_i. Channels are followed from P through the ops that commute with a
positive per-channel scale: ReLU (relu(s*x) = s*relu(x)), zero padding, nearest / bilinear upsampling,
pooling, and the channel routing of ShuffleNet-style blocks (layers with a `channel_routes` method,
`ChannelSplit`, `ChannelShuffle`, and `Concatenate`: the channel's new index is followed), until each
copy of the channel reaches a convolution. A channel that reaches anything else (an Add, a model output) keeps s_i = 1. The float
model is unchanged (up to rounding); the int8 model now sees the channels of those tensors over
(nearly) the same range. s_i = clip(R / r_i, 1, max_scale), r_i = channel i's largest |activation| at
P's output (after its ReLU) on calibration crops and R = the largest r_i. This is the data-driven,
activation-side variant of cross-layer equalization (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019), which balances weight ranges instead; with
TFLite's per-channel weights the activations are what per-tensor quantization hurts. A depthwise
consumer takes any s (its channels are quantized separately); a regular convolution's weights are
quantized per output channel, so shrinking the weights of one input channel costs them precision:
channels read by one are left alone unless `dense=True` (then capped lower, `max_scale_dense`).

Example:
>>> import numpy as np, keras
>>> keras.utils.set_random_seed(0)   # the conv's random weights (a conv whose channels all die has no pair)
>>> x = keras.Input((8, 8, 3))
>>> y = keras.layers.Conv2D(4, 1, name="a")(x)
>>> y = keras.layers.DepthwiseConv2D(3, padding="same", name="b")(keras.layers.ReLU()(y))
>>> model = keras.Model(x, y)
>>> crops = np.random.RandomState(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
>>> before = model.predict(crops, verbose=0)
>>> pairs = equalize_activations(model, crops)   # depthwise consumers (dense=True: all convolutions)
>>> [(p["producer"], p["consumers"]) for p in pairs]
[('a', ['b'])]
>>> bool(np.allclose(before, model.predict(crops, verbose=0), rtol=1e-4, atol=1e-3))
True
"""

from __future__ import annotations

import keras
import numpy as np

from kdpose_tf.models.graph import graph_nodes, is_functional, tensor_readers

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
# Keras ops that act on each channel alone and commute with a positive scale of it; a kdpose_tf layer
# says so itself (`channelwise = True`: Upsample, ResizeBilinear).
_PER_CHANNEL = (keras.layers.ZeroPadding2D, keras.layers.UpSampling2D, keras.layers.MaxPooling2D,
                keras.layers.AveragePooling2D)


def _linear(layer):
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _plain_relu(layer):
    return (type(layer) is keras.layers.ReLU and layer.max_value is None and not layer.negative_slope
            and not layer.threshold)


def _is_conv(layer, consumer=False):
    """A depthwise or ungrouped convolution; as a producer its activation must be linear or ReLU."""
    if type(layer) not in _CONVS:
        return False
    if not consumer and not (_linear(layer) or getattr(layer, "activation", None) is keras.activations.relu):
        return False
    return isinstance(layer, keras.layers.DepthwiseConv2D) or layer.groups == 1


def _is_producer(layer):
    """A convolution, or a BatchNormalization (its gamma and beta scale its output per channel)."""
    if type(layer) is keras.layers.BatchNormalization:
        return layer.scale and layer.center and layer.axis in (-1, [-1], 3, [3])
    return _is_conv(layer)


def _graphs(model):
    """`model` and the functional models nested in it (a PoseEstimator's backbone) that read its images."""
    yield model
    for layer in model.layers:
        if is_functional(layer) and len(layer.inputs) == 1 and tuple(layer.inputs[0].shape) == tuple(
                model.inputs[0].shape):
            yield layer


def _per_channel(layer):
    return isinstance(layer, _PER_CHANNEL) or getattr(type(layer), "channelwise", False) is True


def _routing(layer):
    """A layer that moves channels and keeps their values: one with a `channel_routes` method (ChannelSplit,
    ChannelShuffle) or a channels-last Concatenate."""
    if isinstance(layer, keras.layers.Concatenate):
        return layer.axis in (-1, 3)
    return callable(getattr(layer, "channel_routes", None))


def _channel_routes(layer, inputs, position, channels):
    """[(output index, source channel per output channel, -1 = another input's)] of a routing layer."""
    if not isinstance(layer, keras.layers.Concatenate):
        return layer.channel_routes(channels)
    sizes = [int(t.shape[-1]) for t in inputs]  # Concatenate (channels last)
    out = np.full(sum(sizes), -1)
    out[sum(sizes[:position]):sum(sizes[:position + 1])] = channels
    return [(0, out)]


def _trace(producer, readers, outputs, nodes):
    """Follow each output channel of `producer` to the convolutions reading it.

    Returns ([(consumer, source channel per consumer input channel, -1 = none)], blocked mask): a
    channel is blocked when a copy of it reaches an op that does not commute with its scale."""
    n = int(nodes[id(producer)][0].outputs[0].shape[-1])
    consumers, blocked = [], np.zeros(n, bool)
    stack = [((id(producer), 0), np.arange(n))]
    while stack:
        key, channels = stack.pop()
        mine = channels[channels >= 0]
        if key in outputs:
            blocked[mine] = True
        for layer in readers.get(key, []):
            if len(nodes.get(id(layer), [])) != 1:
                blocked[mine] = True
            elif _plain_relu(layer) or _per_channel(layer):
                stack.append(((id(layer), 0), channels))
            elif _routing(layer):
                inputs = nodes[id(layer)][0].input_tensors
                ids = [id(t._keras_history.operation) == key[0] and t._keras_history.tensor_index == key[1]
                       for t in inputs]
                for position in (i for i, hit in enumerate(ids) if hit):
                    stack += [((id(layer), k), c) for k, c in _channel_routes(layer, inputs, position, channels)]
            elif _is_conv(layer, consumer=True):
                consumers.append((layer, channels))
            else:
                blocked[mine] = True
    return consumers, blocked


def find_pairs(model):
    """[(graph, producer, [(consumer, source channel per consumer input channel)], blocked mask)]: the
    producers whose channels reach convolutions (see the module docstring); `graph` is the functional
    model holding them."""
    found = []
    for graph in _graphs(model):
        nodes = graph_nodes(graph)  # this graph's calls only (a layer may also be called in another)
        readers = tensor_readers(graph, nodes)
        outputs = {(id(t._keras_history.operation), t._keras_history.tensor_index) for t in graph.outputs}
        for p in graph.layers:
            if not _is_producer(p) or len(nodes.get(id(p), [])) != 1:
                continue
            consumers, blocked = _trace(p, readers, outputs, nodes)
            if consumers and not blocked.all():
                found.append((graph, p, consumers, blocked))
    return found


def _measured_tensor(producer, nodes, readers):
    """The tensor int8 quantizes after `producer`: its ReLU's output when a single ReLU reads it."""
    users = readers.get((id(producer), 0), [])
    if len(users) == 1 and _plain_relu(users[0]) and len(nodes.get(id(users[0]), [])) == 1:
        return nodes[id(users[0])][0].outputs[0]
    return nodes[id(producer)][0].outputs[0]


def equalize_activations(model, calibration, dense=False, max_scale=256.0, max_scale_dense=32.0, batch_size=16):
    """Rescale channels between convolutions of `model` in place (see the module docstring).

    Args:
        model: a functional Keras model (nested functional models, e.g. a `PoseEstimator`'s backbone,
            are looked into); its weights are changed, its float outputs are not.
        calibration: float32 crops (N, H, W, 3) in [0, 255] (the int8 calibration set).
        dense: also rescale channels that a regular convolution reads (default False). Its weights
            are quantized per *output* channel, so dividing the weights of one input channel by s_i
            costs them precision. Measured with direct pairs only (producer -> [ReLU] -> conv), int8 vs
            float heatmaps on PARSE 1-100: PP-TinyPose 128x96 heatmap RMSE 0.0232 without, 0.0223
            depthwise pairs only, 0.0226 all pairs; our Lite-HRNet-18 BatchNorm student: depthwise pairs
            leave it unchanged, all pairs cost it 1.2 PCK points. The large gains are on unbalanced
            layers (tests/export/test_equalization.py: 33x lower error).
        max_scale: largest s_i of a channel read only by depthwise convolutions (default 256).
        max_scale_dense: largest s_i of a channel a regular convolution reads (default 32). Uncapped
            scales are harmful: PP-TinyPose's int8 body-12 PCK fell to 56.6.
        batch_size: crops per forward pass when measuring ranges (default 16).

    Returns:
        one dict per rescaled producer: producer, consumers, channels rescaled, largest and median scale.
    """
    if not (max_scale >= 1 and max_scale_dense >= 1):
        raise ValueError(f"max_scale and max_scale_dense must be >= 1, got {max_scale}, {max_scale_dense}")
    found = find_pairs(model)
    calibration = np.asarray(calibration, np.float32)
    ranges = []
    for graph in dict.fromkeys(g for g, *_ in found):  # one probe per graph, in order
        nodes = graph_nodes(graph)
        readers = tensor_readers(graph, nodes)
        # one image input, called with one array below: a single-tensor input structure, not a list of one
        probe = keras.Model(graph.inputs[0], [_measured_tensor(p, nodes, readers) for g, p, _, _ in found if g is graph])
        top = None
        for i in range(0, len(calibration), batch_size):
            outs = probe(calibration[i:i + batch_size], training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            batch = [np.max(np.abs(keras.ops.convert_to_numpy(o)), axis=(0, 1, 2)) for o in outs]
            top = batch if top is None else [np.maximum(a, b) for a, b in zip(top, batch)]
        ranges += top
    report = []
    for (_, p, consumers, blocked), r in zip(found, ranges):
        n, peak = len(r), float(r.max())
        cap = np.full(n, float(max_scale))
        for c, channels in consumers:
            if not isinstance(c, keras.layers.DepthwiseConv2D):
                cap[channels[channels >= 0]] = max_scale_dense if dense else 1.0
        s = np.where((r > 0) & ~blocked, np.clip(peak / np.maximum(r, 1e-12), 1.0, cap), 1.0).astype(np.float32)
        if peak <= 0 or np.all(s == 1.0):
            continue
        scale_output_channels(p, s)
        for c, channels in consumers:
            inv = np.ones(int(c.kernel.shape[2]), np.float32)  # (kh, kw, C_in, ...) for both kinds
            inv[channels >= 0] = 1.0 / s[channels[channels >= 0]]
            _scale_inputs(c, inv)
        report.append({"producer": p.name, "consumers": sorted({c.name for c, _ in consumers}),
                       "channels": int(np.sum(s != 1.0)), "max_scale": float(s.max()),
                       "median_scale": float(np.median(s))})
    return report


def scale_output_channels(layer, s):
    """Multiply output channel i of a conv (kernel and bias) or a BatchNormalization (gamma and beta) by s[i]."""
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
