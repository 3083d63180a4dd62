"""A quiet `kdpose` command: TensorFlow's native start-up and converter log lines kept off the terminal.

TensorFlow writes INFO lines from C++ that no Python logger sees: the oneDNN notice and the
absl preamble ("All log messages before absl::InitializeLog() ...") when its libraries load,
the CPU-feature notice, SavedModel-reader and MLIR lines, and the TFLite converter's
"fully_quantize: ..." line. `TF_CPP_MIN_LOG_LEVEL=2` stops most of them, but only when it is set
before TensorFlow loads; the oneDNN notice and the converter line ignore it. So the command line
sets it before anything imports Keras, and runs the two places that print regardless (loading
TensorFlow, running the converter) with the process's stderr written to a temporary file, then
writes back every line that is not one of those INFO lines: errors and warnings still show.

The package imports TensorFlow (through Keras) before `kdpose_tf.cli.main` runs, so the decision
is taken when `kdpose_tf` is imported, from the command line of the process: the `kdpose` console
script or `python -m kdpose_tf.cli.main`, without `--verbose`. Library users keep TensorFlow's
own defaults; nothing here changes numerics (oneDNN stays on).

>>> is_kdpose_command(["/venv/bin/kdpose", "presets"], [])
True
>>> is_kdpose_command(["-m"], ["python", "-m", "kdpose_tf.cli.main", "presets"])
True
>>> is_kdpose_command(["train.py"], ["python", "train.py"])
False
>>> print("".join(native_info_removed(
...     "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
...     "I0000 00:00:1796157511.907786    4668 port.cc:153] oneDNN custom operations are on.\\n"
...     "fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: UINT8\\n"
...     "E0000 00:00:1796157511.907786    4668 foo.cc:1] a real error\\n")))
E0000 00:00:1796157511.907786    4668 foo.cc:1] a real error
<BLANKLINE>
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
import tempfile

# environment read by TensorFlow's C++ logging when its libraries load (2: errors only)
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
CLI_MODULES = ("kdpose_tf.cli.main", "kdpose_tf.cli")
CLI_SCRIPTS = ("kdpose", "kdpose.exe", "kdpose-script.py")

# native INFO lines: absl's "I<mmdd> <time> <thread> <file>:<line>] ...", its preamble, the converter's line
_INFO_LINE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ [^\s\]]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|fully_quantize: \d+, inference_type: )"
)

_quiet = False


def is_quiet() -> bool:
    """Whether native INFO lines are being kept off stderr (the `kdpose` command without --verbose)."""
    return _quiet


def set_quiet(value: bool) -> bool:
    """Turn the quiet mode on or off; returns the previous value (`kdpose_tf.cli.main.main` sets it per command)."""
    global _quiet
    previous, _quiet = _quiet, bool(value)
    if _quiet:
        for key, val in QUIET_ENV.items():
            os.environ.setdefault(key, val)
    return previous


def is_kdpose_command(argv=None, orig_argv=None) -> bool:
    """Whether this process runs the `kdpose` command line (console script or `python -m kdpose_tf.cli.main`)."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(str(argv[0])) in CLI_SCRIPTS:
        return True
    args = list(orig_argv)
    return any(a == "-m" and i + 1 < len(args) and args[i + 1] in CLI_MODULES for i, a in enumerate(args))


def native_info_removed(text: str) -> list:
    """The lines of `text` (with their line ends) that are not native INFO lines (see the module docstring)."""
    return [line for line in text.splitlines(keepends=True) if not _INFO_LINE.match(line)]


@contextlib.contextmanager
def native_info_dropped():
    """Run the block with file descriptor 2 in a temporary file, then write back all but native INFO lines.

    A no-op unless the quiet mode is on. Python's own `sys.stderr` output in the block is kept
    (it goes through the same descriptor and is written back after the block, in order).
    """
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = native_info_removed(capture.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def drops_native_info(fn):
    """Decorator: run `fn` under `native_info_dropped` (used on the TFLite converter's entry point)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with native_info_dropped():
            return fn(*args, **kwargs)

    return wrapper


def quiet_cli_start(argv=None, orig_argv=None) -> bool:
    """Called first by `kdpose_tf/__init__.py`: for the `kdpose` command without --verbose, turn the
    quiet mode on and load Keras (and TensorFlow with it) with its start-up INFO lines dropped.

    Returns whether the quiet mode was turned on.
    """
    argv = sys.argv if argv is None else argv
    if not is_kdpose_command(argv, orig_argv) or "--verbose" in argv[1:]:
        return False
    set_quiet(True)
    with native_info_dropped():
        importlib.import_module("keras")
    return True
