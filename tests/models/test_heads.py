"""HeatmapHead: shapes of every tail variant, hand-computed final conv, float32 under mixed precision."""

import keras
import numpy as np
import pytest
from harness import run_layer_checks

from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.layers.inverted_residual import InvertedResidual


def test_plain_head_is_a_1x1_conv():
    x = np.random.RandomState(0).normal(size=(2, 8, 6, 12)).astype("float32")
    head = HeatmapHead(5, name="head")
    y = keras.ops.convert_to_numpy(head(x))
    w = keras.ops.convert_to_numpy(head.final_conv.kernel)[0, 0]
    b = keras.ops.convert_to_numpy(head.final_conv.bias)
    np.testing.assert_allclose(y, np.einsum("bhwc,ck->bhwk", x, w) + b, atol=1e-5)
    assert head.count_params() == 12 * 5 + 5


@pytest.mark.parametrize("upsample", ["deconv", "resize_conv"])
def test_upsampling_tail_shapes(upsample):
    head = HeatmapHead(17, num_deconv_layers=2, deconv_filters=8, upsample=upsample, num_conv_layers=1, conv_filters=8, name="head")
    y = head(np.zeros((1, 8, 6, 16), "float32"))
    assert tuple(y.shape) == (1, 32, 24, 17) == head.compute_output_shape((1, 8, 6, 16))
    names = {w.path.split("/")[-2] for w in head.weights}
    assert ("head_deconv0" in names) == (upsample == "deconv")
    assert ("head_resize1_conv" in names) == (upsample == "resize_conv")


def test_float32_output_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        head = HeatmapHead(3, num_deconv_layers=1, deconv_filters=8, name="head")
        y = head(np.ones((1, 4, 4, 8), "float32"))
        assert head.tail_layers[0].compute_dtype == "float16"
    finally:
        keras.config.set_dtype_policy("float32")
    assert y.dtype == "float32"


def test_validation_messages():
    with pytest.raises(ValueError, match="upsample.*received 'bilinear'"):
        HeatmapHead(17, upsample="bilinear")
    with pytest.raises(ValueError, match="num_keypoints"):
        HeatmapHead(0)


def test_head_harness(tmp_path):
    f = run_layer_checks(
        HeatmapHead,
        {"num_keypoints": 4, "num_deconv_layers": 1, "deconv_filters": 8, "upsample": "resize_conv", "name": "head"},
        (2, 8, 8, 8),
        tmp_path=tmp_path,
    )
    assert f["tflite_max_diff"] < 1e-4


def test_psa_options_build_and_serialize(tmp_path):
    pytest.importorskip("kdpose_tf.models.layers.psa")
    head = HeatmapHead(4, psa=True, name="head_psa")
    block = InvertedResidual(8, psa=True, name="ir_psa")
    x = np.random.RandomState(0).normal(size=(1, 8, 8, 8)).astype("float32")
    assert tuple(head(x).shape) == (1, 8, 8, 4) and tuple(block(x).shape) == (1, 8, 8, 8)
    assert any("psa" in w.path for w in head.weights) and any("psa" in w.path for w in block.weights)
    run_layer_checks(InvertedResidual, {"filters": 8, "psa": True, "name": "ir_psa"}, (1, 8, 8, 8), tmp_path=tmp_path, tflite=False)


def test_untrained_heatmaps_start_near_zero_on_a_real_photo(data_dir):
    """Heatmap convs start at N(0, 0.001) (HRNet / MMPose): the untrained loss is the all-zero loss.

    With Glorot init the 2-stack hourglass output |x| ~ 1.2 here, 400x the loss of predicting zeros.
    """
    from kdpose_tf.data.images import read_image
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    keras.utils.set_random_seed(0)
    photo = read_image(sorted((data_dir / "parse").glob("*.jpg"))[0])
    crop = keras.ops.convert_to_numpy(keras.ops.image.resize(photo[None].astype("float32"), (64, 64)))
    model = PoseEstimator(HourglassBackbone(num_stacks=2, filters=16, order=2, num_keypoints=14,
                                            input_shape=(64, 64, 3)), keypoint_set="lsp14")
    kernel = keras.ops.convert_to_numpy(model.head.final_conv.kernel)
    assert 0.0005 < kernel.std() < 0.002
    for heatmaps in model(crop, training=False):
        assert np.abs(keras.ops.convert_to_numpy(heatmaps)).mean() < 0.05
