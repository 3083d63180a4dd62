"""XNNPACK requantisation limit: the static check, the post-conversion fix and the exporter.

The files in <shared>/models/xnnpack_repro are real int8 exports XNNPACK refuses (student_s0 and
the 7-op trunc_s0_7 abort LiteRT 2.3 with a double free, minimal_crash fails with "failed to
create XNNPACK runtime"; student_s2 runs). Every XNNPACK run happens in a child process so an
abort cannot take pytest down.
"""

import json
from pathlib import Path
import subprocess
import sys
import warnings

import cv2
import keras
import numpy as np
import pytest

from kdpose_tf.export.tflite import convert_to_tflite, export_tflite
from kdpose_tf.export.xnnpack_compat import (
    TARGET_RATIO,
    _needed_output_scale,
    fix_requantization_scales,
    make_xnnpack_compatible,
)
from kdpose_tf.runtimes import xnnpack
from kdpose_tf.runtimes.flatbuffer import model_io, model_ops, model_tensors
from kdpose_tf.runtimes.litert import quantize
from kdpose_tf.runtimes.xnnpack import check_xnnpack_compat, find_requantization_issues
from tests.export.test_tflite import SIZE, coco_crops

# file -> number of ops over the limit (read with the interpreter-free check; see the issue)
REPRO = {"minimal_crash": 1, "student_s0": 2, "trunc_s0_7": 1, "student_s2": 0}

# Child: run a model on the kernels named in argv[2] with the input in argv[3]; save the raw output.
_RUN = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
kw = {} if sys.argv[2] == "xnnpack" else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
it = Interpreter(model_path=sys.argv[1], num_threads=1, **kw)
it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], np.load(sys.argv[3]))
it.invoke()
np.save(sys.argv[4], it.get_tensor(it.get_output_details()[-1]["index"]))
"""


def run_in_child(model, kernels, x, tmp_path):
    """Raw output of `model` on `x` with "xnnpack" or "builtin" kernels, run in a child process."""
    inp, out = tmp_path / "x.npy", tmp_path / f"out_{kernels}.npy"
    np.save(inp, x)
    proc = subprocess.run([sys.executable, "-c", _RUN, str(model), kernels, str(inp), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (kernels, proc.returncode, proc.stderr[-500:])
    return np.load(out)


def model_input(path, data_dir):
    """A real photo crop in the model's input shape and dtype (raw pixels: scale ~1 inputs)."""
    t = model_tensors(path)[model_io(path)["inputs"][0]]
    shape, dtype = t["shape"], np.dtype(t["dtype"].lower())
    crop = coco_crops(data_dir, n=1, size=SIZE)[0]
    if shape[-1] != 3:  # the truncated / minimal files take an inner feature map: real pixels, other layout
        flat = np.resize(crop.ravel(), int(np.prod(shape)))
        return quantize(flat.reshape(shape) / 255.0 * 2 - 1, dtype, t["scale"][0], t["zero_point"][0])
    crop = cv2.resize(crop, (shape[2], shape[1]))[None]
    return quantize(crop, dtype, t["scale"][0], t["zero_point"][0])


@pytest.fixture(scope="module")
def repro(shared_dir):
    return shared_dir / "models" / "xnnpack_repro"


def test_ratio_of_the_issue_is_hand_computable(repro):
    """student_s0's op 6: input 5.3377e-4 x weight scale (max channel) 5.4013e-3 / output 7.8431e-9."""
    issues = find_requantization_issues(repro / "student_s0.tflite")
    first = issues[0]
    assert (first["op_index"], first["op"]) == (6, "CONV_2D")
    assert "stem_branch1_dw_att_relu" in first["tensor"] and "att_conv1" in first["tensor"]
    assert first["ratio"] == pytest.approx(5.3377e-4 * 5.4013e-3 / 7.8431e-9, rel=1e-3)  # 367.6
    assert first["ratio"] == pytest.approx(367.59, abs=0.01) and first["limit"] == 256


def test_needed_output_scale_is_the_smallest_float32_at_target():
    in_scale, w_scales = 7.838755e-3, [7.874016e-4, 3.1e-4]
    s = _needed_output_scale(in_scale, w_scales)
    prod = np.float32(in_scale) * np.float32(max(w_scales))
    assert prod / np.float32(s) <= TARGET_RATIO
    assert prod / np.nextafter(np.float32(s), np.float32(0)) > TARGET_RATIO
    assert s == pytest.approx(7.838755e-3 * 7.874016e-4 / 255, rel=1e-6)


@pytest.mark.parametrize("name", list(REPRO))
def test_checker_flags_exactly_the_refused_files(repro, name):
    report = check_xnnpack_compat(repro / f"{name}.tflite")
    assert len(report["over_limit"]) == REPRO[name] and report["ok"] == (REPRO[name] == 0)
    for issue, message in zip(report["over_limit"], report["messages"]):
        assert issue["ratio"] >= 256 and issue["op"] == "CONV_2D"
        assert f"op {issue['op_index']} CONV_2D" in message and issue["tensor"] in message
        assert f"{issue['ratio']:.4g}" in message
    # the child-process probe agrees with the static check on the unfixed files
    verdict = xnnpack.xnnpack_check(repro / f"{name}.tflite")["xnnpack"]
    expected = {"minimal_crash": "refused", "student_s0": "crashed", "trunc_s0_7": "crashed", "student_s2": "ok"}
    assert verdict == expected[name]


@pytest.mark.parametrize("name", list(REPRO))
def test_fixed_repro_files_run_under_xnnpack_with_unchanged_builtin_outputs(repro, name, tmp_path, data_dir):
    original = repro / f"{name}.tflite"
    data, fixes = fix_requantization_scales(original)
    assert len(fixes) == REPRO[name]
    assert find_requantization_issues(data) == []
    for fix in fixes:
        assert fix["ratio_before"] >= 256 and fix["ratio_after"] <= TARGET_RATIO
        assert fix["new_scale"] > fix["old_scale"]
    fixed = tmp_path / f"{name}_fixed.tflite"
    fixed.write_bytes(data)
    # only scale vectors and bias data changed: same size, same ops
    assert len(data) == original.stat().st_size
    assert [o["name"] for o in model_ops(data)] == [o["name"] for o in model_ops(original)]

    x = model_input(original, data_dir)
    before = run_in_child(original, "builtin", x, tmp_path).astype(np.int32)
    after = run_in_child(fixed, "builtin", x, tmp_path).astype(np.int32)
    np.testing.assert_array_equal(after, before)
    # XNNPACK now runs the file; the two libraries round each of the ~840 requantisations
    # differently, so outputs differ by a few output steps (7 on student_s2, which needed no fix)
    xnn = run_in_child(fixed, "xnnpack", x, tmp_path).astype(np.int32)
    diff = np.abs(xnn - after)
    assert diff.max() <= 10 and diff.mean() <= 1.0, (diff.max(), diff.mean())


def test_make_xnnpack_compatible_rewrites_only_when_needed(repro, tmp_path):
    good = tmp_path / "s2.tflite"
    good.write_bytes((repro / "student_s2.tflite").read_bytes())
    mtime = good.stat().st_mtime_ns
    assert make_xnnpack_compatible(good) == [] and good.stat().st_mtime_ns == mtime
    bad = tmp_path / "s0.tflite"
    bad.write_bytes((repro / "student_s0.tflite").read_bytes())
    assert [f["op_index"] for f in make_xnnpack_compatible(bad)] == [6, 53]
    assert check_xnnpack_compat(bad)["ok"]
    assert xnnpack.xnnpack_check(bad)["xnnpack"] == "ok"


def test_auto_interpreter_uses_builtin_kernels_without_a_child_when_the_static_check_fails(repro, monkeypatch):
    def no_child(*args, **kwargs):
        raise AssertionError("the static check alone should decide")

    monkeypatch.setattr(xnnpack, "xnnpack_check", no_child)
    with pytest.warns(RuntimeWarning, match=r"op 6 CONV_2D .*requantization scale 367\.6"):
        _, kernels = xnnpack.make_interpreter(repro / "student_s0.tflite")
    assert kernels == "builtin"


def dead_relu_model():
    """A ReLU dead on every input (bias -10 after a [-1, 1] input) feeding max-pool -> conv with bias,
    added to a live branch: the converter collapses the dead range to a ~7.8e-9 scale."""
    inp = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inp)
    dead = keras.layers.Conv2D(4, 1, activation="relu", name="dead_conv")(x)
    dead = keras.layers.MaxPooling2D(2, name="dead_pool")(dead)
    dead = keras.layers.Conv2D(8, 1, name="after_dead")(dead)
    live = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="live")(x)
    out = keras.layers.Add(name="fuse")([dead, live])
    model = keras.Model(inp, out, name="dead_relu")
    rng = np.random.default_rng(0)
    model.get_layer("dead_conv").set_weights([rng.uniform(-0.1, 0.1, (1, 1, 3, 4)), np.full(4, -10.0)])
    model.get_layer("after_dead").set_weights([rng.uniform(-0.5, 0.5, (1, 1, 4, 8)), np.linspace(-4e-3, 4e-3, 8)])
    return model


def test_exporter_fixes_a_dead_relu_keeping_tied_tensors_and_biases_consistent(data_dir, tmp_path):
    keras.utils.set_random_seed(0)
    model = dead_relu_model()
    crops = coco_crops(data_dir, n=8)
    raw = convert_to_tflite(model, "int8", representative_data=crops)
    issues = find_requantization_issues(raw)
    assert [i["op"] for i in issues] == ["CONV_2D"] and "dead_conv" in issues[0]["tensor"]

    path = export_tflite(model, tmp_path / "dead.tflite", quantize="int8", representative_data=crops)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["xnnpack_compat"]["ok"] and side["xnnpack_compat"]["over_limit"] == []
    (fix,) = side["xnnpack_compat"]["fixes"]
    assert "dead_conv" in fix["tensor"] and any("dead_pool" in t for t in fix["tied_tensors"])
    assert side["runtime"]["xnnpack"] == "ok"

    # the max-pool keeps equal input/output parameters, and the next conv's bias scale is
    # input scale x weight scale with the same real bias values (rounded to the new step)
    ts, ops = model_tensors(path), model_ops(path)
    old_ts = model_tensors(raw)
    pool = next(o for o in ops if o["name"] == "MAX_POOL_2D")
    assert ts[pool["inputs"][0]]["scale"] == ts[pool["outputs"][0]]["scale"] == [pytest.approx(fix["new_scale"])]
    conv = next(o for o in ops if o["name"] == "CONV_2D" and o["inputs"][0] == pool["outputs"][0])
    w, b = ts[conv["inputs"][1]], ts[conv["inputs"][2]]
    expected = np.float32(fix["new_scale"]) * np.float32(w["scale"])
    np.testing.assert_allclose(b["scale"], expected, rtol=1e-6)
    assert old_ts[conv["inputs"][2]]["scale"] != b["scale"]

    # builtin kernels: the fixed file computes what the unfixed one did (the dead branch is 0);
    # XNNPACK runs the fixed file and agrees within a few output steps
    unfixed = tmp_path / "unfixed.tflite"
    unfixed.write_bytes(raw)
    x = model_input(path, data_dir)
    before = run_in_child(unfixed, "builtin", x, tmp_path).astype(np.int32)
    after = run_in_child(path, "builtin", x, tmp_path).astype(np.int32)
    assert np.abs(after - before).max() <= 1
    xnn = run_in_child(path, "xnnpack", x, tmp_path).astype(np.int32)
    assert np.abs(xnn - after).max() <= 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the exported file runs on XNNPACK
        _, kernels = xnnpack.make_interpreter(path)
    assert kernels == "xnnpack"


def dead_gate_model():
    """A live branch times a sigmoid gate that is ~0 on every input (bias -30), added back to the live
    branch: the gate keeps the sigmoid's fixed 1/256 scale but the product's calibrated range
    collapses, so XNNPACK would leave the MUL (product / output scale >= 256) and then the ADD (dead
    input / output scale < 2^-10) to the builtin kernels (Dite-HRNet's kernel attention, untrained)."""
    inp = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inp)
    live = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="live")(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="dead_gate")(x)
    out = keras.layers.Add(name="sum")([live, keras.layers.Multiply(name="gated")([live, gate])])
    model = keras.Model(inp, out, name="dead_gate")
    rng = np.random.default_rng(0)
    model.get_layer("dead_gate").set_weights([rng.uniform(-0.1, 0.1, (1, 1, 3, 8)), np.full(8, -30.0)])
    return model


def test_exporter_brings_add_and_mul_into_xnnpack_scale_ranges(data_dir, tmp_path, capsys):
    from kdpose_tf.runtimes.xnnpack import ELEMENTWISE_RANGES, find_delegation_issues

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from tflite_profile import delegation

    keras.utils.set_random_seed(0)
    model = dead_gate_model()
    crops = coco_crops(data_dir, n=8)
    raw = tmp_path / "raw.tflite"
    raw.write_bytes(convert_to_tflite(model, "int8", representative_data=crops))
    before = find_delegation_issues(raw)
    assert sorted(i["op"] for i in before) == ["ADD", "MUL"], before
    mul = next(i for i in before if i["op"] == "MUL")
    assert mul["ratio"] >= ELEMENTWISE_RANGES["MUL"][1]
    report = check_xnnpack_compat(raw)
    assert report["ok"] and len(report["warnings"]) == 2 and "builtin kernel" in report["warnings"][0]
    from kdpose_tf.cli.main import main

    assert main(["check-xnnpack", str(raw)]) == 0  # slower, not fatal: the check passes and says so
    out = capsys.readouterr().out
    assert f"op {mul['op_index']} MUL" in out and "2 op(s) run on the builtin kernels" in out

    path = export_tflite(model, tmp_path / "gate.tflite", quantize="int8", representative_data=crops)
    assert find_delegation_issues(path) == []
    side = json.loads(path.with_suffix(".json").read_text())
    fixed_ops = {f["op"] for f in side["xnnpack_compat"]["fixes"]}
    assert {"ADD", "MUL"} <= fixed_ops
    for f in side["xnnpack_compat"]["fixes"]:
        assert f["new_scale"] > f["old_scale"]
        if f["op"] in ELEMENTWISE_RANGES:
            low, high = ELEMENTWISE_RANGES[f["op"]]
            assert low <= f["ratio_after"] < high
    # every op but the uint8 <-> int8 QUANTIZEs runs in XNNPACK now (the MUL and ADD did not before)
    outside = lambda p: sorted(name for _, name, d in delegation(p) if not d)  # noqa: E731
    assert outside(path) == ["QUANTIZE", "QUANTIZE"]
    # the product is 0 on every input, so the builtin-kernel outputs are unchanged bit for bit
    x = model_input(raw, data_dir)
    np.testing.assert_array_equal(run_in_child(path, "builtin", x, tmp_path), run_in_child(raw, "builtin", x, tmp_path))


def test_a_term_read_by_other_ops_is_left_and_reported(data_dir, tmp_path):
    """The dead product also feeds a conv: raising it for the ADD would coarsen what the conv reads,
    so the pass leaves the ADD to the builtin kernels and `find_delegation_issues` still names it."""
    from kdpose_tf.runtimes.xnnpack import find_delegation_issues

    keras.utils.set_random_seed(0)
    base = dead_gate_model()
    prod = base.get_layer("gated").output
    side = keras.layers.Conv2D(8, 1, name="side_reader")(prod)
    out = keras.layers.Add(name="both")([base.output, side])
    model = keras.Model(base.input, out)
    path = export_tflite(model, tmp_path / "two_readers.tflite", quantize="int8",
                         representative_data=coco_crops(data_dir, n=8))
    left = find_delegation_issues(path)
    assert [i["op"] for i in left] == ["ADD"] and "sum" in left[0]["tensor"], left
    assert json.loads(path.with_suffix(".json").read_text())["xnnpack_compat"]["not_delegated"] == left


def test_square_of_a_tensor_raises_both_inputs_together():
    """MUL(x, x) below 2^-16: both inputs are the same tensor, so its scale s must satisfy s*s/out >= 2^-16
    (sqrt of the bound), not s*old/out (which would raise it ~10^5 times too far)."""
    from kdpose_tf.export.xnnpack_compat import _smallest_scale
    from kdpose_tf.runtimes.xnnpack import ELEMENTWISE_RANGES

    low = ELEMENTWISE_RANGES["MUL"][0]
    so = np.float32(1e-2)
    start = np.sqrt(np.float32(low) * so) * np.float32(1 - 1e-6)
    s = _smallest_scale(lambda s: s * s / so, start, lambda r: r >= low)
    assert s is not None and s * s / so >= low and np.float32(np.nextafter(np.float32(s), 0)) ** 2 / so < low
    assert s < 1e-3  # ~3.9e-4, where the one-sided formula gave 15
    assert _smallest_scale(lambda s: s, np.float32(np.inf), lambda r: True) is None  # no endless loop on inf
