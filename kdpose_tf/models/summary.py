"""Model size and cost: parameter count, multiply-adds (MACs), Markdown summary table.

Conventions (the ones the pose papers use, e.g. HRNet's and Lite-HRNet's model summaries):

- **Parameters** (`count_params`): learnable parameters, whether currently frozen or not:
  every weight of the model except BatchNormalization moving mean / variance (which PyTorch,
  where the published numbers come from, keeps as buffers, not parameters). Keras'
  `model.count_params()` counts those statistics too, so it is slightly larger.
- **FLOPs** (`count_flops`): multiply-accumulates (MACs) of convolutions, transposed convolutions,
  depthwise convolutions and matrix products (Dense, attention products), without bias additions.
  BatchNorm, activations, additions, pooling and resizing are not counted. The HRNet / Hourglass /
  Lite-HRNet papers' "GFLOPs" are these MACs (one multiply-add counted once), not 2x MACs.

`count_flops` traces the model once into a TensorFlow graph for a batch of 1 and reads the shapes of
the Conv2D / DepthwiseConv2dNative / Conv2DBackpropInput / MatMul / BatchMatMul ops, so it sees every
layer, however deeply nested (custom layers with sub-layers, sub-models), exactly as executed.

Example (a one-stack, 16-channel hourglass at 64x64):
    >>> from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    >>> from kdpose_tf.models.pose_estimator import PoseEstimator
    >>> from kdpose_tf.models.summary import count_params, count_flops, summary_table
    >>> model = PoseEstimator(HourglassBackbone(num_stacks=1, filters=16, num_keypoints=16,
    ...                                         input_shape=(64, 64, 3)), keypoint_set="mpii16")
    >>> count_params(model), model.count_params()   # Keras also counts the BN moving statistics
    (138384, 140816)
    >>> count_flops(model)
    83721408
    >>> print(summary_table({"hourglass_1x16": model}))
    | model | input | params (M) | GFLOPs (GMACs) | published params (M) | published GFLOPs | params ratio | FLOPs ratio |
    |---|---|---:|---:|---:|---:|---:|---:|
    | hourglass_1x16 | 64x64 | 0.14 | 0.084 | - | - | - | - |
    <BLANKLINE>
"""

from __future__ import annotations

import math

import keras
import numpy as np

_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3D")
_MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def _all_layers(model):
    return list(model._flatten_layers(include_self=True, recursive=True))


def count_params(model) -> int:
    """Number of learnable parameters (BN moving statistics excluded, frozen weights included).

    Args:
        model: a built keras.Model or keras.layers.Layer.

    Returns:
        int.

    Example:
        >>> dense = keras.layers.Dense(3)
        >>> dense.build((None, 4))
        >>> count_params(dense)  # 4*3 kernel + 3 bias
        15
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"count_params expects a keras Model or Layer, received {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{model.name} is not built; call it on an input (or build it) before counting")
    statistics = set()
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics.update(id(v) for v in (layer.moving_mean, layer.moving_variance))
    seen, total = set(), 0
    for variable in model.weights:
        if id(variable) in seen or id(variable) in statistics:
            continue
        seen.add(id(variable))
        total += int(np.prod(variable.shape))
    return total


def _static_dims(tensor, what):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(f"count_flops: {what} has an unknown shape {shape}; pass a fully defined input_shape")
    return shape.as_list()


def _op_macs(op):
    """MACs of one graph op (0 for ops that are not counted)."""
    kind = op.type
    if kind in ("Conv2D", "Conv3D"):
        out = _static_dims(op.outputs[0], op.name)
        kernel = _static_dims(op.inputs[1], op.name)  # (kh, kw, cin/groups, cout)
        return math.prod(out) * math.prod(kernel[:-1])
    if kind == "DepthwiseConv2dNative":
        out = _static_dims(op.outputs[0], op.name)
        kernel = _static_dims(op.inputs[1], op.name)  # (kh, kw, cin, multiplier)
        return math.prod(out) * kernel[0] * kernel[1]
    if kind == "Conv2DBackpropInput":  # transposed conv: every input pixel scatters a kh x kw x cout patch
        kernel = _static_dims(op.inputs[1], op.name)  # (kh, kw, cout, cin)
        x = _static_dims(op.inputs[2], op.name)  # (n, h, w, cin)
        return math.prod(x) * kernel[0] * kernel[1] * kernel[2]
    if kind == "MatMul":
        a = _static_dims(op.inputs[0], op.name)
        out = _static_dims(op.outputs[0], op.name)
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        return math.prod(out) * inner
    if kind in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = _static_dims(op.inputs[0], op.name)
        out = _static_dims(op.outputs[0], op.name)
        inner = a[-2] if op.get_attr("adj_x") else a[-1]
        return math.prod(out) * inner
    return 0


def _graph_ops(graph, seen=None):
    """All ops of `graph`, descending into called functions of its library."""
    seen = set() if seen is None else seen
    for op in graph.get_operations():
        yield op
        if op.type in _CALL_OPS:
            name = op.get_attr("f").name
            if name in seen:
                continue
            seen.add(name)
            function = graph._get_function(name)
            inner = getattr(function, "graph", None)
            if inner is not None:
                yield from _graph_ops(inner, seen)


def _resolve_input_shape(model, input_shape):
    if input_shape is None:
        inputs = getattr(model, "inputs", None)
        if not inputs or len(inputs) != 1:
            raise ValueError(
                f"count_flops: cannot infer the input shape of {model.name}; pass input_shape=(height, width, channels)"
            )
        input_shape = tuple(inputs[0].shape[1:])
    input_shape = tuple(input_shape)
    if not input_shape or any(d is None or int(d) <= 0 for d in input_shape):
        raise ValueError(f"count_flops: input_shape must be fully defined (no batch axis), received {input_shape!r}")
    return tuple(int(d) for d in input_shape)


def flops_breakdown(model, input_shape=None) -> dict:
    """MACs per TensorFlow op type (e.g. {"Conv2D": ..., "DepthwiseConv2dNative": ...}), batch 1.

    Args:
        model: a keras.Model (or any callable layer) taking one image tensor.
        input_shape: (height, width, channels) without batch; default: the model's input shape.
    """
    import tensorflow as tf

    input_shape = _resolve_input_shape(model, input_shape)
    dtype = "float32"
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        dtype = keras.backend.standardize_dtype(inputs[0].dtype)

    @tf.function(autograph=False)
    def forward(x):
        return model(x, training=False)

    graph = forward.get_concrete_function(tf.TensorSpec((1,) + input_shape, dtype)).graph
    totals = {}
    for op in _graph_ops(graph):
        if op.type in _CONV_OPS or op.type in _MATMUL_OPS:
            totals[op.type] = totals.get(op.type, 0) + _op_macs(op)
    return totals


def count_flops(model, input_shape=None) -> int:
    """Multiply-accumulates (MACs, the papers' "FLOPs") of one forward pass at batch 1.

    Counts conv / depthwise conv / transposed conv / matrix-product MACs (no bias, BN,
    activations, additions, resizing); see the module docstring.

    Args:
        model: a keras.Model (or layer) taking one image tensor.
        input_shape: (height, width, channels) without batch; default: the model's input shape.

    Returns:
        int, MACs.

    Example (3x3 convolution, 3 -> 4 channels, on 8x8: 8*8*4 outputs x 3*3*3 MACs each):
        >>> conv = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same")])
        >>> count_flops(conv)
        6912
        >>> count_flops(conv, input_shape=(16, 16, 3))   # 4x the pixels, 4x the MACs
        27648
    """
    return int(sum(flops_breakdown(model, input_shape).values()))


def summary_table(models, input_shape=None, published=None) -> str:
    """Markdown table of params (M) and GMACs for several models.

    Args:
        models: dict name -> keras model.
        input_shape: (height, width, channels) shared by all models, or None to use each model's own.
        published: optional dict name -> {"params_m": float, "gflops": float, "gflops_divisor": int}
            for the ratio columns; the FLOPs ratio is taken in the paper's own unit
            (MACs / gflops_divisor, default 1e9; HRNet used 1024**3).

    Returns:
        str, a Markdown table (header and one row per model).

    Example (Lite-HRNet-18 against its paper's 1.1 M params / 0.205 GFLOPs; builds at 256x192, ~10 s):
        >>> from kdpose_tf.models.pose_estimator import PoseEstimator
        >>> model = PoseEstimator.from_preset("lite_hrnet_18_coco_256x192", load_weights=False)  # doctest: +SKIP
        >>> print(summary_table({"lite_hrnet_18": model},
        ...                     published={"lite_hrnet_18": {"params_m": 1.1, "gflops": 0.205}}))  # doctest: +SKIP
        | model | input | params (M) | GFLOPs (GMACs) | published params (M) | published GFLOPs | params ratio | FLOPs ratio |
        |---|---|---:|---:|---:|---:|---:|---:|
        | lite_hrnet_18 | 256x192 | 1.13 | 0.200 | 1.1 | 0.205 | 1.028 | 0.976 |
        <BLANKLINE>
    """
    if not isinstance(models, dict) or not models:
        raise ValueError(f"summary_table expects a non-empty dict name -> model, received {type(models).__name__}")
    published = published or {}
    lines = [
        "| model | input | params (M) | GFLOPs (GMACs) | published params (M) | published GFLOPs | params ratio | FLOPs ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, model in models.items():
        shape = _resolve_input_shape(model, input_shape)
        params = count_params(model) / 1e6
        count_flops_value = count_flops(model, shape)
        gmacs = count_flops_value / 1e9
        ref = published.get(name, {})
        ref_p, ref_f = ref.get("params_m"), ref.get("gflops")
        cells = [
            name,
            "x".join(str(d) for d in shape[:2]),
            f"{params:.2f}",
            f"{gmacs:.3f}",
            "-" if ref_p is None else f"{ref_p:g}",
            "-" if ref_f is None else f"{ref_f:g}",
            "-" if not ref_p else f"{params / ref_p:.3f}",
            "-" if not ref_f else f"{count_flops_value / ref.get('gflops_divisor', 1e9) / ref_f:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
