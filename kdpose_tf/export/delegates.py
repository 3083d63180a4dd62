"""Which LiteRT CPU kernels run a model: the XNNPACK delegate (default) or the builtin kernels.

`ai_edge_litert.interpreter.Interpreter` applies the XNNPACK delegate by default. In LiteRT 2.2
and 2.3 (measured here, x86-64) that delegate aborts the whole process with
``free(): double free detected in tcache 2`` inside `allocate_tensors()` on some full-int8
models: untrained or trained Dite-HRNet students, with or without PSA, neck or transposed convs,
depending on the weights (the same architecture with other random weights may run). The
builtin kernels (`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`) run the same flatbuffers
correctly. A native abort cannot be caught in Python, so `xnnpack_check` runs the delegate in a
child process, and `make_interpreter(..., xnnpack="auto")` falls back to the builtin kernels,
with a warning, when the child dies. Exports record the result in their sidecar (`runtime`), so
an app author knows before shipping whether to create the interpreter without the delegate.

Example:
>>> xnnpack_check("student_int8.tflite")               # doctest: +SKIP
{'xnnpack': 'ok', 'litert_version': '2.3.0'}
>>> interpreter, delegate = make_interpreter("student_int8.tflite")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

XNNPACK_MODES = ("auto", True, False)

# The child: load with the default resolver (XNNPACK), allocate, run once on zeros.
_PROBE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
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
        {"xnnpack": "ok" | "crashed" | "failed", "litert_version": str, and for a failure
        "detail": the child's exit status and last stderr line}. Cached per file content
        (path, size, modification time).
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
        code, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        code, err = None, f"no answer within {timeout:.0f} s"
    result = {"xnnpack": "ok", "litert_version": litert_version()}
    if code != 0:
        lines = [line for line in (err or "").strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        # A negative code is a signal (abort, segfault): the native crash this module exists for.
        # A positive one is a Python error in the child (e.g. the model does not load at all).
        result["xnnpack"] = "crashed" if code is None or code < 0 else "failed"
        result["detail"] = f"exit status {code}: {last}"[:300]
    _CACHE[key] = dict(result)
    return result


def make_interpreter(path, num_threads: int = 1, xnnpack="auto"):
    """An allocated `ai_edge_litert` Interpreter for `path` and the kernels it runs on.

    Args:
        path: a .tflite file.
        num_threads: CPU threads (default 1).
        xnnpack: "auto" (default: the XNNPACK delegate unless `xnnpack_check` saw it crash on this
            file, then the builtin kernels with a warning), True (always the delegate: a model it
            crashes on aborts this process) or False (always the builtin kernels).

    Returns:
        (interpreter, "xnnpack" | "builtin").
    """
    if xnnpack not in XNNPACK_MODES:
        raise ValueError(f"xnnpack must be one of {XNNPACK_MODES}, got {xnnpack!r}")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    use = xnnpack
    if xnnpack == "auto":
        check = xnnpack_check(path, num_threads)
        use = check["xnnpack"] == "ok"
        if check["xnnpack"] == "crashed":
            warnings.warn(
                f"{path}: LiteRT {check['litert_version']}'s XNNPACK delegate crashed on this model "
                f"({check['detail']}); running it with the builtin CPU kernels instead "
                "(see kdpose_tf.export.delegates)",
                RuntimeWarning,
                stacklevel=3,
            )
    if use:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    else:
        interpreter = Interpreter(
            model_path=str(path), num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    interpreter.allocate_tensors()
    return interpreter, ("xnnpack" if use else "builtin")
