"""int8 export with float islands (`export_tflite(float_ops=...)`): SOFTMAX / RSQRT stay float32, the rest is int8,
XNNPACK takes every op, the heatmaps agree with Keras' as well as the full-int8 file's do; the Edge TPU refuses it."""

import json
import sys
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest

from kdpose_tf.data.datasets import calibration_crops
from kdpose_tf.data.parse import read_parse
from kdpose_tf.export.tflite import check_float_ops, export_tflite
from kdpose_tf.models.proposal import build_proposal_student
from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.runtimes.xnnpack import xnnpack_check
from tests.export.test_tflite import argmax_keypoints

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_weights import trained_like  # noqa: E402
from tflite_profile import delegation  # noqa: E402

SIZE = (64, 48)
ISLANDS = ("SOFTMAX", "RSQRT")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir):
    """A small proposal student (PSA in every block: SOFTMAX, LayerNorm's RSQRT) exported full-int8 and with
    float islands, calibrated on PARSE training crops; PARSE test crops to compare on."""
    keras.utils.set_random_seed(0)
    model = build_proposal_student(num_keypoints=14, keypoint_set="lsp14", input_shape=(*SIZE, 3), widths=(8, 16),
                                   stage_modules=(1,), blocks_per_module=1, num_deconv_layers=0)
    trained_like(model)  # LayerNorm gamma / beta not 1 / 0: the converter keeps every MUL and ADD
    root = data_dir / "parse"
    calibration = calibration_crops(read_parse(root, split="train", on_bad_sample="skip"), SIZE, 16)
    test = calibration_crops(read_parse(root, split="test", on_bad_sample="skip"), SIZE, 24)
    out = tmp_path_factory.mktemp("float_islands")
    plain = export_tflite(model, out / "int8.tflite", quantize="int8", representative_data=calibration,
                          keypoint_set="lsp14")
    islands = export_tflite(model, out / "islands.tflite", quantize="int8", representative_data=calibration,
                            keypoint_set="lsp14", float_ops=ISLANDS)
    return model, plain, islands, test


def _float(tensors, indices):
    return [tensors[t]["dtype"] == "FLOAT32" for t in indices if t >= 0 and not tensors[t]["constant"]]


def test_softmax_and_rsqrt_are_float_the_rest_int8(exported):
    _, plain, islands, _ = exported
    ops, tensors = model_ops(islands), model_tensors(islands)
    counts = Counter(op["name"] for op in ops)
    plain_counts = Counter(op["name"] for op in model_ops(plain))
    assert counts["SOFTMAX"] == plain_counts["SOFTMAX"] > 0 and counts["RSQRT"] == plain_counts["RSQRT"] > 0
    consumers = Counter()
    for op in ops:
        consumers.update({t: op["name"] == "RSQRT" for t in op["inputs"]})
    for op in ops:
        io = _float(tensors, op["inputs"] + op["outputs"])
        if op["name"] in ISLANDS:
            assert all(io), op
        elif op["name"] == "ADD" and any(io):  # the LayerNorm eps add, read by an RSQRT only
            assert all(io) and consumers[op["outputs"][0]] == 1, op
        elif op["name"] == "DEQUANTIZE":
            assert _float(tensors, op["inputs"]) == [False] and _float(tensors, op["outputs"]) == [True]
        elif op["name"] == "QUANTIZE" and any(io):
            assert _float(tensors, op["outputs"]) == [False]
        else:
            assert not any(io), op  # int8 (uint8 at the input and output)
    float_adds = sum(op["name"] == "ADD" and all(_float(tensors, op["outputs"])) for op in ops)
    assert float_adds == counts["RSQRT"]
    assert not any(t["dtype"] == "FLOAT32" and not t["constant"] for t in model_tensors(plain))
    side = json.loads(islands.with_suffix(".json").read_text())
    in_file = {"ADD": counts["RSQRT"], "RSQRT": counts["RSQRT"], "SOFTMAX": counts["SOFTMAX"]}
    assert side["float_ops"] == {"requested": list(ISLANDS), "in_file": in_file}
    assert side["target"] == "cpu" and side["input"]["dtype"] == "uint8"
    assert json.loads(plain.with_suffix(".json").read_text())["float_ops"] == {"requested": [], "in_file": {}}


def test_xnnpack_takes_every_op(exported):
    _, plain, islands, _ = exported
    assert xnnpack_check(islands)["xnnpack"] == "ok"
    assert json.loads(islands.with_suffix(".json").read_text())["runtime"]["xnnpack"] == "ok"
    outside = lambda p: sorted(name for _, name, d in delegation(p) if not d)  # noqa: E731
    assert outside(islands) == ["QUANTIZE", "QUANTIZE"]  # the uint8 <-> int8 input / output conversions only
    assert {"SOFTMAX", "RSQRT", "ADD"} <= set(outside(plain))


def test_heatmaps_agree_with_keras_at_least_as_well_as_full_int8(exported):
    """Joints (heatmap argmax) within 1 heatmap pixel of the float Keras model's: the float-island file at
    least as often as the full-int8 one, less 5 points (on the same crops both are one rounding away)."""
    model, plain, islands, test = exported
    reference = model.predict(test, verbose=0)
    reference = argmax_keypoints(np.asarray(reference[-1] if isinstance(reference, list) else reference))
    near = {}
    for name, path in (("int8", plain), ("islands", islands)):
        joints = argmax_keypoints(TFLiteRunner(path)(test))
        near[name] = float((np.abs(joints - reference).max(axis=-1) <= 1).mean())
    assert near["islands"] >= near["int8"] - 0.05, near
    assert near["islands"] >= 0.6, near


def test_edgetpu_refuses_float_ops_in_one_line(exported, tmp_path, capsys):
    model, _, _, test = exported
    with pytest.raises(ValueError) as e:
        export_tflite(model, tmp_path / "tpu.tflite", quantize="int8", representative_data=test, target="edgetpu",
                      float_ops=ISLANDS)
    assert "\n" not in str(e.value) and "Edge TPU" in str(e.value) and not list(tmp_path.iterdir())
    for bad, why in ((("GELU",), "distinct op names"), ("SOFTMAX", "tuple of op names"),
                     (("RSQRT", "RSQRT"), "distinct op names")):
        with pytest.raises(ValueError, match=why):
            check_float_ops(bad)
    with pytest.raises(ValueError, match="needs quantize='int8'"):
        check_float_ops(ISLANDS, quantize="float16")
    from kdpose_tf.cli.main import main

    code = main(["export", "--model", str(tmp_path / "m.keras"), "--output", str(tmp_path / "tpu.tflite"),
                 "--target", "edgetpu", "--float-ops", "SOFTMAX", "RSQRT"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Edge TPU runs integer ops only" in err[0], err
