"""Presets of pretrained heatmap teachers: the COCO-17 models in ``shared/models``.

Each preset is a `TeacherConfig` dict whose `path` is relative to the shared models folder
(`kdpose_tf.utils.shared.shared_dir() / "models"`), plus published metadata. No weights ship with
the package: the files are looked up there, or a preset folder holding ``teacher.json`` is used.

Example:
>>> sorted(TEACHER_PRESETS)
['pp_tinypose_128x96', 'pp_tinypose_256x192', 'ultralight_nano_simplepose']
"""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.distillation.heatmap_teacher_config import TeacherConfig
from kdpose_tf.errors import ModelFileError, PresetError
from kdpose_tf.utils.shared import shared_dir

TEACHER_PRESETS = {
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


def is_pretrained_source(spec) -> bool:
    """Whether `spec` names a pretrained model from another framework that `resolve_teacher_config` reads
    and `kdpose_tf.models.imported` can rebuild: a preset name, an ``.xml`` / ``.onnx`` file, or a
    folder holding ``teacher.json``."""
    spec = str(spec)
    return spec in TEACHER_PRESETS or spec.endswith((".xml", ".onnx")) or (Path(spec) / "teacher.json").is_file()


def resolve_teacher_config(preset):
    """A checked `TeacherConfig` from a preset name, a folder with ``teacher.json``, or a config."""
    if isinstance(preset, TeacherConfig):
        return preset.check_files()
    if not isinstance(preset, (str, Path)):
        raise TypeError(f"preset must be a name, a folder or a TeacherConfig, got {type(preset).__name__}")
    if str(preset) in TEACHER_PRESETS:
        entry = TEACHER_PRESETS[str(preset)]
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
    raise PresetError(f"unknown teacher preset {str(preset)!r}: expected one of {sorted(TEACHER_PRESETS)}, a "
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
    import openvino as ov  # optional dependency: the "teachers" extra

    try:
        shape = ov.Core().read_model(str(path)).inputs[0].get_partial_shape()
    except (RuntimeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFileError(f"{path}: OpenVINO cannot read this model ({first[:200]})") from None
    if len(shape) != 4 or not shape[2].is_static or not shape[3].is_static:
        raise ModelFileError(f"{path}: expected a (N, 3, H, W) image input with a fixed H and W, got {shape}; "
                             "describe the model in a teacher.json (kdpose_tf.distillation.heatmap_teacher_config)")
    return TeacherConfig(path=str(path), input_size=(shape[2].get_length(), shape[3].get_length()))
