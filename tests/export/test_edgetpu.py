"""Edge TPU checker and export profile."""

import keras
import numpy as np
import pytest
from tensorflow.lite.tools import flatbuffer_utils

from kdpose_tf.export.edgetpu import EDGETPU_MAX_VERSIONS, check_edgetpu, validate_edgetpu_model
from kdpose_tf.runtimes.flatbuffer import model_ops
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite
from tests.export.test_tflite import SIZE, coco_crops, tiny_pose_model


@pytest.fixture(scope="module")
def crops(data_dir):
    return coco_crops(data_dir, n=12)


def test_clean_int8_model_passes_and_edgetpu_profile_exports(crops, tmp_path):
    model = tiny_pose_model()
    path = export_tflite(model, tmp_path / "clean.tflite", quantize="int8", representative_data=crops,
                         target="edgetpu", io_dtype="uint8")
    report = check_edgetpu(path)
    assert report.ok and report.first_unsupported is None and report.ops_on_tpu == len(report.ops)
    names = [op.name for op in report.ops]
    assert "RESIZE_NEAREST_NEIGHBOR" in names and "CONV_2D" in names
    assert [(o.name, o.version) for o in report.ops] == [(o["name"], o["version"]) for o in model_ops(path)]
    assert TFLiteRunner(path).input_details["dtype"] == np.uint8


def test_unsupported_op_is_flagged_at_its_index(crops, tmp_path):
    """Keras 3's UpSampling2D(interpolation="nearest") lowers to RESHAPE + TILE, and TILE is not on
    Coral's supported list: the first TILE is where the Edge TPU graph would end."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=8, padding="same", name="c1")(inp)
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample")(x)
    x = keras.layers.Conv2D(17, 1, name="c2")(x)
    model = keras.Model(inp, x)
    path = export_tflite(model, tmp_path / "tile.tflite", quantize="int8", representative_data=crops)
    report = check_edgetpu(path)
    names = [op.name for op in report.ops]
    assert not report.ok
    assert report.first_unsupported == names.index("TILE")
    assert report.ops_on_tpu == names.index("TILE")
    assert report.ops[0].supported and "not supported" in report.ops[report.first_unsupported].reason
    assert "TILE" in report.summary() and "run on the CPU" in report.summary()
    with pytest.raises(ValueError, match="TILE"):
        export_tflite(model, tmp_path / "tile_tpu.tflite", quantize="int8", representative_data=crops,
                      target="edgetpu")
    assert not (tmp_path / "tile_tpu.tflite").exists()


def test_too_new_op_version_is_flagged(crops, tmp_path):
    """Compiler 16.0 refuses TRANSPOSE_CONV v4 (google-coral/edgetpu#845). The converter here emits
    v2 for this model, so the version is rewritten to 4 in the flatbuffer to reproduce the case."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=8, padding="same", name="c1")(inp)
    x = keras.layers.Conv2DTranspose(17, 4, strides=2, padding="same", name="deconv")(x)
    path = export_tflite(keras.Model(inp, x), tmp_path / "deconv.tflite", quantize="int8", representative_data=crops)
    before = check_edgetpu(path)
    idx = [o.name for o in before.ops].index("TRANSPOSE_CONV")
    assert before.ops[idx].version <= EDGETPU_MAX_VERSIONS["TRANSPOSE_CONV"] and before.ok

    fb = flatbuffer_utils.read_model(str(path))
    for code in fb.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == 67:  # BuiltinOperator.TRANSPOSE_CONV
            code.version = 4
    flatbuffer_utils.write_model(fb, str(tmp_path / "deconv_v4.tflite"))
    after = check_edgetpu(tmp_path / "deconv_v4.tflite")
    assert after.first_unsupported == idx
    assert "version 4 > 3" in after.ops[idx].reason


def test_float_model_flagged_not_quantized(tmp_path):
    model = tiny_pose_model()
    path = export_tflite(model, tmp_path / "float.tflite")
    report = check_edgetpu(path)
    assert not report.ok and report.first_unsupported == 0
    assert any("FLOAT32" in p for p in report.tensor_problems)


def test_profile_rejects_transposed_conv_and_float_variants(crops, tmp_path):
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=8, padding="same", name="c1")(inp)
    x = keras.layers.Conv2DTranspose(17, 4, strides=2, padding="same", name="head_deconv")(x)
    model = keras.Model(inp, x)
    with pytest.raises(ValueError, match=r"head_deconv.*resize_conv"):
        validate_edgetpu_model(model)
    with pytest.raises(ValueError, match="resize_conv"):
        export_tflite(model, tmp_path / "d.tflite", quantize="int8", representative_data=crops, target="edgetpu")
    with pytest.raises(ValueError, match="full-integer"):
        export_tflite(tiny_pose_model(), tmp_path / "f.tflite", quantize="float16", target="edgetpu")


def test_check_edgetpu_prints_a_table_and_a_verdict(crops, tmp_path, capsys):
    """`kdpose check-edgetpu` prints one aligned row per op and a one-line verdict naming the first op
    that falls back to the CPU; exit 0 only when everything maps (it once printed a 20 KB repr)."""
    from kdpose_tf.cli.main import main

    clean = export_tflite(tiny_pose_model(), tmp_path / "clean.tflite", quantize="int8", representative_data=crops,
                          target="edgetpu", io_dtype="uint8")
    assert main(["check-edgetpu", str(clean)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "EdgeTPUReport(" not in "\n".join(lines)
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "op", "version"])
    ops = model_ops(clean)
    rows = lines[header + 2: header + 2 + len(ops)]
    for op, row in zip(ops, rows):
        assert row.split()[:5] == [str(op["index"]), op["name"], str(op["version"]),
                                   str(EDGETPU_MAX_VERSIONS[op["name"]]), "Edge"]
    assert lines[-1] == f"Edge TPU ready: all {len(ops)} ops map to the Edge TPU (compiler 16.0 rules)."

    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=8, padding="same", name="c1")(inp)
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample")(x)
    tile = export_tflite(keras.Model(inp, keras.layers.Conv2D(17, 1, name="c2")(x)), tmp_path / "tile.tflite",
                         quantize="int8", representative_data=crops)
    assert main(["check-edgetpu", str(tile)]) == 1
    lines = capsys.readouterr().out.splitlines()
    names = [o["name"] for o in model_ops(tile)]
    first = names.index("TILE")
    verdict = lines[-1]
    assert verdict.startswith("NOT Edge TPU ready") and f"#{first} TILE" in verdict and "CPU" in verdict
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "op", "version"])
    rows = lines[header + 2: header + 2 + len(names)]
    assert rows[first].split()[4:] == ["CPU", "op", "not", "supported", "by", "the", "Edge", "TPU"]
    assert all(r.split()[4] == "CPU" for r in rows[first:]) and all(r.split()[4] == "Edge" for r in rows[:first])
    assert main(["check-edgetpu", str(tmp_path / "missing.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err
