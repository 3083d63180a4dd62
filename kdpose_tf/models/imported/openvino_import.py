"""Import a pretrained top-down heatmap model (OpenVINO IR or ONNX) as a trainable Keras `PoseEstimator`.

The point: a user who already has a good small pose network in another framework (PP-TinyPose,
PaddleDetection, COCO val AP 58.4 at 128x96) can start the student from it instead of from random
weights, distil it from a bigger teacher on their own data, and ship it through the same int8
TFLite exporter and checks as every other student.

How: OpenVINO reads the file; the graph's data path from the input to the chosen heatmap output is
rewritten as `GraphBackbone` nodes (channels-last), weights are moved into Keras layouts, and the
last 1x1 convolution becomes the `HeatmapHead`'s final conv. Folded BatchNorm (a conv followed by a
per-channel constant Add) becomes the conv's bias. The preprocessing of the `TeacherConfig` (pixel
scale, mean/std, RGB/BGR) becomes the first layer, so the result takes float RGB pixels in [0, 255]
like every kdpose_tf model. Shape-computing subgraphs (ShapeOf -> ... -> Interpolate sizes) are read
from the static output shapes. Supported ops: Convolution, GroupConvolution, Add, Relu, Clamp(0, 6),
Split / VariadicSplit on channels, Concat on channels, the Reshape-Transpose-Reshape channel
shuffle, Interpolate (nearest with integer factors, bilinear). Anything else is refused with the op's
type and name.

Example (needs the `teachers` extra and the shared models folder):
>>> from kdpose_tf.models.imported.openvino_import import import_pose_model
>>> model = import_pose_model("pp_tinypose_128x96")            # doctest: +SKIP
>>> model.input_size, model.keypoint_set.name, model.outputs[-1].shape   # doctest: +SKIP
((128, 96), 'coco17', (None, 32, 24, 17))
"""

from __future__ import annotations

import re

import numpy as np

from kdpose_tf.errors import PresetError
from kdpose_tf.keypoints import get_keypoint_set, joint_mapping
from kdpose_tf.models import preset_utils
from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.imported.graph_backbone import GraphBackbone
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.runtimes import openvino
from kdpose_tf.runtimes.model_config import TeacherConfig
from kdpose_tf.runtimes.pretrained_models import is_pretrained_source, resolve_teacher_config

_SKIP = {"Constant", "Convert", "ShapeOf", "Result", "Parameter"}


class GraphImportError(ValueError):
    """An op or pattern of the source graph that the importer does not translate."""


def _clean(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "node"


def _const(output):
    """Value of a constant input (Constant, possibly behind Convert), or None."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return np.asarray(node.get_data())
    if kind == "Convert":
        src = _const(node.input(0).get_source_output())
        return None if src is None else src.astype(np.float32)
    return None


def _shape(output):
    return [int(d) for d in output.get_partial_shape().to_shape()]


class _Converter:
    def __init__(self, model, path):
        self.model, self.path = model, path
        self.nodes, self.weights, self.refs, self.used = [], {}, {}, set()

    def fail(self, node, why):
        raise GraphImportError(f"{self.path}: cannot import {node.get_type_name()} {node.get_friendly_name()!r}: {why}")

    def ref(self, output):
        key = (output.get_node().get_name(), output.get_index())
        if key not in self.refs:
            self.fail(output.get_node(), "its input is not produced by a supported op")
        return self.refs[key]

    def emit(self, node, op, inputs, name=None, **fields):
        name = name or _clean(node.get_friendly_name())
        while name in self.used:
            name += "_"
        self.used.add(name)
        self.nodes.append({"name": name, "op": op, "inputs": inputs, **fields})
        return name

    def bind(self, node, ref, index=0):
        self.refs[(node.get_name(), index)] = ref

    @staticmethod
    def consumers(node, index=0):
        return [t.get_node() for t in node.output(index).get_target_inputs()]

    # ------------------------------------------------------------------ ops
    def conv(self, node):
        x = node.input(0).get_source_output()
        w = _const(node.input(1).get_source_output())
        if w is None:
            self.fail(node, "weights are not constant")
        a = node.get_attributes()
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            self.fail(node, f"dilations {a['dilations']} (only 1 is supported)")
        grouped = node.get_type_name() == "GroupConvolution"
        if grouped:  # (G, O/G, I/G, kh, kw) -> Keras (kh, kw, I/G, O)
            g, og, ig, kh, kw = w.shape
            kernel = w.reshape(g * og, ig, kh, kw).transpose(2, 3, 1, 0)
            if ig == 1 and og == 1:  # depthwise: Keras (kh, kw, C, 1)
                kernel = w.reshape(g, kh, kw).transpose(1, 2, 0)[..., None]
        else:
            g, (og, ig, kh, kw) = 1, w.shape
            kernel = w.transpose(2, 3, 1, 0)
        filters = g * og
        # Folded BatchNorm / bias: the conv's only consumer adds a (1, C, 1, 1) constant.
        out, bias = node, None
        nxt = self.consumers(node)
        if len(nxt) == 1 and nxt[0].get_type_name() == "Add":
            b = _const(nxt[0].input(1).get_source_output())
            if b is not None and b.size == filters:
                out, bias = nxt[0], b.reshape(-1)
        pads = a.get("pads_begin", [0, 0]), a.get("pads_end", [0, 0])
        if a.get("auto_pad", "explicit") not in ("explicit", "notset", "valid"):
            self.fail(node, f"auto_pad={a['auto_pad']!r}")
        name = self.emit(out, "conv", [self.ref(x)], filters=int(filters), kernel=[int(kh), int(kw)],
                         strides=[int(v) for v in a["strides"]],
                         padding=[[int(pads[0][0]), int(pads[1][0])], [int(pads[0][1]), int(pads[1][1])]],
                         groups=int(g), use_bias=bias is not None)
        self.weights[name] = [kernel.astype(np.float32)] + ([bias.astype(np.float32)] if bias is not None else [])
        self.bind(out, name)
        return out

    def add(self, node):
        srcs = [node.input(i).get_source_output() for i in range(2)]
        if any(_const(s) is not None for s in srcs):
            self.fail(node, "adding a constant that does not follow a convolution")
        self.bind(node, self.emit(node, "add", [self.ref(s) for s in srcs]))

    def split(self, node):
        x = node.input(0).get_source_output()
        axis = int(_const(node.input(1).get_source_output()))
        if axis not in (1, -3):
            self.fail(node, f"split axis {axis} (only channels, axis 1 in NCHW)")
        sizes = [_shape(node.output(i))[1] for i in range(node.get_output_size())]
        name = self.emit(node, "split", [self.ref(x)], sizes=sizes)
        for i in range(len(sizes)):
            self.bind(node, f"{name}:{i}", i)

    def concat(self, node):
        if int(node.get_attributes()["axis"]) not in (1, -3):
            self.fail(node, f"concat axis {node.get_attributes()['axis']} (only channels)")
        srcs = [node.input(i).get_source_output() for i in range(node.get_input_size())]
        self.bind(node, self.emit(node, "concat", [self.ref(s) for s in srcs]))

    def reshape(self, node):
        """Only the channel shuffle: Reshape (N, g, C/g, H, W) -> Transpose (0, 2, 1, 3, 4) -> Reshape (N, C, H, W)."""
        x = node.input(0).get_source_output()
        n, c, h, w = _shape(x)
        mid = _shape(node.output(0))
        nxt = self.consumers(node)
        if len(mid) == 5 and mid[3:] == [h, w] and mid[1] * mid[2] == c and len(nxt) == 1 \
                and nxt[0].get_type_name() == "Transpose":
            perm = _const(nxt[0].input(1).get_source_output())
            back = self.consumers(nxt[0])
            if perm is not None and list(perm) == [0, 2, 1, 3, 4] and len(back) == 1 \
                    and back[0].get_type_name() == "Reshape" and _shape(back[0].output(0)) == [n, c, h, w]:
                self.bind(back[0], self.emit(back[0], "shuffle", [self.ref(x)], groups=int(mid[1])))
                return back[0]
        self.fail(node, f"reshape {[n, c, h, w]} -> {mid} is not a channel shuffle")

    def interpolate(self, node):
        x = node.input(0).get_source_output()
        (_, _, h, w), (_, _, oh, ow) = _shape(x), _shape(node.output(0))
        a = node.get_attributes()
        mode = a.get("mode")
        if mode == "nearest":
            if oh % h or ow % w or a.get("coordinate_transformation_mode") not in ("asymmetric", "half_pixel", None):
                self.fail(node, f"nearest resize {h}x{w} -> {oh}x{ow} with {a.get('coordinate_transformation_mode')}")
            self.bind(node, self.emit(node, "upsample", [self.ref(x)], size=[oh // h, ow // w]))
        elif mode in ("linear", "linear_onnx", "bilinear"):
            ctm = a.get("coordinate_transformation_mode")
            if ctm not in ("align_corners", "half_pixel", "pytorch_half_pixel"):
                self.fail(node, f"bilinear resize with coordinate_transformation_mode={ctm!r}")
            self.bind(node, self.emit(node, "resize", [self.ref(x)], size=[oh, ow], align_corners=ctm == "align_corners"))
        else:
            self.fail(node, f"interpolation mode {mode!r}")

    def clamp(self, node):
        a = node.get_attributes()
        if float(a["min"]) != 0.0 or float(a["max"]) != 6.0:
            self.fail(node, f"clamp({a['min']}, {a['max']}) (only ReLU6)")
        self.bind(node, self.emit(node, "relu6", [self.ref(node.input(0).get_source_output())]))

    # ------------------------------------------------------------------ walk
    def run(self, heatmap_output, scale, offset, bgr, delegate_friendly=True):
        head_add = heatmap_output.get_node()
        head_conv = head_add.input(0).get_source_output().get_node() if head_add.get_type_name() == "Add" else head_add
        if head_conv.get_type_name() != "Convolution" or _shape(head_conv.input(1).get_source_output())[2:] != [1, 1]:
            self.fail(head_conv, "the heatmap output must come from a 1x1 convolution (the head)")
        param = next(p for p in self.model.get_parameters())
        needed = self._ancestors(head_conv.input(0).get_source_output().get_node()) & self._descendants(param)
        self.bind(param, self.emit(param, "normalize", ["images"], name="normalize", scale=list(scale),
                                   offset=list(offset)))
        skip = set()
        for node in self.model.get_ordered_ops():
            key, kind = node.get_name(), node.get_type_name()
            if key not in needed or key in skip or kind in _SKIP:
                continue
            handler = {"Convolution": self.conv, "GroupConvolution": self.conv, "Add": self.add,
                       "Relu": lambda n: self.bind(n, self.emit(n, "relu", [self.ref(n.input(0).get_source_output())])),
                       "Split": self.split, "VariadicSplit": self.split, "Concat": self.concat,
                       "Reshape": self.reshape, "Interpolate": self.interpolate, "Clamp": self.clamp}.get(kind)
            if handler is None:
                self.fail(node, "unsupported op type")
            done = handler(node)
            if done is not None:  # ops folded into this one (bias Add, shuffle's Transpose/Reshape)
                skip.update(self._between(node, done))
        if bgr:  # the graph wants BGR: reverse the first conv's input channels instead
            first = next(n for n in self.nodes if n["op"] == "conv")
            self.weights[first["name"]][0] = self.weights[first["name"]][0][:, :, ::-1, :].copy()
        if delegate_friendly:
            self.nodes = fusable_relus(self.nodes)
        feature = self.ref(head_conv.input(0).get_source_output())
        w = _const(head_conv.input(1).get_source_output())
        b = _const(head_add.input(1).get_source_output()) if head_add is not head_conv else None
        head = [w[:, :, 0, 0].T[None, None].astype(np.float32),
                (b.reshape(-1) if b is not None else np.zeros(w.shape[0])).astype(np.float32)]
        return feature, head

    def _ancestors(self, node):
        seen, stack = set(), [node]
        while stack:
            n = stack.pop()
            if n.get_name() in seen:
                continue
            seen.add(n.get_name())
            stack.extend(n.input(i).get_source_output().get_node() for i in range(n.get_input_size()))
        return seen

    def _descendants(self, node):
        """Nodes that depend on `node` (the image): shape computations such as ShapeOf -> Multiply do not."""
        seen, stack = set(), [node]
        while stack:
            n = stack.pop()
            if n.get_name() in seen or n.get_type_name() == "ShapeOf":
                continue
            seen.add(n.get_name())
            for i in range(n.get_output_size()):
                stack.extend(self.consumers(n, i))
        return seen

    def _between(self, start, end):
        """Names of the nodes on the single-consumer chain from `start` to `end` (both included)."""
        names, n = [start.get_name()], start
        while n.get_name() != end.get_name():
            n = self.consumers(n)[0]
            names.append(n.get_name())
        return names


def fusable_relus(nodes):
    """Turn each ReLU that reads a shared "add" into a "relu_dw" node (a fixed 1x1 depthwise conv of ones
    with a fused ReLU: the same maths).

    The converter fuses ADD + RELU only when the ReLU is the add's sole reader. PP-TinyPose's fusion
    layers read the sum twice (a ReLU and a conv), which left 8 standalone int8 RELU ops at 32x24x40
    that LiteRT 2.3's XNNPACK does not take: 28 % of the summed op time and 9 XNNPACK partitions
    (benchmarks/results/latency.md). Duplicating the add does not help (the converter moves the add
    before the upsampling's RESHAPE, so the ReLU still reads a RESHAPE); a 1x1 depthwise conv with a
    fused ReLU is delegated and costs ~0.02 ms there.
    """
    readers = {}
    for n in nodes:
        for ref in n["inputs"]:
            readers[ref] = readers.get(ref, 0) + 1
    ops = {n["name"]: n["op"] for n in nodes}
    return [{**n, "op": "relu_dw"} if n["op"] == "relu" and ops.get(n["inputs"][0]) == "add"
            and readers[n["inputs"][0]] > 1 else n for n in nodes]


def import_pose_model(preset, keypoint_set=None, name=None, delegate_friendly=True, input_size=None):
    """Build a trainable `PoseEstimator` from a pretrained heatmap model (see the module docstring).

    Args:
        preset: a teacher preset name ("pp_tinypose_128x96", ...), a folder with ``teacher.json``
            or a `TeacherConfig`; the file must be OpenVINO IR (.xml) or ONNX.
        keypoint_set: joints of the returned model (default None = the source model's). Channels are
            carried over by joint name (`retarget_keypoints`); joints the source lacks start untrained.
        name: the model's name (default "imported_<preset name>").
        delegate_friendly: write ReLUs that the TFLite converter cannot fuse as "relu_dw" nodes (default
            True; see `fusable_relus`). False gives the graph of kdpose_tf before that change, e.g. to
            read weights saved from it (`copy_weights_by_name` then moves them over).
        input_size: (H, W) to build the network at (default None = the source model's). The weights do
            not depend on it (convolutions); fixed-size bilinear resizes are scaled with it, so each side
            must be a multiple of the source's coarsest stride (e.g. 32 for PP-TinyPose: 160x128 from
            128x96). A model run at another size than it was trained at needs fine-tuning there.

    Returns:
        A `PoseEstimator` with a `GraphBackbone` and a 1x1 `HeatmapHead`, weights loaded; it takes float
        RGB pixels in [0, 255] at `input_size`.
    """
    size = None if input_size is None else _check_size(input_size)  # before the (slow) conversion
    cfg = preset.check_files() if isinstance(preset, TeacherConfig) else resolve_teacher_config(preset)
    if not cfg.path.endswith((".xml", ".onnx")):
        raise GraphImportError(f"{cfg.path}: only OpenVINO IR (.xml) and ONNX models can be imported, not "
                           f"{cfg.path.rsplit('.', 1)[-1]!r}")
    if cfg.input_layout != "nchw" or cfg.output_layout != "nchw":
        raise GraphImportError(f"{cfg.path}: the importer reads NCHW graphs; the config says input_layout="
                           f"{cfg.input_layout!r}, output_layout={cfg.output_layout!r}")
    model = openvino.read_model(cfg.path)
    outputs = model.outputs
    index = cfg.output if isinstance(cfg.output, int) else next(
        (i for i, o in enumerate(outputs) if cfg.output in o.get_names()), None)
    if index is None or not 0 <= index < len(outputs):
        raise GraphImportError(f"{cfg.path}: output {cfg.output!r} not found; outputs: {[o.get_any_name() for o in outputs]}")
    result = outputs[index].get_node().input(0).get_source_output()
    h, w = cfg.input_size
    std, mean = np.asarray(cfg.std, np.float64), np.asarray(cfg.mean, np.float64)
    scale, offset = cfg.pixel_scale / std, -mean / std
    if cfg.color == "bgr":  # the first conv is flipped, so the normalisation runs in RGB order
        scale, offset = scale[::-1], offset[::-1]
    conv = _Converter(model, cfg.path)
    feature, head_weights = conv.run(result, [float(v) for v in scale], [float(v) for v in offset], cfg.color == "bgr",
                                     delegate_friendly)
    stride = h // _shape(result)[2]
    level = {1: "P0", 2: "P1", 4: "P2", 8: "P3"}.get(stride, f"stride{stride}")
    label = cfg.name or _clean(cfg.path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    nodes = conv.nodes
    if size is not None:
        nodes, (h, w) = _resized_nodes(model, cfg.path, nodes, (h, w), size)
    backbone = GraphBackbone(nodes, {level: feature}, (h, w, 3), name=f"{_clean(label)}_backbone")
    for layer_name, values in conv.weights.items():
        backbone.get_layer(layer_name).set_weights(values)
    source_set = get_keypoint_set(cfg.keypoint_set)
    estimator = PoseEstimator(backbone, keypoint_set=source_set, head=HeatmapHead(source_set.num_keypoints),
                              feature_level=level, input_size=(h, w), name=name or f"imported_{_clean(label)}")
    estimator.head.final_conv.set_weights(head_weights)
    if keypoint_set is not None and get_keypoint_set(keypoint_set).name != source_set.name:
        return retarget_keypoints(estimator, keypoint_set)
    return estimator


def _check_size(input_size):
    size = tuple(input_size) if isinstance(input_size, (list, tuple)) else ()
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ValueError(f"import_pose_model: input_size must be (H, W) of positive ints, received {input_size!r}")
    return int(size[0]), int(size[1])


def _resized_nodes(model, path, nodes, source_size, size):
    """The nodes for input `size` (checked by `_check_size`): bilinear resize targets scaled by it (checked
    to be whole)."""
    heights = [_shape(op.output(0))[2] for op in model.get_ordered_ops()
               if op.get_type_name() in ("Convolution", "GroupConvolution", "Relu")]
    coarsest = max(source_size[0] // v for v in heights)  # e.g. 32: the deepest branch
    if any(v % coarsest for v in size):
        raise GraphImportError(f"{path}: input_size {size[0]}x{size[1]} must be a multiple of {coarsest} on each side "
                               f"(the coarsest stride of the graph; trained at {source_size[0]}x{source_size[1]})")
    out = []
    for node in nodes:
        if node["op"] == "resize":
            scaled = [v * new / old for v, new, old in zip(node["size"], size, source_size)]
            if any(v != int(v) for v in scaled):
                raise GraphImportError(f"{path}: resize {node['name']!r} to {node['size']} does not scale to input "
                                       f"{size[0]}x{size[1]} (from {source_size[0]}x{source_size[1]})")
            node = {**node, "size": [int(v) for v in scaled]}
        out.append(node)
    return out, size


def copy_weights_by_name(source, target):
    """Copy every weighted layer of `source` into the layer of `target` with the same name (backbone and
    head); returns the number of layers copied. Layers only `target` has (relu_dw) keep theirs."""
    names = {layer.name for layer in target.backbone.layers}
    pairs = [(layer, target.backbone.get_layer(layer.name)) for layer in source.backbone.layers
             if layer.weights and layer.name in names] + [(source.head, target.head)]
    for src, dst in pairs:
        dst.set_weights(src.get_weights())
    return len(pairs)


def retarget_keypoints(model, keypoint_set, name=None):
    """A copy of a 1x1-head `PoseEstimator` predicting `keypoint_set`, channels carried over by joint name.

    Joints the model already predicts keep their final-conv weights (e.g. COCO-17 -> LSP-14 keeps the
    12 limb joints); the others (LSP's neck and head_top) start from the head's usual initialisation
    and must be learnt (`new_joints` on the returned model names them, for
    `kdpose_tf.training_probe.probe_new_joints`). The backbone is shared, not copied.
    """
    target = get_keypoint_set(keypoint_set)
    if model.head.final_kernel != 1 or model.head.tail_layers:
        raise ValueError(f"retarget_keypoints: {model.name} needs a plain 1x1 HeatmapHead")
    head = HeatmapHead(target.num_keypoints)
    new = PoseEstimator(model.backbone, keypoint_set=target, head=head, feature_level=model.feature_level,
                        input_size=model.input_size, name=name or model.name)
    kernel, bias = head.final_conv.get_weights()
    old_k, old_b = model.head.final_conv.get_weights()
    for src, dst in joint_mapping(model.keypoint_set, target).items():
        kernel[..., dst], bias[dst] = old_k[..., src], old_b[src]
    head.final_conv.set_weights([kernel, bias])
    mapped = set(joint_mapping(model.keypoint_set, target).values())
    new.new_joints = tuple(n for i, n in enumerate(target.names) if i not in mapped)
    return new


def _load_preset(preset, **overrides):
    """`PoseEstimator.from_preset` of a pretrained model from another framework: imported with its weights;
    keypoint_set / input_size / name overrides are passed on."""
    unknown = sorted(set(overrides) - {"keypoint_set", "num_keypoints", "name", "input_size"})
    if unknown:
        raise PresetError(f"{preset!r} is imported with its own layout; overrides {unknown} cannot apply "
                          "(keypoint_set / input_size / name can)")
    overrides.pop("num_keypoints", None)
    return import_pose_model(preset, **overrides)


preset_utils.register_preset_loader(is_pretrained_source, _load_preset)
