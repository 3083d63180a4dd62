"""Pretrained heatmap models of other frameworks: the catalogue, the one predicate, the config resolver.

The same files serve as teachers (`kdpose_tf.distillation`), as accuracy anchors (`kdpose evaluate`)
and as import sources rebuilt as Keras models with their weights (`kdpose_tf.models.imported`), so
they are named here, below both. Each `PRETRAINED_MODELS` entry is a `TeacherConfig` dict whose
`path` is relative to the shared models folder (`kdpose_tf.utils.shared.shared_dir() / "models"`),
plus published metadata. No weights ship with the package: the files are looked up there, or a
folder holding ``teacher.json`` is used.

Example:
>>> sorted(PRETRAINED_MODELS)
['pp_tinypose_128x96', 'pp_tinypose_256x192', 'ultralight_nano_simplepose']
>>> is_pretrained_source("pp_tinypose_128x96"), is_pretrained_source("movenet.tflite")
(True, False)
>>> is_pretrained_source("movenet.tflite", tflite=True), is_pretrained_source("student.keras", tflite=True)
(True, False)
"""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.errors import ModelFileError, PresetError
from kdpose_tf.runtimes import openvino
from kdpose_tf.runtimes.model_config import TeacherConfig
from kdpose_tf.utils.shared import shared_dir

PRETRAINED_MODELS = {
    "pp_tinypose_256x192": {
        "metadata": {"description": "PP-TinyPose 256x192 (PaddleDetection, Lite-HRNet-style, ~1.3 M params), "
                                    "COCO + AI Challenger", "coco_val_ap": 68.3, "format": "OpenVINO IR FP16"},
        "config": {"path": "pp_tinypose_256x192/model.xml", "input_size": (256, 192), "output": 0},
    },
    "pp_tinypose_128x96": {
        "metadata": {"description": "PP-TinyPose 128x96", "coco_val_ap": 58.4, "format": "OpenVINO IR FP16"},
        "config": {"path": "pp_tinypose_128x96/model.xml", "input_size": (128, 96), "output": 0},
    },
    "ultralight_nano_simplepose": {
        "metadata": {"description": "Ultralight-Nano-SimplePose (SimpleBaseline, tiny backbone)",
                     "coco_val_ap": 51.8, "format": "ONNX"},
        "config": {"path": "ultralight_nano_simplepose/deploy.onnx", "input_size": (256, 192), "output": 0},
    },
}


def is_pretrained_source(spec, tflite=False) -> bool:
    """Whether `spec` names a pretrained model from another framework: a `PRETRAINED_MODELS` name, a folder
    holding ``teacher.json`` or an ``.xml`` / ``.onnx`` file (what `resolve_teacher_config` reads and
    `kdpose_tf.models.imported` rebuilds), and with `tflite` also a ``.tflite`` file (a teacher or a model
    to evaluate; it cannot be imported). The one answer to that question for the CLI's model arguments,
    the teachers and `PoseEstimator.from_preset`."""
    spec = str(spec)
    path = Path(spec)
    suffixes = (".xml", ".onnx", ".tflite") if tflite else (".xml", ".onnx")
    return spec in PRETRAINED_MODELS or path.suffix.lower() in suffixes or (path / "teacher.json").is_file()


def resolve_teacher_config(preset):
    """A checked `TeacherConfig` from a preset name, a folder with ``teacher.json``, or a config."""
    if isinstance(preset, TeacherConfig):
        return preset.check_files()
    if not isinstance(preset, (str, Path)):
        raise TypeError(f"preset must be a name, a folder or a TeacherConfig, got {type(preset).__name__}")
    if str(preset) in PRETRAINED_MODELS:
        entry = PRETRAINED_MODELS[str(preset)]
        cfg = TeacherConfig.from_dict({**entry["config"], "name": str(preset)}, base_dir=shared_dir() / "models",
                                      source=f"teacher preset {preset!r}")
        try:
            return cfg.check_files()
        except FileNotFoundError as e:
            raise PresetError(f"teacher preset {preset!r}: {e}; set KDPOSE_SHARED to the folder holding "
                              "models/") from None
    folder = Path(preset)
    if folder.suffix.lower() in (".xml", ".onnx"):
        return config_from_model_file(folder)
    if folder.is_dir():
        return TeacherConfig.from_json(folder / "teacher.json").check_files()
    raise PresetError(f"unknown teacher preset {str(preset)!r}: expected one of {sorted(PRETRAINED_MODELS)}, a "
                      "folder holding teacher.json, or an .xml / .onnx model file")


def config_from_model_file(path):
    """The `TeacherConfig` of a bare ``.xml`` (with its ``.bin``) or ``.onnx`` heatmap model: the config's
    defaults (RGB, ImageNet mean / std, NCHW, COCO-17) at the input size the model declares.

    A missing file or ``.bin`` is a FileNotFoundError, a file OpenVINO cannot read (truncated, not
    a model) or one without a fixed (N, 3, H, W) input a `ModelFileError`; any other model needs a
    ``teacher.json``.
    """
    path = Path(path)
    TeacherConfig(path=str(path), input_size=(1, 1)).check_files()
    model = openvino.read_model(path)  # ModelFileError naming the file when OpenVINO cannot read it
    dims = openvino.input_dims(model) if model.inputs else []
    if len(dims) != 4 or dims[2] < 1 or dims[3] < 1:
        raise ModelFileError(f"{path}: expected a (N, 3, H, W) image input with a fixed H and W, got "
                             f"{[d if d >= 0 else '?' for d in dims]}; describe the model in a teacher.json "
                             "(kdpose_tf.runtimes.model_config)")
    return TeacherConfig(path=str(path), input_size=(dims[2], dims[3]))
