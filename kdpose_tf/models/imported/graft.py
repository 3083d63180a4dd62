"""Graft the proposal student's parts onto an imported pretrained pose network, each starting as the identity.

The proposal's claim is that Polarized Self-Attention (Liu et al. 2021) and PP-PicoDet's depthwise CSP-PAN
(Yu et al. 2021) make a Lite-HRNet-style student more accurate. Trained from random weights on a few
thousand people such a student is far below one started from COCO weights, so the fair test is the parts
grafted onto the pretrained network the shipped students start from (PP-TinyPose 128x96, imported by
`openvino_import`), then fine-tuned by the same distillation recipe. Every grafted part starts as the
identity, so the grafted network's heatmaps equal the pretrained one's at init and the ablation measures
what fine-tuning makes of each part, not how much pretraining it destroyed:

* ``psa_head``: `GatedPSA` on the feature map the final heatmap conv reads (`HeatmapHead(psa=True,
  psa_gated=True)`; with ``csp_pan``, after the neck's sum), the proposal's "PSA in the head" option.
* ``psa_blocks``: `GatedPSA` in every block of the backbone's highest-resolution branch (the branch at
  the head's stride, 1/4), the proposal's placement. PP-TinyPose's blocks are ShuffleNet-v2 units
  (PaddleDetection's naive Lite-HRNet): ``split`` -> 1x1 conv + ReLU -> 3x3 depthwise conv -> 1x1 conv
  + ReLU -> ``concat`` (with the split's untouched half) -> ``shuffle``. A block is found as a split
  whose first output the concat reads directly, the concat read by a shuffle; the stem's unit (a
  strided unit without that identity half) and the final decoder's convs are not blocks.
  ``block_site="depthwise"`` (default) inserts PSA right after the block's 3x3 depthwise conv, on the
  processed half, where the proposal's Lite-/Dite-HRNet blocks put it (after the depthwise / dynamic
  split conv, `lite_hrnet_layers.conditional_channel_weighting`); ``"output"`` after the block's
  channel shuffle, on all its channels. In PP-TinyPose 128x96: 16 blocks at 32x24, 20 channels at the
  depthwise site and 40 at the output site.
* ``csp_pan``: `ResidualCSPPAN`: a `DepthwiseCSPPAN` over the backbone's branch outputs (the final
  stage's fused branches, stride 4 .. 32), added to the head's input through zero-initialised 1x1
  projections. The branch outputs are found by walking back from the head's feature through the
  graph's top-down decoder: at each sum of a branch with an upsampled coarser map the other input is
  that level's branch output, and the coarsest is the ReLU of a fusion sum where the decoder starts
  (PP-TinyPose: relu_132 / 133 / 135 / 139, 40 / 80 / 160 / 320 channels).

The flags combine freely; `VARIANTS` names the ablation's rows (``psa_csp`` is the proposal student's
layout: PSA in the blocks and the CSP-PAN neck). Weights are copied by layer name from the base model.

Example (needs the `teachers` extra and the shared models folder):
>>> from kdpose_tf.models.imported.openvino_import import import_pose_model  # doctest: +SKIP
>>> base = import_pose_model("pp_tinypose_128x96", keypoint_set="lsp14")     # doctest: +SKIP
>>> model = graft(base, psa_blocks=True, csp_pan=True)                         # doctest: +SKIP
>>> model.outputs[-1].shape                                                    # doctest: +SKIP
(None, 32, 24, 14)
"""

from __future__ import annotations

from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.imported.graph_backbone import GraphBackbone
from kdpose_tf.models.necks.residual_csp_pan import ResidualCSPPAN
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.utils.args import check_bool, check_int, check_positive

BLOCK_SITES = ("depthwise", "output")

# The ablation's rows: variant name -> `graft` flags ("base" is the imported model itself).
VARIANTS = {
    "base": {},
    "psa_head": {"psa_head": True},
    "psa_blocks": {"psa_blocks": True},
    "csp_pan": {"csp_pan": True},
    "psa_csp": {"psa_blocks": True, "csp_pan": True},
}

_DECODER_OPS = ("conv", "relu", "relu_dw", "relu6")  # single-input ops of a decoder step
_RESIZE_OPS = ("resize", "upsample")
_RELU_OPS = ("relu", "relu_dw", "relu6")


def _base(ref):
    return ref.split(":")[0]


def _node_shapes(backbone):
    """{reference: (h, w, c)} of every node output of a built `GraphBackbone` ("split:i" for splits)."""
    shapes = {}
    for node in backbone.nodes:
        out = backbone.get_layer(node["name"]).output
        if isinstance(out, (list, tuple)):
            shapes.update({f"{node['name']}:{i}": tuple(t.shape[1:]) for i, t in enumerate(out)})
        else:
            shapes[node["name"]] = tuple(out.shape[1:])
    return shapes


def _readers(nodes):
    readers = {}
    for node in nodes:
        for ref in node["inputs"]:
            readers.setdefault(ref, []).append(node)
    return readers


def block_sites(nodes, shapes, size, site="depthwise"):
    """Node names after which PSA goes in the ShuffleNet-v2 blocks at spatial `size` (module docstring).

    Args:
        nodes: a `GraphBackbone` node list.
        shapes: `_node_shapes` of the backbone built from it.
        size: (h, w) of the branch (the head's feature size for the highest-resolution branch).
        site: "depthwise" (after the block's 3x3 depthwise conv) or "output" (after its shuffle).

    Returns:
        list of node names in graph order (empty when the graph has no such block).
    """
    if site not in BLOCK_SITES:
        raise ValueError(f"block_sites: `site` must be one of {BLOCK_SITES}, received {site!r}")
    readers, sites = _readers(nodes), []
    for split in nodes:
        name = split["name"]
        if split["op"] != "split" or len(split["sizes"]) != 2 or shapes[f"{name}:0"][:2] != tuple(size):
            continue
        concat = next((n for n in readers.get(f"{name}:0", []) if n["op"] == "concat"), None)
        after = readers.get(concat["name"], []) if concat else []
        if concat is None or len(after) != 1 or after[0]["op"] != "shuffle":
            continue
        if site == "output":
            sites.append(after[0]["name"])
            continue
        ref, depthwise = f"{name}:1", None  # the processed half: a single-reader chain up to the concat
        while len(readers.get(ref, [])) == 1 and readers[ref][0] is not concat:
            node = readers[ref][0]
            if node["op"] == "conv" and int(node["groups"]) > 1 and int(node["groups"]) == int(node["filters"]) \
                    and tuple(node["kernel"]) != (1, 1) and tuple(node["strides"]) == (1, 1):
                depthwise = node["name"]
            ref = node["name"]
        if depthwise is not None:
            sites.append(depthwise)
    return sites


def branch_outputs(nodes, feature):
    """The branch outputs a graph's top-down decoder fuses into the head's `feature`, highest resolution
    first (module docstring); [] when `feature` is not read out of such a decoder."""
    by_name = {n["name"]: n for n in nodes}
    found, ref = [], feature
    for _ in range(len(nodes)):
        node = by_name.get(_base(ref))
        if node is None:
            return []
        if node["op"] == "add" and len(node["inputs"]) == 2:
            resized = [r for r in node["inputs"] if by_name.get(_base(r), {}).get("op") in _RESIZE_OPS]
            if len(resized) != 1:
                return []
            found.append(next(r for r in node["inputs"] if r != resized[0]))
            ref = by_name[_base(resized[0])]["inputs"][0]
        elif found and node["op"] in _RELU_OPS and by_name.get(_base(node["inputs"][0]), {}).get("op") == "add":
            found.append(ref)  # the coarsest branch: where the decoder starts
            return found
        elif node["op"] in _DECODER_OPS + _RESIZE_OPS:
            ref = node["inputs"][0]
        else:
            return []
    return []


def _insert_after(nodes, sites, make):
    """`nodes` with `make(site)` (a node reading `site`) right after each site; the site's other readers
    read the new node instead."""
    sites = set(sites)
    renamed = {s: make(s)["name"] for s in sites}
    out = []
    for node in nodes:
        out.append({**node, "inputs": [renamed.get(r, r) for r in node["inputs"]]})
        if node["name"] in sites:
            out.append(make(node["name"]))
    return out


def _check_base(model):
    if not isinstance(model, PoseEstimator) or not isinstance(model.backbone, GraphBackbone):
        kind = type(getattr(model, "backbone", None)).__name__
        raise ValueError(f"graft: needs an imported PoseEstimator (GraphBackbone), received a {type(model).__name__}"
                         f" with a {kind} backbone; import one with `kdpose import` / import_pose_model")
    head = model.head
    if model.neck is not None or not isinstance(head, HeatmapHead) or head.tail_layers or head.final_kernel != 1:
        raise ValueError(f"graft: {model.name} must have no neck and a plain 1x1 HeatmapHead (an imported model, "
                         f"not one already grafted); received neck={type(model.neck).__name__}, head="
                         f"{type(head).__name__} with {len(getattr(head, 'tail_layers', []))} tail layers")


def graft(model, psa_head=False, psa_blocks=False, csp_pan=False, block_site="depthwise", psa_reduction=2,
          pan_kernel_size=5, step_scale=1.0, name=None):
    """A new `PoseEstimator`: `model` (an imported PP-TinyPose-style network) with the parts the flags name
    grafted on (module docstring), weights copied, heatmaps equal to `model`'s until the new parts train.

    Args:
        model: an imported `PoseEstimator` (`GraphBackbone`, no neck, plain 1x1 `HeatmapHead`), any keypoint set.
        psa_head: gated PSA before the final heatmap conv (default False).
        psa_blocks: gated PSA in every block of the highest-resolution branch (default False).
        csp_pan: the depthwise CSP-PAN over the branch outputs, added to the head's input (default False).
        block_site: "depthwise" (default) or "output": where in each block (`psa_blocks`).
        psa_reduction: channel reduction of every grafted PSA (default 2).
        pan_kernel_size: depthwise kernel of the CSP-PAN, odd (default 5, PP-PicoDet's).
        step_scale: step multiplier of every grafted zero-initialised part, the PSA gates (`GatedPSA`
            gate_scale) and the CSP-PAN projections (`ResidualCSPPAN` projection_scale): under Adam they
            learn as with a learning rate `step_scale` times the rest's (default 1.0).
        name: the new model's name (default "<model name>_<parts>", e.g. "..._psa_blocks_csp_pan").

    Returns:
        `PoseEstimator` with the same input size, keypoint set and codec as `model`.
    """
    flags = {"psa_head": psa_head, "psa_blocks": psa_blocks, "csp_pan": csp_pan}
    for arg, value in flags.items():
        check_bool(arg, value, owner="graft")
    if not any(flags.values()):
        raise ValueError("graft: nothing to graft: give psa_head, psa_blocks and/or csp_pan (all were False)")
    if block_site not in BLOCK_SITES:
        raise ValueError(f"graft: `block_site` must be one of {BLOCK_SITES}, received {block_site!r}")
    check_int("psa_reduction", psa_reduction, 1, owner="graft")
    check_int("pan_kernel_size", pan_kernel_size, 1, owner="graft")
    step_scale = check_positive("step_scale", step_scale, owner="graft")
    _check_base(model)
    source = model.backbone
    level = model.feature_level
    nodes, outputs = [dict(n) for n in source.nodes], dict(source.output_refs)
    shapes = _node_shapes(source)
    size = shapes[outputs[level]][:2]
    if psa_blocks:
        sites = block_sites(nodes, shapes, size, block_site)
        if not sites:
            raise ValueError(f"graft: psa_blocks found no ShuffleNet block (split -> ... -> concat with the split's "
                             f"first half -> shuffle) at the feature's size {size[0]}x{size[1]} in {source.name}")
        nodes = _insert_after(nodes, sites, lambda s: {"name": f"{s}_psa", "op": "gated_psa", "inputs": [s],
                                                       "reduction": int(psa_reduction), "gate": 0.0,
                                                       "gate_scale": step_scale})
    neck = None
    if csp_pan:
        branches = branch_outputs(nodes, outputs[level])
        if len(branches) < 2:
            raise ValueError(f"graft: csp_pan found no multi-resolution branch outputs behind the head's feature "
                             f"{outputs[level]!r} of {source.name} (a top-down decoder of sums with upsampled maps)")
        keys = tuple(f"branch{i}" for i in range(len(branches)))
        taken = sorted(set(keys) & set(outputs))
        if taken:
            raise ValueError(f"graft: {source.name} already has outputs {taken}")
        outputs.update(zip(keys, branches))
        neck = ResidualCSPPAN(feature=level, branches=keys, kernel_size=pan_kernel_size,
                              projection_scale=step_scale, name="csp_pan")
    backbone = GraphBackbone(nodes, outputs, source.image_shape, name=source.name)
    for layer in source.layers:
        if layer.weights:
            backbone.get_layer(layer.name).set_weights(layer.get_weights())
    head = HeatmapHead(model.num_keypoints, psa=psa_head, psa_gated=psa_head,
                       psa_gate_scale=step_scale if psa_head else 1.0, name=model.head.name)
    parts = "_".join(k for k, v in flags.items() if v)
    grafted = PoseEstimator(backbone, num_keypoints=model.num_keypoints, keypoint_set=model.keypoint_set, head=head,
                            neck=neck, feature_level=level, input_size=model.input_size, codec=model.codec,
                            name=name or f"{model.name}_{parts}")
    head.final_conv.set_weights(model.head.final_conv.get_weights())
    return grafted
