"""Pretrained teachers from other frameworks, named the way a user names them on the command line.

`pretrained_teachers(spec)` turns a teacher argument into teacher objects, or None when it names a
Keras teacher (a ``.keras`` file, a preset folder with ``config.json``, a catalogue name):

- a heatmap-teacher preset (``pp_tinypose_256x192``, ...) or a folder holding ``teacher.json``;
- an ``.xml`` (OpenVINO IR) or ``.onnx`` heatmap model (ImageNet preprocessing, NCHW, COCO-17;
  write a ``teacher.json`` for anything else);
- a ``.tflite`` model: a MoveNet-style keypoint model ((1, 1, K, 3) output) or a heatmap model;
- several of these joined by commas: an ensemble, averaged per joint.

Example:
>>> pretrained_teachers("student.keras") is None
True
>>> [type(t).__name__ for t in pretrained_teachers("pp_tinypose_128x96")]  # doctest: +SKIP
['HeatmapTeacher']
"""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher, attach_teacher_heatmaps, ensemble_predict_fn
from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, attach_teacher_keypoints, teacher_predict_fn
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.runtimes.model_config import TeacherConfig
from kdpose_tf.runtimes.pretrained_models import PRETRAINED_MODELS, config_from_model_file, is_pretrained_source


def is_keypoint_model(runner):
    """True for a `TFLiteRunner` whose output is MoveNet's single-pose layout, (1, 1, K, 3) rows of (y, x, score)."""
    out = tuple(int(d) for d in runner.output_details["shape"])
    return len(out) == 4 and out[:2] == (1, 1) and out[3] == 3


def teacher_from_file(path, num_threads=None, flip_test=False, scales=(1.0,)):
    """A teacher for one model file: `KeypointTeacher` for a MoveNet-style .tflite, else a `HeatmapTeacher`
    whose input size is read from the model (NCHW input for .xml/.onnx, NHWC for .tflite); `flip_test` and
    `scales` (heatmap teachers) are its test-time augmentation (`HeatmapTeacher`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher model not found: {path}")
    if path.suffix.lower() == ".tflite":
        runner = TFLiteRunner(path, num_threads=num_threads or 1)
        if is_keypoint_model(runner):
            return KeypointTeacher(path, num_threads=num_threads or 1)
        # a kdpose_tf export (raw 0-255 pixels in, NHWC heatmaps out); its sidecar names the joints
        keypoint_set = runner.keypoint_set or "coco17"
        return HeatmapTeacher(TeacherConfig(path=str(path), input_size=tuple(runner.input_size), input_layout="nhwc",
                                            output_layout="nhwc", pixel_scale=1.0, mean=(0, 0, 0), std=(1, 1, 1),
                                            keypoint_set=keypoint_set), num_threads=num_threads,
                              flip_test=flip_test, scales=scales)
    return HeatmapTeacher(config_from_model_file(path), num_threads=num_threads, flip_test=flip_test, scales=scales)


def pretrained_teachers(spec, num_threads=None, flip_test=False, scales=(1.0,)):
    """A list of pretrained teachers for `spec` (see the module doc), or None for a Keras teacher.
    `flip_test`: every heatmap teacher averages each crop with its mirror image; `scales`: and with its
    zoomed copies (test-time augmentation on the teacher's side, paid once per person)."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"empty teacher argument {spec!r}")
    pretrained = [is_pretrained_source(p, tflite=True) for p in parts]
    if not any(pretrained):
        if len(parts) > 1:
            raise ValueError(f"an ensemble takes pretrained teachers (presets, .xml, .onnx, .tflite); got {spec!r}")
        return None
    if not all(pretrained):
        bad = parts[pretrained.index(False)]
        raise ValueError(f"{bad!r} in the teacher list {spec!r} is not a pretrained teacher: expected one of "
                         f"{sorted(PRETRAINED_MODELS)}, a folder with teacher.json, or a .xml/.onnx/.tflite file")
    return [HeatmapTeacher.from_preset(p, num_threads=num_threads, flip_test=flip_test, scales=scales)
            if p in PRETRAINED_MODELS or Path(p).is_dir()
            else teacher_from_file(p, num_threads=num_threads, flip_test=flip_test, scales=scales) for p in parts]


def attach_pretrained(samples, teachers, keypoint_set, min_score=0.3):
    """Attach a pretrained teacher's targets: a single keypoint teacher's joints, else (heatmap teachers,
    ensembles) heatmaps."""
    if len(teachers) == 1 and isinstance(teachers[0], KeypointTeacher):
        return attach_teacher_keypoints(samples, teachers[0], keypoint_set, min_score=min_score)
    return attach_teacher_heatmaps(samples, teachers, keypoint_set, min_score=min_score)


def teacher_evaluation(teachers, keypoint_set, ensemble_min_score=0.3):
    """(predict_fn, input_size, codec) that score pretrained teachers at the first one's own input size.

    A single keypoint teacher is scored on all its joints; in an ensemble, a keypoint teacher's joints
    scored under `ensemble_min_score` are left to the other teachers (as in training).
    """
    size = teachers[0].input_size
    codec = HeatmapCodec(size)
    if len(teachers) == 1 and isinstance(teachers[0], KeypointTeacher):
        return teacher_predict_fn(teachers[0], codec, keypoint_set, min_score=0.0), size, codec
    return ensemble_predict_fn(teachers, codec, keypoint_set, min_score=ensemble_min_score), size, codec
