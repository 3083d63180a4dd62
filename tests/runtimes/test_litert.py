"""The LiteRT runner reads a model's sidecar itself (`kdpose_tf.runtimes.litert`): one reader for the
joint set of an exported .tflite, used by the .tflite teachers and `kdpose evaluate`."""

import json
import shutil

import numpy as np
import pytest

from kdpose_tf.distillation.pretrained import teacher_from_file
from kdpose_tf.errors import ModelFileError
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.runtimes.litert import TFLiteRunner
from tests.export.test_tflite import SIZE, coco_crops, tiny_pose_model


@pytest.fixture(scope="module")
def lsp_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("litert") / "tiny_lsp.tflite"
    export_tflite(tiny_pose_model(k=14), path, keypoint_set="lsp14")
    return path


def test_the_runner_and_the_tflite_teacher_read_the_joint_set_from_the_sidecar(lsp_export, tmp_path, data_dir):
    runner = TFLiteRunner(lsp_export)
    assert runner.sidecar["model_sha256"] and runner.keypoint_set == "lsp14"
    teacher = teacher_from_file(lsp_export)  # a kdpose_tf export as a heatmap teacher: its own joints
    assert teacher.keypoint_set.name == "lsp14" and teacher.input_size == (SIZE, SIZE)
    heatmaps = teacher.predict_crops(coco_crops(data_dir, n=2))
    np.testing.assert_allclose(heatmaps, runner(coco_crops(data_dir, n=2)), atol=1e-6)

    bare = tmp_path / "bare.tflite"  # the same bytes without a sidecar: a file exported elsewhere
    shutil.copy(lsp_export, bare)
    assert TFLiteRunner(bare).sidecar is None and TFLiteRunner(bare).keypoint_set is None


def test_a_sidecar_of_other_bytes_is_one_error_naming_both_files(lsp_export, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(lsp_export, model)
    side = json.loads(lsp_export.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps({**side, "model_sha256": "0" * 64}))
    with pytest.raises(ModelFileError, match="describes another model than .*m.tflite"):
        TFLiteRunner(model).keypoint_set
