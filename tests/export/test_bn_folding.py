"""BatchNorm folding of Dite-HRNet's dynamic-kernel sums (export) and GCM's gated BatchNorm (layer):
both exact in float, both remove a full-size MUL from every exported model (by the graph's structure,
not by the converter dropping a multiply that rounded to 1.0 on one CPU)."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kdpose_tf.export.bn_folding import find_kernel_sums, fold_kernel_sum_batchnorm
from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors
from kdpose_tf.export.tflite import convert_to_tflite, export_tflite, sidecar_path
from kdpose_tf.models.layers.bias import BiasAdd
from kdpose_tf.models.layers.norm import BN_KWARGS, GatedBatchNormalization
from kdpose_tf.models.lite_hrnet.dite_hrnet_layers import dynamic_conv_bn, global_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_weights import trained_like  # noqa: E402  (BN statistics like a trained net's: non-zero shifts)
from test_delegate_friendly import _photo_features  # noqa: E402


def _full_size_ops(data, name, full_shape):
    """Output tensor names of the `name` ops (MUL, ADD) whose output has `full_shape`."""
    tensors = model_tensors(data)
    return [tensors[op["outputs"][0]]["name"] for op in model_ops(data)
            if op["name"] == name and tensors[op["outputs"][0]]["shape"] == list(full_shape)]


def _mul_outputs(data, full_shape):
    return _full_size_ops(data, "MUL", full_shape)


def _dynamic_model():
    x = keras.Input((32, 24, 3), name="images")
    y = keras.layers.Conv2D(8, 1, name="stem")(x)
    y = dynamic_conv_bn(y, None, 3, 1, 4, name="dw")            # depthwise, K=4
    y = dynamic_conv_bn(y, 6, 1, 1, 2, act="relu", name="pw")   # 1x1 to 6, K=2
    return keras.Model(x, y)


def test_fold_is_exact_and_finds_only_the_kernel_sums(data_dir):
    keras.utils.set_random_seed(0)
    model = _dynamic_model()
    trained_like(model)
    images = _photo_features(data_dir, (32, 24), 3) * 255.0
    before = np.asarray(model(images))
    found = find_kernel_sums(model)
    assert [(bn.name, [c.name for c in convs]) for bn, convs in found] == [
        ("dw_bn", [f"dw_kernel{k}" for k in range(4)]), ("pw_bn", ["pw_kernel0", "pw_kernel1"])]
    bn = model.get_layer("dw_bn")
    shift = bn.beta.numpy() - bn.moving_mean.numpy() * bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    folded, report = fold_kernel_sum_batchnorm(model)
    assert [r["batchnorm"] for r in report] == ["dw_bn", "pw_bn"]
    assert np.abs(before).max() > 1.0
    for out in (np.asarray(folded(images)), np.asarray(model(images))):  # the export graph, and in place
        np.testing.assert_allclose(out, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    # the export graph: each folded BN a BiasAdd of its shift (the attention branches' BNs stay); the rest shared
    bns = [layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns == ["dw_att_bn", "pw_att_bn"], bns
    assert [type(folded.get_layer(n)) for n in ("dw_bn", "pw_bn")] == [BiasAdd, BiasAdd]
    np.testing.assert_allclose(folded.get_layer("dw_bn").bias.numpy(), shift, rtol=1e-5, atol=1e-6)
    assert folded.get_layer("dw_kernel0") is model.get_layer("dw_kernel0")
    assert type(model.get_layer("dw_bn")) is keras.layers.BatchNormalization  # the model's own graph keeps it
    assert np.all(bn.gamma.numpy() == 1) and np.all(bn.moving_mean.numpy() == 0)


def test_fold_of_a_nested_model_with_dict_outputs_and_no_beta():
    """The kernel sum inside a nested functional model with dict outputs (like a backbone in a
    PoseEstimator), its BN without beta (center=False, the shift lives in the BiasAdd): the clone
    replaces the BN inside the nested graph, the caller's graphs keep theirs."""
    keras.utils.set_random_seed(0)
    x, a = keras.Input((16, 12, 3)), keras.Input((1, 1, 1))
    k0 = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="k0")
    k1 = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="k1")
    s = keras.layers.Add(name="sum")([keras.layers.Multiply()([k0(x), a]), keras.layers.Multiply()([k1(x), a])])
    inner = keras.Model([x, a], {"features": keras.layers.BatchNormalization(center=False, name="bn")(s),
                                 "skip": keras.layers.Conv2D(2, 1, name="skip")(x)}, name="inner")
    xo, ao = keras.Input((16, 12, 3)), keras.Input((1, 1, 1))
    parts = inner([xo, ao])
    outer = keras.Model([xo, ao], keras.layers.Concatenate(name="cat")([parts["features"], parts["skip"]]))
    trained_like(outer)
    bn = inner.get_layer("bn")
    assert np.abs(bn.moving_mean.numpy()).min() > 0  # a shift without a beta to hold it
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-2, 2, (2, 16, 12, 3)).astype("float32"), rng.uniform(0, 1, (2, 1, 1, 1)).astype("float32")]
    before = np.asarray(outer(inputs))
    folded, report = fold_kernel_sum_batchnorm(outer)
    assert [r["batchnorm"] for r in report] == ["bn"]
    nested = folded.get_layer("inner")
    assert nested is not inner and type(nested.get_layer("bn")) is BiasAdd and inner.get_layer("bn") is bn
    assert nested.get_layer("k0") is k0 and folded.get_layer("cat") is outer.get_layer("cat")
    for out in (np.asarray(folded(inputs)), np.asarray(outer(inputs))):
        np.testing.assert_allclose(out, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    assert fold_kernel_sum_batchnorm(keras.Model(xo, keras.layers.Conv2D(2, 1)(xo)))[1] == []  # nothing to fold


def test_fold_leaves_a_sum_whose_parts_are_read_elsewhere():
    """Scaling a kernel would change its other reader: such a sum is not folded."""
    x = keras.Input((16, 16, 3))
    a = keras.Input((1, 1, 1))
    c0 = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="k0")(x)
    c1 = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="k1")(x)
    s = keras.layers.Add(name="sum")([keras.layers.Multiply()([c0, a]), keras.layers.Multiply()([c1, a])])
    y = keras.layers.BatchNormalization(name="bn")(s)
    assert [bn.name for bn, _ in find_kernel_sums(keras.Model([x, a], y))] == ["bn"]
    assert find_kernel_sums(keras.Model([x, a], [y, c1])) == []  # k1 also feeds an output
    assert find_kernel_sums(keras.Model([x, a], [y, s])) == []   # the sum is read twice
    other = keras.layers.Conv2D(2, 1, name="other")(c1)           # k1 also read by another layer
    assert find_kernel_sums(keras.Model([x, a], [y, other])) == []


def test_fold_leaves_layers_shared_with_an_outer_graph():
    """A kernel (or the BN) of a nested model also called in the outer graph: folding would change the
    outer call, so nothing is folded; the same nested model alone is folded."""
    x, a = keras.Input((16, 16, 3)), keras.Input((1, 1, 1))
    k0 = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="k0")
    k1 = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="k1")
    bn = keras.layers.BatchNormalization(name="bn")
    s = keras.layers.Add(name="sum")([keras.layers.Multiply()([k0(x), a]), keras.layers.Multiply()([k1(x), a])])
    inner = keras.Model([x, a], bn(s), name="inner")
    xo, ao = keras.Input((16, 16, 3)), keras.Input((1, 1, 1))
    assert [b.name for b, _ in find_kernel_sums(keras.Model([xo, ao], inner([xo, ao])))] == ["bn"]
    shared_conv = keras.Model([xo, ao], [inner([xo, ao]), k0(xo)])
    shared_bn = keras.Model([xo, ao], [inner([xo, ao]), bn(xo)])
    assert find_kernel_sums(shared_conv) == [] and find_kernel_sums(shared_bn) == []


def test_export_converts_each_folded_batchnorm_as_an_add_and_restores_the_weights(tmp_path, data_dir):
    """The folded export has the kernel products as its only full-size MULs: the BNs are not in the
    converted graph (their shift is the same ADD as before). Counted by structure: the BN scales of
    these trained-like weights are far from 1 (the unfolded graph keeps their MULs on every CPU), and
    the folded graph has no BN to multiply by."""
    keras.utils.set_random_seed(0)
    model = _dynamic_model()
    trained_like(model)
    scales = {n: bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
              for n, bn in ((n, model.get_layer(n)) for n in ("dw_bn", "pw_bn"))}
    assert all(np.abs(s - 1).min() > 1e-3 for s in scales.values())
    images = np.concatenate([_photo_features(data_dir, (32, 24), 3) * 255.0] * 2)
    weights = [w.copy() for w in model.get_weights()]
    plain = convert_to_tflite(model, "none")  # no folding: the BN scales are MULs
    path = export_tflite(model, tmp_path / "dyn.tflite", quantize="none")
    for w, v in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(w, v)  # the caller's model is unchanged
    assert [type(model.get_layer(n)) for n in scales] == [keras.layers.BatchNormalization] * 2
    folded = path.read_bytes()
    for shape, kernels, bn in (((1, 32, 24, 8), 4, "dw_bn"), ((1, 32, 24, 6), 2, "pw_bn")):
        muls = _mul_outputs(folded, shape)
        assert len(_mul_outputs(plain, shape)) == kernels + 1 and len(muls) == kernels, muls
        assert not [n for n in muls if bn in n], muls  # no MUL left of the BN
        assert len(_full_size_ops(folded, "ADD", shape)) == len(_full_size_ops(plain, "ADD", shape))  # its shift
    assert json.loads(sidecar_path(path).read_text())["folded_batchnorms"] == 2
    from kdpose_tf.runtimes.litert import TFLiteRunner

    (tmp_path / "plain.tflite").write_bytes(plain)
    y_plain = np.asarray(TFLiteRunner(tmp_path / "plain.tflite")(images[:1]))
    y_folded = np.asarray(TFLiteRunner(path)(images[:1]))
    np.testing.assert_allclose(y_folded, y_plain, rtol=1e-4, atol=1e-4 * np.abs(y_plain).max())
    int8 = export_tflite(model, tmp_path / "dyn_int8.tflite", quantize="int8", representative_data=images)
    assert len(_mul_outputs(int8.read_bytes(), (1, 32, 24, 8))) == 4
    assert len(_mul_outputs(int8.read_bytes(), (1, 32, 24, 6))) == 2
    for w, v in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(w, v)


def test_bias_add_serializes_and_rejects_bad_arguments(tmp_path):
    from harness import run_layer_checks

    # shape, config round trip, .keras save / load, mixed_float16, TFLite float parity
    figures = run_layer_checks(BiasAdd, {"bias_initializer": "ones", "name": "bias"}, (2, 8, 6, 4), tmp_path=tmp_path)
    assert figures["tflite_max_diff"] < 1e-5, figures
    layer = BiasAdd(name="b")
    layer.build((None, 4, 3, 5))
    layer.set_weights([np.arange(5, dtype="float32")])
    np.testing.assert_array_equal(np.asarray(layer(np.ones((1, 4, 3, 5), "float32")))[0, 0, 0], np.arange(5) + 1.0)
    with pytest.raises(ValueError, match="bias_initializer must be a Keras initializer"):
        BiasAdd(bias_initializer="no_such_initializer")
    with pytest.raises(ValueError, match="static C"):
        BiasAdd(name="bad").build((None, 4, None))


def test_gated_batchnorm_equals_multiply_then_batchnorm(data_dir):
    x = _photo_features(data_dir, (16, 12), 6).repeat(3, axis=0) * np.array([1, 2, 3])[:, None, None, None]
    g = np.random.default_rng(1).uniform(0, 1, (3, 1, 1, 6)).astype("float32")
    gated = GatedBatchNormalization(name="gated", **BN_KWARGS)
    ref = keras.layers.BatchNormalization(name="ref", **BN_KWARGS)
    gated([x, g])
    ref(x * g)
    trained_like(keras.Sequential([ref]))
    gated.set_weights(ref.get_weights())
    np.testing.assert_allclose(np.asarray(gated([x, g])), np.asarray(ref(x * g)), rtol=1e-5, atol=1e-5)
    y_train, r_train = gated([x, g], training=True), ref(x * g, training=True)  # batch statistics
    np.testing.assert_allclose(np.asarray(y_train), np.asarray(r_train), rtol=1e-5, atol=1e-5)
    for a, b in zip(gated.get_weights(), ref.get_weights()):  # the moving statistics moved the same way
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    gated.trainable = False  # a frozen BN normalises with its moving statistics, training or not
    ref.trainable = False
    np.testing.assert_allclose(np.asarray(gated([x, g], training=True)), np.asarray(ref(x * g, training=True)),
                               rtol=1e-5, atol=1e-5)


def test_gated_batchnorm_serializes_runs_in_mixed_precision_and_rejects_bad_gates(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 8, 6, 4)).astype("float32")
    g = np.random.default_rng(1).uniform(size=(2, 1, 1, 4)).astype("float32")
    xi, gi = keras.Input((8, 6, 4)), keras.Input((1, 1, 4))
    model = keras.Model([xi, gi], GatedBatchNormalization(name="gbn", **BN_KWARGS)([xi, gi]))
    trained_like(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("gbn")) is GatedBatchNormalization
    np.testing.assert_array_equal(np.asarray(loaded([x, g])), np.asarray(model([x, g])))
    layer = model.get_layer("gbn")
    assert GatedBatchNormalization.from_config(layer.get_config()).get_config() == layer.get_config()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half, ref = GatedBatchNormalization(name="half"), keras.layers.BatchNormalization(name="half_ref")
        xh, gh = x.astype("float16"), g.astype("float16")
        y, r = half([xh, gh]), ref(keras.layers.Multiply()([xh, gh]))
        half.set_weights(layer.get_weights())
        ref.set_weights(layer.get_weights())
        y, r = half([xh, gh]), ref(keras.layers.Multiply()([xh, gh]))
        assert y.dtype == "float16" and r.dtype == "float16"
        np.testing.assert_allclose(np.asarray(y, "float32"), np.asarray(r, "float32"), rtol=2e-3, atol=2e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match=r"gate \(B, 1, 1, C\).*\(2, 8, 6, 4\) and \(2, 8, 6, 4\)"):
        GatedBatchNormalization(name="bad")([x, x])
    with pytest.raises(ValueError, match="axis=-1"):
        GatedBatchNormalization(axis=1, name="bad_axis")([x, g])


def test_global_context_exports_one_full_size_multiply_less(data_dir):
    """GCM's BN(x * gate) as `GatedBatchNormalization`: 2 full-size MULs (context pool, gate) in the
    int8 graph, where Multiply + BatchNormalization of the same trained weights take 3."""
    def gcm_model(gated):
        x = keras.Input((32, 24, 3), name="images")
        y = keras.layers.Conv2D(8, 1, name="stem")(x)
        if gated:
            return keras.Model(x, global_context(y, 4, "gcm"))
        y2 = global_context(y, 4, "gcm")  # the same sub-layers, then re-wire the old form
        gbn = y2._keras_history.operation
        xs, gate = [t for t in gbn._inbound_nodes[0].input_tensors]
        bn = keras.layers.BatchNormalization(name="gcm_bn_ref", **BN_KWARGS)
        return keras.Model(x, bn(keras.layers.Multiply(name="gcm_mul")([xs, gate]))), gbn, bn

    keras.utils.set_random_seed(0)
    new = gcm_model(True)
    trained_like(new)
    old, gbn, bn = gcm_model(False)
    trained_like(old, seed=5)
    gbn.set_weights(new.get_layer("gcm_bn").get_weights())
    bn.set_weights(new.get_layer("gcm_bn").get_weights())
    for layer in new.layers:  # same weights everywhere else
        if layer.weights and layer.name != "gcm_bn":
            old.get_layer(layer.name).set_weights(layer.get_weights())
    images = np.concatenate([_photo_features(data_dir, (32, 24), 3) * 255.0] * 2)
    np.testing.assert_allclose(np.asarray(new(images)), np.asarray(old(images)), rtol=1e-5, atol=1e-4)
    full = (1, 32, 24, 8)
    assert len(_mul_outputs(convert_to_tflite(new, "int8", images), full)) == 2
    assert len(_mul_outputs(convert_to_tflite(old, "int8", images), full)) == 3


def test_qat_does_not_fold_a_gated_batchnorm_into_the_conv_before_it():
    """`GatedBatchNormalization` is a BatchNormalization subclass but not conv + BN: QAT keeps it (folding
    it dropped the gate and the BN, the QAT output then differed by its full range)."""
    from kdpose_tf.export.qat import quantize_model

    x = keras.Input((16, 12, 3), name="images")
    y = keras.layers.Conv2D(8, 1, name="conv")(x)  # linear conv, read only by the gated BN
    g = keras.layers.Conv2D(8, 1, activation="sigmoid", name="gate")(
        keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x))
    model = keras.Model(x, GatedBatchNormalization(name="gbn", **BN_KWARGS)([y, g]))
    trained_like(model)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 12, 3)).astype("float32")
    qat = quantize_model(model, calibration_data=images)
    ref, out = np.asarray(model(images)), np.asarray(qat(images))
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max(), np.abs(out - ref).max()
