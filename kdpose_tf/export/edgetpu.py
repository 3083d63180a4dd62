"""Edge TPU profile: a static checker of int8 TFLite models against edgetpu_compiler 16.0.

The Coral Edge TPU runs a model compiled by `edgetpu_compiler` (last public release 16.0,
build 16.0.384591198, 2021). The compiler maps ops to the TPU in graph order and stops at the
first op it cannot map: that op and everything after it run on the CPU. An op is mapped only if
  * it is in Coral's supported-operations list ("TensorFlow models on the Edge TPU",
    https://coral.ai/docs/edgetpu/models-intro/#supported-operations),
  * its *version* is one the compiler's embedded TFLite op resolver knows: the compiler is built
    on the 2021 TFLite runtime and refuses newer versions ("Didn't find op for builtin opcode
    'TRANSPOSE_CONV' version '4'", google-coral/edgetpu#845 with compiler 16.0; #147 for v3 with
    compiler 2.1; the same happens with EXP v2 and RESIZE_NEAREST_NEIGHBOR, #187). The maximum
    versions below are those registered in TFLite's BuiltinOpResolver of that period
    (tensorflow/lite/kernels/register.cc, 2021 mirror nxp-imx/tensorflow-imx), restricted to the
    ops on Coral's list. They are an upper bound: the compiler can still refuse a mapped op for
    size or parameter limits it does not document ("unspecified limitation", #433);
  * every tensor is int8/uint8 quantised (int32 only for biases and shape constants) and every
    shape is static.

`check_edgetpu(path)` applies those rules offline (no compiler needed); `validate_edgetpu_model`
rejects transposed convolutions in the Keras model before conversion: the heatmap head should be
built with `upsample="resize_conv"` (RESIZE_NEAREST_NEIGHBOR + CONV_2D) for the Edge TPU.

Example:
>>> report = check_edgetpu("student_int8.tflite")   # doctest: +SKIP
>>> report.ok, report.first_unsupported             # doctest: +SKIP
(True, None)
>>> print(report.verdict())                          # doctest: +SKIP
Edge TPU ready: all 57 ops map to the Edge TPU (compiler 16.0 rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors

COMPILER_VERSION = "16.0"

# op -> highest version the 16.0 compiler accepts (see module docstring for the sources).
EDGETPU_MAX_VERSIONS = {
    "ADD": 4,
    "AVERAGE_POOL_2D": 3,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9,
    "L2_NORMALIZATION": 2,
    "LOGISTIC": 3,
    "LSTM": 4,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MUL": 5,
    "PACK": 3,
    "PAD": 4,
    "PRELU": 1,
    "QUANTIZE": 3,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "RSQRT": 2,
    "SLICE": 5,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SQUARED_DIFFERENCE": 2,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 6,
    "SUB": 5,
    "SUM": 2,
    "TANH": 3,
    "TRANSPOSE": 5,
    "TRANSPOSE_CONV": 3,
}

_QUANTIZED_TYPES = ("INT8", "UINT8")


@dataclass
class OpCheck:
    index: int
    name: str
    version: int
    max_version: int | None
    supported: bool
    reason: str = ""


@dataclass
class EdgeTPUReport:
    """Result of `check_edgetpu`: one `OpCheck` per op in execution order, plus tensor problems.

    `first_unsupported` is the index of the first op that would not be mapped (everything from it
    on runs on the CPU), or None. `ok` is True when every op maps and every tensor is quantised
    with a static shape.
    """

    ops: list
    tensor_problems: list = field(default_factory=list)

    @property
    def first_unsupported(self):
        for op in self.ops:
            if not op.supported:
                return op.index
        return None

    @property
    def ok(self) -> bool:
        return self.first_unsupported is None and not self.tensor_problems

    @property
    def ops_on_tpu(self) -> int:
        first = self.first_unsupported
        return len(self.ops) if first is None else first

    @property
    def compiler(self) -> str:
        return COMPILER_VERSION

    def table(self) -> str:
        """One aligned line per op: index, op, version, the compiler's highest version, where it runs, why.

        Ops after the first unmapped one run on the CPU even when they are supported (the compiler
        cuts the graph there); their line says so.
        """
        first = self.first_unsupported
        rows = [("#", "op", "version", f"max ({COMPILER_VERSION})", "runs on", "why")]
        for op in self.ops:
            if op.supported and (first is None or op.index < first):
                where, why = "Edge TPU", ""
            elif op.supported:
                where, why = "CPU", f"after op #{first}"
            else:
                where, why = "CPU", op.reason
            rows.append((str(op.index), op.name, str(op.version), "-" if op.max_version is None else str(op.max_version),
                         where, why))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  ---")
        return "\n".join(line.rstrip() for line in lines)

    def verdict(self) -> str:
        """One line: everything maps, or the first op that would fall back to the CPU and why."""
        first = self.first_unsupported
        n = len(self.ops)
        if first is not None:
            op = self.ops[first]
            return (f"NOT Edge TPU ready: {first} of {n} ops map; the first op to fall back to the CPU is "
                    f"#{first} {op.name} v{op.version} ({op.reason}); it and every op after it run on the CPU.")
        if self.tensor_problems:
            return (f"NOT Edge TPU ready: all {n} ops map, but {len(self.tensor_problems)} tensor(s) are not "
                    f"static int8/uint8 (first: {self.tensor_problems[0]}).")
        return f"Edge TPU ready: all {n} ops map to the Edge TPU (compiler {COMPILER_VERSION} rules)."

    def summary(self) -> str:
        """The verdict, the op table and the tensor problems, as printed by `kdpose check-edgetpu`."""
        parts = [self.verdict(), self.table()]
        if self.tensor_problems:
            parts.append("tensor problems:\n" + "\n".join(f"  - {p}" for p in self.tensor_problems))
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {
            "compiler": COMPILER_VERSION,
            "ok": self.ok,
            "first_unsupported": self.first_unsupported,
            "ops": [op.__dict__ for op in self.ops],
            "tensor_problems": list(self.tensor_problems),
        }


def check_edgetpu(tflite) -> EdgeTPUReport:
    """Check a .tflite (path or bytes) against the Edge TPU compiler 16.0 rules.

    Args:
        tflite: path of the model, or its flatbuffer bytes.

    Returns:
        `EdgeTPUReport` (`.ok`, `.first_unsupported`, `.ops`, `.tensor_problems`, `.summary()`).
    """
    ops = model_ops(tflite)
    tensors = model_tensors(tflite)
    checks = []
    for op in ops:
        mx = EDGETPU_MAX_VERSIONS.get(op["name"])
        reasons = []
        if not op["builtin"]:
            reasons.append("custom/Flex op")
        elif mx is None:
            reasons.append("op not supported by the Edge TPU")
        elif op["version"] > mx:
            reasons.append(f"op version {op['version']} > {mx} known to compiler {COMPILER_VERSION}")
        for t in op["inputs"] + op["outputs"]:
            if t < 0:
                continue
            tt = tensors[t]
            if tt["dtype"] in _QUANTIZED_TYPES:
                continue
            if tt["dtype"] == "INT32" and tt["constant"]:
                continue  # biases and shape constants
            reasons.append(f"tensor {tt['name']!r} is {tt['dtype']}, not int8/uint8")
            break
        checks.append(OpCheck(op["index"], op["name"], op["version"], mx, not reasons, "; ".join(reasons)))
    problems = []
    for t in tensors:
        if any(d < 0 for d in t["shape_signature"]):
            problems.append(f"tensor {t['name']!r} has a dynamic shape {t['shape_signature']}")
        if t["dtype"] in _QUANTIZED_TYPES and not t["scale"]:
            problems.append(f"tensor {t['name']!r} is {t['dtype']} without quantization parameters")
        if t["dtype"] not in _QUANTIZED_TYPES and not (t["dtype"] == "INT32" and t["constant"]):
            problems.append(f"tensor {t['name']!r} is {t['dtype']}, not int8/uint8 quantised")
    return EdgeTPUReport(checks, problems)


def _walk_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)
        else:
            yield layer


def validate_edgetpu_model(model):
    """Raise ValueError naming every transposed-convolution layer of `model` (nested models too).

    Compiler 16.0 rejects the TRANSPOSE_CONV versions today's converter emits (v4+), so for the Edge
    TPU the head must upsample with resize-nearest + conv: build `HeatmapHead(upsample="resize_conv")`.
    """
    import keras

    bad = [
        layer.name
        for layer in _walk_layers(model)
        if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv1DTranspose, keras.layers.Conv3DTranspose))
    ]
    if bad:
        raise ValueError(
            f"target='edgetpu': model {model.name!r} has transposed convolution layer(s) {bad}; edgetpu_compiler "
            f"{COMPILER_VERSION} rejects the TRANSPOSE_CONV version the converter emits. Rebuild the head with "
            "upsample='resize_conv' (nearest-neighbour resize + 3x3 conv) and fine-tune / re-distil it."
        )
    return model
