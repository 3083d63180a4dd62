"""Fold the BatchNormalization after a dynamic-kernel sum into its K convolutions before conversion.

Dite-HRNet's dynamic convolutions run as ``BN(sum_k a_k * conv(x, W_k))`` (`dite_hrnet_layers.
parallel_kernels`, a (B, 1, 1, 1) attention scalar a_k per kernel). TFLite folds a BatchNormalization
into a convolution only when the BN reads the conv directly, so here the BN stays a full-size MUL (its
scale) and ADD (its shift) in every exported model. Because the convs are linear and bias-free and
a_k is a scalar,

    BN(sum_k a_k conv(x, W_k)) = sum_k a_k conv(x, W_k * s) + (beta - mean * s),  s = gamma / sqrt(var + eps)

exactly (per output channel s). `fold_kernel_sum_batchnorm` moves s into each kernel and leaves the BN
an identity scale (gamma 1, mean 0, variance 1 - eps, beta the shift), which the converter drops: one
full-size MUL less per dynamic convolution (62 in the proposal student). The float model computes the
same function (up to float rounding); `export_tflite` applies it to a copy of the weights and restores
them after conversion, like activation equalization (the model you trained is left as it was).

Example:
>>> import numpy as np, keras
>>> from kdpose_tf.models.lite_hrnet.dite_hrnet_layers import dynamic_conv_bn
>>> x = keras.Input((16, 16, 3))
>>> model = keras.Model(x, dynamic_conv_bn(keras.layers.Conv2D(8, 1, name="c")(x), None, 3, 1, 4, name="d"))
>>> bn = model.get_layer("d_bn")
>>> bn.set_weights([np.full(8, 2.0), np.full(8, 0.5), np.full(8, -1.0), np.full(8, 0.25)])  # scale 4, shift 4.5
>>> images = np.random.RandomState(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
>>> before = model.predict(images, verbose=0)
>>> [f["batchnorm"] for f in fold_kernel_sum_batchnorm(model)]
['d_bn']
>>> bool(np.allclose(before, model.predict(images, verbose=0), rtol=1e-5, atol=1e-4))
True
>>> float(bn.gamma.numpy()[0]), round(float(bn.beta.numpy()[0]), 3)   # the scale moved into the kernels
(1.0, 4.5)
"""

from __future__ import annotations

import keras
import numpy as np

from kdpose_tf.export.equalization import scale_output_channels
from kdpose_tf.models.graph import functional_graphs, graph_nodes, tensor_readers

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _identity_variance(epsilon):
    """The float32 v closest to 1 - epsilon with v + epsilon == 1 exactly (so rsqrt gives exactly 1)."""
    eps = np.float32(epsilon)
    v = np.float32(1) - eps
    for _ in range(64):
        if np.float32(v + eps) == np.float32(1):
            return v
        v = np.nextafter(v, np.float32(2) if np.float32(v + eps) < 1 else np.float32(0), dtype=np.float32)
    raise ValueError(f"no float32 variance v with v + {epsilon} == 1")


def _producer(tensor):
    h = tensor._keras_history
    return h.operation, h.tensor_index


def _sole_reader(layer, readers, reader):
    """True when `layer`'s only output is read by `reader` alone in this graph (graph outputs count as readers)."""
    return [id(r) for r in readers.get((id(layer), 0), [])] == [id(reader)]


def _kernel_term(tensor, add, nodes, readers):
    """The conv of a term ``Multiply([conv(x), a])`` (a: (B, 1, 1, 1)) read only by `add`, else None."""
    mul, index = _producer(tensor)
    if type(mul) is not keras.layers.Multiply or index or len(nodes.get(id(mul), [])) != 1:
        return None
    if not _sole_reader(mul, readers, add):
        return None
    inputs = nodes[id(mul)][0].input_tensors
    if len(inputs) != 2:
        return None
    for t, other in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
        conv, ci = _producer(t)
        if (type(conv) in _CONVS and not ci and len(nodes.get(id(conv), [])) == 1 and not conv.use_bias
                and getattr(conv, "activation", None) in (None, keras.activations.linear)
                and (isinstance(conv, keras.layers.DepthwiseConv2D) or conv.groups == 1)
                and tuple(other.shape[1:]) == (1, 1, 1) and _sole_reader(conv, readers, mul)):
            return conv
    return None


def find_kernel_sums(model):
    """[(BatchNormalization, [conv, ...])]: each BN that reads an Add of ``conv_k(x) * a_k`` terms, where
    every conv, product and the sum are read by nothing else (so scaling the convs changes only the BN's
    input). Searches `model` and the functional models nested in it; a layer called in more than one of
    those graphs (shared between them) is never folded."""
    graphs = list(functional_graphs(model))
    all_nodes = [graph_nodes(graph) for graph in graphs]
    calls = {}
    for nodes in all_nodes:
        for key, layer_nodes in nodes.items():
            calls[key] = calls.get(key, 0) + len(layer_nodes)
    found = []
    for graph, nodes in zip(graphs, all_nodes):
        nodes = {key: value for key, value in nodes.items() if calls[key] == len(value)}  # drop shared layers
        readers = tensor_readers(graph, nodes)
        for t in graph.outputs:  # the graph's caller reads its outputs
            readers.setdefault((id(t._keras_history.operation), t._keras_history.tensor_index), []).append(graph)
        for bn in graph.layers:
            if type(bn) is not keras.layers.BatchNormalization or len(nodes.get(id(bn), [])) != 1:
                continue
            if bn.axis not in (-1, [-1], 3, [3]):
                continue
            add, index = _producer(nodes[id(bn)][0].input_tensors[0])
            if type(add) is not keras.layers.Add or index or len(nodes.get(id(add), [])) != 1:
                continue
            if not _sole_reader(add, readers, bn):
                continue
            convs = [_kernel_term(t, add, nodes, readers) for t in nodes[id(add)][0].input_tensors]
            if convs and all(c is not None for c in convs):
                found.append((bn, convs))
    return found


def batchnorm_affine(bn):
    """(scale, shift), float32 per channel, of a BatchNormalization at inference: y = x * scale + shift,
    scale = gamma / sqrt(variance + eps), shift = beta - mean * scale (gamma 1 / beta 0 when absent)."""
    mean = bn.moving_mean.numpy().astype(np.float32)
    scale = (1.0 / np.sqrt(bn.moving_variance.numpy().astype(np.float32) + np.float32(bn.epsilon))).astype(np.float32)
    if bn.scale:
        scale = scale * bn.gamma.numpy().astype(np.float32)
    shift = -mean * scale + (bn.beta.numpy().astype(np.float32) if bn.center else np.float32(0))
    return scale, shift.astype(np.float32)


def fold_kernel_sum_batchnorm(model, found=None):
    """Fold each BN found by `find_kernel_sums` into its kernels (weights changed in place).

    Args:
        model: the model (searched with `find_kernel_sums` unless `found` is given).
        found: `find_kernel_sums(model)`'s result, when the caller has it already.

    Returns:
        [{"batchnorm": name, "kernels": [conv names]}] of what was folded.
    """
    report = []
    for bn, convs in find_kernel_sums(model) if found is None else found:
        if not bn.center and np.any(bn.moving_mean.numpy() != 0):  # the shift needs a beta to live in
            continue
        s, shift = batchnorm_affine(bn)
        for conv in convs:
            scale_output_channels(conv, s)
        if bn.center:
            bn.beta.assign(shift)
        if bn.scale:
            bn.gamma.assign(np.ones_like(s))
        bn.moving_mean.assign(np.zeros_like(s))
        bn.moving_variance.assign(np.full_like(s, _identity_variance(bn.epsilon)))
        report.append({"batchnorm": bn.name, "kernels": [conv.name for conv in convs]})
    return report
