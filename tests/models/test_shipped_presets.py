"""The trained presets that ship inside the package: each loads offline by name, scores within one point
of its model card on PARSE 101-305 (real photos), carries a complete card and recipe, and its int8 export
file (shipped beside the weights) runs under LiteRT's XNNPACK delegate and scores as its card says."""

import json

import numpy as np
import pytest

from kdpose_tf.cli.recipe import load_recipe
from kdpose_tf.data.datasets import load_samples, to_keypoint_set
from kdpose_tf.data.lsp import read_lsp
from kdpose_tf.evaluation import BODY12, evaluate, keras_predict_fn, predict_samples
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.keypoints import LSP14, joint_mapping
from kdpose_tf.metrics.pck import pck, torso_normalizer
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.models.preset_utils import WEIGHTS_FILE, shipped_card, shipped_presets

SHIPPED = sorted(shipped_presets())
CARD_FIELDS = ("training_data", "data_terms", "teacher", "rebuild", "initial_weights", "metrics", "headline")


def test_the_two_students_ship():
    assert {"lsp14_student_128x96", "coco17_student_128x96"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_card_recipe_and_size(name):
    card = shipped_card(name)
    missing = [f for f in CARD_FIELDS if not card.get(f)]
    assert not missing, f"{name}: model card lacks {missing}"
    assert "research" in card["data_terms"].lower()  # LSP / LSPET are research-only
    folder = shipped_presets()[name]
    assert (folder / WEIGHTS_FILE).is_file()
    size = sum(f.stat().st_size for f in folder.iterdir())  # weights, int8 file, config, card, recipe
    assert size <= 6_000_000, f"{name}: {size / 1e6:.2f} MB shipped, over 6 MB"
    recipe = load_recipe(name)
    assert recipe["name"] == name and any(s["name"] == "student" for s in recipe["steps"])


def _body12_on_parse(model, parse_test):
    """Body-12 PCK@0.2 of a model on PARSE test; COCO-17 predictions are mapped onto LSP-14 by joint name."""
    ks = model.keypoint_set
    report = evaluate(keras_predict_fn(model), parse_test, model.input_size, model.codec, ks, progress=False) \
        if ks.name == LSP14.name else None
    if report is not None:
        return 100 * report["pck"]["body12"]
    people = to_keypoint_set(parse_test, ks)  # the same boxes, the model's joints
    pred, _ = predict_samples(keras_predict_fn(model), people, model.input_size, model.codec, ks, progress=False)
    return _body12_from_predictions(pred, ks, parse_test)


def _body12_from_predictions(pred, ks, parse_test):
    """Body-12 PCK@0.2 on PARSE test of (N, K, 2) predictions in keypoint set `ks`, mapped onto LSP-14 by name."""
    lsp = np.full((len(parse_test), 14, 2), np.nan)
    for src, dst in joint_mapping(ks, LSP14).items():
        lsp[:, dst] = pred[:, src]
    gt = np.stack([s.keypoints for s in parse_test]).astype(np.float64)
    vis = np.stack([s.visibility for s in parse_test]) > 0
    per_joint = pck(lsp, gt, vis, torso_normalizer(gt, LSP14, vis), 0.2)["per_joint"]
    return 100 * float(np.mean([per_joint[LSP14.names.index(n)] for n in BODY12]))


@pytest.fixture(scope="module")
def parse_test(data_dir):
    return load_samples(f"parse:{data_dir / 'parse'}:test")  # as `kdpose evaluate` reads it


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_offline_and_scores_as_its_card_says(name, parse_test, monkeypatch, tmp_path):
    monkeypatch.setenv("KDPOSE_PRESETS_DIR", str(tmp_path))  # nothing from a user cache
    model = PoseEstimator.from_preset(name)
    card = shipped_card(name)
    measured = _body12_on_parse(model, parse_test)
    assert abs(measured - card["metrics"]["parse_test"]["body12"]) <= 1.0
    assert measured > 60  # a trained model (an untrained head scores near 0)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_int8_file_runs_under_xnnpack_and_scores_as_its_card_says(name, parse_test):
    """The preset's int8 file (its quantization-aware export, `model_int8.tflite` + sidecar) is checked
    against its weights, runs on XNNPACK and scores within one point of the card on PARSE test."""
    from kdpose_tf.cli.evaluate import load_predictor
    from kdpose_tf.runtimes.litert import read_sidecar

    path = shipped_presets()[name] / "model_int8.tflite"
    sidecar = read_sidecar(path)  # checks the file's sha256 against the sidecar
    model = PoseEstimator.from_preset(name)
    assert sidecar["variant"] == "int8-qat" and sidecar["keypoints"]["set"] == model.keypoint_set.name
    runner = TFLiteRunner(path, num_threads=1, xnnpack=True)
    assert runner.delegate == "xnnpack"
    assert tuple(runner.input_size) == tuple(model.input_size)
    fn, size, codec, _ = load_predictor(str(path))
    pred, _ = predict_samples(fn, to_keypoint_set(parse_test, model.keypoint_set), size, codec, model.keypoint_set,
                              progress=False)
    measured = _body12_from_predictions(pred, model.keypoint_set, parse_test)
    assert abs(measured - shipped_card(name)["metrics"]["parse_test_int8"]["body12"]) <= 1.0
    assert measured > 60


@pytest.mark.parametrize("name", SHIPPED)
def test_predict_by_name_on_a_photo(name, data_dir, tmp_path, capsys):
    """`kdpose predict --model NAME --image photo.jpg` right after install: the joints land on the person."""
    from kdpose_tf.cli.main import main

    photo = data_dir / "lsp" / "images" / "im1001.jpg"  # one person; no --box: the whole image is the box
    out = tmp_path / "pose.png"
    assert main(["predict", "--model", name, "--image", str(photo), "--output", str(out)]) == 0
    assert out.stat().st_size > 1000
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if "score=" in line]
    test = read_lsp(data_dir / "lsp", "test", limit=1)[0]
    predicted = {line.split(":")[0].strip(): (float(line.split("x=")[1].split()[0]), float(line.split("y=")[1].split()[0]))
                 for line in lines}
    torso = np.linalg.norm(test.keypoints[9] - test.keypoints[2])
    near = [np.linalg.norm(np.subtract(predicted[j], test.keypoints[LSP14.names.index(j)])) <= 0.5 * torso
            for j in BODY12 if j in predicted]
    assert len(near) == 12 and np.mean(near) >= 0.75
