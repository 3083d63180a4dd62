"""Hostile but realistic input: real files from ../shared and copies made broken in tmp_path.

Every probe ends in a correct result or in exit 2 with one line naming the file and what was wrong
(Ctrl-C: exit 130 and one line saying how to go on), never a traceback, and nothing the user had is
overwritten or silently replaced.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import sys

import cv2
import numpy as np
import pytest
from test_cli import _save_tiny_model

from kdpose_tf.cli.main import main
from kdpose_tf.data.datasets import load_dataset
from kdpose_tf.errors import DataError, ModelFileError, PresetError


def _run(argv, capsys):
    """(exit code, stdout, stderr) of `kdpose argv` run in-process; argparse's exit is an exit code too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(argv, capsys, code=2):
    """Run a probe that must fail: `code`, one stderr line `kdpose <command>: error: ...`; returns it."""
    rc, _, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1 and lines[0].startswith(f"kdpose {argv[0]}: error: "), (rc, err)
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _save_tiny_model(tmp_path_factory.mktemp("hostile") / "tiny.keras", "coco17", 17)


@pytest.fixture(scope="module")
def coco_ann(data_dir):
    return json.loads((data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json").read_text())


@pytest.fixture()
def coco_copy(tmp_path, data_dir, coco_ann):
    """coco_mini in tmp_path (images linked); returns (write(ann) -> spec, images folder, annotations)."""
    images = tmp_path / "images"
    images.mkdir()
    for image in (data_dir / "coco_mini" / "train2017").glob("*.jpg"):
        (images / image.name).symlink_to(image)

    def write(ann, name="ann.json"):
        (tmp_path / name).write_text(json.dumps(ann))
        return f"coco:{tmp_path / name}:{images}"

    return write, images, json.loads(json.dumps(coco_ann))


def _labelled_images(ann):
    """File names of the images with labelled people, most people first."""
    counts = {}
    for a in ann["annotations"]:
        if a["num_keypoints"] > 0 and not a["iscrowd"]:
            counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    names = {im["id"]: im["file_name"] for im in ann["images"]}
    return [names[i] for i in sorted(counts, key=lambda i: -counts[i])], counts


# ------------------------------------------------------------------ run identity


def test_two_different_runs_never_share_a_run_directory(tmp_path, monkeypatch, tiny, coco_copy, capsys):
    """Without --run-dir, a second run on other data with another batch size (the same steps per
    epoch) trained nothing and wrote the first run's weights; now each run gets its own directory,
    and a run directory refuses a different run with one line saying how to start fresh."""
    write, _, ann = coco_copy
    spec_a = write(ann, "a.json")
    names, _ = _labelled_images(ann)
    keep = {im["id"] for im in ann["images"] if im["file_name"] in names[:8]}
    spec_b = write({**ann, "annotations": [a for a in ann["annotations"] if a["image_id"] in keep]}, "b.json")
    assert len(load_dataset(spec_b).samples) == 54  # 2 steps of 27, as 86 people are 2 steps of 43
    monkeypatch.chdir(tmp_path)
    common = ["train", "--model", tiny, "--epochs", "1", "--no-augment"]
    assert _run(common + ["--data", spec_a, "--batch-size", "43", "--output", "a.keras"], capsys)[0] == 0
    assert _run(common + ["--data", spec_b, "--batch-size", "27", "--output", "b.keras"], capsys)[0] == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2, runs
    assert (tmp_path / "a.keras").read_bytes() != (tmp_path / "b.keras").read_bytes()
    first = next(r for r in runs if json.loads((r / "state.json").read_text())["identity"]["batch_size"] == 43)
    line = _one_error_line(common + ["--data", spec_b, "--batch-size", "27", "--run-dir", first,
                                     "--output", "c.keras"], capsys)
    assert str(first) in line and "data" in line and "batch_size 43 there, 27 now" in line
    assert "--run-dir" in line and "delete" in line
    assert not (tmp_path / "c.keras").exists()


def test_a_corrupt_run_state_is_one_line(tmp_path, tiny, coco_copy, capsys):
    write, _, ann = coco_copy
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text('{"epoch": 1, "hist')
    (run / "checkpoint.weights.h5").write_bytes(b"\0" * 100)
    line = _one_error_line(["train", "--model", tiny, "--data", write(ann), "--epochs", "1", "--run-dir", run],
                           capsys)
    assert "state.json" in line and "corrupt" in line and "delete" in line


def test_ctrl_c_during_train_says_that_rerunning_resumes(tmp_path, monkeypatch, tiny, coco_copy, capsys):
    from kdpose_tf.training import ResumableCheckpoint

    write, _, ann = coco_copy
    args = ["train", "--model", tiny, "--data", write(ann), "--epochs", "2", "--batch-size", "43", "--no-augment",
            "--run-dir", tmp_path / "run", "--output", tmp_path / "m.keras"]
    saved = ResumableCheckpoint.on_epoch_end

    def save_then_interrupt(self, epoch, logs=None):
        saved(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResumableCheckpoint, "on_epoch_end", save_then_interrupt)
    rc, _, err = _run(args, capsys)
    assert rc == 130 and len(err.strip().splitlines()) == 1
    assert "rerunning the same command resumes" in err and str(tmp_path / "run") in err
    first_loss = json.loads((tmp_path / "run" / "state.json").read_text())["history"]["loss"]
    monkeypatch.setattr(ResumableCheckpoint, "on_epoch_end", saved)
    assert _run(args, capsys)[0] == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 2 and state["history"]["loss"][:1] == first_loss and (tmp_path / "m.keras").is_file()


# ------------------------------------------------------------------ images skip cannot decode


def test_skip_leaves_out_undecodable_images_and_names_outside_the_image_folder(coco_copy, tmp_path, tiny, capsys):
    """Random bytes named .jpg, and a file_name climbing out of the image folder (to a real photo
    there), passed the loader's check and failed later; now skip leaves them out when loading."""
    write, images, ann = coco_copy
    names, counts = _labelled_images(ann)
    (images / names[0]).unlink()
    (images / names[0]).write_bytes(np.random.default_rng(0).bytes(20000))
    shutil.copy(images / names[1], tmp_path / "outside.jpg")
    escaping = next(im for im in ann["images"] if im["file_name"] == names[1])
    escaping["file_name"] = "../outside.jpg"
    spec = write(ann)
    ids = {im["file_name"]: im["id"] for im in ann["images"]}
    lost = counts[ids[names[0]]] + counts[ids["../outside.jpg"]]

    data = load_dataset(spec, on_bad_sample="skip")
    assert len(data.samples) == 86 - lost
    assert all(os.path.basename(s.image_path) not in (names[0], "outside.jpg") for s in data.samples)
    reasons = " ".join(data.samples.report.skipped)
    assert "outside the image folder" in reasons and "not decodable" in reasons
    with pytest.raises(DataError, match="outside the image folder") as e:
        load_dataset(spec, on_bad_sample="raise")
    assert "../outside.jpg" in str(e.value)
    escaping["file_name"] = names[1]
    with pytest.raises(DataError, match="not a decodable image") as e:
        load_dataset(write(ann, "restored.json"), on_bad_sample="raise")
    assert names[0] in str(e.value)

    rc, out, err = _run(["evaluate", "--model", tiny, "--data", spec, "--metrics", "pck"], capsys)
    assert rc == 0, err
    assert f"on {86 - lost} people" in out and "not decodable" in out


def test_check_image_file_decodes(tmp_path, data_dir):
    from kdpose_tf.data.images import check_image_file

    real = data_dir / "parse" / "im0001.jpg"
    check_image_file(real)
    data = bytearray(real.read_bytes())
    data[2:400] = b"\x00" * 398  # JPEG start and end markers intact, the header inside destroyed
    (tmp_path / "broken.jpg").write_bytes(bytes(data))
    (tmp_path / "passwd.jpg").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for name in ("broken.jpg", "passwd.jpg"):
        with pytest.raises(DataError, match="not a decodable image"):
            check_image_file(tmp_path / name)


# ------------------------------------------------------------------ the .tflite and its sidecar as a pair


def test_export_commits_the_sidecar_before_the_model_and_readers_catch_a_mismatch(tmp_path, monkeypatch, tiny,
                                                                                  data_dir, capsys):
    """A kill right after the .tflite was replaced left a new model beside the old sidecar; now the
    sidecar, built from the bytes in memory, goes first and names the model's sha256."""
    from kdpose_tf.runtimes.litert import read_sidecar

    out = tmp_path / "m.tflite"
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(os.path.basename(dst)),
                                                         real_replace(src, dst)))
    assert _run(["export", "--model", tiny, "--output", out, "--quantize", "none"], capsys)[0] == 0
    assert [name for name in replaced if name.startswith("m.")] == ["m.json", "m.tflite"]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["model_file"] == "m.tflite"
    assert sidecar["model_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert read_sidecar(out)["input"]["dtype"] == "float32"

    data = bytearray(out.read_bytes())  # the state a kill between the two renames leaves: another model
    data[-1] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="describes another model"):
        read_sidecar(out)
    line = _one_error_line(["predict", "--model", out, "--image", data_dir / "parse" / "im0001.jpg",
                            "--output", tmp_path / "p.png"], capsys)
    assert "m.json describes another model" in line and "export again" in line


def test_ctrl_c_during_export_replaces_nothing(tmp_path, monkeypatch, tiny, capsys):
    import kdpose_tf.export.tflite as tflite

    out = tmp_path / "m.tflite"
    out.write_bytes(b"the user's old model")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "convert_to_tflite", interrupted)
    rc, _, err = _run(["export", "--model", tiny, "--output", out, "--quantize", "none"], capsys)
    assert rc == 130 and len(err.strip().splitlines()) == 1 and "rerun the same command" in err
    assert out.read_bytes() == b"the user's old model" and sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


# ------------------------------------------------------------------ .xml / .onnx students


def test_an_openvino_file_imports_distills_and_exports_as_a_student(shared_dir, tmp_path, monkeypatch, coco_copy,
                                                                      capsys):
    """`import` / `distill --student` / `export --model` of an .xml said "unknown teacher preset"."""
    import kdpose_tf.export.tflite as tflite

    xml = shared_dir / "models" / "pp_tinypose_128x96" / "model.xml"
    rc, out, err = _run(["import", xml, "--output", tmp_path / "x.keras"], capsys)
    assert rc == 0, err
    assert "128x96 input" in out and (tmp_path / "x.keras").is_file()
    write, _, ann = coco_copy
    names, _ = _labelled_images(ann)
    keep = {im["id"] for im in ann["images"] if im["file_name"] in names[:2]}
    spec = write({**ann, "annotations": [a for a in ann["annotations"] if a["image_id"] in keep]})
    movenet = shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite"
    rc, _, err = _run(["distill", "--teacher", movenet, "--student", xml, "--data", spec, "--epochs", "1",
                       "--run-dir", tmp_path / "run", "--output", tmp_path / "s.keras"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "run" / "state.json").read_text())["history"]["kd_loss"][0] > 0

    converted = []  # the conversion itself (a minute for this graph) is tested on small models elsewhere

    def capture(model, *args, **kwargs):
        converted.append(model)
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "convert_to_tflite", capture)
    rc, _, err = _run(["export", "--model", xml, "--output", tmp_path / "x.tflite", "--quantize", "none"], capsys)
    assert rc == 130 and "unknown teacher preset" not in err
    assert tuple(converted[0].inputs[0].shape) == (None, 128, 96, 3)
    assert tuple(converted[0].outputs[0].shape) == (None, 32, 24, 17)


# ------------------------------------------------------------------ one error boundary


@pytest.fixture(scope="module")
def broken(tmp_path_factory, shared_dir, tiny):
    """Broken copies of real model files."""
    d = tmp_path_factory.mktemp("broken")
    keras_bytes = tiny.read_bytes()
    (d / "truncated.keras").write_bytes(keras_bytes[: len(keras_bytes) // 2])
    (d / "random.keras").write_bytes(np.random.default_rng(1).bytes(5000))
    movenet = (shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite").read_bytes()
    (d / "truncated.tflite").write_bytes(movenet[: len(movenet) // 3])
    (d / "nobin").mkdir()
    shutil.copy(shared_dir / "models" / "pp_tinypose_128x96" / "model.xml", d / "nobin" / "model.xml")
    return d


@pytest.mark.parametrize("probe, expected", [
    (["evaluate", "--model", "{b}/truncated.keras", "--data", "{parse}"], "truncated.keras: not a .keras model"),
    (["evaluate", "--model", "{b}/random.keras", "--data", "{parse}"], "random.keras: not a .keras model"),
    (["evaluate", "--model", "{b}/truncated.tflite", "--data", "{parse}"], "truncated.tflite: not a valid TFLite"),
    (["check-xnnpack", "{b}/truncated.tflite"], "truncated.tflite: not a valid TFLite"),
    (["check-edgetpu", "{b}/truncated.tflite"], "truncated.tflite: not a valid TFLite"),
    (["distill", "--teacher", "{b}/truncated.tflite", "--student", "{tiny}", "--data", "{parse}", "--run-dir",
      "{b}/run"], "truncated.tflite: not a valid TFLite"),
    (["evaluate", "--model", "{b}/nobin/model.xml", "--data", "{parse}"], "model.bin are missing"),
    (["predict", "--model", "{tiny}", "--image", "{image}", "--box", "nan,0,50,50"], "four finite numbers"),
    (["predict", "--model", "{tiny}", "--image", "{image}", "--box", "0,0,inf,50"], "four finite numbers"),
    (["predict", "--model", "{tiny}", "--image", "{image}", "--box", "500,10,40,40"], "entirely outside the"),
])
def test_expected_failures_are_one_line(probe, expected, broken, tiny, data_dir, capsys):
    fill = {"b": broken, "tiny": tiny, "parse": f"parse:{data_dir / 'parse'}:train",
            "image": data_dir / "parse" / "im0001.jpg"}
    assert expected in _one_error_line([p.format(**fill) for p in probe], capsys)


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--epochs", "0"), ("--lr", "nan")])
def test_bad_numbers_are_refused_before_any_work(option, value, tiny, capsys):
    rc, _, err = _run(["train", "--model", tiny, "--data", "no/such.json", option, value], capsys)
    assert rc == 2 and f"argument {option}: expected" in err and "Traceback" not in err


def test_coco_json_without_categories_fails_before_inference(coco_copy, tiny, capsys):
    write, _, ann = coco_copy
    del ann["categories"]
    line = _one_error_line(["evaluate", "--model", tiny, "--data", write(ann)], capsys)  # one line: no progress bar
    assert "ann.json" in line and "'categories'" in line and "--metrics pck" in line
    rc, out, _ = _run(["evaluate", "--model", tiny, "--data", write(ann), "--metrics", "pck"], capsys)
    assert rc == 0 and "PCK@0.2" in out


def test_movenet_given_to_predict_draws_its_joints(shared_dir, data_dir, tmp_path, capsys):
    """MoveNet's .tflite (joints, not heatmaps) crashed predict; it now draws its own COCO joints,
    close to PARSE's labels for the body joints both sets name."""
    import scipy.io

    from kdpose_tf.keypoints import COCO17, LSP14

    image = data_dir / "parse" / "im0101.jpg"
    rc, out, err = _run(["predict", "--model", shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite",
                         "--image", image, "--output", tmp_path / "pose.png"], capsys)
    assert rc == 0, err
    predicted = {line.split(":")[0].strip(): line for line in out.splitlines() if "score=" in line}
    assert sorted(predicted) == sorted(COCO17.names)
    truth = scipy.io.loadmat(str(data_dir / "parse" / "labels.mat"))["ptsAll"][:, :, 100]
    errors = []
    for j, name in enumerate(LSP14.names):
        if name in predicted:
            x, y = (float(v) for v in re.search(r"x=\s*(\S+)\s+y=\s*(\S+)", predicted[name]).groups())
            errors.append(np.hypot(x - truth[j, 0], y - truth[j, 1]))
    torso = np.hypot(*(truth[8] - truth[2]))  # right shoulder to right hip
    assert len(errors) == 12 and np.median(errors) < 0.3 * torso, (errors, torso)


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, tiny, data_dir, capsys):
    image = data_dir / "parse" / "im0001.jpg"
    (tmp_path / "a_file").write_text("x")
    line = _one_error_line(["predict", "--model", tiny, "--image", image, "--output", tmp_path / "a_file" / "p.png"],
                           capsys)
    assert "a_file: not a folder" in line

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    line = _one_error_line(["predict", "--model", tiny, "--image", image, "--output", tmp_path / "p.png"], capsys)
    assert "p.png" in line and "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no half-written file, no temporary left


# ------------------------------------------------------------------ presets name only allowed modules


@pytest.mark.parametrize("where", ["config", "codec"])
def test_a_preset_cannot_import_a_module_outside_the_package(where, tmp_path, tiny, capsys):
    import keras

    from kdpose_tf.models.pose_estimator import PoseEstimator

    preset = tmp_path / "preset"
    keras.saving.load_model(str(tiny), compile=False).save_to_preset(str(preset))
    config = json.loads((preset / "config.json").read_text())
    (config if where == "config" else config["config"]["codec"])["module"] = "this"
    (preset / "config.json").write_text(json.dumps(config))
    sys.modules.pop("this", None)
    with pytest.raises(PresetError, match="module 'this'.* is not allowed") as e:
        PoseEstimator.from_preset(str(preset))
    assert "config.json" in str(e.value) and "this" not in sys.modules
    assert "not allowed" in _one_error_line(["summary", preset], capsys)
    assert "this" not in sys.modules


# ------------------------------------------------------------------ duplicate image ids, visibility flags


def test_duplicate_image_ids_are_refused_or_skipped(coco_copy, capsys):
    write, _, ann = coco_copy
    names, counts = _labelled_images(ann)
    first = next(im for im in ann["images"] if im["file_name"] == names[0])
    twin = next(im for im in ann["images"] if im["file_name"] == names[1])
    twin_people = counts[twin["id"]]
    twin["id"] = first["id"]  # the later entry won: its annotations landed on the other file
    spec = write(ann)
    with pytest.raises(DataError, match="appears more than once") as e:
        load_dataset(spec, on_bad_sample="raise")
    assert names[0] in str(e.value) and names[1] in str(e.value) and "field 'images'" in str(e.value)
    data = load_dataset(spec, on_bad_sample="skip")
    assert len(data.samples) == 86 - counts[first["id"]] - twin_people
    assert first["id"] not in {s.image_id for s in data.samples}
    assert any("appears more than once" in reason for reason in data.samples.report.skipped)
    assert first["id"] not in {im["id"] for im in data.coco_gt["images"]}  # nor counted as misses in AP


def test_visibility_flags_other_than_0_1_2_are_refused(coco_copy):
    write, _, ann = coco_copy
    victim = next(a for a in ann["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])
    victim["keypoints"][2::3] = [7 if v else 0 for v in victim["keypoints"][2::3]]
    spec = write(ann)
    with pytest.raises(DataError, match="visibility flags must be 0, 1 or 2") as e:
        load_dataset(spec, on_bad_sample="raise")
    assert f"annotation {victim['id']}" in str(e.value)
    data = load_dataset(spec, on_bad_sample="skip")
    assert len(data.samples) == 85 and victim["id"] not in {s.annotation_id for s in data.samples}


# ------------------------------------------------------------------ predict writes only what it should


def test_predict_never_overwrites_its_input_and_writes_the_format_it_names(tmp_path, tiny, data_dir, capsys):
    image = tmp_path / "photo.jpg"
    shutil.copy(data_dir / "parse" / "im0001.jpg", image)
    original = image.read_bytes()
    (tmp_path / "link.jpg").symlink_to(image)
    for output in (image, tmp_path / "link.jpg"):
        assert "does not overwrite its input" in _one_error_line(
            ["predict", "--model", tiny, "--image", image, "--output", output], capsys)
    assert image.read_bytes() == original
    assert "unknown image extension '.txt'" in _one_error_line(
        ["predict", "--model", "no_such_model.keras", "--image", image, "--output", tmp_path / "p.txt"], capsys)
    assert _run(["predict", "--model", tiny, "--image", image, "--output", tmp_path / "pose.jpg"], capsys)[0] == 0
    written = (tmp_path / "pose.jpg").read_bytes()
    assert written[:2] == b"\xff\xd8" and cv2.imread(str(tmp_path / "pose.jpg")).shape == cv2.imread(str(image)).shape


# ------------------------------------------------------------------ preset directories, skip summaries


def test_preset_directories_get_the_umask_permissions(tmp_path, tiny):
    import keras

    previous = os.umask(0o022)
    try:
        keras.saving.load_model(str(tiny), compile=False).save_to_preset(str(tmp_path / "preset"))
    finally:
        os.umask(previous)
    assert oct((tmp_path / "preset").stat().st_mode & 0o777) == oct(0o755)


def test_a_skip_summary_groups_reasons(tmp_path, data_dir, tiny, capsys):
    """A PARSE folder without its images printed one line per image (305); now one line per reason,
    with the count and the first names."""
    parse = tmp_path / "parse"
    parse.mkdir()
    shutil.copy(data_dir / "parse" / "labels.mat", parse / "labels.mat")
    line = _one_error_line(["evaluate", "--model", tiny, "--data", f"parse:{parse}"], capsys)
    assert "305 image: image file not found (e.g. im0001.jpg, im0002.jpg, im0003.jpg)" in line
    for number in range(1, 101):
        if number not in (3, 5, 7):
            (parse / f"im{number:04d}.jpg").symlink_to(data_dir / "parse" / f"im{number:04d}.jpg")
    samples = load_dataset(f"parse:{parse}:train").samples
    assert len(samples) == 97
    report = str(samples.report).splitlines()
    skipped = [line for line in report if "skipped " in line and "image file not found" in line]
    assert len(skipped) == 1 and "3  image: image file not found  (e.g. im0003.jpg, im0005.jpg, im0007.jpg)" in \
        skipped[0]
