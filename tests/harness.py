"""Shared model test harness: serialization, save/load, mixed precision, and the shipped TFLite path.

Use from any test file (tests/ is on sys.path under pytest's rootdir import mode). Layers and
models are checked through one signature, `(cls, init_kwargs, input_shape)` (keras-hub's
`run_layer_test` / `run_backbone_test` shape):

    from harness import check_int8, run_layer_checks, run_model_checks, run_preset_checks

    def test_my_layer():
        run_layer_checks(MyLayer, {"filters": 8, "name": "my_layer"}, (2, 16, 16, 8))

    def test_my_model(tmp_path):
        run_model_checks(MyBackbone, {"width": 8, "input_shape": (64, 64, 3)}, (2, 64, 64, 3), tmp_path=tmp_path)

TFLite checks go through what ships: `kdpose_tf.export.tflite.export_tflite` (the final output,
written with its sidecar) and `kdpose_tf.runtimes.litert.TFLiteRunner` (XNNPACK when it runs the
file). A layer is exported inside an image model (`Rescaling` to [-1, 1], a fixed 1x1 conv to the
layer's input channels, the layer, a float32 cast). `check_int8` is the full-integer check
(calibrated `quantize="int8"`, builtin int8 ops only, the ops present / absent a test names).
Every check fails with an assertion that says which check and by how much. Keep inputs tiny (64x64
or smaller, widths 8-16): TFLite conversion costs a few seconds per model.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

import keras
import numpy as np

from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite, single_output_model
from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.models import preset_utils, presets
from kdpose_tf.models.backbone import Backbone
from kdpose_tf.models.pose_estimator import PoseEstimator


def _flatten(outputs):
    """Outputs as a list of numpy arrays: dicts in sorted key order, lists in order."""
    if isinstance(outputs, dict):
        return [keras.ops.convert_to_numpy(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in outputs]
    return [keras.ops.convert_to_numpy(outputs)]


def _max_diff(a, b):
    a, b = _flatten(a), _flatten(b)
    assert len(a) == len(b), f"different number of outputs: {len(a)} vs {len(b)}"
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"output shapes differ: {x.shape} vs {y.shape}"
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))


def _inputs(input_shape, seed=0, low=0.0, high=255.0):
    return np.random.RandomState(seed).uniform(low, high, input_shape).astype("float32")


def check_config_round_trip(obj, x, atol=1e-6):
    """cls.from_config(obj.get_config()) with copied weights gives the same outputs."""
    clone = type(obj).from_config(obj.get_config())
    if not clone.built:
        clone(x)
    clone.set_weights(obj.get_weights())
    diff = _max_diff(obj(x, training=False), clone(x, training=False))
    assert diff <= atol, f"config round trip: outputs differ by {diff}"
    return clone


def check_keras_save_load(model, x, tmp_path, atol=1e-6):
    """`.keras` save + load_model gives the same class and outputs."""
    path = Path(tmp_path) / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model), f".keras load gave {type(loaded).__name__}, expected {type(model).__name__}"
    diff = _max_diff(model(x, training=False), loaded(x, training=False))
    assert diff <= atol, f".keras save/load: outputs differ by {diff}"
    return loaded


def check_mixed_precision(build_fn, x, require_float32=True):
    """Under the mixed_float16 policy `build_fn()` builds and runs; outputs are finite and, with
    `require_float32` (heatmap outputs), float32.

    `build_fn` must construct a fresh object (layers pick their dtype policy at construction).
    The global policy is restored afterwards.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        obj = build_fn()
        outputs = _flatten(obj(x, training=False))
    finally:
        keras.config.set_dtype_policy(previous)
    for o in outputs:
        assert o.dtype in (np.float16, np.float32), f"mixed precision: output dtype {o.dtype}"
        assert not require_float32 or o.dtype == np.float32, f"mixed precision: output dtype {o.dtype}, expected float32"
        assert np.all(np.isfinite(o)), "mixed precision: non-finite outputs"
    return outputs


def _export(model, tmp_path, quantize="none", calibration=None, **kwargs):
    path = Path(tmp_path) / f"{model.name}_{quantize}.tflite"
    export_tflite(model, path, quantize=quantize, representative_data=calibration, **kwargs)
    assert path.with_suffix(".json").is_file(), f"export_tflite wrote no sidecar next to {path}"
    return TFLiteRunner(path)


def check_tflite_parity(model, x, tmp_path, atol=1e-4):
    """`export_tflite` (float32) run by `TFLiteRunner`: the final output within `atol` of Keras."""
    runner = _export(model, tmp_path)
    expected = _flatten(single_output_model(model)(x, training=False))
    diff = _max_diff(expected, [runner(x)])
    assert diff < atol, f"TFLite parity: max abs diff {diff} >= {atol}"
    return diff


def check_int8(model, calibration, tmp_path, x=None, ops_present=(), ops_absent=(), io_dtype="uint8"):
    """Full-integer export (`export_tflite(quantize="int8")`) run by `TFLiteRunner`.

    Asserts builtin ops only (no Flex / CUSTOM), `ops_present` <= ops, no op of `ops_absent`, and
    integer I/O (`io_dtype`). Returns {"ops", "output" (dequantised, float32), "reference" (Keras,
    final output), "runner"} on `x` (default the calibration images) for the test's own error bounds.
    """
    runner = _export(model, tmp_path, "int8", calibration, io_dtype=io_dtype, sidecar=True)
    ops = {op["name"] for op in runner.ops()}
    assert not any(op.upper().startswith(("FLEX", "CUSTOM")) for op in ops), f"int8: non-builtin ops {ops}"
    assert set(ops_present) <= ops, f"int8: ops {sorted(set(ops_present) - ops)} missing from {sorted(ops)}"
    assert not set(ops_absent) & ops, f"int8: unexpected ops {sorted(set(ops_absent) & ops)}"
    assert runner.input_details["dtype"] == np.dtype(io_dtype), f"int8: input dtype {runner.input_details['dtype']}"
    x = np.asarray(calibration if x is None else x, np.float32)
    reference = _flatten(single_output_model(model)(x, training=False))[0]
    return {"ops": ops, "output": runner(x), "reference": reference, "runner": runner}


def _image_model(layer_cls, init_kwargs, input_shape):
    """images (H, W, 3) in [0, 255] -> [-1, 1] -> fixed 1x1 conv to C channels -> layer -> float32."""
    rng = np.random.RandomState(0)
    inp = keras.Input(shape=(*input_shape[1:3], 3), name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inp)
    to_c = keras.layers.Conv2D(input_shape[-1], 1, name="to_channels")
    x = to_c(x)
    to_c.set_weights([rng.normal(size=(1, 1, 3, input_shape[-1])).astype("float32"), np.zeros(input_shape[-1], "float32")])
    out = keras.layers.Activation("linear", dtype="float32", name="to_float32")(layer_cls(**init_kwargs)(x))
    return keras.Model(inp, out, name=f"{init_kwargs.get('name', 'layer')}_image_model")


def run_layer_checks(layer_cls, init_kwargs, input_shape, tmp_path=None, tflite=True, seed=0):
    """All checks for a layer class, wrapped in a one-layer functional model where needed.

    Checks: output shape == layer.compute_output_shape; get_config/from_config round trip;
    `.keras` save/load of a model holding the layer; mixed_float16 forward (finite, float32 after a cast
    only if the layer itself returns float16 -- the model output is cast to float32); TFLite parity.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor kwargs (give an explicit `name`).
        input_shape: full input shape including the batch, e.g. (2, 16, 16, 8).
        tmp_path: folder for saved files (default a new temporary folder).
        tflite: run the TFLite parity check (default True).
    Returns:
        dict of measured figures {"tflite_max_diff": ...}.
    """
    tmp_path = Path(tmp_path or tempfile.mkdtemp())
    x = np.random.RandomState(seed).normal(size=input_shape).astype("float32")
    layer = layer_cls(**init_kwargs)
    y = layer(x, training=False)
    expected_shape = tuple(layer.compute_output_shape(tuple(input_shape)))
    assert tuple(y.shape) == expected_shape, f"output {tuple(y.shape)} != compute_output_shape {expected_shape}"
    check_config_round_trip(layer, x)

    def build_model():
        inp = keras.Input(shape=input_shape[1:], name="inputs")
        out = layer_cls(**init_kwargs)(inp)
        out = keras.layers.Activation("linear", dtype="float32", name="to_float32")(out)
        return keras.Model(inp, out, name=f"{init_kwargs.get('name', 'layer')}_model")

    model = build_model()
    check_keras_save_load(model, x, tmp_path)
    check_mixed_precision(build_model, x)
    figures = {}
    if tflite:
        image_model = _image_model(layer_cls, init_kwargs, input_shape)
        figures["tflite_max_diff"] = check_tflite_parity(image_model, _inputs((*input_shape[:3], 3), seed), tmp_path)
    return figures


def run_model_checks(
    cls, init_kwargs, input_shape, tmp_path=None, tflite=True, mixed_precision=True, require_float32=False, seed=0
):
    """All checks for a functional model class (backbone, PoseEstimator, ...), inputs uniform in [0, 255].

    Checks: `cls(**init_kwargs)` builds; config round trip, `.keras` save/load, mixed_float16 forward
    (rebuilt from the config; outputs finite; float32 when `require_float32`, e.g. a PoseEstimator's
    heatmaps; a backbone's features may be float16), TFLite float32 parity (< 1e-4) of the exported
    final output (`export_tflite` + `TFLiteRunner`).

    Returns:
        dict {"model": the built model, "tflite_max_diff": ... (when tflite)}.
    """
    tmp_path = Path(tmp_path or tempfile.mkdtemp())
    x = _inputs(input_shape, seed)
    model = cls(**init_kwargs)
    assert isinstance(model, cls), f"{cls.__name__}(**init_kwargs) gave a {type(model).__name__}"
    check_config_round_trip(model, x)
    check_keras_save_load(model, x, tmp_path)
    if mixed_precision:
        config = model.get_config()
        check_mixed_precision(lambda: type(model).from_config(_strip_dtype(config)), x, require_float32)
    figures = {"model": model}
    if tflite:
        figures["tflite_max_diff"] = check_tflite_parity(model, x, tmp_path)
    return figures


def run_preset_checks(names=None, input_size=(64, 64), max_build_params_m=2.5):
    """Every catalogue entry (or `names`) resolves offline: its backbone preset is registered with a
    `{"metadata", "config"}` entry whose config binds to the backbone class's constructor, and
    `Backbone.from_preset` accepts it. Entries of at most `max_build_params_m` published M
    parameters (default 2.5; entries without a figure too) are built as a PoseEstimator at
    `input_size`, with heatmaps at 1/4 of the input and K channels of the keypoint set.

    Returns {name: parameter count, or None where not built}.
    """
    counts = {}
    for name in names or list(presets.PRESETS):
        entry = presets.get_entry(name)
        key = entry["backbone_preset"]
        bb_cls = preset_utils.preset_class(key)
        assert set(preset_utils.BACKBONE_PRESETS[key]) == {"metadata", "config"}, f"{name}: layout of {key!r}"
        inspect.signature(bb_cls).bind(**preset_utils.preset_kwargs(key))  # TypeError on an unknown kwarg
        assert issubclass(preset_utils.catalogue_backbone_class(name), Backbone), name
        counts[name] = None
        if entry["params_m"] is not None and entry["params_m"] > max_build_params_m:
            continue
        model = PoseEstimator.from_preset(name, load_weights=False, input_size=input_size)
        assert isinstance(model.backbone, bb_cls), f"{name}: backbone {type(model.backbone).__name__}"
        k = get_keypoint_set(entry["keypoint_set"]).num_keypoints
        want = (None, input_size[0] // 4, input_size[1] // 4, k)
        assert all(tuple(o.shape) == want for o in model.outputs), f"{name}: outputs {[o.shape for o in model.outputs]}"
        counts[name] = model.count_params()
        keras.backend.clear_session()
    return counts


def _strip_dtype(config):
    """Drop saved dtype policies so that the global (mixed) policy applies on rebuild."""
    if isinstance(config, dict):
        return {k: _strip_dtype(v) for k, v in config.items() if k != "dtype"}
    if isinstance(config, list):
        return [_strip_dtype(v) for v in config]
    return config
