"""HRNet backbone: topology (exact parameter / MAC count against an independent analytic count of
the reference design and the published figures), fusion arithmetic, serialization, PSA, names."""

import math

import cv2
import keras
import numpy as np
import pytest

from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
from kdpose_tf.models.hrnet.hrnet_layers import HRNetBasicBlock, HRNetBottleneck, HRNetFusion
from kdpose_tf.models.hrnet.hrnet_presets import backbone_presets, preset_kwargs
from kdpose_tf.models.summary import count_flops, count_params

TINY = dict(
    width=8, stage_blocks=(1, 1, 1, 1), stage_modules=(1, 1, 2, 2), stem_width=16, stage1_filters=8,
    input_shape=(64, 64, 3),
)


def hrnet_reference(C, H, W, blocks=(4, 4, 4, 4), modules=(1, 1, 4, 3), stem=64, s1=64, keypoints=17,
                    multiscale_output=False):
    """Parameters and conv MACs of the reference PyTorch pose HRNet, counted by hand from its topology.

    Parameters follow PyTorch (conv weights, conv bias only in the final 1x1 layer, BN gamma + beta).
    """
    total = {"params": 0, "macs": 0}

    def conv(k, cin, cout, h, w, bias=False, bn=True):
        total["params"] += k * k * cin * cout + (cout if bias else 0) + (2 * cout if bn else 0)
        total["macs"] += k * k * cin * cout * h * w

    size = lambda b: (H // 4 >> b, W // 4 >> b)  # noqa: E731
    conv(3, 3, stem, H // 2, W // 2)
    conv(3, stem, stem, *size(0))
    cin = stem
    for _ in range(blocks[0]):
        conv(1, cin, s1, *size(0)), conv(3, s1, s1, *size(0)), conv(1, s1, 4 * s1, *size(0))
        if cin != 4 * s1:
            conv(1, cin, 4 * s1, *size(0))
        cin = 4 * s1
    chans = [cin]
    for stage in (2, 3, 4):
        new = [C * 2**b for b in range(stage)]
        for b in range(stage):
            if b < len(chans):
                if chans[b] != new[b]:
                    conv(3, chans[b], new[b], *size(b))
            else:
                conv(3, chans[-1], new[b], *size(b))
        for m in range(modules[stage - 1]):
            for b in range(stage):
                for _ in range(blocks[stage - 1]):
                    conv(3, new[b], new[b], *size(b)), conv(3, new[b], new[b], *size(b))
            last = stage == 4 and m == modules[3] - 1
            for i in range(1 if (last and not multiscale_output) else stage):
                for j in range(stage):
                    if j > i:
                        conv(1, new[j], new[i], *size(j))
                    for k in range(i - j if j < i else 0):
                        conv(3, new[j], new[i] if k == i - j - 1 else new[j], *size(j + k + 1))
        chans = new
    conv(1, C, keypoints, *size(0), bias=True, bn=False)
    return total["params"], total["macs"]


def with_head(backbone, keypoints=17):
    x = keras.Input(backbone.input_shape[1:])
    y = keras.layers.Conv2D(keypoints, 1, name="head")(backbone(x)["P2"])
    return keras.Model(x, y)


@pytest.fixture(scope="module")
def photo(data_dir):
    path = sorted((data_dir / "coco_mini" / "train2017").glob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).astype("float32")[None]


@pytest.mark.parametrize("name", ["hrnet_w32", "hrnet_w48"])
def test_preset_matches_reference_count_and_published(name):
    kwargs = preset_kwargs(name)
    meta = backbone_presets[name]["metadata"]
    model = with_head(HRNetBackbone(**kwargs))
    ref_params, ref_macs = hrnet_reference(kwargs["width"], 256, 192)
    params, macs = count_params(model), count_flops(model)
    assert params == ref_params
    assert macs == ref_macs
    assert abs(params / 1e6 / meta["params_m"] - 1) < 0.05
    assert abs(macs / 1e9 / meta["gflops"] - 1) < 0.10
    # The paper's unit is MACs / 1024**3: in that unit the figure is matched to rounding.
    assert abs(macs / meta["gflops_divisor"] / meta["gflops"] - 1) < 0.01


def test_tiny_backbone_on_photo_shapes_names_and_counts(photo):
    backbone = HRNetBackbone(**TINY)
    features = backbone(photo)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "P2": (1, 16, 16, 8), "P3": (1, 8, 8, 16), "P4": (1, 4, 4, 32), "P5": (1, 2, 2, 64)}
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in features.values())
    assert backbone.pyramid_channels == {"P2": 8, "P3": 16, "P4": 32, "P5": 64}
    names = {layer.name for layer in backbone.layers}
    assert {"stem_conv1", "stage1_module0_branch0_block0", "transition1_branch1_conv",
            "stage4_module1_branch3_block0", "stage4_module1_fuse0", "transition3_branch3_conv"} <= names
    assert "stage4_module1_fuse1" not in names  # pose variant: last module fuses into branch 0 only
    block = backbone.get_layer("stage2_module0_branch1_block0")
    sub = [layer.name for layer in block._flatten_layers(include_self=False)]
    assert set(sub) == {f"stage2_module0_branch1_block0_{s}" for s in ("conv1", "bn1", "conv2", "bn2")}
    params, macs = hrnet_reference(8, 64, 64, blocks=(1, 1, 1, 1), modules=(1, 1, 2, 2), stem=16, s1=8)
    model = with_head(backbone)
    assert count_params(model) == params and count_flops(model) == macs


def test_multiscale_output_adds_exactly_the_extra_fusions():
    kwargs = dict(TINY, multiscale_output=True)
    model = with_head(HRNetBackbone(**kwargs))
    params, macs = hrnet_reference(8, 64, 64, blocks=(1, 1, 1, 1), modules=(1, 1, 2, 2), stem=16, s1=8,
                                   multiscale_output=True)
    assert count_params(model) == params and count_flops(model) == macs
    assert "stage4_module1_fuse3" in {layer.name for layer in model.layers[1].layers}


def test_fusion_matches_hand_computation():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(1, 8, 8, 4)).astype("float32")
    x1 = rng.normal(size=(1, 4, 4, 8)).astype("float32")
    x2 = rng.normal(size=(1, 2, 2, 16)).astype("float32")
    fuse0 = HRNetFusion(0, 4, name="f0")
    fuse0([x0, x1, x2])
    w1 = rng.normal(size=(1, 1, 8, 4)).astype("float32")
    w2 = rng.normal(size=(1, 1, 16, 4)).astype("float32")
    for layer in fuse0._flatten_layers(include_self=False):
        if layer.name == "f0_from1_conv":
            layer.kernel.assign(w1)
        if layer.name == "f0_from2_conv":
            layer.kernel.assign(w2)
    y = keras.ops.convert_to_numpy(fuse0([x0, x1, x2]))
    bn = 1 / math.sqrt(1 + 1e-5)  # fresh BN in inference: divide by sqrt(var + eps)
    up1 = np.einsum("bhwc,cd->bhwd", x1, w1[0, 0]).repeat(2, 1).repeat(2, 2) * bn
    up2 = np.einsum("bhwc,cd->bhwd", x2, w2[0, 0]).repeat(4, 1).repeat(4, 2) * bn
    np.testing.assert_allclose(y, np.maximum(x0 + up1 + up2, 0), rtol=1e-5, atol=1e-5)

    # Down path: branch 0 -> branch 2 is two chained strided 3x3 convs (4 -> 4 channels, ReLU, 4 -> 16).
    fuse2 = HRNetFusion(2, 16, name="f2")
    out = fuse2([x0, x1, x2])
    assert tuple(out.shape) == (1, 2, 2, 16)
    shapes = {w.path: tuple(w.shape) for w in fuse2.weights if w.path.endswith("kernel")}
    assert shapes == {"f2/f2_from0_conv0/kernel": (3, 3, 4, 4), "f2/f2_from0_conv1/kernel": (3, 3, 4, 16),
                      "f2/f2_from1_conv0/kernel": (3, 3, 8, 16)}


def test_blocks_shapes_and_projection():
    x = np.ones((1, 8, 8, 16), "float32")
    bottleneck = HRNetBottleneck(8, name="b")
    assert tuple(bottleneck(x).shape) == (1, 8, 8, 32)
    assert bottleneck.proj_conv is not None  # 16 -> 32 channels needs the 1x1 projection
    basic = HRNetBasicBlock(16, name="basic")
    y = keras.ops.convert_to_numpy(basic(x))
    assert basic.proj_conv is None and y.shape == (1, 8, 8, 16) and (y >= 0).all()
    assert basic.compute_output_shape((None, 8, 8, 16)) == (None, 8, 8, 16)


def test_psa_placement_and_config_round_trip(photo):
    backbone = HRNetBackbone(**dict(TINY, psa=True))
    block = backbone.get_layer("stage3_module0_branch2_block0")
    assert block.psa_layer is not None and block.psa_layer.name == "stage3_module0_branch2_block0_psa"
    assert count_params(backbone) > count_params(HRNetBackbone(**TINY))
    expected = backbone(photo)

    clone = HRNetBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert count_params(clone) == count_params(backbone)
    clone.set_weights(backbone.get_weights())
    got = clone(photo)
    for key in expected:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got[key]), keras.ops.convert_to_numpy(expected[key]),
                                   rtol=1e-5, atol=1e-5)


def test_mixed_precision(photo):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        backbone = HRNetBackbone(**TINY)
        out = backbone(photo)["P2"]
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.isfinite(keras.ops.convert_to_numpy(out)).all()
        block = backbone.get_layer("stage2_module0_branch0_block0")
        assert all(w.dtype == "float32" for w in block.weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width=0), "width"),
        (dict(stage_blocks=(4, 4, 4)), "stage_blocks"),
        (dict(stage_modules=(2, 1, 4, 3)), "stage 1"),
        (dict(psa="yes"), "psa"),
        (dict(input_shape=(250, 192, 3)), "multiples of 32"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HRNetBackbone(**kwargs)


@pytest.mark.slow
def test_shared_harness_with_pose_estimator(tmp_path):
    """Config round trip, .keras save/load, mixed precision and TFLite float32 parity (shared harness)."""
    from harness import run_model_checks

    from kdpose_tf.models.pose_estimator import PoseEstimator

    backbone = HRNetBackbone(**dict(TINY, stage_modules=(1, 1, 1, 1), psa=True))
    model = PoseEstimator(backbone, keypoint_set="coco17")
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 16, 17)]
    figures = run_model_checks(PoseEstimator, {"backbone": backbone, "keypoint_set": "coco17"}, (1, 64, 64, 3),
                               tmp_path=tmp_path, require_float32=True)
    assert figures["tflite_max_diff"] < 1e-4
