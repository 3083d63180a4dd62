"""Which LiteRT CPU kernels run a model: the XNNPACK delegate (default) or the builtin kernels.

`ai_edge_litert.interpreter.Interpreter` applies the XNNPACK delegate by default. XNNPACK refuses
quantised ops whose requantisation scale is over its limit (`kdpose_tf.export.xnnpack_compat`);
ai-edge-litert 1.4-2.1 and TF's interpreter report that as ``RuntimeError: failed to create
XNNPACK runtime``, while 2.2 and 2.3 (measured here, x86-64) abort the whole process with
``free(): double free detected in tcache 2`` inside `allocate_tensors()`. `export_tflite` fixes
the cause in every int8 export, and `check_xnnpack_compat` finds it statically in any file.

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

from kdpose_tf.export.xnnpack_compat import check_xnnpack_compat

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
            "(see kdpose_tf.export.delegates)",
            RuntimeWarning,
            stacklevel=4,
        )
    return check["xnnpack"] == "ok"
