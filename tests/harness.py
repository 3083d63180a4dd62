"""Shared model test harness: serialization, save/load, mixed precision and TFLite parity checks.

Use from any test file (tests/ is on sys.path under pytest's rootdir import mode):

    from harness import run_layer_checks, run_model_checks

    def test_my_layer():
        run_layer_checks(MyLayer, {"filters": 8, "name": "my_layer"}, (2, 16, 16, 8))

    def test_my_model(tmp_path):
        run_model_checks(MyBackbone(width=8, input_shape=(64, 64, 3)), (2, 64, 64, 3), tmp_path=tmp_path)

Every check compares outputs on the same random input in [0, 255] (the model input convention)
and fails with an assertion that says which check and by how much. Keep inputs tiny (64x64 or
smaller, widths 8-16): TFLite conversion costs a few seconds per model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np


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


def check_tflite_parity(model, x, tmp_path, atol=1e-4):
    """`model.export(format="litert")` runs in ai_edge_litert with outputs within `atol` of Keras."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(tmp_path) / f"{model.name}.tflite"
    model.export(str(path), format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details().keys()
    got = runner(**{input_name: x})
    expected = model(x, training=False)
    exp_list = _flatten(expected)
    # Signature outputs are keyed by name; order them like the Keras outputs.
    if isinstance(expected, dict) and set(got) == set(expected):
        got_list = [got[k] for k in sorted(expected)]
    else:
        names = sorted(got, key=lambda n: (int("".join(c for c in n if c.isdigit()) or 0), n))
        got_list = [got[n] for n in names]
        if len(got_list) > 1:  # match by shape when names do not carry the order
            shapes = [e.shape for e in exp_list]
            if [g.shape for g in got_list] != shapes:
                got_list = sorted(got_list, key=lambda g: shapes.index(g.shape))
    diff = _max_diff(exp_list, got_list)
    assert diff < atol, f"TFLite parity: max abs diff {diff} >= {atol}"
    return diff


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
        figures["tflite_max_diff"] = check_tflite_parity(model, x, tmp_path)
    return figures


def run_model_checks(
    model, input_shape, tmp_path=None, tflite=True, mixed_precision=True, require_float32=False, seed=0
):
    """All checks for a functional model (backbone, PoseEstimator, ...), inputs uniform in [0, 255].

    Checks: config round trip, `.keras` save/load, mixed_float16 forward (rebuilt from the config;
    outputs finite; float32 when `require_float32`, e.g. a PoseEstimator's heatmaps; a backbone's
    features may be float16), TFLite float32 parity (< 1e-4). Single-output
    export is what deployment uses; for a `PoseEstimator` pass `model` itself -- list outputs are
    matched by name/shape.

    Returns:
        dict of measured figures {"tflite_max_diff": ...}.
    """
    tmp_path = Path(tmp_path or tempfile.mkdtemp())
    x = _inputs(input_shape, seed)
    check_config_round_trip(model, x)
    check_keras_save_load(model, x, tmp_path)
    if mixed_precision:
        config = model.get_config()
        check_mixed_precision(lambda: type(model).from_config(_strip_dtype(config)), x, require_float32)
    figures = {}
    if tflite:
        figures["tflite_max_diff"] = check_tflite_parity(model, x, tmp_path)
    return figures


def _strip_dtype(config):
    """Drop saved dtype policies so that the global (mixed) policy applies on rebuild."""
    if isinstance(config, dict):
        return {k: _strip_dtype(v) for k, v in config.items() if k != "dtype"}
    if isinstance(config, list):
        return [_strip_dtype(v) for v in config]
    return config
