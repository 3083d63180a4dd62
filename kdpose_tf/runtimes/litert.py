"""Run LiteRT (TFLite) models with the `ai_edge_litert` interpreter.

`TFLiteRunner` is the predict function the evaluator, the teachers and the benchmarks use for
.tflite models: it takes float32 RGB images in [0, 255] of shape (B, H, W, 3), quantises them with the
input tensor's (scale, zero_point) where the model has int8/uint8 input, runs the interpreter
once per image (exported models have batch 1) and dequantises the heatmaps. The XNNPACK delegate
runs it unless `kdpose_tf.runtimes.xnnpack` finds that it would refuse or crash on the file; the
flatbuffer itself is read by `kdpose_tf.runtimes.flatbuffer`.

Example:
>>> runner = TFLiteRunner("student_int8.tflite", num_threads=2)   # doctest: +SKIP
>>> heatmaps = runner(images)                                     # doctest: +SKIP
>>> [op["name"] for op in runner.ops()][:3]                        # doctest: +SKIP
['QUANTIZE', 'CONV_2D', 'DEPTHWISE_CONV_2D']
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from kdpose_tf.errors import ModelFileError
from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors, read_tflite
from kdpose_tf.runtimes.xnnpack import make_interpreter


def read_sidecar(tflite_path) -> dict | None:
    """The sidecar ``<model>.json`` that `kdpose export` writes beside `tflite_path` (`kdpose_tf.export.sidecar`;
    None when there is none), checked against the model: a sidecar
    whose `model_sha256` is not the file's (an export interrupted between its two renames, or
    another model copied over) is a ModelFileError rather than a wrong input type or joint list."""
    tflite_path = Path(tflite_path)
    path = tflite_path.with_suffix(".json")
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: the sidecar of {tflite_path.name} is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise ModelFileError(f"{path}: the sidecar of {tflite_path.name} is not a JSON object")
    digest = info.get("model_sha256")
    if digest is not None and digest != hashlib.sha256(tflite_path.read_bytes()).hexdigest():
        raise ModelFileError(f"{path} describes another model than {tflite_path} (model_sha256 differs): an export "
                             "was interrupted between writing the two, or one was replaced; export again")
    return info


def quantize(x, dtype, scale, zero_point):
    """float -> integer with round-half-away-from... (numpy rint) and saturation to the dtype."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class TFLiteRunner:
    """Callable wrapper of a single-input, single-output pose TFLite model.

    Args:
        path: the .tflite file.
        num_threads: interpreter CPU threads (default 1).
        xnnpack: "auto" (default), True or False: whether the XNNPACK delegate runs the model, see
            `kdpose_tf.runtimes.xnnpack.make_interpreter` ("auto" checks in a child process that the
            delegate does not crash on this file and otherwise uses the builtin kernels).
            `self.delegate` says which ran: "xnnpack" or "builtin".

    Call with float32 images (B, H, W, 3) in [0, 255] (or one image (H, W, 3)); returns float32
    heatmaps (B, h, w, K). Integer inputs are quantised with the input tensor's parameters and
    integer outputs dequantised with the output tensor's parameters.

    Example:
    >>> runner = TFLiteRunner("model.tflite")          # doctest: +SKIP
    >>> runner(np.zeros((2, 64, 64, 3), np.float32)).shape   # doctest: +SKIP
    (2, 16, 16, 17)
    """

    def __init__(self, path, num_threads: int = 1, xnnpack="auto"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {path}")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        read_tflite(path)  # a truncated file is a clear error, not a crash in the delegate check
        self.path = path
        self.num_threads = num_threads
        self.interpreter, self.delegate = make_interpreter(path, num_threads=num_threads, xnnpack=xnnpack)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected a model with 1 input, got {len(inputs)}")
        self._input = inputs[0]
        self._output = outputs[-1]

    @property
    def input_details(self) -> dict:
        return self._input

    @property
    def output_details(self) -> dict:
        return self._output

    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self._input["shape"])

    @property
    def input_size(self) -> tuple:
        """(height, width) of the model input."""
        return self.input_shape[1], self.input_shape[2]

    def invoke_raw(self, x):
        """Set the (already typed) input, invoke, return the raw output tensor (a copy)."""
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()

    def _prepare(self, image):
        dtype = self._input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zp = self._input["quantization"]
            if scale == 0:
                return np.asarray(image).astype(dtype)
            return quantize(image, dtype, scale, zp)
        return np.asarray(image, dtype=dtype)

    def _finish(self, out):
        if np.issubdtype(out.dtype, np.integer):
            scale, zp = self._output["quantization"]
            return dequantize(out, scale, zp)
        return out.astype(np.float32)

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        single = images.ndim == 3
        if single:
            images = images[None]
        expected = self.input_shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.path.name}: expected images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        outs = [self._finish(self.invoke_raw(self._prepare(images[i : i + 1])))[0] for i in range(len(images))]
        out = np.stack(outs, axis=0)
        return out[0] if single else out

    @property
    def sidecar(self) -> dict | None:
        """The model's sidecar (`read_sidecar`), read once; None for a file exported elsewhere."""
        if not hasattr(self, "_sidecar"):
            self._sidecar = read_sidecar(self.path)
        return self._sidecar

    @property
    def keypoint_set(self) -> str | None:
        """The name of the joint set the sidecar gives the heatmap channels (None without one)."""
        return ((self.sidecar or {}).get("keypoints") or {}).get("set")

    def ops(self) -> list:
        """Operators with versions, see `model_ops`."""
        return model_ops(self.path)

    def tensors(self) -> list:
        return model_tensors(self.path)
