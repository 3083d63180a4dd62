"""Lite-HRNet / Dite-HRNet: sizes vs the papers, block maths vs NumPy, shapes, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdpose_tf.models.layers.pooling import BlockPool
from kdpose_tf.models.lite_hrnet.dite_hrnet_layers import ContextPool, KernelAggregate, dynamic_conv_bn
from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
from kdpose_tf.models.lite_hrnet.lite_hrnet_layers import ChannelShuffle, ChannelSplit
from kdpose_tf.models.lite_hrnet.lite_hrnet_presets import backbone_presets

TINY = dict(widths=(16, 32, 64, 128), stem_width=16, stage_modules=(1, 1, 1), blocks_per_module=1,
            input_shape=(64, 64, 3))


def _conv_macs(model, aggregated):
    """Independent MAC counter over the layers; dynamic convs counted at 1 kernel when `aggregated`."""
    total = 0
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            continue
        stem, _, idx = layer.name.rpartition("_kernel")  # dynamic conv: K parallel layers {stem}_kernel{k}
        if stem and idx.isdigit() and aggregated and int(idx) > 0:
            continue  # the reference runs one aggregated kernel
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += h * w * c_out * kh * kw
        else:
            total += h * w * c_out * kh * kw * int(layer.input.shape[-1]) // layer.groups
    return total


def _photo_batch(data_dir, size):
    import cv2

    paths = sorted((data_dir / "coco_mini" / "train2017").glob("*.jpg"))[:2]
    return np.stack([cv2.resize(cv2.imread(str(p))[:, :, ::-1], size[::-1]) for p in paths]).astype("float32")


@pytest.mark.parametrize("preset", ["lite_hrnet_18", "dite_hrnet_18"])
def test_18_params_and_flops_match_paper(preset):
    from kdpose_tf.models.summary import count_flops, count_params

    meta, config = backbone_presets[preset]["metadata"], backbone_presets[preset]["config"]
    bb = LiteHRNetBackbone(**config, input_shape=(256, 192, 3))
    head_params, head_macs = 40 * 17 + 17, 64 * 48 * 40 * 17  # 1x1 conv to 17 on the 1/4 branch
    params = count_params(bb) + head_params
    assert abs(params / meta["params"] - 1) < 0.10, params
    macs = _conv_macs(bb, aggregated=True) + head_macs
    assert abs(macs / meta["flops"] - 1) < 0.10, macs
    if preset == "lite_hrnet_18":  # the traced graph (what runs) agrees with the independent layer count
        # plus the cross-resolution pools, which run as constant depthwise convs (BlockPool, for XNNPACK):
        # one multiply-add per input element
        pools = sum(int(np.prod(layer.input.shape[1:])) for layer in bb.layers if isinstance(layer, BlockPool))
        assert pools > 0
        assert count_flops(bb) == pytest.approx(_conv_macs(bb, aggregated=False) + pools, rel=0.01)


@pytest.mark.parametrize("preset", ["lite_hrnet_30", "dite_hrnet_30"])
def test_30_params_match_paper(preset):
    from kdpose_tf.models.summary import count_params

    meta, config = backbone_presets[preset]["metadata"], backbone_presets[preset]["config"]
    bb = LiteHRNetBackbone(**config, input_shape=(64, 64, 3))  # parameters do not depend on input size
    assert abs((count_params(bb) + 40 * 17 + 17) / meta["params"] - 1) < 0.10


@pytest.mark.parametrize("variant", ["lite", "dite"])
@pytest.mark.parametrize("iterative_head", [True, False])
def test_forward_shapes_on_photos(variant, iterative_head, data_dir):
    bb = LiteHRNetBackbone(variant=variant, iterative_head=iterative_head, psa=variant == "dite", **TINY)
    feats = bb(_photo_batch(data_dir, (64, 64)))
    widths = (16, 16, 32, 64) if iterative_head else (16, 32, 64, 128)
    for i, (k, c) in enumerate(zip(("P2", "P3", "P4", "P5"), widths)):
        s = 64 // 2 ** (i + 2)
        assert tuple(feats[k].shape) == (2, s, s, c)
        assert np.all(np.isfinite(np.asarray(feats[k])))
    assert any("psa" in layer.name for layer in bb.layers) == (variant == "dite")


def test_channel_shuffle_matches_torch_semantics():
    x = np.arange(2 * 3 * 2 * 12, dtype="float32").reshape(2, 3, 2, 12)
    y = np.asarray(ChannelShuffle(3, name="sh")(x))
    # PyTorch: view(b, g, c/g, h, w).transpose(1, 2) -> output channel j*g + i = input i*(c/g) + j
    ref = x.reshape(2, 3, 2, 3, 4).transpose(0, 1, 2, 4, 3).reshape(2, 3, 2, 12)
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_channel_routes_say_where_each_channel_goes(groups):
    """The routing the export passes read (QAT keeps the input's scale, equalization follows channels) is
    what the layers compute: output channel j of route k copies input channel routes[k][1][j]."""
    x = np.random.RandomState(groups).uniform(size=(1, 2, 2, 12)).astype("float32")
    ids = np.arange(12) + 100  # channel ids, not positions
    (k, source), = ChannelShuffle(groups, name="sh").channel_routes(ids)
    np.testing.assert_array_equal(np.asarray(ChannelShuffle(groups, name="sh2")(x)), x[..., source - 100])
    split = ChannelSplit([5, 7], name="split")
    for (k, source), part in zip(split.channel_routes(ids), split(x)):
        np.testing.assert_array_equal(np.asarray(part), x[..., source - 100])
    assert [k for k, _ in split.channel_routes(ids)] == [0, 1]


def test_context_pool_matches_numpy():
    rng = np.random.RandomState(0)
    x, logits = rng.normal(size=(2, 4, 6, 3)).astype("float32"), rng.normal(size=(2, 4, 6, 1)).astype("float32")
    m = np.exp(logits.reshape(2, -1))
    m = (m / m.sum(1, keepdims=True)).reshape(2, 4, 6, 1)
    glob = np.asarray(ContextPool(None, name="g")([x, logits]))
    np.testing.assert_allclose(glob, (x * m).sum((1, 2), keepdims=True), atol=1e-6)
    win = np.asarray(ContextPool(2, name="w")([x, logits]))
    ref = (x * m).reshape(2, 2, 2, 3, 2, 3).sum((2, 4))
    np.testing.assert_allclose(win, ref, atol=1e-6)


def test_dynamic_kernel_aggregation_equals_aggregated_kernel():
    """sum_k a_k conv(x, W_k) (our graph) == conv(x, sum_k a_k W_k) (Dite-HRNet reference), per sample."""
    rng = np.random.RandomState(0)
    inp = keras.Input((8, 8, 6))
    out = dynamic_conv_bn(inp, None, 5, 2, 4, name="dyn")
    model = keras.Model(inp, out)
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype("float32") if "variance" in w.path
                 else rng.normal(size=w.shape).astype("float32"))
    x = rng.normal(size=(3, 8, 8, 6)).astype("float32")
    y = np.asarray(model(x, training=False))
    att = np.asarray(keras.Model(inp, model.get_layer("dyn_att_conv2").output)(x))[:, 0, 0, :]  # (B, K)
    kernel = np.concatenate([model.get_layer(f"dyn_kernel{k}").kernel.numpy() for k in range(4)], -1)  # (5,5,6,K)
    gamma, beta, mean, var = (w.numpy() for w in model.get_layer("dyn_bn").weights)
    for b in range(3):
        agg = np.einsum("hwck,k->hwc", kernel, att[b])[..., None]
        z = tf.nn.depthwise_conv2d(x[b : b + 1], agg, (1, 2, 2, 1), "SAME").numpy()
        ref = (z - mean) / np.sqrt(var + 1e-5) * gamma + beta
        np.testing.assert_allclose(y[b : b + 1], ref, atol=1e-4, rtol=1e-4)


def test_kernel_aggregate_rejects_mismatch():
    with pytest.raises(ValueError, match="KernelAggregate"):
        KernelAggregate(1)
    with pytest.raises(ValueError, match="divisible"):
        KernelAggregate(4, name="a")([keras.Input((4, 4, 6)), keras.Input((1, 1, 4))])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "mobile"}, "variant"),
        ({"widths": (16, 32), "stage_modules": (1, 1)}, "len"),
        ({"widths": (15, 32)}, "even"),
        ({"input_shape": (60, 64, 3)}, "divisible"),
        ({"stem_width": 7}, "stem_width"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    args = dict(widths=(16, 32), stage_modules=(1,), input_shape=(64, 64, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LiteHRNetBackbone(**args)


@pytest.mark.parametrize("variant", ["lite", "dite"])
def test_harness_round_trip_save_load_mixed_precision(variant, tmp_path):
    from harness import run_model_checks

    bb = run_model_checks(LiteHRNetBackbone, dict(variant=variant, name=f"{variant}_tiny", **TINY), (1, 64, 64, 3),
                          tmp_path=tmp_path, tflite=False)["model"]
    assert bb.get_layer("stage4_module0_fuse_0_relu") is not None  # stable, addressable names
