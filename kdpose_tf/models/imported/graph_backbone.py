"""`GraphBackbone`: a backbone whose topology is a list of plain nodes, e.g. imported from OpenVINO.

A pretrained pose network from another framework (PP-TinyPose, exported from PaddlePaddle to
OpenVINO IR) can be re-built as Keras layers and trained further: distilled from a bigger teacher on
the user's data, exported to int8 TFLite, checked for XNNPACK like any other student. The importer
(`openvino_import.py`) turns the foreign graph into a list of JSON-able nodes; this class turns the
nodes into a functional Keras model, so the backbone serializes through its config (the node list)
and its weights like every other backbone, and needs neither OpenVINO nor the original file again.

Node format (one dict per node, in topological order)::

    {"name": str, "op": str, "inputs": ["node" or "node:i" (i-th output of a multi-output node)], ...}

ops and their fields:
    normalize  scale, offset (3 floats each): y = x * scale + offset per RGB channel (Rescaling)
    conv       filters, kernel (kh, kw), strides (sh, sw), padding ((top, bottom), (left, right)),
               groups (1, C for depthwise, or g), use_bias
    relu, relu6
    relu_dw    ReLU written as a fixed (non-trainable) 1x1 depthwise conv of ones with a fused ReLU: the
               same maths, but an op XNNPACK takes in int8 where a standalone RELU would not be fused
    add        two inputs
    concat     along channels
    split      sizes (list of channel counts): outputs "name:0", "name:1", ...
    shuffle    groups (ShuffleNet channel shuffle)
    upsample   size (fy, fx): nearest, integer factors (`Upsample`, delegate-friendly)
    resize     size (h, w), align_corners: bilinear (`ResizeBilinear`)
    gated_psa  reduction (default 2), gate (initial value, default 0.0), gate_scale (its step multiplier, default 1.0): `GatedPSA`, Polarized Self-Attention
               entering through a learnable gate, the identity at gate 0; no source graph has it: it is
               grafted into an imported graph (`kdpose_tf.models.imported.graft`)

Layers are named by their node name (convs with explicit padding add "<name>_pad"), so weights load
by name and stay stable across imports of the same file.

Args:
    nodes: the node list above; the first node reads the image input (name "images").
    outputs: {level: node reference}, e.g. {"P2": "relu_143"}; levels as in `Backbone` ("P2" = stride 4).
    input_shape: (H, W, 3) of the images (static: imported graphs have fixed sizes).
    **kwargs: `name` (default "graph_backbone"), `trainable`.

Example:
>>> nodes = [{"name": "norm", "op": "normalize", "inputs": ["images"], "scale": [1 / 255] * 3, "offset": [0] * 3},
...          {"name": "c1", "op": "conv", "inputs": ["norm"], "filters": 8, "kernel": [3, 3], "strides": [4, 4],
...           "padding": [[1, 1], [1, 1]], "groups": 1, "use_bias": True},
...          {"name": "r1", "op": "relu", "inputs": ["c1"]}]
>>> bb = GraphBackbone(nodes, outputs={"P2": "r1"}, input_shape=(32, 24, 3))
>>> tuple(bb.output["P2"].shape)
(None, 8, 6, 8)
"""

from __future__ import annotations

import keras

from kdpose_tf.models.backbone import Backbone
from kdpose_tf.models.layers.gated_psa import GatedPSA
from kdpose_tf.models.lite_hrnet.lite_hrnet_layers import ChannelShuffle, ChannelSplit
from kdpose_tf.models.layers.upsample import ResizeBilinear, Upsample

OPS = ("normalize", "conv", "relu", "relu_dw", "relu6", "add", "concat", "split", "shuffle", "upsample", "resize",
       "gated_psa")


def _conv_layers(node, in_channels):
    """Keras layers for one "conv" node: [ZeroPadding2D] + Conv2D / DepthwiseConv2D."""
    name, k, s = node["name"], tuple(node["kernel"]), tuple(node["strides"])
    (pt, pb), (pl, pr) = node["padding"]
    layers = []
    same = s == (1, 1) and all(k[i] % 2 for i in (0, 1)) and (pt, pb, pl, pr) == (k[0] // 2, k[0] // 2, k[1] // 2, k[1] // 2)
    if not same and any((pt, pb, pl, pr)):
        layers.append(keras.layers.ZeroPadding2D(((pt, pb), (pl, pr)), name=f"{name}_pad"))
    padding = "same" if same else "valid"
    groups, filters = int(node["groups"]), int(node["filters"])
    if groups == in_channels and filters == in_channels and groups > 1:
        layers.append(keras.layers.DepthwiseConv2D(k, s, padding=padding, use_bias=node["use_bias"], name=name))
    else:
        layers.append(keras.layers.Conv2D(filters, k, s, padding=padding, groups=groups,
                                          use_bias=node["use_bias"], name=name))
    return layers


def _apply(node, inputs):
    op, name = node["op"], node["name"]
    x = inputs[0]
    if op == "normalize":
        return keras.layers.Rescaling(list(node["scale"]), offset=list(node["offset"]), name=name)(x)
    if op == "conv":
        for layer in _conv_layers(node, int(x.shape[-1])):
            x = layer(x)
        return x
    if op == "relu":
        return keras.layers.ReLU(name=name)(x)
    if op == "relu_dw":
        return keras.layers.DepthwiseConv2D(1, use_bias=False, activation="relu", depthwise_initializer="ones",
                                            trainable=False, name=name)(x)
    if op == "relu6":
        return keras.layers.ReLU(6.0, name=name)(x)
    if op == "add":
        return keras.layers.Add(name=name)(inputs)
    if op == "concat":
        return keras.layers.Concatenate(axis=-1, name=name)(inputs)
    if op == "split":
        return ChannelSplit(node["sizes"], name=name)(x)
    if op == "shuffle":
        return ChannelShuffle(int(node["groups"]), name=name)(x)
    if op == "upsample":
        return Upsample(tuple(int(v) for v in node["size"]), interpolation="nearest", name=name)(x)
    if op == "resize":
        return ResizeBilinear(tuple(int(v) for v in node["size"]), align_corners=bool(node["align_corners"]),
                              name=name)(x)
    if op == "gated_psa":
        return GatedPSA(gate=node.get("gate", 0.0), reduction=node.get("reduction", 2),
                        gate_scale=node.get("gate_scale", 1.0), name=name)(x)
    raise AssertionError(op)  # checked in _check_nodes


def _check_nodes(nodes, outputs, input_shape):
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise ValueError(f"GraphBackbone: `nodes` must be a non-empty list of node dicts, received {type(nodes).__name__}")
    seen = {"images"}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not {"name", "op", "inputs"} <= set(node):
            raise ValueError(f"GraphBackbone: node {i} must be a dict with 'name', 'op' and 'inputs', received {node!r}")
        if node["op"] not in OPS:
            raise ValueError(f"GraphBackbone: node {node['name']!r} has op {node['op']!r}; supported: {OPS}")
        for ref in node["inputs"]:
            if ref.split(":")[0] not in seen:
                raise ValueError(f"GraphBackbone: node {node['name']!r} reads {ref!r}, which is not an earlier node")
        if node["name"] in seen:
            raise ValueError(f"GraphBackbone: node name {node['name']!r} is used twice")
        seen.add(node["name"])
    if not isinstance(outputs, dict) or not outputs:
        raise ValueError(f"GraphBackbone: `outputs` must be a non-empty dict {{level: node}}, received {outputs!r}")
    for level, ref in outputs.items():
        if ref.split(":")[0] not in seen:
            raise ValueError(f"GraphBackbone: output {level!r} names {ref!r}, which is not a node")
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else ()
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ValueError(f"GraphBackbone: `input_shape` must be (H, W, C) of positive ints, received {input_shape!r}")


@keras.saving.register_keras_serializable(package="kdpose_tf")
class GraphBackbone(Backbone):
    def __init__(self, nodes, outputs, input_shape, **kwargs):
        _check_nodes(nodes, outputs, input_shape)
        images = keras.Input(tuple(input_shape), name="images")
        tensors = {"images": images}
        for node in nodes:
            args = [tensors[ref] for ref in node["inputs"]]
            out = _apply(node, args)
            if isinstance(out, (list, tuple)):
                for i, t in enumerate(out):
                    tensors[f"{node['name']}:{i}"] = t
            else:
                tensors[node["name"]] = out
        features = {level: tensors[ref] for level, ref in outputs.items()}
        kwargs.setdefault("name", "graph_backbone")
        super().__init__(inputs=images, outputs=features, **kwargs)
        self.nodes = [dict(n) for n in nodes]
        self.output_refs = dict(outputs)
        self.image_shape = tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "nodes": self.nodes, "outputs": self.output_refs,
                "input_shape": list(self.image_shape)}
