"""Delegate-friendly layer formulations equal the textbook ops; a tiny Lite-HRNet runs as one XNNPACK graph."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest


from kdpose_tf.export.tflite import convert_to_tflite
from kdpose_tf.models import presets
from kdpose_tf.models.layers.pooling import BlockPool
from kdpose_tf.models.layers.upsample import Upsample

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from tflite_profile import delegation  # noqa: E402


def _photo_features(data_dir, size=(32, 24), channels=6):
    """Real-photo activations: a COCO crop resized, channels = RGB and its square, in [0, 1]."""
    import cv2

    path = sorted((data_dir / "coco_mini" / "train2017").glob("*.jpg"))[0]
    img = cv2.resize(cv2.imread(str(path))[:, :, ::-1], size[::-1]).astype("float32") / 255.0
    return np.concatenate([img, img**2], axis=-1)[None, ..., :channels]


@pytest.mark.parametrize("size", [2, 4, 8, (2, 3)])
def test_upsample_equals_keras_nearest(size, data_dir):
    x = _photo_features(data_dir)
    ref = keras.layers.UpSampling2D(size, interpolation="nearest")(x)
    got = Upsample(size)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(ref))


def test_upsample_bilinear_and_dynamic_shapes_still_resize():
    x = keras.Input((None, None, 3))
    assert Upsample(2)(x).shape[1:] == (None, None, 3)
    y = Upsample(2, interpolation="bilinear")(np.ones((1, 3, 3, 2), "float32"))
    assert tuple(y.shape) == (1, 6, 6, 2)


@pytest.mark.parametrize("pool", [2, 4, 8])
def test_block_pool_equals_average_pooling(pool, data_dir):
    x = _photo_features(data_dir)
    ref = keras.ops.convert_to_numpy(keras.layers.AveragePooling2D(pool, strides=pool)(x))
    got = keras.ops.convert_to_numpy(BlockPool(pool)(x))
    np.testing.assert_allclose(got, ref, atol=1e-6)
    summed = keras.ops.convert_to_numpy(BlockPool(pool, mode="sum")(x))
    np.testing.assert_allclose(summed, ref * pool * pool, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [({"pool_size": 0}, "pool_size"), ({"mode": "max"}, "mode")])
def test_block_pool_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockPool(**kwargs)


def test_block_pool_serializes():
    layer = BlockPool(4, mode="sum", name="p")
    clone = BlockPool.from_config(layer.get_config())
    assert (clone.pool_size, clone.mode, clone.name) == (4, "sum", "p")


def test_tiny_lite_hrnet_int8_is_one_xnnpack_graph(data_dir):
    """Every op but the uint8 <-> int8 boundary QUANTIZEs is in XNNPACK (no resize or pool split)."""
    keras.utils.set_random_seed(0)
    model = presets.build("lite_hrnet_18_coco_256x192", input_size=(64, 64), stem_width=8,
                          widths=(8, 16, 32, 64), stage_modules=(1, 1, 1), blocks_per_module=1)
    crops = np.stack([_photo_features(data_dir, (64, 64), 3)[0] * 255.0] * 2)
    data = convert_to_tflite(model, "int8", crops, num_calibration=2)
    ops = delegation(data)
    outside = sorted({name for _, name, delegated in ops if not delegated})
    assert outside == ["QUANTIZE"], outside
    assert sum(not d for _, _, d in ops) == 2
    assert not any(name in ("RESIZE_NEAREST_NEIGHBOR", "AVERAGE_POOL_2D") for _, name, _ in ops)



def test_dynamic_kernels_as_parallel_convs_equal_the_depth_multiplier_form(data_dir):
    """`parallel_kernels` (K plain convs, scalar MULs, ADDs) == the pre-2026-11 graph (one conv with
    depth multiplier K, `KernelAggregate`) on the same weights, float32, real-photo activations."""
    from kdpose_tf.models.lite_hrnet.dite_hrnet_layers import KernelAggregate, parallel_kernels

    x = _photo_features(data_dir, (32, 24), 6)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (1, 1, 1, 4)).astype("float32")
    for filters, kernel in ((None, 5), (10, 1)):
        xi, ai = keras.Input((32, 24, 6)), keras.Input((1, 1, 4))
        new = keras.Model([xi, ai], parallel_kernels(xi, ai, filters, kernel, 1, "dyn"))
        wide = (keras.layers.DepthwiseConv2D(kernel, padding="same", depth_multiplier=4, use_bias=False)
                if filters is None else keras.layers.Conv2D(filters * 4, kernel, padding="same", use_bias=False))
        old = keras.Model([xi, ai], KernelAggregate(4)([wide(xi), ai]))
        kernels = [rng.normal(size=new.get_layer(f"dyn_kernel{k}").kernel.shape).astype("float32") for k in range(4)]
        for k, w in enumerate(kernels):
            new.get_layer(f"dyn_kernel{k}").kernel.assign(w)
        wide.kernel.assign(np.stack(kernels, -1).reshape(wide.kernel.shape))  # channel c*K + k
        y_new, y_old = np.asarray(new([x, a])), np.asarray(old([x, a]))
        np.testing.assert_allclose(y_new, y_old, atol=1e-5, rtol=1e-5)
        assert np.abs(y_old).max() > 1.0  # not a comparison of near-zero maps


def test_tiny_dite_hrnet_int8_runs_in_xnnpack_without_depth_multipliers_or_sums(data_dir):
    """The dynamic kernels export as plain depthwise / 1x1 convs (no SUM over a size-K axis, no depth
    multiplier) and every op but the I/O QUANTIZEs and the context pools' SOFTMAX is in XNNPACK once
    the exporter's scale pass ran (the raw file of this untrained net has convs XNNPACK refuses)."""
    from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors
    from kdpose_tf.export.xnnpack_compat import fix_requantization_scales

    keras.utils.set_random_seed(0)
    model = presets.build("dite_hrnet_18_coco_256x192", input_size=(64, 64), stem_width=8,
                          widths=(8, 16, 32, 64), stage_modules=(1, 1, 1), blocks_per_module=1)
    crops = np.stack([_photo_features(data_dir, (64, 64), 3)[0] * 255.0] * 2)
    data, _ = fix_requantization_scales(convert_to_tflite(model, "int8", crops, num_calibration=2))
    ops = delegation(data)
    outside = sorted({name for _, name, delegated in ops if not delegated})
    assert set(outside) <= {"QUANTIZE", "SOFTMAX"}, outside
    tensors = model_tensors(data)
    for op in model_ops(data):
        if op["name"] == "SUM":  # only the global context pools' sum over H, W remains
            assert tensors[op["outputs"][0]]["shape"][1:3] == [1, 1], tensors[op["outputs"][0]]["name"]
        if op["name"] == "DEPTHWISE_CONV_2D":
            x, w = tensors[op["inputs"][0]], tensors[op["inputs"][1]]
            assert w["shape"][-1] == x["shape"][-1], (tensors[op["outputs"][0]]["name"], w["shape"])
