"""The sidecar JSON shipped next to every exported model (`<model>.json`).

Everything an app needs to run the model without Python: input size and dtype, the pixel
convention (raw 0-255 RGB: normalisation is inside the graph), the (scale, zero_point) of the
input and output tensors, heatmap size and stride, the joint names, skeleton edges and flip
pairs, the decoding recipe (per-channel argmax, a quarter-pixel shift towards the higher
neighbour, times the stride; the SimpleBaseline / MMPose "MSRAHeatmap" post-processing), and the video
tracker's settings (`kdpose_tf.tracking.TRACKING`: crop margins, when the person is lost, the One Euro
filter), so an app follows a person with the values the desktop pipeline was measured with.

TFLite metadata (`tflite-support`'s MetadataWriter) would embed similar information in the
flatbuffer, but `pip install tflite-support` (0.4.4, the last release) would downgrade protobuf to
3.20.3, which TensorFlow 2.21 cannot use (checked with `pip install --dry-run`), so it is not a
dependency and the JSON sidecar is the single source of truth.
The Android sample (`tflite/android`) reads exactly these keys; in Python the runner reads them back
(`kdpose_tf.runtimes.litert.read_sidecar`, `TFLiteRunner.sidecar`).

Example:
>>> info = make_sidecar("student_int8.tflite", keypoint_set=COCO17)   # doctest: +SKIP
>>> info["input"]["dtype"], info["heatmap"]["stride"]                  # doctest: +SKIP
('uint8', 4)
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.runtimes.flatbuffer import model_io, model_ops, model_tensors, read_tflite
from kdpose_tf.runtimes.xnnpack import check_xnnpack_compat, xnnpack_check
from kdpose_tf.tracking import TRACKING
from kdpose_tf.utils.io import write_json

SIDECAR_VERSION = 1

DECODING = {
    "method": "argmax_quarter_offset",
    "steps": [
        "for each joint k: (px, py) = argmax of heatmap[:, :, k]; score = its value",
        "if 0 < px < w-1: px += 0.25 * sign(heatmap[py, px+1, k] - heatmap[py, px-1, k]); same for py",
        "input pixel x = px * stride_x, y = py * stride_y (stride = input size / heatmap size)",
        "map back to the frame with the inverse of the crop's affine transform",
    ],
}


def _tensor_entry(t):
    dtype = t["dtype"].lower()
    entry = {"name": t["name"], "shape": t["shape"], "dtype": dtype}
    if t["scale"]:
        entry["quantization"] = {"scale": t["scale"][0], "zero_point": t["zero_point"][0] if t["zero_point"] else 0}
    else:
        entry["quantization"] = None
    return entry


def float_op_counts(source) -> dict:
    """{op name: count} of the ops of a .tflite (path or bytes) that compute in float32 (DEQUANTIZE aside)."""
    tensors = model_tensors(source)
    counts = {}
    for op in model_ops(source):
        if op["name"] != "DEQUANTIZE" and any(tensors[t]["dtype"] == "FLOAT32" for t in op["outputs"]):
            counts[op["name"]] = counts.get(op["name"], 0) + 1
    return dict(sorted(counts.items()))


def make_sidecar(tflite_path, keypoint_set=None, stride=None, quantize=None, target="cpu", extra=None,
                 runtime_check=True, xnnpack_fixes=None, data=None, model_file=None, float_ops=None) -> dict:
    """Build the sidecar dict of an exported model from its own tensor details.

    Args:
        tflite_path: the exported .tflite (read, not modified; with `data`, only the runtime check runs
            it, so it may be the temporary file the export is about to move into place).
        keypoint_set: `KeypointSet` of the K heatmap channels (names / skeleton / flip pairs), or None.
        stride: input pixels per heatmap pixel; default: input height / heatmap height.
        quantize: the export variant ("none", "int8", ...), recorded as is.
        target: "cpu" or "edgetpu".
        extra: dict merged in last (e.g. {"model": "lshm2_tiny", "dataset": "coco"}).
        runtime_check: run the model once with LiteRT's XNNPACK delegate in a child process and
            record the outcome under "runtime" (default True; see `kdpose_tf.runtimes.xnnpack`).
        xnnpack_fixes: the list `kdpose_tf.export.xnnpack_compat.fix_requantization_scales` returned
            for this file (recorded as is), or None when the pass did not run.
        data: the model's bytes, when the caller holds them (read from `tflite_path` otherwise).
        model_file: the model's file name recorded in the sidecar (default: `tflite_path`'s).
        float_ops: the op types an integer export kept in float32 (`export_tflite(float_ops=...)`; () for
            full integer), recorded with the float ops the file holds; None (float variants): not recorded.

    Returns:
        dict with keys: format_version, model_file, model_sha256 (of the bytes described: a reader
        can tell a sidecar from a model it does not describe), variant, target, input, output, normalization,
        heatmap, keypoints, decoding, tracking, float_ops (with `float_ops`: {"requested": the op types,
        "in_file": `float_op_counts`: {op: count} of the ops computing in float32, DEQUANTIZE aside; a CPU-only
        model when not empty}), xnnpack_compat ({"ok", "over_limit": ops XNNPACK refuses,
        from the static check; "fixes": `xnnpack_fixes`; "not_delegated": ADD / SUB / MUL XNNPACK leaves to
        the builtin kernels}), runtime (with `runtime_check`;
        {"litert_version", "xnnpack": "ok" | "crashed" | "refused" | "failed", "detail" unless ok,
        "advice"}) and the `extra` keys.
    """
    tflite_path = Path(tflite_path)
    data = read_tflite(tflite_path if data is None else data)
    tensors = model_tensors(data)
    io = model_io(data)
    if len(io["inputs"]) != 1:
        raise ValueError(f"{tflite_path}: expected 1 input tensor, got {len(io['inputs'])}")
    inp = tensors[io["inputs"][0]]
    out = tensors[io["outputs"][-1]]
    if len(inp["shape"]) != 4 or len(out["shape"]) != 4:
        raise ValueError(f"{tflite_path}: expected 4-D input and output, got {inp['shape']} and {out['shape']}")
    _, H, W, _ = inp["shape"]
    _, h, w, K = out["shape"]
    if isinstance(keypoint_set, str):
        keypoint_set = get_keypoint_set(keypoint_set)
    if keypoint_set is not None and keypoint_set.num_keypoints != K:
        raise ValueError(
            f"keypoint_set {keypoint_set.name!r} has {keypoint_set.num_keypoints} joints but the model outputs {K} heatmaps"
        )
    if stride is None:
        stride = H // h if h else None
    info = {
        "format_version": SIDECAR_VERSION,
        "model_file": model_file or tflite_path.name,
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "variant": quantize,
        "target": target,
        "input": {**_tensor_entry(inp), "height": H, "width": W, "layout": "NHWC", "color": "RGB"},
        "output": _tensor_entry(out),
        "normalization": {
            "description": "raw 0-255 RGB; the normalisation is the model's first layer (kdpose_tf backbones: x / 127.5 - 1; "
                           "imported models: their own mean / std)",
            "in_graph": True,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "integer_input": "q = clamp(round(pixel / scale + zero_point)) with input.quantization",
        },
        "heatmap": {"height": h, "width": w, "num_keypoints": K, "stride": stride,
                    "stride_xy": [W / w, H / h],
                    "dequantize": "value = (q - zero_point) * scale with output.quantization"},
        "keypoints": None,
        "decoding": DECODING,
        "tracking": copy.deepcopy(TRACKING),
    }
    if keypoint_set is not None:
        info["keypoints"] = {
            "set": keypoint_set.name,
            "names": list(keypoint_set.names),
            "skeleton": [list(e) for e in keypoint_set.skeleton],
            "flip_pairs": [list(p) for p in keypoint_set.flip_pairs],
        }
    if float_ops is not None:
        info["float_ops"] = {"requested": list(float_ops), "in_file": float_op_counts(data)}
    static = check_xnnpack_compat(data)
    info["xnnpack_compat"] = {"ok": static["ok"], "over_limit": static["over_limit"], "fixes": xnnpack_fixes,
                              "not_delegated": static["not_delegated"]}
    if runtime_check:
        runtime = xnnpack_check(tflite_path)
        runtime["advice"] = _runtime_advice(runtime, static)
        info["runtime"] = runtime
    if extra:
        info.update(extra)
    return info


def write_sidecar(tflite_path, path=None, **kwargs) -> Path:
    """Write `make_sidecar(tflite_path, **kwargs)` atomically to `path` (default `<model>.json`)."""
    tflite_path = Path(tflite_path)
    path = Path(path) if path is not None else tflite_path.with_suffix(".json")
    write_json(path, make_sidecar(tflite_path, **kwargs))
    return path


_DISABLE_XNNPACK = ("create the interpreter without the XNNPACK delegate (Python: OpResolverType."
                    "BUILTIN_WITHOUT_DEFAULT_DELEGATES; Android: InterpreterApi.Options().setUseXNNPACK(false))")


def _runtime_advice(runtime, static=None):
    """What to tell the app developer about the interpreter, from an `xnnpack_check` result and,
    when given, the static `check_xnnpack_compat` result of the same file."""
    if static is not None and not static["ok"]:
        return (f"{_DISABLE_XNNPACK}: XNNPACK refuses {len(static['over_limit'])} op(s) (see xnnpack_compat; "
                "LiteRT 2.2/2.3 abort the process, others fail to load), or re-export with kdpose_tf")
    if runtime["xnnpack"] == "ok":
        return "default interpreter options (XNNPACK delegate) are fine"
    if runtime["xnnpack"] == "crashed":
        return f"{_DISABLE_XNNPACK}: the delegate crashed the process on this model"
    if runtime["xnnpack"] == "refused":
        return f"{_DISABLE_XNNPACK}: the delegate refused this model (see 'detail'); the builtin kernels run it"
    return ("the model could not be run for the check (see 'detail'), with or without the XNNPACK delegate: "
            "load the file with ai_edge_litert to see the error")
