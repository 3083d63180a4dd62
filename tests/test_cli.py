"""`kdpose` commands, run in-process on real photos from ../shared/data."""

import json

import cv2
import numpy as np
import pytest

from kdpose_tf.cli.main import build_parser, main

COMMANDS = ["train", "distill", "evaluate", "export", "predict", "demo", "summary", "presets", "check-edgetpu"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    path = tmp_path_factory.mktemp("cli") / "tiny.keras"
    PoseEstimator(
        HourglassBackbone(num_stacks=1, filters=8, order=2, block="inverted_residual", num_keypoints=17,
                          input_shape=(64, 64, 3)),
        keypoint_set="coco17",
    ).save(str(path))
    return path


@pytest.fixture(scope="module")
def coco_spec(data_dir):
    root = data_dir / "coco_mini"
    return f"coco:{root / 'annotations' / 'person_keypoints_train2017.json'}:{root / 'train2017'}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert command in capsys.readouterr().out


def test_missing_data_file_is_one_clear_line(tmp_path, tiny_model, capsys):
    missing = tmp_path / "nope.json"
    code = main(["train", "--model", str(tiny_model), "--data", str(missing), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err and "Traceback" not in err


def test_bad_input_size_is_rejected(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "x", "--data", "y", "--input-size", "250x190"])
    assert "multiples of 4" in capsys.readouterr().err


def test_predict_draws_keypoints_on_a_real_photo(tmp_path, tiny_model, data_dir, capsys):
    image = sorted((data_dir / "coco_mini" / "train2017").glob("*.jpg"))[0]
    out = tmp_path / "pose.png"
    assert main(["predict", "--model", str(tiny_model), "--image", str(image), "--output", str(out),
                 "--threshold", "0"]) == 0
    drawn, original = cv2.imread(str(out)), cv2.imread(str(image))
    assert drawn.shape == original.shape
    assert np.mean(np.any(drawn != original, axis=-1)) > 0.001  # skeleton pixels were drawn
    printed = capsys.readouterr().out
    assert "left_shoulder" in printed and str(out) in printed


def test_evaluate_and_export_int8_then_evaluate_tflite(tmp_path, tiny_model, coco_spec, capsys):
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(tiny_model), "--data", coco_spec, "--json-out", str(metrics)]) == 0
    keras_metrics = json.loads(metrics.read_text())
    assert 0.0 <= keras_metrics["coco"]["AP"] <= 1.0 and 0.0 <= keras_metrics["pck"]["mean"] <= 1.0

    tflite = tmp_path / "tiny_int8.tflite"
    assert main(["export", "--model", str(tiny_model), "--output", str(tflite), "--quantize", "int8",
                 "--calibration-data", coco_spec, "--num-calibration", "16"]) == 0
    sidecar = json.loads(tflite.with_suffix(".json").read_text())
    assert sidecar["input"]["dtype"] == "uint8"

    assert main(["evaluate", "--model", str(tflite), "--data", coco_spec, "--metrics", "pck"]) == 0
    assert main(["check-edgetpu", str(tflite)]) in (0, 1)
    out = capsys.readouterr().out
    assert "PCK@0.2" in out and "AP" in out


def test_int8_export_without_calibration_data_is_refused(tmp_path, tiny_model, capsys):
    code = main(["export", "--model", str(tiny_model), "--output", str(tmp_path / "m.tflite"), "--quantize", "int8"])
    assert code == 2 and "--calibration-data" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


def test_presets_and_summary(tiny_model, capsys):
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    for name in ("hrnet_w32_coco_256x192", "lshm_2_mpii_256x256", "dite_hrnet_18_psa_csppan_coco_256x192"):
        assert name in listing
    assert main(["summary", str(tiny_model)]) == 0
    from kdpose_tf.models.summary import count_params

    import keras

    params = count_params(keras.saving.load_model(str(tiny_model), compile=False))
    assert f"{params:,}" in capsys.readouterr().out


def test_distill_from_a_tflite_keypoint_teacher(tmp_path, tiny_model, coco_spec, shared_dir, capsys):
    # MoveNet (COCO-17, pretrained, black box) teaches the tiny student on real COCO photos.
    movenet = shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite"
    out = tmp_path / "student.keras"
    args = ["distill", "--teacher", str(movenet), "--student", str(tiny_model), "--data", coco_spec,
            "--epochs", "1", "--batch-size", "16", "--run-dir", str(tmp_path / "run"), "--output", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert out.is_file()
    history = json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    assert history["kd_loss"][0] > 0 and history["gt_loss"][0] > 0
    code = main(args[:-2] + ["--teacher-feature", "stack0_lin_relu", "--student-feature", "stack0_lin_relu"])
    assert code != 0
    assert "needs a Keras teacher" in capsys.readouterr().err
