"""Export targets as data: what each target accepts of the variant, refuses of the model, checks in the file.

`export_tflite(..., target=name)` looks its target up in `TARGETS` and asks the entry three things:
before conversion, whether the variant fits (`check_variant`: quantize mode and I/O type) and the
model does (`check_model`: layers the target cannot run, e.g. the Edge TPU's transposed
convolutions); after conversion (and the XNNPACK scale fix), whether the flatbuffer passes the
target's checker (`check_file`). A checker takes the flatbuffer bytes and returns a report with `ok`
and `summary()`; a failing report raises for a strict target (the Edge TPU: a file it cannot map is
no Edge TPU model) and warns for the others (the CPU: LiteRT runs a file XNNPACK refuses on its builtin
kernels, and the sidecar tells the app to create the interpreter without the delegate).

A new target (a delegate or accelerator with its own op rules) is one `ExportTarget` entry here
plus its checker module in `export/` (as `export/edgetpu.py`).

Example:
>>> TARGETS["edgetpu"].check_variant("int8", "uint8")
>>> TARGETS["edgetpu"].check_variant("none", "uint8")
Traceback (most recent call last):
ValueError: target='edgetpu' needs a full-integer model: quantize 'int8' or 'int8-qat' with io_dtype ...
>>> get_target("gpu")
Traceback (most recent call last):
ValueError: target must be one of ('cpu', 'edgetpu'), got 'gpu'
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from kdpose_tf.export.edgetpu import check_edgetpu, validate_edgetpu_model
from kdpose_tf.runtimes.xnnpack import check_xnnpack_compat

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8", "int8-qat")
# How int8-qat sets activation ranges (`kdpose_tf.export.qat.calibrate`); here so the CLI names them without TF.
RANGE_METHODS = ("minmax", "mse")
IO_DTYPES = ("int8", "uint8", "float32")


@dataclass(frozen=True)
class XNNPACKReport:
    """`check_xnnpack_compat`'s result behind the checker interface (`ok`, `summary()`)."""

    result: dict

    @property
    def ok(self) -> bool:
        return self.result["ok"]

    def summary(self) -> str:
        lines = self.result["messages"] + self.result["warnings"]
        head = (f"XNNPACK refuses {len(self.result['over_limit'])} op(s)" if not self.ok
                else "XNNPACK takes every op")
        return "\n".join([head] + [f"  {line}" for line in lines])


def check_xnnpack(tflite) -> XNNPACKReport:
    """The static XNNPACK check (`kdpose_tf.runtimes.xnnpack.check_xnnpack_compat`) of a .tflite path or bytes."""
    return XNNPACKReport(check_xnnpack_compat(tflite))


@dataclass(frozen=True)
class ExportTarget:
    """One export target.

    Attributes:
        name: the `target=` value (and the sidecar's "target").
        quantize: the quantize modes it accepts.
        io_dtypes: the I/O types it accepts (`io_dtype`; float variants always have float32 I/O).
        needs: what those variants are, for the error message ("a full-integer model").
        validate_model: None, or a function of the Keras model that raises ValueError naming the layers
            the target cannot run (run before conversion).
        checker: a function of the converted flatbuffer bytes returning a report with `ok`, `summary()`.
        strict: a failing report raises ValueError (True) or warns (False).
        refusal: the first line of that error / warning.
        float_islands: whether it runs float32 ops inside an int8 model (`export_tflite(float_ops=...)`);
            False: `integer_only` says why, in the error.
    """

    name: str
    checker: Callable
    refusal: str
    quantize: tuple = QUANTIZE_MODES
    io_dtypes: tuple = IO_DTYPES
    needs: str = ""
    validate_model: Callable | None = None
    strict: bool = False
    float_islands: bool = True
    integer_only: str = ""

    def check_variant(self, quantize, io_dtype):
        """ValueError when the target does not take this quantize mode / I/O type."""
        if quantize not in self.quantize or io_dtype not in self.io_dtypes:
            raise ValueError(
                f"target={self.name!r} needs {self.needs}: quantize {' or '.join(map(repr, self.quantize))} with "
                f"io_dtype {' or '.join(map(repr, self.io_dtypes))}, got quantize={quantize!r}, io_dtype={io_dtype!r}"
            )

    def check_model(self, model):
        """Refuse, before conversion, what the target cannot run in `model` (`validate_model`)."""
        if self.validate_model is not None:
            self.validate_model(model)

    def check_file(self, data):
        """Run the checker on the converted bytes; raise (strict) or warn when it fails. Returns the report."""
        report = self.checker(data)
        if not report.ok:
            message = f"{self.refusal}:\n{report.summary()}"
            if self.strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)
        return report


TARGETS = {
    target.name: target
    for target in (
        # LiteRT on the CPU: every variant; XNNPACK (the default CPU path) should take every op. A file it
        # refuses still runs on the builtin kernels, so that is a warning (and the sidecar's advice).
        ExportTarget("cpu", checker=check_xnnpack,
                     refusal="XNNPACK will refuse this model; LiteRT runs it on its builtin kernels (see the sidecar's "
                             "'runtime' advice)"),
        # The Coral Edge TPU: integer ops and I/O only, no TRANSPOSE_CONV, every op in compiler 16.0's table.
        ExportTarget("edgetpu", checker=check_edgetpu, refusal="model is not Edge TPU compatible",
                     quantize=("int8", "int8-qat"), io_dtypes=("int8", "uint8"), needs="a full-integer model",
                     validate_model=validate_edgetpu_model, strict=True, float_islands=False,
                     integer_only="the Edge TPU runs integer ops only"),
    )
}


def get_target(name) -> ExportTarget:
    """The `TARGETS` entry `name`, or a ValueError naming the targets."""
    if not isinstance(name, str) or name not in TARGETS:
        raise ValueError(f"target must be one of {tuple(TARGETS)}, got {name!r}")
    return TARGETS[name]
