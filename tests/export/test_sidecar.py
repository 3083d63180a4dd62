"""Sidecar JSON agrees with the interpreter's own tensor details."""

import json

import numpy as np
import pytest

from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.sidecar import make_sidecar, write_sidecar
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.keypoints import COCO17, LSP14
from tests.export.test_tflite import SIZE, coco_crops, tiny_pose_model


@pytest.mark.parametrize("quantize,io_dtype", [("int8", "uint8"), ("int8", "int8"), ("none", "uint8")])
def test_sidecar_matches_interpreter(data_dir, tmp_path, quantize, io_dtype):
    crops = coco_crops(data_dir, n=8)
    path = export_tflite(tiny_pose_model(), tmp_path / f"m_{quantize}_{io_dtype}.tflite", quantize=quantize,
                         representative_data=crops, io_dtype=io_dtype)
    side_path = write_sidecar(path, keypoint_set=COCO17, quantize=quantize)
    side = json.loads(side_path.read_text())
    runner = TFLiteRunner(path)
    inp, out = runner.input_details, runner.output_details
    assert side["input"]["shape"] == list(inp["shape"]) == [1, SIZE, SIZE, 3]
    assert side["output"]["shape"] == list(out["shape"])
    assert np.dtype(side["input"]["dtype"]) == inp["dtype"] and np.dtype(side["output"]["dtype"]) == out["dtype"]
    for entry, details in ((side["input"], inp), (side["output"], out)):
        scale, zp = details["quantization"]
        if scale == 0:
            assert entry["quantization"] is None
        else:
            assert entry["quantization"]["scale"] == pytest.approx(scale, rel=1e-6)
            assert entry["quantization"]["zero_point"] == zp
    assert side["heatmap"]["stride"] == 4 and side["heatmap"]["num_keypoints"] == 17
    assert side["keypoints"]["skeleton"] == [list(e) for e in COCO17.skeleton]
    assert side["keypoints"]["flip_pairs"] == [list(p) for p in COCO17.flip_pairs]
    assert side["normalization"]["in_graph"] is True

    # the recipe in the sidecar reproduces the runner: quantise raw pixels, dequantise the output
    if side["input"]["quantization"]:
        q = side["input"]["quantization"]
        info = np.iinfo(side["input"]["dtype"])
        x = np.clip(np.rint(crops[:1] / q["scale"] + q["zero_point"]), info.min, info.max).astype(side["input"]["dtype"])
        raw = runner.invoke_raw(x)
        o = side["output"]["quantization"]
        np.testing.assert_allclose((raw.astype(np.float32) - o["zero_point"]) * o["scale"], runner(crops[:1]), atol=1e-6)


def test_sidecar_rejects_wrong_keypoint_set(data_dir, tmp_path):
    path = export_tflite(tiny_pose_model(), tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="14 joints but the model outputs 17"):
        make_sidecar(path, keypoint_set=LSP14)


def test_sidecar_of_a_file_xnnpack_refuses_advises_turning_it_off(shared_dir):
    """minimal_crash.tflite: XNNPACK raises "failed to create XNNPACK runtime" (a clean error, no
    abort): the sidecar names the op over the limit and advises the builtin kernels."""
    side = make_sidecar(shared_dir / "models" / "xnnpack_repro" / "minimal_crash.tflite", quantize="int8")
    assert side["runtime"]["xnnpack"] == "refused" and "XNNPACK" in side["runtime"]["detail"]
    assert "setUseXNNPACK(false)" in side["runtime"]["advice"]
    (issue,) = side["xnnpack_compat"]["over_limit"]
    assert (issue["op_index"], issue["op"]) == (0, "CONV_2D") and issue["ratio"] == pytest.approx(786.96, abs=0.01)
    assert side["xnnpack_compat"]["ok"] is False and side["xnnpack_compat"]["fixes"] is None
    json.dumps(side)
