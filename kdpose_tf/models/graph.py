"""Graph utilities for functional models.

`flatten_functional` turns a functional model that contains nested functional models (a
`PoseEstimator` holds its `Backbone` as one) into a single-level functional model that shares
the same layers and weights. Layer-by-layer rewriters (quantization-aware training, Edge TPU
rewrites) need that flat view.

Example (a one-stack, 16-channel hourglass at 64x64):
>>> from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
>>> from kdpose_tf.models.pose_estimator import PoseEstimator
>>> model = PoseEstimator(HourglassBackbone(num_stacks=1, filters=16, num_keypoints=16,
...                                         input_shape=(64, 64, 3)), keypoint_set="mpii16")
>>> nested = model.inference_model()
>>> [layer.name for layer in nested.layers]
['images', 'hourglass_backbone', 'heatmap_head']
>>> flat = flatten_functional(nested)
>>> [layer.name for layer in flat.layers][:4]
['images', 'normalize', 'stem_conv', 'stem_bn']
>>> any(isinstance(layer, keras.Model) for layer in flat.layers)
False
>>> images = keras.random.uniform((1, 64, 64, 3), 0, 255, seed=0)
>>> bool(keras.ops.all(flat(images) == nested(images)))   # same layers, same weights
True
"""

from __future__ import annotations

import keras


def is_functional(op) -> bool:
    """Whether `op` is a functional Keras model (a graph of layer calls that can be read and replayed)."""
    return isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth") and hasattr(op, "_run_through_graph")


def _replay(model, inputs):
    """Re-apply `model`'s graph to `inputs`, expanding nested functional models in place."""

    def operation_fn(op):
        if is_functional(op):
            return lambda *args, **kwargs: _replay(op, args[0] if len(args) == 1 else list(args))
        return op

    return model._run_through_graph(inputs, operation_fn=operation_fn)


def graph_nodes(model):
    """id(layer) -> the nodes (calls) of that layer that belong to `model`'s graph.

    A layer called in two graphs (e.g. a backbone's layers after `flatten_functional` replayed them)
    has an inbound node for each; only those of `model` describe `model`'s connections."""
    out = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            out.setdefault(id(node.operation), []).append(node)
    return out


def node_inputs(model, layer, nodes=None):
    """The input tensors of `layer`'s single call in `model` (ValueError if it is called more than once)."""
    calls = (nodes if nodes is not None else graph_nodes(model)).get(id(layer), [])
    if len(calls) != 1:
        raise ValueError(f"{layer.name} is called {len(calls)} times in {model.name}")
    return calls[0].input_tensors


def tensor_readers(model, nodes=None):
    """(id(layer), output index) -> the layers of `model` that read that output, from the calls in
    `model`'s graph (`nodes`: its `graph_nodes`, computed when not given)."""
    nodes = graph_nodes(model) if nodes is None else nodes
    out = {}
    for layer in model.layers:
        for node in nodes.get(id(layer), []):
            for t in node.input_tensors:
                h = t._keras_history
                out.setdefault((id(h.operation), h.tensor_index), []).append(layer)
    return out


def layer_consumers(model, nodes=None):
    """id(layer) -> the layers of `model` that read its output(s) (any output index; see
    `tensor_readers`). The QAT rewriter and activation equalization walk the graph with it."""
    out = {}
    for (key, _), readers in tensor_readers(model, nodes).items():
        out.setdefault(key, []).extend(readers)
    return out


def flatten_functional(model, name=None):
    """A flat functional model with `model`'s layers (shared, not copied) and outputs.

    Args:
        model: a functional keras.Model, possibly with nested functional models.
        name: name of the flat model. Default: `<model.name>_flat`.

    Raises:
        TypeError: when `model` is not functional (a subclassed model has no graph to flatten).
    """
    if not is_functional(model):
        raise TypeError(f"flatten_functional needs a functional keras.Model, got {type(model).__name__}")
    inputs = [keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype, name=x.name) for x in model.inputs]
    outputs = _replay(model, inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=name or f"{model.name}_flat")


def functional_graphs(model):
    """`model` and every functional model nested in it (recursively), each once, outermost first."""
    seen, stack = set(), [model]
    while stack:
        graph = stack.pop(0)
        if id(graph) in seen or not is_functional(graph):
            continue
        seen.add(id(graph))
        yield graph
        stack.extend(layer for layer in graph.layers if is_functional(layer))
