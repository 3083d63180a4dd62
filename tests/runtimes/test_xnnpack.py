"""XNNPACK crash detection and fallback (kdpose_tf.runtimes.xnnpack).

LiteRT 2.3's XNNPACK delegate aborts the process (double free) on some int8 students; whether a
given file triggers it depends on its weights, so the crash itself is reproduced here with a child
that aborts the same way (SIGABRT) on a real exported model, and the detection, fallback, warning
and sidecar advice are checked on it. The real models must run on both kernel sets with the same
outputs.
"""

import json
import signal

import numpy as np
import pytest

from kdpose_tf.export.sidecar import make_sidecar
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.runtimes import xnnpack
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.keypoints import COCO17
from tests.export.test_tflite import coco_crops, tiny_pose_model


@pytest.fixture(scope="module")
def int8_model(data_dir, tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("delegates") / "tiny_int8.tflite"
    export_tflite(tiny_pose_model(), path, quantize="int8", representative_data=coco_crops(data_dir, n=8),
                  sidecar=False)
    return path


@pytest.fixture
def aborting_probe(monkeypatch):
    """The child dies of SIGABRT after loading the model, as the XNNPACK double free does."""
    monkeypatch.setattr(xnnpack, "_PROBE", xnnpack._PROBE.replace("it.invoke()", "import os; os.abort()"))
    monkeypatch.setattr(xnnpack, "_CACHE", {})


def test_check_passes_a_model_xnnpack_runs(int8_model):
    result = xnnpack.xnnpack_check(int8_model)
    assert result["xnnpack"] == "ok" and "detail" not in result
    assert result["litert_version"][0].isdigit()


def test_abort_is_reported_as_crashed_and_runner_falls_back(int8_model, data_dir, aborting_probe):
    result = xnnpack.xnnpack_check(int8_model)
    assert result["xnnpack"] == "crashed"
    assert f"exit status {-signal.SIGABRT}" in result["detail"]
    with pytest.warns(RuntimeWarning, match="XNNPACK delegate crashed"):
        fallback = TFLiteRunner(int8_model)
    assert fallback.delegate == "builtin"
    # the builtin kernels compute the same int8 model as the delegate: the two libraries round each
    # layer's requantisation differently, so outputs differ by a few output quantisation steps at
    # most (3 measured here) and by well under one step on average
    crops = coco_crops(data_dir, n=4)
    direct = TFLiteRunner(int8_model, xnnpack=True)
    assert direct.delegate == "xnnpack"
    step = direct.output_details["quantization"][0]
    diff = np.abs(fallback(crops) - direct(crops))
    assert diff.max() <= 5 * step and diff.mean() <= 0.5 * step, (diff.max() / step, diff.mean() / step)


def test_sidecar_advises_disabling_the_delegate_after_a_crash(int8_model, aborting_probe):
    side = make_sidecar(int8_model, keypoint_set=COCO17, quantize="int8")
    assert side["runtime"]["xnnpack"] == "crashed"
    assert "setUseXNNPACK(false)" in side["runtime"]["advice"]
    json.dumps(side)  # serialisable as written next to the model


def test_a_python_error_in_the_child_is_not_called_a_crash(tmp_path):
    not_a_model = tmp_path / "broken.tflite"
    not_a_model.write_bytes(b"not a flatbuffer")
    result = xnnpack.xnnpack_check(not_a_model)
    # the child reports the interpreter's own error: neither kernel set loads the file
    assert result["xnnpack"] == "failed" and "ValueError" in result["detail"], result
    # The sidecar's advice does not blame the delegate for a file that does not load.
    from kdpose_tf.export.sidecar import _runtime_advice

    advice = _runtime_advice(result)
    assert "setUseXNNPACK" not in advice and "could not be run" in advice


def test_bad_xnnpack_argument_is_rejected(int8_model):
    with pytest.raises(ValueError, match="xnnpack must be one of"):
        TFLiteRunner(int8_model, xnnpack="yes")
