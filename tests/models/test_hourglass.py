"""Stacked hourglass: blocks, topology, parameter counts vs the papers, harness checks."""

import keras
import numpy as np
import pytest
from harness import run_layer_checks, run_model_checks

from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.hourglass.hourglass_presets import backbone_presets, preset_kwargs
from kdpose_tf.models.layers.inverted_residual import InvertedResidual
from kdpose_tf.models.layers.residual import BottleneckResidual


def _params_with_head(name):
    kwargs = preset_kwargs(name)
    bb = HourglassBackbone(**kwargs)
    k, c = kwargs["num_keypoints"], kwargs["filters"]
    return bb.count_params() + c * k + k  # + final 1x1 head conv (PoseEstimator default head)


@pytest.mark.parametrize(
    "name, paper, tol",
    [("hourglass_8x256", 26.0e6, 0.05), ("hourglass_4x128", 3.0e6, 0.15), ("lshm_2", 2.3e6, 0.05), ("lshm_4", 12.0e6, 0.05)],
)
def test_param_counts_match_papers(name, paper, tol):
    n = _params_with_head(name)
    assert abs(n - paper) / paper < tol, f"{name}: {n / 1e6:.2f} M vs paper {paper / 1e6} M"
    assert backbone_presets[name]["metadata"]["params_m"] == paper / 1e6


def test_bottleneck_param_count_by_hand():
    # 16 -> 32 channels, mid 16: conv1 16*16, conv2 9*16*16, conv3 16*32, shortcut 16*32; 4 BNs x 4 params.
    block = BottleneckResidual(32, name="res")
    block.build((None, 8, 8, 16))
    assert block.count_params() == 16 * 16 + 9 * 16 * 16 + 16 * 32 + 16 * 32 + 4 * (16 + 16 + 32 + 32)


def test_inverted_residual_param_count_and_identity():
    # 16 -> 16, t=2: expand 16*32, depthwise 9*32, project 32*16; BN 4*(32+32+16); identity shortcut.
    block = InvertedResidual(16, expansion=2, name="ir")
    block.build((None, 8, 8, 16))
    assert block.count_params() == 16 * 32 + 9 * 32 + 32 * 16 + 4 * (32 + 32 + 16)
    assert block.use_identity
    # Zeroed projection BN gamma/beta -> the block is exactly the identity (shortcut only).
    x = np.random.RandomState(0).normal(size=(1, 8, 8, 16)).astype("float32")
    block.project_bn.gamma.assign(np.zeros(16, "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=False)), x, atol=1e-6)


def test_inverted_residual_matches_numpy_reference():
    """Forward pass vs an independent numpy implementation (BN at init = x / sqrt(1 + eps))."""
    rng = np.random.RandomState(1)
    block = InvertedResidual(8, expansion=2, stride=2, name="ir")
    x = rng.normal(size=(1, 6, 6, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(block(x, training=False))
    bn = 1.0 / np.sqrt(1.0 + 1e-5)
    relu6 = lambda v: np.clip(v, 0, 6)  # noqa: E731
    h = relu6(np.einsum("bhwc,cd->bhwd", x, keras.ops.convert_to_numpy(block.expand.kernel)[0, 0]) * bn)
    dw = keras.ops.convert_to_numpy(block.depthwise.kernel)[:, :, :, 0]  # (3, 3, C)
    # "same" padding with stride 2 on 6 -> 3 (TF pads 0 before, 1 after)
    hp = np.pad(h, ((0, 0), (0, 1), (0, 1), (0, 0)))
    d = np.zeros((1, 3, 3, h.shape[-1]), "float32")
    for i in range(3):
        for j in range(3):
            d[0, i, j] = np.sum(hp[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * dw, axis=(0, 1))
    d = relu6(d * bn)
    p = np.einsum("bhwc,cd->bhwd", d, keras.ops.convert_to_numpy(block.project.kernel)[0, 0]) * bn
    s = np.einsum("bhwc,cd->bhwd", x[:, ::2, ::2], keras.ops.convert_to_numpy(block.shortcut.kernel)[0, 0]) * bn
    np.testing.assert_allclose(y, p + s, atol=1e-5)


@pytest.mark.parametrize("block", ["bottleneck", "inverted_residual"])
def test_forward_shapes_every_stack(block):
    bb = HourglassBackbone(num_stacks=3, filters=16, num_keypoints=5, block=block, input_shape=(64, 64, 3))
    out = bb(np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32"))
    assert sorted(out) == ["P2", "heatmaps_stack0", "heatmaps_stack1"]
    assert tuple(out["P2"].shape) == (2, 16, 16, 16)
    for k in ("heatmaps_stack0", "heatmaps_stack1"):
        assert tuple(out[k].shape) == (2, 16, 16, 5) and out[k].dtype == "float32"
    # the two stacks' heatmaps differ (stack 1 sees stack 0's remapped prediction)
    assert not np.allclose(keras.ops.convert_to_numpy(out["heatmaps_stack0"]), keras.ops.convert_to_numpy(out["heatmaps_stack1"]))
    names = {layer.name for layer in bb.layers}
    assert {"stem_conv", "stack0_hg4_up1_b0", "stack1_hg1_low2_b0", "stack2_lin", "stack1_heatmap_remap"} <= names


def test_order4_hourglass_block_count():
    # Newell: order-4 module = 4 levels x (up1, low1, low3) + innermost low2 = 13 blocks, + 1 after.
    bb = HourglassBackbone(num_stacks=1, filters=8, num_keypoints=2, input_shape=(64, 64, 3))
    blocks = [layer for layer in bb.layers if isinstance(layer, BottleneckResidual) and layer.name.startswith("stack0")]
    assert len(blocks) == 14


def test_constructor_validation():
    with pytest.raises(ValueError, match="divisible by 4 \\* 2\\*\\*order = 64"):
        HourglassBackbone(input_shape=(96, 64, 3))
    with pytest.raises(ValueError, match="block"):
        HourglassBackbone(block="dense", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="num_stacks"):
        HourglassBackbone(num_stacks=0)
    with pytest.raises(ValueError, match="stride"):
        InvertedResidual(8, stride=3)


def test_layer_harness(tmp_path):
    f1 = run_layer_checks(BottleneckResidual, {"filters": 12, "name": "bneck"}, (2, 8, 8, 8), tmp_path=tmp_path)
    f2 = run_layer_checks(
        BottleneckResidual, {"filters": 8, "preactivation": True, "name": "bneck_pre"}, (2, 8, 8, 8), tflite=False
    )
    f3 = run_layer_checks(InvertedResidual, {"filters": 8, "stride": 2, "name": "ir"}, (2, 8, 8, 8), tmp_path=tmp_path)
    assert f1["tflite_max_diff"] < 1e-4 and f3["tflite_max_diff"] < 1e-4 and f2 == {}


def test_backbone_harness(tmp_path):
    kwargs = dict(num_stacks=2, filters=8, order=2, num_keypoints=3, block="inverted_residual", input_shape=(32, 32, 3))
    figures = run_model_checks(HourglassBackbone, kwargs, (2, 32, 32, 3), tmp_path=tmp_path)
    assert figures["tflite_max_diff"] < 1e-4
