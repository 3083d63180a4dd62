"""A pretrained heatmap model of another framework, run on crops: the runtime side of every heatmap teacher.

`HeatmapModel(config)` opens the file named by a `TeacherConfig` with the runtime its suffix names
(`BACKENDS`: OpenVINO for ``.xml`` / ``.onnx``, LiteRT for ``.tflite``), checks the model's input and
output against the config, and maps RGB crops (N, H, W, 3) in [0, 255] to the model's heatmaps
(N, h, w, K), NHWC, in the model's own joint order, with the config's preprocessing (RGB / BGR, pixel
scale, mean / std, NCHW / NHWC). That is the protocol a teacher needs: `input_size`, `heatmap_size`,
`keypoint_set` (the config's name) and the call. A new runtime is one more backend class here (load
the file; `input_shape`, `output_shape`; run a preprocessed batch) and its suffix in `BACKENDS`.

Example:
>>> model = HeatmapModel(resolve_teacher_config("pp_tinypose_128x96"))   # doctest: +SKIP
>>> model(crops).shape   # (N, 32, 24, 17) for (N, 128, 96, 3) crops       # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.runtimes import openvino
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.runtimes.model_config import TeacherConfig


class HeatmapModel:
    """A heatmap model file run with its `TeacherConfig`'s preprocessing (see the module doc).

    Args:
        config: a `TeacherConfig` (its files are checked).
        num_threads: CPU threads of the runtime. Defaults to None (OpenVINO: its choice; LiteRT: every core).
        batch_size: crops per runtime call (OpenVINO reshapes the model's batch; LiteRT runs one by one).
            Defaults to 16.
    """

    def __init__(self, config, num_threads=None, batch_size=16):
        if not isinstance(config, TeacherConfig):
            raise TypeError(f"config must be a TeacherConfig, got {type(config).__name__}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if num_threads is not None and not (isinstance(num_threads, int) and num_threads > 0):
            raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
        self.config = config.check_files()
        self.batch_size = batch_size
        self._backend = BACKENDS[Path(config.path).suffix.lower()](config, num_threads, batch_size)
        out = self._backend.output_shape
        k = get_keypoint_set(config.keypoint_set).num_keypoints
        channels = out[1] if config.output_layout == "nchw" else out[3]
        if len(out) != 4 or channels != k:
            raise ValueError(
                f"{config.path}: heatmap output {config.output!r} has shape {tuple(out)}; with output_layout "
                f"{config.output_layout!r} a {config.keypoint_set} teacher needs {k} channels "
                f"({'(N, K, h, w)' if config.output_layout == 'nchw' else '(N, h, w, K)'})"
            )
        self.heatmap_size = (out[2], out[3]) if config.output_layout == "nchw" else (out[1], out[2])

    @property
    def input_size(self):
        """(height, width) of the model input."""
        return self.config.input_size

    @property
    def keypoint_set(self):
        """The name of the joint set of the heatmap channels (the config's)."""
        return self.config.keypoint_set

    def __call__(self, crops):
        """Heatmaps (N, h, w, K) float32 for RGB crops (N, H, W, 3) float32 in [0, 255] of `input_size`."""
        c = self.config
        x = crops[..., ::-1] if c.color == "bgr" else crops
        x = (x * c.pixel_scale - np.asarray(c.mean, np.float32)) / np.asarray(c.std, np.float32)
        if c.input_layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        out = [self._backend(np.ascontiguousarray(x[i:i + self.batch_size], np.float32))
               for i in range(0, len(x), self.batch_size)]
        hm = np.concatenate(out) if out else np.zeros((0, *self._backend.output_shape[1:]), np.float32)
        return hm.transpose(0, 2, 3, 1) if c.output_layout == "nchw" else hm


class _OpenVINOBackend:
    def __init__(self, config, num_threads, batch_size):
        model = openvino.read_model(config.path)
        self.input_shape = _check_input(config, openvino.input_dims(model))
        self.compiled = openvino.compile_model(model, num_threads, [batch_size, *self.input_shape[1:]])
        self.output = _pick_output(config, [o.get_any_name() for o in self.compiled.outputs])
        shape = list(self.compiled.outputs[self.output].get_partial_shape().to_shape())
        self.output_shape = [1, *shape[1:]]
        self.batch_size = batch_size

    def __call__(self, x):
        n = len(x)
        if n < self.batch_size:  # the reshaped model has a fixed batch: pad the last chunk
            x = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]), x.dtype)])
        return np.asarray(self.compiled(x)[self.output], np.float32)[:n]


class _LiteRTBackend:
    def __init__(self, config, num_threads, batch_size):
        self.runner = TFLiteRunner(config.path, num_threads=num_threads or os.cpu_count() or 1)  # None: every core
        self.input_shape = _check_input(config, [int(d) for d in self.runner.input_details["shape"]])
        self.output_shape = [int(d) for d in self.runner.output_details["shape"]]
        _pick_output(config, ["0"])

    def __call__(self, x):
        return np.concatenate([np.asarray(self.runner(x[i:i + 1]), np.float32) for i in range(len(x))])


def _check_input(config, shape):
    h, w = config.input_size
    want = [1, 3, h, w] if config.input_layout == "nchw" else [1, h, w, 3]
    if len(shape) != 4 or any(s not in (-1, t) for s, t in zip(shape[1:], want[1:])):
        raise ValueError(
            f"{config.path}: the model's input has shape {tuple(shape)}, but the teacher config says "
            f"input_size {tuple(config.input_size)} with input_layout {config.input_layout!r}, i.e. "
            f"{tuple(['N', *want[1:]])}; fix input_size or input_layout"
        )
    return want


def _pick_output(config, names):
    if isinstance(config.output, int):
        if not 0 <= config.output < len(names):
            raise ValueError(f"{config.path}: output index {config.output} but the model has {len(names)} "
                             f"output(s) {names}")
        return config.output
    if config.output not in names:
        raise ValueError(f"{config.path}: no output named {config.output!r}; the model's outputs are {names}")
    return names.index(config.output)


BACKENDS = {".xml": _OpenVINOBackend, ".onnx": _OpenVINOBackend, ".tflite": _LiteRTBackend}  # by file suffix
