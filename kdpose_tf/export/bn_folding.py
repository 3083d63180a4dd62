"""Fold the BatchNormalization after a dynamic-kernel sum into its K convolutions before conversion.

Dite-HRNet's dynamic convolutions run as ``BN(sum_k a_k * conv(x, W_k))`` (`dite_hrnet_layers.
parallel_kernels`, a (B, 1, 1, 1) attention scalar a_k per kernel). TFLite folds a BatchNormalization
into a convolution only when the BN reads the conv directly, so here the BN stays a full-size MUL (its
scale) and ADD (its shift) in every exported model. Because the convs are linear and bias-free and
a_k is a scalar,

    BN(sum_k a_k conv(x, W_k)) = sum_k a_k conv(x, W_k * s) + (beta - mean * s),  s = gamma / sqrt(var + eps)

exactly (per output channel s). `fold_kernel_sum_batchnorm` moves s into each kernel and returns the
export graph: a clone of the model that shares every layer but the folded BNs, each of which is a
`BiasAdd` of its shift there, so the converted graph has an ADD and no MUL in its place: one full-size
MUL less per dynamic convolution (62 in the proposal student). That is structural, not a rounding
outcome: a BN with unit statistics left in the graph would still multiply by ``rsqrt(var + eps)``,
which is exactly 1.0 or not depending on the CPU's kernels (on AVX-512 Xeons it is not, and the
converter kept the MUL). The model passed in is changed in place as well (kernels scaled, each BN left
computing its shift alone), so it computes the same function up to float rounding; `export_tflite`
converts the clone and restores the weights afterwards (the model you trained is left as it was).

Example:
>>> import numpy as np, keras
>>> from kdpose_tf.models.lite_hrnet.dite_hrnet_layers import dynamic_conv_bn
>>> x = keras.Input((16, 16, 3))
>>> model = keras.Model(x, dynamic_conv_bn(keras.layers.Conv2D(8, 1, name="c")(x), None, 3, 1, 4, name="d"))
>>> bn = model.get_layer("d_bn")
>>> bn.set_weights([np.full(8, 2.0), np.full(8, 0.5), np.full(8, -1.0), np.full(8, 0.25)])  # scale 4, shift 4.5
>>> images = np.random.RandomState(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
>>> before = model.predict(images, verbose=0)
>>> folded, report = fold_kernel_sum_batchnorm(model)
>>> [f["batchnorm"] for f in report]
['d_bn']
>>> type(folded.get_layer("d_bn")).__name__, round(float(folded.get_layer("d_bn").bias.numpy()[0]), 3)
('BiasAdd', 4.5)
>>> folded.get_layer("d_kernel0") is model.get_layer("d_kernel0")   # every other layer is shared
True
>>> bool(np.allclose(before, folded.predict(images, verbose=0), rtol=1e-5, atol=1e-4))
True
>>> bool(np.allclose(before, model.predict(images, verbose=0), rtol=1e-5, atol=1e-4))   # in place too
True
"""

from __future__ import annotations

import keras
import numpy as np

from kdpose_tf.export.equalization import scale_output_channels
from kdpose_tf.models.graph import functional_graphs, graph_nodes, tensor_readers
from kdpose_tf.models.layers.bias import BiasAdd

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


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
    """Fold each BN found by `find_kernel_sums` into its kernels and build the export graph without it.

    The kernels are scaled in place and each folded BN is left computing its shift alone (gamma 1,
    variance 1 - eps; the shift in beta, or as -mean when the BN has no beta), so `model` computes the
    same function up to float rounding. The returned clone shares every other layer (and so the
    scaled kernels) with `model`; in it each folded BN is a `BiasAdd` of its shift under the BN's name,
    an exact ADD whatever the CPU. Nested functional models are cloned too (`keras.models.clone_model`,
    recursive).

    Args:
        model: a functional model (searched with `find_kernel_sums` unless `found` is given).
        found: `find_kernel_sums(model)`'s result, when the caller has it already.

    Returns:
        (export model, [{"batchnorm": name, "kernels": [conv names]}] of the BNs it no longer has).
        With nothing to fold: (`model` itself, []).

    Raises:
        RuntimeError: when a folded BN is still in the clone (the clone would not compute `model`'s function).
    """
    found = find_kernel_sums(model) if found is None else found
    shifts = {}
    for bn, convs in found:
        s, shift = batchnorm_affine(bn)
        for conv in convs:
            scale_output_channels(conv, s)
        if bn.scale:
            bn.gamma.assign(np.ones_like(s))
        if bn.center:
            bn.beta.assign(shift)
            bn.moving_mean.assign(np.zeros_like(s))
        else:
            bn.moving_mean.assign(-shift)  # (x - (-shift)) * 1
        bn.moving_variance.assign(np.full_like(s, np.float32(1) - np.float32(bn.epsilon)))
        shifts[id(bn)] = shift
    if not found:
        return model, []
    replaced = []

    def clone_layer(layer):
        if id(layer) not in shifts:
            return layer
        bias = BiasAdd(name=layer.name, dtype=layer.dtype_policy)
        bias.build((None, int(shifts[id(layer)].shape[0])))
        bias.bias.assign(shifts[id(layer)])
        replaced.append(layer)
        return bias

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    left = [layer.name for graph in functional_graphs(clone) for layer in graph.layers if id(layer) in shifts]
    if left or len(replaced) != len(found):
        raise RuntimeError(f"fold_kernel_sum_batchnorm: the export clone of {model.name} still holds "
                           f"BatchNormalization {left or [bn.name for bn, _ in found]}")
    return clone, [{"batchnorm": bn.name, "kernels": [conv.name for conv in convs]} for bn, convs in found]
