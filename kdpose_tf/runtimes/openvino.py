"""The OpenVINO runner shared by every OpenVINO model the package runs (heatmap teachers, the person
detector): read an IR (``.xml`` + ``.bin``) or ``.onnx`` file with a one-line error, optionally fix its
input shape, compile it for the CPU in float32.

`openvino` is an optional dependency (the "teachers" extra): it is imported only when a model is read.

Example:
    >>> model = read_model("end2end.onnx")                               # doctest: +SKIP
    >>> compiled = compile_model(model, num_threads=2, input_shape=[1, 3, 320, 320])  # doctest: +SKIP
    >>> outputs = run(compiled, x)   # {output name: float32 / int array}   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from kdpose_tf.errors import ModelFileError


_CORE = []


def _core():
    """The process's one `openvino.Core` (made on first use)."""
    if not _CORE:
        try:
            import openvino as ov
        except ImportError:
            raise ModelFileError("OpenVINO models need the `openvino` package: pip install 'kdpose_tf[teachers]'") \
                from None
        _CORE.append(ov.Core())
    return _CORE[0]


def read_model(path):
    """An `openvino.Model` from an IR ``.xml`` or ``.onnx`` file; ModelFileError (a ValueError) naming the file
    and OpenVINO's first message line when it cannot be read."""
    core = _core()
    try:
        return core.read_model(str(path))
    except Exception as e:  # openvino raises RuntimeError subclasses with long native messages
        raise ModelFileError(f"{path}: OpenVINO could not read the model ({str(e).splitlines()[0]})") from None


def input_dims(model, index=0):
    """The model input's dimensions, -1 where dynamic."""
    return [d.get_length() if d.is_static else -1 for d in model.inputs[index].get_partial_shape()]


def compile_model(model, num_threads=None, input_shape=None):
    """Compile `model` (an `openvino.Model`, changed in place by `input_shape`) for the CPU.

    Args:
        model: from `read_model`.
        num_threads: CPU inference threads; None = OpenVINO's choice.
        input_shape: a static shape for the first input (reshapes a dynamic or batched model), or None.

    The precision is pinned to f32: OpenVINO's CPU plugin otherwise picks bf16 where the CPU has it, which
    moved PP-TinyPose's heatmaps by up to 0.05 (peak ~1) against the model's own f32 maths (measured here).
    """
    if input_shape is not None:
        model.reshape({model.inputs[0]: [int(v) for v in input_shape]})
    props = {"INFERENCE_PRECISION_HINT": "f32"}
    if num_threads:
        props["INFERENCE_NUM_THREADS"] = int(num_threads)
    return _core().compile_model(model, "CPU", props)


def output_names(compiled):
    """The compiled model's output names, in output order."""
    return [o.get_any_name() for o in compiled.outputs]


def run(compiled, x):
    """{output name: numpy array} for one input array."""
    result = compiled(np.ascontiguousarray(x))
    return {o.get_any_name(): np.asarray(result[o]) for o in compiled.outputs}
