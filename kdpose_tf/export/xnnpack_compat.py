"""Quantisation parameters every XNNPACK version accepts: the post-conversion fix.

XNNPACK refuses a quantised conv-like op whose requantisation ratio ``input_scale *
weight_scale[c] / output_scale`` reaches its limit, and leaves ADD / SUB / MUL outside its scale ranges
to the builtin kernels (the rules and the static check: `kdpose_tf.runtimes.xnnpack`). This module
fixes converted files so that every op passes.

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
take (`kdpose_tf.runtimes.xnnpack.ELEMENTWISE_RANGES`). Outside them the delegate does not crash: it
leaves the op to the builtin kernel, which splits the XNNPACK graph and is slower (a 64x48x20 ADD: 0.17 ms builtin vs 0.01 ms in
XNNPACK). Seen after dead ranges again: a sum term whose range collapsed to ~1e-8 (Lite-HRNet's
fuse layers, Dite-HRNet's kernel products, untrained weights). The fix raises a scale, as above:
an output too fine for its inputs (ratio >= 2^8) gets ``max ratio 255``; an input too fine for the
output (ADD / SUB below 2^-10, MUL below 2^-16) is raised to the range's edge, only when this op is
its one reader (other readers would see a coarser tensor). Both lose nothing the op can resolve:
an ADD input below 2^-10 of the output step spans less than a quarter of one output step.
`kdpose_tf.runtimes.xnnpack.find_delegation_issues` lists what is still out of range (`kdpose
check-xnnpack` prints it).

The file is patched in place (the scale vectors and bias buffers keep their sizes), so every other
byte of the converter's flatbuffer is unchanged.

Example:
>>> from kdpose_tf.runtimes.xnnpack import find_requantization_issues     # doctest: +SKIP
>>> find_requantization_issues("student_s0.tflite")[0]["ratio"]          # doctest: +SKIP
367.59
>>> data, fixes = fix_requantization_scales(open("student_s0.tflite", "rb").read())   # doctest: +SKIP
>>> find_requantization_issues(data)                                       # doctest: +SKIP
[]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpose_tf.export.quant_graph import QuantSubgraph
from kdpose_tf.runtimes.flatbuffer import num_subgraphs, read_tflite
from kdpose_tf.runtimes.xnnpack import (
    ELEMENTWISE_RANGES,
    REQUANT_OPS,
    elementwise_ratios,
    op_ratio,
    out_of_range,
    over_limit,
)
from kdpose_tf.utils.io import write_bytes

TARGET_RATIO = 255.0  # what the fix brings an offending op down to (accepted by every op type)

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


def _f32(x):
    return np.asarray(x, dtype=np.float32)


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
    r = op_ratio(op, g.tensors)
    if r is None or not over_limit(op["name"], r[0]):
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
            bad = None if plan is not None else out_of_range(op, g.tensors)
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
            after = op_ratio(op, g.tensors)[0]
        else:  # the ratio that was out of range: MUL's product, the raised input's, or the largest
            now = elementwise_ratios(op, g.tensors)
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
    for sg in range(num_subgraphs(buf)):
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
