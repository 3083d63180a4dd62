"""What LiteRT's XNNPACK delegate accepts, and which CPU kernels run a model: XNNPACK or the builtin ones.

XNNPACK (LiteRT's default CPU path, Android's default) computes one requantisation scale per
output channel of a quantised matrix-multiply-like op, ``input_scale * weight_scale[c] /
output_scale``, in float32, and refuses to create the operator when it is ``>= 256``
(XNNPACK `src/operators/convolution-nhwc.c`, `deconvolution-nhwc.c`, `fully-connected-nc.c`) or,
for a batch matmul with constant right-hand side, ``> 255`` (`batch-matrix-multiply-nc.c`). The op
types with this check: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV and BATCH_MATMUL.
The LiteRT delegate does not check this while partitioning, so the refusal surfaces when the XNNPACK
runtime is built: ai-edge-litert 1.4-2.1 and TF's interpreter report it as ``RuntimeError: failed to
create XNNPACK runtime``, while 2.2 and 2.3 (measured here, x86-64) abort the whole process with
``free(): double free detected in tcache 2`` inside `allocate_tensors()` (google/XNNPACK#3693,
tensorflow/tensorflow#58376). Int8 ADD / SUB / MUL are delegated only inside the scale ranges of
XNNPACK's elementwise operators (`src/operators/binary-elementwise-nd.c`): ADD and SUB need every
``input_scale / output_scale`` in [2^-10, 2^8), MUL needs ``input1_scale * input2_scale /
output_scale`` in [2^-16, 2^8); outside them the op runs on the slower builtin kernel.
`check_xnnpack_compat` reads both from the flatbuffer; `export_tflite` fixes the causes in every int8
export (`kdpose_tf.export.xnnpack_compat`).

Two layers decide which kernels run a file, because a native abort cannot be caught in Python:
1. the static check (`check_xnnpack_compat`, no interpreter): any op over the limit means the
   builtin kernels, with a warning naming the ops;
2. otherwise `xnnpack_check` runs the delegate once in a child process. It stays as a safety net
   for files the static check passes (files from other tools, refusals of a future LiteRT the
   static check does not model): it costs one ~0.4 s child per file (cached), and the static check
   and the child agreed on every file tried (see tests/export/test_xnnpack_compat.py and
   benchmarks/xnnpack_zoo.py). Its verdict: "ok"; "crashed" (the child died of a signal);
   "refused" (the delegate raised, e.g. "failed to create XNNPACK runtime", while the builtin
   kernels run the file); "failed" (the file does not run on the builtin kernels either).
`make_interpreter(..., xnnpack="auto")` uses the builtin kernels, with a warning, after "crashed"
or "refused". Exports record the result in their sidecar (`runtime`), so an app author knows
before shipping whether to create the interpreter without the delegate.

Example:
>>> xnnpack_check("student_int8.tflite")               # doctest: +SKIP
{'xnnpack': 'ok', 'litert_version': '2.3.0'}
>>> interpreter, delegate = make_interpreter("student_int8.tflite")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors, num_subgraphs, read_tflite

XNNPACK_MODES = ("auto", True, False)
XNNPACK_VERDICTS = ("ok", "crashed", "refused", "failed")

# The child: load with the default resolver (XNNPACK), allocate, run once on zeros; when that
# raises, try the builtin kernels to tell a delegate refusal from a file that does not run at all.
_PROBE = """
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

def run(**kwargs):
    it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]), **kwargs)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()

def text(error):
    return (type(error).__name__ + ": " + str(error)).replace(chr(10), " ")

try:
    run()
    verdict = {"xnnpack": "ok"}
except Exception as xnnpack_error:
    try:
        run(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        verdict = {"xnnpack": "refused", "detail": text(xnnpack_error)}
    except Exception as builtin_error:
        verdict = {"xnnpack": "failed", "detail": text(builtin_error)}
print(json.dumps(verdict))
"""

_CACHE: dict = {}


def litert_version() -> str:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # not installed as a distribution (e.g. vendored): unknown
        return "unknown"


def xnnpack_check(path, num_threads: int = 1, timeout: float = 300.0) -> dict:
    """Run `path` once with LiteRT's default XNNPACK delegate in a child process.

    Args:
        path: a .tflite file.
        num_threads: interpreter threads in the child (default 1).
        timeout: seconds before the child is declared hung (default 300).

    Returns:
        {"xnnpack": "ok" | "crashed" | "refused" | "failed" (see the module doc), "litert_version":
        str, and unless "ok" a "detail": the error the child reported, or its exit status and last
        stderr line}. Cached per file content (path, size, modification time).
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, num_threads)
    if key in _CACHE:
        return dict(_CACHE[key])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path), str(num_threads)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, out, err = None, "", f"no answer within {timeout:.0f} s"
    result = {"xnnpack": "ok", "litert_version": litert_version()}
    verdict = _last_json_line(out) if code == 0 else None
    if verdict is not None and verdict.get("xnnpack") in XNNPACK_VERDICTS:
        result.update(verdict)
    else:
        lines = [line for line in (err or "").strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        # A negative code is a signal (abort, segfault): the native crash this module exists for.
        # A positive one is a Python error in the child outside the probe (e.g. no ai_edge_litert).
        result["xnnpack"] = "crashed" if code is None or code < 0 else "failed"
        result["detail"] = f"exit status {code}: {last}"
    if "detail" in result:
        result["detail"] = result["detail"][:300]
    _CACHE[key] = dict(result)
    return result


def _last_json_line(text):
    for line in reversed((text or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def make_interpreter(path, num_threads: int = 1, xnnpack="auto"):
    """An allocated `ai_edge_litert` Interpreter for `path` and the kernels it runs on.

    Args:
        path: a .tflite file.
        num_threads: CPU threads (default 1).
        xnnpack: "auto" (default: the XNNPACK delegate unless the static check finds an op over its
            requantisation limit or `xnnpack_check` sees it crash on or refuse this file; then the
            builtin kernels with a warning), True (always the delegate: on LiteRT 2.2/2.3 a model
            it refuses aborts this process) or False (always the builtin kernels).

    Returns:
        (interpreter, "xnnpack" | "builtin").
    """
    if xnnpack not in XNNPACK_MODES:
        raise ValueError(f"xnnpack must be one of {XNNPACK_MODES}, got {xnnpack!r}")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    use = xnnpack
    if xnnpack == "auto":
        use = _auto_uses_xnnpack(path, num_threads)
    if use:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    else:
        interpreter = Interpreter(
            model_path=str(path), num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    interpreter.allocate_tensors()
    return interpreter, ("xnnpack" if use else "builtin")


def _auto_uses_xnnpack(path, num_threads):
    """The "auto" decision: static check first (no child needed), then the child-process probe."""
    static = check_xnnpack_compat(path)
    if not static["ok"]:
        warnings.warn(
            f"{path}: XNNPACK refuses {len(static['over_limit'])} op(s) of this model "
            f"({'; '.join(static['messages'][:3])}); running it with the builtin CPU kernels instead "
            "(re-export it with kdpose_tf.export.tflite.export_tflite, or fix it with "
            "kdpose_tf.export.xnnpack_compat.make_xnnpack_compatible)",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    check = xnnpack_check(path, num_threads)
    if check["xnnpack"] in ("crashed", "refused"):
        what = "crashed on" if check["xnnpack"] == "crashed" else "refused"
        warnings.warn(
            f"{path}: LiteRT {check['litert_version']}'s XNNPACK delegate {what} this model "
            f"({check['detail']}); running it with the builtin CPU kernels instead "
            "(see kdpose_tf.runtimes.xnnpack)",
            RuntimeWarning,
            stacklevel=4,
        )
    return check["xnnpack"] == "ok"


# ------------------------------------------------------------------ the static check
REQUANTIZATION_LIMIT = 256.0  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV: refused when >= this
BATCH_MATMUL_LIMIT = 255.0  # BATCH_MATMUL (constant B): refused when > this
ACTIVATION_TYPES = ("INT8", "UINT8")
# op name -> positions of (activation input, weights, bias or None) in the op's inputs
REQUANT_OPS = {
    "CONV_2D": (0, 1, 2),
    "DEPTHWISE_CONV_2D": (0, 1, 2),
    "FULLY_CONNECTED": (0, 1, 2),
    "TRANSPOSE_CONV": (2, 1, 3),
    "BATCH_MATMUL": (0, 1, None),
}
# int8 elementwise ops XNNPACK delegates only inside [low, high) of their scale ratio (see the module doc)
ELEMENTWISE_RANGES = {"ADD": (2.0**-10, 256.0), "SUB": (2.0**-10, 256.0), "MUL": (2.0**-16, 256.0)}


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def op_ratio(op, tensors):
    """(max requantisation ratio in float32 as XNNPACK computes it, input, weight, output scales) or None."""
    pos = REQUANT_OPS.get(op["name"])
    if pos is None or max(pos[0], pos[1]) >= len(op["inputs"]) or not op["outputs"]:
        return None
    ix, iw = op["inputs"][pos[0]], op["inputs"][pos[1]]
    if ix < 0 or iw < 0:
        return None
    x, w, y = tensors[ix], tensors[iw], tensors[op["outputs"][0]]
    if x["dtype"] not in ACTIVATION_TYPES or y["dtype"] not in ACTIVATION_TYPES or w["dtype"] != "INT8":
        return None  # float or hybrid op: no requantisation
    if not (x["scale"] and w["scale"] and y["scale"]):
        return None
    ratios = _f32(x["scale"][0]) * _f32(w["scale"]) / _f32(y["scale"][0])
    return float(ratios.max()), x["scale"][0], float(max(w["scale"])), y["scale"][0]


def over_limit(op_name, ratio):
    return ratio > BATCH_MATMUL_LIMIT if op_name == "BATCH_MATMUL" else ratio >= REQUANTIZATION_LIMIT


def all_ops(source):
    """(subgraph index, its tensors, op) for every op of a .tflite path or bytes, in execution order."""
    buf = read_tflite(source)
    for sg in range(num_subgraphs(buf)):
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
    return _requantization_issues(all_ops(source))


def _requantization_issues(ops):
    """`find_requantization_issues` over (subgraph, tensors, op) triples (`all_ops`)."""
    issues = []
    for sg, tensors, op in ops:
        r = op_ratio(op, tensors)
        if r is None or not over_limit(op["name"], r[0]):
            continue
        limit = BATCH_MATMUL_LIMIT if op["name"] == "BATCH_MATMUL" else REQUANTIZATION_LIMIT
        issues.append({
            "subgraph": sg, "op_index": op["index"], "op": op["name"],
            "tensor": tensors[op["outputs"][0]]["name"], "ratio": r[0], "limit": limit,
            "input_scale": r[1], "weight_scale": r[2], "output_scale": r[3],
        })
    return issues


def elementwise_ratios(op, tensors):
    """[(ratio as XNNPACK computes it in float32, input position or None for MUL's product)], or None
    when `op` is not an int8 ADD / SUB / MUL with per-tensor scales."""
    if op["name"] not in ELEMENTWISE_RANGES or len(op["inputs"]) != 2 or not op["outputs"]:
        return None
    ins = [tensors[t] for t in op["inputs"] if t >= 0]
    out = tensors[op["outputs"][0]]
    if len(ins) != 2 or any(t["dtype"] not in ACTIVATION_TYPES or len(t["scale"]) != 1 for t in ins + [out]):
        return None
    so = _f32(out["scale"][0])
    if op["name"] == "MUL":
        return [(float(_f32(ins[0]["scale"][0]) * _f32(ins[1]["scale"][0]) / so), None)]
    return [(float(_f32(t["scale"][0]) / so), i) for i, t in enumerate(ins)]


def out_of_range(op, tensors):
    """[(ratio, input position or None)] of `op`'s ratios outside XNNPACK's range (empty: delegated)."""
    low, high = ELEMENTWISE_RANGES.get(op["name"], (0.0, np.inf))
    return [(r, i) for r, i in (elementwise_ratios(op, tensors) or []) if not low <= r < high]


def find_delegation_issues(source) -> list:
    """Every int8 ADD / SUB / MUL that XNNPACK leaves to the builtin kernels because of its scales.

    Not a crash (the delegate checks these while partitioning): the op runs on the slower builtin
    kernel and splits the XNNPACK graph in two. Returns one dict per op {"subgraph", "op_index",
    "op", "tensor" (output name), "ratio" (the first one out of range), "range" ([low, high))}.
    """
    return _delegation_issues(all_ops(source))


def _delegation_issues(ops):
    """`find_delegation_issues` over (subgraph, tensors, op) triples (`all_ops`)."""
    issues = []
    for sg, tensors, op in ops:
        bad = out_of_range(op, tensors)
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
    """Static XNNPACK check for `kdpose check-xnnpack`, the sidecar and `make_interpreter` (no interpreter,
    no child process).

    Returns:
        {"ok": bool (no op XNNPACK refuses), "over_limit": `find_requantization_issues(source)`,
        "messages": one `format_issue` line per op over the limit, "not_delegated":
        `find_delegation_issues(source)` (slower, not fatal), "warnings": one line per such op}.
    """
    ops = list(all_ops(source))  # the file is read and parsed once for both checks
    issues, slow = _requantization_issues(ops), _delegation_issues(ops)
    return {"ok": not issues, "over_limit": issues, "messages": [format_issue(i) for i in issues],
            "not_delegated": slow, "warnings": [format_issue(i) for i in slow]}
