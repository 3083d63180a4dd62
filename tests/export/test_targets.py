"""Export targets are data: each `TARGETS` entry says what it accepts and how its file is checked."""

import dataclasses
import warnings

import pytest

from kdpose_tf.export import targets
from kdpose_tf.export.targets import TARGETS, ExportTarget, check_xnnpack, get_target
from kdpose_tf.export.tflite import check_float_ops, export_tflite
from tests.export.test_tflite import tiny_pose_model


@pytest.fixture()
def repro(shared_dir):
    """A real int8 file with one CONV_2D over XNNPACK's requantization limit (ratio 786.96)."""
    return (shared_dir / "models" / "xnnpack_repro" / "minimal_crash.tflite").read_bytes()


def test_the_table_holds_cpu_and_edgetpu():
    assert tuple(TARGETS) == ("cpu", "edgetpu")
    cpu, tpu = TARGETS["cpu"], TARGETS["edgetpu"]
    for quantize in ("none", "float16", "dynamic", "int8", "int8-qat"):
        cpu.check_variant(quantize, "float32")
    with pytest.raises(ValueError, match=r"target='edgetpu' needs a full-integer model: quantize 'int8' or "
                                         r"'int8-qat' with io_dtype 'int8' or 'uint8', got quantize='int8', "
                                         r"io_dtype='float32'"):
        tpu.check_variant("int8", "float32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tpu.strict = False
    with pytest.raises(ValueError, match=r"target must be one of \('cpu', 'edgetpu'\), got \['cpu'\]"):
        get_target(["cpu"])


def test_a_file_xnnpack_refuses_warns_for_the_cpu_and_the_edge_tpu_refuses_a_float_file(repro, tmp_path):
    report = check_xnnpack(repro)
    assert not report.ok and "XNNPACK refuses 1 op(s)" in report.summary() and "CONV_2D" in report.summary()
    with pytest.warns(UserWarning, match=r"(?s)XNNPACK will refuse this model.*op 0 CONV_2D"):
        assert TARGETS["cpu"].check_file(repro) is not None
    float_file = export_tflite(tiny_pose_model(), tmp_path / "float.tflite", sidecar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float file passes the CPU's check silently
        assert TARGETS["cpu"].check_file(float_file.read_bytes()).ok
    with pytest.raises(ValueError, match="model is not Edge TPU compatible:\nNOT Edge TPU ready"):
        TARGETS["edgetpu"].check_file(float_file.read_bytes())


def test_a_new_target_is_one_entry(monkeypatch, tmp_path):
    """A made-up target that takes float files only and refuses every file: export_tflite asks its entry
    for the variant, the model and the converted bytes, and needs nothing else."""
    seen = []

    class Refused:
        ok = False

        def summary(self):
            return "no op maps"

    def validate(model):
        seen.append(("model", model.name))

    def checker(data):
        seen.append(("file", data[4:8]))
        return Refused()

    entry = ExportTarget("npu", checker=checker, refusal="model is not NPU compatible", quantize=("none",),
                         io_dtypes=("float32", "uint8"), needs="a float model", validate_model=validate, strict=True,
                         float_islands=False, integer_only="the NPU runs whole graphs only")
    monkeypatch.setitem(targets.TARGETS, "npu", entry)
    with pytest.raises(ValueError, match=r"the NPU runs whole graphs only: export target='npu' without float_ops"):
        check_float_ops(("SOFTMAX",), "int8", "npu")
    assert check_float_ops(("SOFTMAX",), "int8", "cpu") == ("SOFTMAX",)
    with pytest.raises(ValueError, match="target='npu' needs a float model: quantize 'none' with io_dtype"):
        export_tflite(tiny_pose_model(), tmp_path / "m.tflite", quantize="int8", target="npu")
    with pytest.raises(ValueError, match="model is not NPU compatible:\nno op maps"):
        export_tflite(tiny_pose_model(name="npu_model"), tmp_path / "m.tflite", target="npu")
    assert seen == [("model", "npu_model"), ("file", b"TFL3")]
    assert not (tmp_path / "m.tflite").exists()
