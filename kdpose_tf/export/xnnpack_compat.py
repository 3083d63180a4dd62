"""Quantisation parameters every XNNPACK version accepts: a static check and a post-conversion fix.

XNNPACK (LiteRT's default CPU path, Android's default) computes one requantisation scale per
output channel of a quantised matrix-multiply-like op, ``input_scale * weight_scale[c] /
output_scale``, in float32, and refuses to create the operator when it is ``>= 256``
(XNNPACK `src/operators/convolution-nhwc.c`, `deconvolution-nhwc.c`, `fully-connected-nc.c`) or,
for a batch matmul with constant right-hand side, ``> 255`` (`batch-matrix-multiply-nc.c`). The
LiteRT delegate does not check this while partitioning, so the refusal surfaces when the XNNPACK
runtime is built: a clean ``RuntimeError: failed to create XNNPACK runtime`` on ai-edge-litert
1.4-2.1 and TF's interpreter, a native ``free(): double free`` abort on ai-edge-litert 2.2/2.3
(google/XNNPACK#3693, tensorflow/tensorflow#58376). The op types with this check:
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV and BATCH_MATMUL.

It happens after a ReLU that is dead on every calibration crop: the converter sees the range
[0, 0], nudges it to a scale of ~7.8e-9, and the conv in front of the ReLU then has a ratio in
the hundreds. `fix_requantization_scales` raises such an op's output scale to the smallest float32
``s`` with ``max_c(input_scale * weight_scale[c]) / s <= 255`` (zero point kept). That loses no
information the calibration had: the tensor was 0 on every crop, and 0 stays exactly
representable. Design of the general fix:

- The raised scale is given to every tensor that must share the tensor's parameters: the op's
  output and, transitively, the inputs and outputs of shape/copy ops that do not requantise
  (RESHAPE, CONCATENATION, pooling, PAD, TRANSPOSE, ... in `SAME_PARAMS_OPS`) wherever the
  converter gave them identical (scale, zero point). The kernels of those ops copy int8 values,
  so raising the group together keeps them exact; raising only the conv output would silently
  rescale everything after a RESHAPE.
- Consumers that requantise (ADD, MUL, MEAN, LOGISTIC, QUANTIZE, ...) read the new input scale
  from the tensor and need nothing. Consumers with an int32 bias (CONV_2D, DEPTHWISE_CONV_2D,
  FULLY_CONNECTED, TRANSPOSE_CONV) need ``bias_scale == input_scale * weight_scale``: their bias is
  requantised to the new scale (same real values, rounded), as both TFLite's kernels and XNNPACK
  read the int32 bias with that implied scale.
- Groups holding the output of an op with a fixed output scale (LOGISTIC, SOFTMAX, TANH, ...) are
  never changed; such an op is left as it is and reported (never seen in practice).
- Raising a consumer's input scale raises its own ratio, so the pass repeats until no op is over
  the limit (each round only raises scales, so it ends).

The same pass moves int8 ADD / SUB / MUL into the scale ranges XNNPACK's elementwise operators
take (`src/operators/binary-elementwise-nd.c`): ADD and SUB need every ``input_scale /
output_scale`` in [2^-10, 2^8), MUL needs ``input1_scale * input2_scale / output_scale`` in
[2^-16, 2^8). Outside them the delegate does not crash: it leaves the op to the builtin kernel,
which splits the XNNPACK graph and is slower (a 64x48x20 ADD: 0.17 ms builtin vs 0.01 ms in
XNNPACK). Seen after dead ranges again: a sum term whose range collapsed to ~1e-8 (Lite-HRNet's
fuse layers, Dite-HRNet's kernel products, untrained weights). The fix raises a scale, as above:
an output too fine for its inputs (ratio >= 2^8) gets ``max ratio 255``; an input too fine for the
output (ADD / SUB below 2^-10, MUL below 2^-16) is raised to the range's edge, only when this op is
its one reader (other readers would see a coarser tensor). Both lose nothing the op can resolve:
an ADD input below 2^-10 of the output step spans less than a quarter of one output step.
`find_delegation_issues` lists what is still out of range (`kdpose check-xnnpack` prints it).

The file is patched in place (the scale vectors and bias buffers keep their sizes), so every other
byte of the converter's flatbuffer is unchanged.

Example:
>>> find_requantization_issues("student_s0.tflite")[0]["ratio"]          # doctest: +SKIP
367.59
>>> data, fixes = fix_requantization_scales(open("student_s0.tflite", "rb").read())   # doctest: +SKIP
>>> find_requantization_issues(data)                                       # doctest: +SKIP
[]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpose_tf.export.quant_graph import ACTIVATION_TYPES as _ACTIVATION_TYPES
from kdpose_tf.export.quant_graph import QuantSubgraph
from kdpose_tf.export.runner import model_ops, model_tensors, read_tflite
from kdpose_tf.utils.io import write_bytes

REQUANTIZATION_LIMIT = 256.0  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV: refused when >= this
BATCH_MATMUL_LIMIT = 255.0  # BATCH_MATMUL (constant B): refused when > this
TARGET_RATIO = 255.0  # what the fix brings an offending op down to (accepted by every op type)

# op name -> positions of (activation input, weights, bias or None) in the op's inputs
REQUANT_OPS = {
    "CONV_2D": (0, 1, 2),
    "DEPTHWISE_CONV_2D": (0, 1, 2),
    "FULLY_CONNECTED": (0, 1, 2),
    "TRANSPOSE_CONV": (2, 1, 3),
    "BATCH_MATMUL": (0, 1, None),
}
# int8 kernels that copy values without requantising: quantised inputs and outputs share (scale, zp)
SAME_PARAMS_OPS = frozenset({
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "PACK", "UNPACK", "SPLIT",
    "SPLIT_V", "SLICE", "STRIDED_SLICE", "GATHER", "GATHER_ND", "PAD", "PADV2", "MIRROR_PAD",
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "DEPTH_TO_SPACE",
    "SPACE_TO_DEPTH", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "MAXIMUM", "MINIMUM", "TILE",
    "BROADCAST_TO", "REVERSE_V2", "REDUCE_MAX", "REDUCE_MIN",
})
# int8 kernels whose output scale is fixed by the kernel (e.g. 1/256): never change their output
FIXED_OUTPUT_OPS = frozenset({"LOGISTIC", "SOFTMAX", "LOG_SOFTMAX", "TANH", "L2_NORMALIZATION"})
# int8 elementwise ops XNNPACK delegates only inside [low, high) of their scale ratio (see the module doc)
ELEMENTWISE_RANGES = {"ADD": (2.0**-10, 256.0), "SUB": (2.0**-10, 256.0), "MUL": (2.0**-16, 256.0)}


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _op_ratio(op, tensors):
    """(max requantisation ratio in float32 as XNNPACK computes it, input, weight, output scales) or None."""
    pos = REQUANT_OPS.get(op["name"])
    if pos is None or max(pos[0], pos[1]) >= len(op["inputs"]) or not op["outputs"]:
        return None
    ix, iw = op["inputs"][pos[0]], op["inputs"][pos[1]]
    if ix < 0 or iw < 0:
        return None
    x, w, y = tensors[ix], tensors[iw], tensors[op["outputs"][0]]
    if x["dtype"] not in _ACTIVATION_TYPES or y["dtype"] not in _ACTIVATION_TYPES or w["dtype"] != "INT8":
        return None  # float or hybrid op: no requantisation
    if not (x["scale"] and w["scale"] and y["scale"]):
        return None
    ratios = _f32(x["scale"][0]) * _f32(w["scale"]) / _f32(y["scale"][0])
    return float(ratios.max()), x["scale"][0], float(max(w["scale"])), y["scale"][0]


def _over_limit(op_name, ratio):
    return ratio > BATCH_MATMUL_LIMIT if op_name == "BATCH_MATMUL" else ratio >= REQUANTIZATION_LIMIT


def _num_subgraphs(buf):
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(buf, 0).SubgraphsLength()


def _all_ops(source):
    """(subgraph index, its tensors, op) for every op of a .tflite path or bytes, in execution order."""
    buf = read_tflite(source)
    for sg in range(_num_subgraphs(buf)):
        tensors = model_tensors(buf, sg)
        for op in model_ops(buf, sg):
            yield sg, tensors, op


def find_requantization_issues(source) -> list:
    """Every op XNNPACK would refuse because of its requantisation scale.

    Args:
        source: path of a .tflite file, or its bytes.

    Returns:
        list of dicts, one per offending op in execution order: {"subgraph", "op_index", "op" (type),
        "tensor" (output tensor name), "ratio" (max over output channels of input_scale *
        weight_scale / output_scale, float32), "limit" (256, refused at >=; 255 for BATCH_MATMUL,
        refused at >), "input_scale", "weight_scale" (max over channels), "output_scale"}.
        Empty when XNNPACK accepts every op (float models always).
    """
    return _requantization_issues(_all_ops(source))


def _requantization_issues(ops):
    """`find_requantization_issues` over (subgraph, tensors, op) triples (`_all_ops`)."""
    issues = []
    for sg, tensors, op in ops:
        r = _op_ratio(op, tensors)
        if r is None or not _over_limit(op["name"], r[0]):
            continue
        limit = BATCH_MATMUL_LIMIT if op["name"] == "BATCH_MATMUL" else REQUANTIZATION_LIMIT
        issues.append({
            "subgraph": sg, "op_index": op["index"], "op": op["name"],
            "tensor": tensors[op["outputs"][0]]["name"], "ratio": r[0], "limit": limit,
            "input_scale": r[1], "weight_scale": r[2], "output_scale": r[3],
        })
    return issues


def _elementwise_ratios(op, tensors):
    """[(ratio as XNNPACK computes it in float32, input position or None for MUL's product)], or None
    when `op` is not an int8 ADD / SUB / MUL with per-tensor scales."""
    if op["name"] not in ELEMENTWISE_RANGES or len(op["inputs"]) != 2 or not op["outputs"]:
        return None
    ins = [tensors[t] for t in op["inputs"] if t >= 0]
    out = tensors[op["outputs"][0]]
    if len(ins) != 2 or any(t["dtype"] not in _ACTIVATION_TYPES or len(t["scale"]) != 1 for t in ins + [out]):
        return None
    so = _f32(out["scale"][0])
    if op["name"] == "MUL":
        return [(float(_f32(ins[0]["scale"][0]) * _f32(ins[1]["scale"][0]) / so), None)]
    return [(float(_f32(t["scale"][0]) / so), i) for i, t in enumerate(ins)]


def _out_of_range(op, tensors):
    """[(ratio, input position or None)] of `op`'s ratios outside XNNPACK's range (empty: delegated)."""
    low, high = ELEMENTWISE_RANGES.get(op["name"], (0.0, np.inf))
    return [(r, i) for r, i in (_elementwise_ratios(op, tensors) or []) if not low <= r < high]


def find_delegation_issues(source) -> list:
    """Every int8 ADD / SUB / MUL that XNNPACK leaves to the builtin kernels because of its scales.

    Not a crash (the delegate checks these while partitioning): the op runs on the slower builtin
    kernel and splits the XNNPACK graph in two. Returns one dict per op {"subgraph", "op_index",
    "op", "tensor" (output name), "ratio" (the first one out of range), "range" ([low, high))}.
    """
    return _delegation_issues(_all_ops(source))


def _delegation_issues(ops):
    """`find_delegation_issues` over (subgraph, tensors, op) triples (`_all_ops`)."""
    issues = []
    for sg, tensors, op in ops:
        bad = _out_of_range(op, tensors)
        if bad:
            issues.append({"subgraph": sg, "op_index": op["index"], "op": op["name"],
                           "tensor": tensors[op["outputs"][0]]["name"], "ratio": bad[0][0],
                           "range": list(ELEMENTWISE_RANGES[op["name"]])})
    return issues


def format_issue(issue: dict) -> str:
    """One line naming an op over the limit, e.g. for `kdpose check` or an error message."""
    if "range" in issue:
        what = "input / output" if issue["op"] != "MUL" else "input product / output"
        low, high = issue["range"]
        return (f"op {issue['op_index']} {issue['op']} -> {issue['tensor']!r}: {what} scale ratio "
                f"{issue['ratio']:.4g} outside [{low:.4g}, {high:g}): XNNPACK leaves it to the slower builtin kernel")
    rel = ">" if issue["op"] == "BATCH_MATMUL" else ">="
    return (f"op {issue['op_index']} {issue['op']} -> {issue['tensor']!r}: requantization scale "
            f"{issue['ratio']:.4g} = {issue['input_scale']:.3g} (input) x {issue['weight_scale']:.3g} (weights) / "
            f"{issue['output_scale']:.3g} (output) {rel} {issue['limit']:g}: XNNPACK refuses it")


def check_xnnpack_compat(source) -> dict:
    """Static XNNPACK check for `kdpose check` and the sidecar (no interpreter, no child process).

    Returns:
        {"ok": bool (no op XNNPACK refuses), "over_limit": `find_requantization_issues(source)`,
        "messages": one `format_issue` line per op over the limit, "not_delegated":
        `find_delegation_issues(source)` (slower, not fatal), "warnings": one line per such op}.
    """
    ops = list(_all_ops(source))  # the file is read and parsed once for both checks
    issues, slow = _requantization_issues(ops), _delegation_issues(ops)
    return {"ok": not issues, "over_limit": issues, "messages": [format_issue(i) for i in issues],
            "not_delegated": slow, "warnings": [format_issue(i) for i in slow]}


def _needed_output_scale(in_scale, w_scales):
    """Smallest float32 s with max_c(in * w_c) / s <= TARGET_RATIO, computed as XNNPACK does."""
    prod = (_f32(in_scale) * _f32(w_scales)).max()
    s = np.float32(prod / np.float32(TARGET_RATIO))
    while prod / s > TARGET_RATIO:
        s = np.nextafter(s, np.float32(np.inf))
    return float(s)


def _bias_users(g: QuantSubgraph, changed: set):
    """(bias, weights, activation) tensor indices of every consumer with an int32 bias whose
    activation input is in `changed`."""
    users = []
    for t in sorted(changed):
        for op in g.consumers.get(t, []):
            pos = REQUANT_OPS.get(op["name"])
            if pos is None or pos[2] is None or len(op["inputs"]) <= pos[2] or op["inputs"][pos[0]] != t:
                continue
            b = op["inputs"][pos[2]]
            if b >= 0 and g.tensors[b]["scale"]:
                users.append((b, op["inputs"][pos[1]], t))
    return users


def _shared_nonzero_bias(g: QuantSubgraph, users):
    """A bias whose data other tensors share cannot be requantised in place for one op only."""
    return any(g.int32_data(b).any() and len(g.buffer_users(g.sg.Tensors(b).Buffer())) > 1 for b, _, _ in users)


def _rescale_biases(g: QuantSubgraph, users):
    """Requantise each bias to its op's new input scale x weight scale (same real values, rounded)."""
    for b, w, t in users:
        new = _f32(g.tensors[t]["scale"][0]) * _f32(g.tensors[w]["scale"])
        old = _f32(g.tensors[b]["scale"])
        data = g.int32_data(b)
        if data.any():
            real = data.astype(np.float64) * old.astype(np.float64)
            data[:] = np.clip(np.rint(real / new.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        g.set_scale(b, np.broadcast_to(new, old.shape))


def _blocked(g: QuantSubgraph, group):
    """True when the scales of `group` may not change: a member is the output of a fixed-scale op, a
    graph input or per-channel, or a bias shared with other ops reads it."""
    return (any(u in g.producer and g.producer[u]["name"] in FIXED_OUTPUT_OPS for u in group)
            or bool(g.inputs & set(group))
            or any(len(g.tensors[u]["scale"]) != 1 for u in group)
            or _shared_nonzero_bias(g, _bias_users(g, set(group))))


def _raise_group(g: QuantSubgraph, t, new_scale):
    """Give `t` and every tensor tied to it the scale `new_scale` (never lowering one), rescaling the
    int32 biases of the convs reading them. Returns the group, or None (nothing changed) when
    `_blocked`."""
    group = g.group(t)
    if _blocked(g, group):
        return None
    for u in group:
        g.set_scale(u, [max(new_scale, g.tensors[u]["scale"][0])])
    _rescale_biases(g, _bias_users(g, set(group)))
    return group


def _smallest_scale(ratio_of, start, ok, max_steps=64):
    """Smallest float32 s >= start, stepping up by ulps, with ok(ratio_of(s)); None when `start` is not
    a finite positive float32 or `max_steps` ulps do not get there (callers start a few ulps under)."""
    s = np.float32(start)
    if not (np.isfinite(s) and s > 0):
        return None
    for _ in range(max_steps):
        if ok(ratio_of(s)):
            return float(s)
        s = np.nextafter(s, np.float32(np.inf))
    return None


def _only_reader(g: QuantSubgraph, t, op):
    """True when `op` is the one reader of `t`'s tied group (ops inside the group and graph outputs
    count as readers too, except the copy ops that tie it)."""
    group = set(g.group(t))
    readers = {c["index"] for u in group for c in g.consumers.get(u, [])
               if not (c["name"] in SAME_PARAMS_OPS and set(c["outputs"]) <= group)}
    return readers == {op["index"]} and not g.outputs & group


def _elementwise_plan(g: QuantSubgraph, op, bad):
    """(tensor to raise, new scale, ratio before) for an ADD / SUB / MUL whose ratios `bad`
    (`_out_of_range`) are out of range, or None when no scale may be raised."""
    low, high = ELEMENTWISE_RANGES[op["name"]]
    scales = [_f32(g.tensors[t]["scale"][0]) for t in op["inputs"]]
    if not all(np.isfinite(v) and v > 0 for v in scales):
        return None
    out = op["outputs"][0]
    high_ratios = [r for r, _ in bad if r >= high]
    if high_ratios:  # output finer than its inputs can resolve: coarsen the output
        num = scales[0] * scales[1] if op["name"] == "MUL" else max(scales)
        s = _smallest_scale(lambda s: num / s, num / np.float32(255.0), lambda r: r < high)  # 255 < high
        return None if s is None else (out, s, max(high_ratios))
    ratio, pos = bad[0]
    # an input too fine for the output: raise the input, if this op is its only reader
    so = _f32(g.tensors[out]["scale"][0])
    candidates = [pos] if pos is not None else sorted(range(2), key=lambda i: scales[i])
    for i in candidates:
        t = op["inputs"][i]
        if g.tensors[t]["constant"] or not _only_reader(g, t, op) or _blocked(g, g.group(t)):
            continue
        if op["name"] == "MUL" and op["inputs"][1 - i] in g.group(t):  # x * x: both inputs rise together
            start = np.sqrt(np.float32(low) * so) * np.float32(1 - 1e-6)
            s = _smallest_scale(lambda s: s * s / so, max(start, scales[i]), lambda r: r >= low)
        else:
            other = scales[1 - i] if op["name"] == "MUL" else np.float32(1.0)
            start = np.float32(low) * so / other * np.float32(1 - 1e-6)  # a few ulps under the answer
            s = _smallest_scale(lambda s: s * other / so, max(start, scales[i]), lambda r: r >= low)
        if s is not None:
            return t, s, ratio
    return None


def _conv_plan(g: QuantSubgraph, op):
    """(output tensor, new scale, ratio before) for a conv-like op over the requantisation limit, or None."""
    r = _op_ratio(op, g.tensors)
    if r is None or not _over_limit(op["name"], r[0]):
        return None
    pos = REQUANT_OPS[op["name"]]
    return op["outputs"][0], _needed_output_scale(r[1], g.tensors[op["inputs"][pos[1]]]["scale"]), r[0]


def _fix_subgraph(g: QuantSubgraph, sg_index: int, max_rounds: int):
    fixes, skipped = [], set()
    for _ in range(max_rounds):
        todo = None
        for op in g.ops:
            if op["index"] in skipped:
                continue
            plan = _conv_plan(g, op)
            bad = None if plan is not None else _out_of_range(op, g.tensors)
            if bad:
                plan = _elementwise_plan(g, op, bad)
                if plan is None:
                    skipped.add(op["index"])  # no scale it may raise: left to find_delegation_issues
            if plan is not None:
                todo = (op, plan)
                break
        if todo is None:
            break
        op, (t, new_scale, ratio) = todo
        old_scale = g.tensors[t]["scale"][0]
        group = _raise_group(g, t, new_scale)
        if group is None:
            skipped.add(op["index"])  # left as it is: the find_* functions still report it
            continue
        if op["name"] in REQUANT_OPS:
            after = _op_ratio(op, g.tensors)[0]
        else:  # the ratio that was out of range: MUL's product, the raised input's, or the largest
            now = _elementwise_ratios(op, g.tensors)
            after = max([r for r, i in now if i is None or op["inputs"][i] == t] or [r for r, _ in now])
        fixes.append({
            "subgraph": sg_index, "op_index": op["index"], "op": op["name"], "tensor": g.tensors[t]["name"],
            "ratio_before": ratio, "ratio_after": after, "old_scale": old_scale, "new_scale": g.tensors[t]["scale"][0],
            "tied_tensors": [g.tensors[u]["name"] for u in group if u != t],
        })
    return fixes


def fix_requantization_scales(source, max_rounds: int = 1000):
    """Raise the scales XNNPACK needs raised (see the module doc): the output of every op over the
    requantisation limit, and an input or the output of every int8 ADD / SUB / MUL outside its range.

    Args:
        source: path of a .tflite file, or its bytes (not modified).
        max_rounds: at most this many scale changes per subgraph (default 1000; one op may need two).

    Returns:
        (bytes of the fixed model, list of fixes): one dict per scale change {"subgraph", "op_index",
        "op", "tensor" (the tensor raised: the op's output, or an ADD / SUB / MUL input), "ratio_before",
        "ratio_after", "old_scale", "new_scale", "tied_tensors" (other tensors given the same new
        scale)}. What could not be fixed stays in `find_requantization_issues(result)` (refused ops)
        and `find_delegation_issues(result)` (ADD / SUB / MUL left to the builtin kernels).
    """
    buf = bytearray(read_tflite(source))
    fixes = []
    for sg in range(_num_subgraphs(buf)):
        fixes += _fix_subgraph(QuantSubgraph(buf, sg, SAME_PARAMS_OPS), sg, max_rounds)
    return bytes(buf), fixes


def make_xnnpack_compatible(path) -> list:
    """Apply `fix_requantization_scales` to a .tflite file, rewriting it atomically when it changes.

    Returns:
        the list of fixes (empty: the file was already fine and is left untouched).
    """
    path = Path(path)
    data, fixes = fix_requantization_scales(path)
    if fixes:
        write_bytes(path, data)
    return fixes
