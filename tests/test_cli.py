"""`kdpose` commands, run in-process on real photos from ../shared/data."""

import json
import re

import cv2
import numpy as np
import pytest

from kdpose_tf.cli.main import build_parser, main
from kdpose_tf.data.datasets import load_samples

COMMANDS = ["train", "distill", "evaluate", "export", "import", "graft", "predict", "demo", "summary", "presets",
            "check-edgetpu", "check-xnnpack", "soup"]


def _save_tiny_model(path, keypoint_set, num_keypoints):
    """A 1-stack, 8-channel hourglass at 64x64 saved as .keras (untrained: the CLI plumbing is under test)."""
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    PoseEstimator(
        HourglassBackbone(num_stacks=1, filters=8, order=2, block="inverted_residual", num_keypoints=num_keypoints,
                          input_shape=(64, 64, 3)),
        keypoint_set=keypoint_set,
    ).save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return _save_tiny_model(tmp_path_factory.mktemp("cli") / "tiny.keras", "coco17", 17)


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


def test_int8_qat_export_records_its_ranges(tmp_path, tiny_model, coco_spec, capsys):
    """`--quantize int8-qat`: equalized, "mse" ranges by default, fine-tuned, a full-integer file that evaluates."""
    tflite = tmp_path / "tiny_qat.tflite"
    assert main(["export", "--model", str(tiny_model), "--output", str(tflite), "--quantize", "int8-qat",
                 "--calibration-data", coco_spec, "--num-calibration", "16", "--qat-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "mse activation ranges, equalization depthwise" in out
    sidecar = json.loads(tflite.with_suffix(".json").read_text())
    assert sidecar["qat"] == {"epochs": 1, "activation_ranges": "mse", "activation_equalization": "depthwise"}
    assert sidecar["input"]["dtype"] == "uint8"
    assert main(["evaluate", "--model", str(tflite), "--data", coco_spec, "--metrics", "pck"]) == 0
    assert "PCK@0.2" in capsys.readouterr().out


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


@pytest.fixture(scope="module")
def tiny_lsp_model(tmp_path_factory):
    return _save_tiny_model(tmp_path_factory.mktemp("cli_lsp") / "tiny_lsp.keras", "lsp14", 14)


def test_evaluate_parse_test_goes_on_past_the_joint_outside_its_image(tmp_path, tiny_lsp_model, data_dir, capsys):
    """Issue 12: PARSE annotation 135 has a joint at x=121.7 in a 121-pixel-wide image; `kdpose
    evaluate` stopped there although skip is the default. Now the joint is unlabelled and all 205
    test people are evaluated; with --on-bad-sample raise the same annotation is the error."""
    spec = f"parse:{data_dir / 'parse'}:test"
    assert main(["evaluate", "--model", str(tiny_lsp_model), "--data", spec]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "205 people" in out and "repaired 3 joints" in out and "PCK@0.2" in out
    assert main(["evaluate", "--model", str(tiny_lsp_model), "--data", spec, "--on-bad-sample", "raise"]) == 2
    err = capsys.readouterr().err
    assert "annotation 135" in err and "outside the 121x158 image" in err and "Traceback" not in err


@pytest.fixture()
def coco_with_truncated_jpeg(tmp_path, data_dir):
    """coco_mini with one of its real photos cut to half its bytes (the others linked)."""
    root = data_dir / "coco_mini"
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    for image in (root / "train2017").glob("*.jpg"):
        (images / image.name).symlink_to(image)
    with_people = sorted({a["image_id"] for a in ann["annotations"] if a["num_keypoints"] > 0})
    victim = next(im["file_name"] for im in ann["images"] if im["id"] == with_people[0])
    data = (root / "train2017" / victim).read_bytes()
    (images / victim).unlink()
    (images / victim).write_bytes(data[: len(data) // 2])
    people = sum(1 for a in ann["annotations"] if a["image_id"] == with_people[0] and a["num_keypoints"] > 0)
    return f"coco:{root / 'annotations' / 'person_keypoints_train2017.json'}:{images}", victim, people


def test_evaluate_skips_a_truncated_jpeg_and_says_so(tiny_model, coco_with_truncated_jpeg, coco_spec, capsys):
    """Issue 12: a truncated JPEG ended `kdpose evaluate --on-bad-sample skip` with exit 2 when its
    crop was read. Skip now leaves its people out, the run goes on and the summary names the file."""
    spec, victim, people = coco_with_truncated_jpeg
    assert main(["evaluate", "--model", str(tiny_model), "--data", coco_spec]) == 0
    total = int(re.search(r"^--data .*: (\d+) people", capsys.readouterr().out, re.M).group(1))
    assert main(["evaluate", "--model", str(tiny_model), "--data", spec, "--on-bad-sample", "skip"]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"on {total - people} people" in out
    summary = [line for line in out.splitlines() if line.startswith("data:")]
    assert summary and victim in summary[0] and "truncated JPEG" in summary[0] and f"skipped {people}" in summary[0]
    assert main(["evaluate", "--model", str(tiny_model), "--data", spec, "--on-bad-sample", "raise"]) == 2
    err = capsys.readouterr().err
    assert victim in err and "truncated JPEG" in err


def test_check_xnnpack_names_the_refused_ops(shared_dir, capsys):
    repro = shared_dir / "models" / "xnnpack_repro"
    assert main(["check-xnnpack", str(repro / "student_s0.tflite")]) == 1
    out = capsys.readouterr().out
    assert "op 6 CONV_2D" in out and "requantization scale 367.6" in out and "would refuse 2 op(s)" in out
    assert main(["check-xnnpack", str(repro / "student_s2.tflite")]) == 0
    assert "XNNPACK OK" in capsys.readouterr().out


def test_evaluate_scores_a_pretrained_openvino_teacher_and_its_keras_import(data_dir, tmp_path, capsys):
    # PP-TinyPose 128x96 (COCO-17, OpenVINO IR) on PARSE's LSP-14 labels: joints mapped by name, its
    # own input size; it scores 61 % PCK@0.2 over all 14 joints (0 on neck / head_top, which it lacks).
    spec = f"parse:{data_dir / 'parse'}:test"
    assert main(["evaluate", "--model", "pp_tinypose_128x96", "--data", spec, "--json-out", str(tmp_path / "t.json")]) == 0
    pck = float(re.search(r"PCK@0.2\s+([0-9.]+) %", capsys.readouterr().out).group(1))
    assert 55.0 < pck < 70.0
    # The same model imported into Keras as an LSP-14 student scores the same on the 12 joints it has
    # (neck and head_top start untrained, so all-14 depends on their random start).
    preset = tmp_path / "pp128_lsp"
    assert main(["import", "pp_tinypose_128x96", "--keypoint-set", "lsp14", "--preset-dir", str(preset)]) == 0
    assert "1.30 M params" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(preset), "--data", spec, "--json-out", str(tmp_path / "i.json")]) == 0
    teacher, imported = (json.loads((tmp_path / f).read_text())["pck"]["per_joint"] for f in ("t.json", "i.json"))
    body = [n for n in teacher if n not in ("neck", "head_top")]
    assert len(body) == 12 and max(abs(teacher[n] - imported[n]) for n in body) < 0.011, (teacher, imported)
    assert main(["import", "pp_tinypose_128x96"]) == 2
    assert "--output" in capsys.readouterr().err
    # another input size: built there with the same weights; a size off the 32-pixel grid is refused
    assert main(["import", "pp_tinypose_128x96", "--input-size", "160x128", "--output", str(tmp_path / "b.keras")]) == 0
    assert "160x128 input" in capsys.readouterr().out
    assert main(["import", "pp_tinypose_128x96", "--input-size", "144x96", "--output", str(tmp_path / "c.keras")]) == 2
    assert "must be a multiple of 32" in capsys.readouterr().err


def test_distill_from_pp_tinypose_with_unlabelled_people(tmp_path, tiny_model, coco_spec, data_dir, capsys,
                                                        monkeypatch):
    import kdpose_tf.training

    decay = []  # the learning-rate schedule must span the unlabelled people's steps too
    make = kdpose_tf.training.make_optimizer
    monkeypatch.setattr(kdpose_tf.training, "make_optimizer", lambda lr, n: decay.append(n) or make(lr, n))
    out = tmp_path / "student.keras"
    ann = data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json"
    args = ["distill", "--teacher", "pp_tinypose_128x96", "--student", str(tiny_model), "--data", coco_spec,
            "--unlabeled", f"coco:{ann}:{data_dir / 'coco_mini' / 'train2017'}", "--epochs", "1",
            "--batch-size", "16", "--run-dir", str(tmp_path / "run"), "--output", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["history"]["kd_loss"][0] > 0 and state["history"]["gt_loss"][0] > 0
    labelled = len(load_samples(coco_spec))
    assert state["steps_per_epoch"] > labelled // 16 and decay == [state["steps_per_epoch"]]
    assert main(["distill", "--teacher", str(tiny_model), "--student", str(tiny_model), "--data", coco_spec,
                 "--unlabeled", str(ann), "--output", str(out)]) == 2
    assert "--unlabeled needs a pretrained teacher" in capsys.readouterr().err


def test_soup_writes_the_mean_of_the_seeds_weights(tmp_path, capsys):
    import keras

    paths = []
    for seed in (0, 1, 2):
        keras.utils.set_random_seed(seed)
        paths.append(_save_tiny_model(tmp_path / f"seed{seed}.keras", "coco17", 17))
    out = tmp_path / "soup.keras"
    assert main(["soup", *map(str, paths), "--output", str(out)]) == 0
    assert "the mean of 3 models" in capsys.readouterr().out
    seeds = [keras.saving.load_model(str(p), compile=False) for p in paths]
    soup = keras.saving.load_model(str(out), compile=False)
    kernels = [np.stack([np.asarray(m.weights[i].numpy()) for m in seeds]) for i in range(len(soup.weights))]
    assert any(np.ptp(k, axis=0).max() > 1e-3 for k in kernels)  # the seeds really differ
    for v, k in zip(soup.weights, kernels):
        np.testing.assert_allclose(np.asarray(v.numpy()), k.mean(axis=0), rtol=1e-6, atol=1e-7)


def test_soup_of_different_architectures_names_the_files(tmp_path, capsys):
    a = _save_tiny_model(tmp_path / "coco.keras", "coco17", 17)
    b = _save_tiny_model(tmp_path / "lsp.keras", "lsp14", 14)
    assert main(["soup", str(a), str(b), "--output", str(tmp_path / "soup.keras")]) == 2
    err = capsys.readouterr().err
    assert "shape" in err and str(a) in err and str(b) in err and "Traceback" not in err
    assert not (tmp_path / "soup.keras").exists()


def test_soup_of_preset_directories_and_a_missing_one(tmp_path, capsys):
    import keras

    from kdpose_tf.models.pose_estimator import PoseEstimator

    dirs = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = keras.saving.load_model(str(_save_tiny_model(tmp_path / f"s{seed}.keras", "coco17", 17)),
                                        compile=False)
        model.save_to_preset(str(tmp_path / f"preset{seed}"))
        dirs.append(tmp_path / f"preset{seed}")
    assert main(["soup", *map(str, dirs), "--preset-out", str(tmp_path / "soup_preset")]) == 0
    seeds = [PoseEstimator.from_preset(str(d)) for d in dirs]
    soup = PoseEstimator.from_preset(str(tmp_path / "soup_preset"))
    for i, v in enumerate(soup.weights):
        mean = (np.asarray(seeds[0].weights[i].numpy()) + np.asarray(seeds[1].weights[i].numpy())) / 2
        np.testing.assert_allclose(np.asarray(v.numpy()), mean, rtol=1e-6, atol=1e-7)
    capsys.readouterr()
    missing = tmp_path / "no_such_preset"
    assert main(["soup", str(dirs[0]), str(missing), "--output", str(tmp_path / "x.keras")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such file" in err


# a line that TensorFlow's C++ logging (absl: "I0000 ..." / its preamble), TensorFlow's or absl's Python
# logging ("WARNING:tensorflow:...") or Python's warnings module ("...: UserWarning: ...") writes
_NOISE = re.compile(r"^[IWEF]\d{4} |absl|^WARNING:|^INFO:|Warning: |oneDNN|deprecated", re.M)


def test_a_command_prints_no_tensorflow_absl_or_warning_line(shared_dir):
    """`kdpose summary` of an imported model in a fresh process: its stderr has no TensorFlow start-up
    line (oneDNN, absl preamble, CPU features) and no deprecation warning from building the graph
    (its bilinear resizes); `--verbose` after the command is accepted and shows the native lines."""
    import os
    import platform
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["KDPOSE_SHARED"] = str(shared_dir)
    cmd = [sys.executable, "-m", "kdpose_tf.cli.main", "summary", "pp_tinypose_128x96"]
    quiet = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "parameters:" in quiet.stdout
    assert not _NOISE.search(quiet.stderr), quiet.stderr
    verbose = subprocess.run(cmd + ["--verbose"], env=env, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "parameters:" in verbose.stdout, verbose.stderr
    if platform.machine() in ("x86_64", "AMD64"):  # TensorFlow's x86 wheels log their oneDNN notice on loading
        assert "oneDNN" in verbose.stderr, "--verbose showed no TensorFlow start-up line: " + verbose.stderr
