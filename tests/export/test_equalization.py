"""Activation equalization (`kdpose_tf.export.equalization`): exact in float, better in int8."""

import keras
import numpy as np

from kdpose_tf.export.equalization import equalize_activations, find_pairs
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.models.lite_hrnet.lite_hrnet_layers import ChannelShuffle, ChannelSplit


def _unbalanced_model():
    """conv (channel 0 spans ~0..200, channel 1 ~0..2) -> ReLU -> pad -> depthwise (x40 on channel 1)
    -> 1x1 conv: the int8 tensor between conv and depthwise leaves channel 1 about 3 steps."""
    x = keras.Input((16, 16, 3), name="images")
    y = keras.layers.Rescaling(1 / 255.0)(x)
    a = keras.layers.Conv2D(2, 1, name="a")
    y = keras.layers.ReLU(name="relu")(a(y))
    y = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="pad")(y)
    b = keras.layers.DepthwiseConv2D(3, strides=2, name="b")
    y = b(y)
    bn = keras.layers.BatchNormalization(name="bn")
    y = keras.layers.ReLU(name="relu2")(bn(y))
    c = keras.layers.Conv2D(4, 1, name="c")
    model = keras.Model(x, c(y))
    a.set_weights([np.array([[[[200.0, 1.0], [150.0, 2.0], [100.0, -1.0]]]], np.float32), np.zeros(2, np.float32)])
    k = np.full((3, 3, 2, 1), 1 / 9, np.float32)
    k[:, :, 1] = 40.0 / 9
    b.set_weights([k, np.zeros(2, np.float32)])
    bn.set_weights([np.array([1.0, 0.05], np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                    np.ones(2, np.float32)])
    # the output reads mostly channel 1, so its error (not the output's own rounding) is what is measured
    c.set_weights([np.array([[[[0.01, -0.01, 0.02, 0.0], [1.0, 0.5, -1.0, 2.0]]]], np.float32), np.zeros(4, np.float32)])
    return model


def test_pairs_found_through_relu_padding_and_batchnorm():
    pairs = [(p.name, [(c.name, list(ch)) for c, ch in consumers], list(blocked))
             for _, p, consumers, blocked in find_pairs(_unbalanced_model())]
    assert pairs == [("a", [("b", [0, 1])], [False, False]), ("bn", [("c", [0, 1])], [False, False])]


def _shuffle_block_model():
    """ShuffleNet-style routing: a (4 channels, 2 of them ~100x the others) -> ReLU -> concat with b ->
    shuffle -> split; half 0 -> depthwise d, half 1 -> 1x1 conv e and an Add with a 4-channel input."""
    x = keras.Input((8, 8, 3), name="images")
    y = keras.layers.Rescaling(1 / 255.0)(x)
    a = keras.layers.Conv2D(4, 1, name="a")(y)
    b = keras.layers.Conv2D(4, 1, name="b")(y)
    cat = keras.layers.Concatenate(name="cat")([keras.layers.ReLU(name="relu")(a), b])
    h0, h1 = ChannelSplit([4, 4], name="split")(ChannelShuffle(2, name="shuffle")(cat))
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="d")(h0)
    e = keras.layers.Conv2D(4, 1, name="e")(h1)
    f = keras.layers.Add(name="add")([h1, keras.layers.Conv2D(4, 1, name="g")(y)])
    model = keras.Model(x, keras.layers.Concatenate(name="out")([d, e, f]))
    ka = np.random.RandomState(0).normal(size=(1, 1, 3, 4)).astype(np.float32)
    ka[..., :2] *= 100.0
    model.get_layer("a").set_weights([ka, np.zeros(4, np.float32)])
    return model


def test_channels_followed_through_concat_shuffle_and_split():
    """shuffle(2) of [relu(a) 0..3, b 0..3] = [a0, b0, a1, b1 | a2, b2, a3, b3]: a0, a1 reach the
    depthwise d (free); a2, a3 reach conv e and the Add (blocked), so only a0, a1 may be rescaled."""
    model = _shuffle_block_model()
    found = {p.name: (consumers, blocked) for _, p, consumers, blocked in find_pairs(model)}
    consumers, blocked = found["a"]
    assert {c.name: list(ch) for c, ch in consumers} == {"d": [0, -1, 1, -1], "e": [2, -1, 3, -1]}
    assert list(blocked) == [False, False, True, True]
    assert "g" not in found  # it only reaches the Add

    crops = np.random.RandomState(2).uniform(0, 255, (32, 8, 8, 3)).astype(np.float32)
    ref = model.predict(crops, verbose=0)
    report = {r["producer"]: r for r in equalize_activations(model, crops)}
    assert report["a"]["consumers"] == ["d", "e"] and report["a"]["channels"] >= 1  # the small one of a0, a1
    np.testing.assert_allclose(model.predict(crops, verbose=0), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_float_outputs_unchanged_and_int8_error_smaller(tmp_path):
    crops = np.random.RandomState(1).uniform(0, 255, (64, 16, 16, 3)).astype(np.float32)
    model = _unbalanced_model()
    ref = model.predict(crops, verbose=0)
    errors = {}
    for eq in (False, True):
        path = export_tflite(model, tmp_path / f"eq_{eq}.tflite", quantize="int8", representative_data=crops,
                             io_dtype="float32", equalize="all" if eq else False, stride=2)
        got = np.concatenate([TFLiteRunner(path)(crops[i:i + 1]) for i in range(16)])
        errors[eq] = float(np.sqrt(np.mean((got - ref[:16]) ** 2)))
        # the caller's model keeps its weights (export works on them and restores them)
        np.testing.assert_array_equal(model.predict(crops[:4], verbose=0), ref[:4])
    assert errors[True] < 0.5 * errors[False], errors

    copy = _unbalanced_model()
    assert [r["producer"] for r in equalize_activations(_unbalanced_model(), crops)] == ["a"]  # depthwise only
    report = equalize_activations(copy, crops, dense=True)
    assert [r["producer"] for r in report] == ["a", "bn"] and report[0]["max_scale"] > 10
    np.testing.assert_allclose(copy.predict(crops, verbose=0), ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_measuring_ranges_matches_the_input_structure():
    """The range probe takes the image array as the model does: Keras warns nothing about a
    list-of-one input structure called with one array (the warning `kdpose export` printed)."""
    import warnings

    model = _unbalanced_model()
    crops = np.random.RandomState(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert equalize_activations(model, crops)
