"""count_params / count_flops / summary_table against hand-computed cases."""

import keras
import pytest

from kdpose_tf.models.summary import count_flops, count_params, flops_breakdown, summary_table


def single(layer, input_shape):
    x = keras.Input(input_shape)
    return keras.Model(x, layer(x))


def test_conv2d_macs_and_params_hand_formula():
    # 3x3 conv, 5 -> 7 channels, stride 2, "same" on 33x20 -> 17x10 output.
    model = single(keras.layers.Conv2D(7, 3, strides=2, padding="same"), (33, 20, 5))
    assert count_flops(model) == 17 * 10 * 7 * (3 * 3 * 5)
    assert count_params(model) == 3 * 3 * 5 * 7 + 7
    # "valid" padding, 1x5 kernel, no bias: 16x12 -> 16x8 output.
    model = single(keras.layers.Conv2D(4, (1, 5), padding="valid", use_bias=False), (16, 12, 3))
    assert count_flops(model) == 16 * 8 * 4 * 5 * 3
    assert count_params(model) == 5 * 3 * 4


def test_grouped_conv_counts_per_group():
    model = single(keras.layers.Conv2D(8, 3, padding="same", groups=4, use_bias=False), (10, 10, 8))
    assert count_flops(model) == 10 * 10 * 8 * (3 * 3 * 2)


def test_depthwise_conv_hand_formula():
    model = single(keras.layers.DepthwiseConv2D(5, strides=1, padding="same", depth_multiplier=2), (12, 9, 6))
    assert count_flops(model) == 12 * 9 * 12 * 5 * 5
    assert count_params(model) == 5 * 5 * 6 * 2 + 12
    assert set(flops_breakdown(model)) == {"DepthwiseConv2dNative"}


def test_transposed_conv_and_dense_hand_formula():
    model = single(keras.layers.Conv2DTranspose(6, 4, strides=2, padding="same", use_bias=False), (8, 5, 3))
    assert count_flops(model) == 8 * 5 * 3 * 4 * 4 * 6  # each input pixel scatters a 4x4x6 patch
    x = keras.Input((10,))
    model = keras.Model(x, keras.layers.Dense(4)(keras.layers.Dense(7)(x)))
    assert count_flops(model, (10,)) == 10 * 7 + 7 * 4
    assert count_params(model) == 10 * 7 + 7 + 7 * 4 + 4


@keras.saving.register_keras_serializable(package="kdpose_tf_tests")
class _Nested(keras.layers.Layer):
    """A custom layer holding conv sub-layers, one of them inside another custom layer."""

    def build(self, input_shape):
        self.inner = keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")
        self.pointwise = keras.Sequential([keras.layers.Conv2D(2, 1, use_bias=False)], name="inner_seq")
        self.inner.build(input_shape)
        self.pointwise.build(self.inner.compute_output_shape(input_shape))

    def call(self, x):
        return self.pointwise(self.inner(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)


def test_nested_layers_and_submodels_are_counted():
    inner_model = single(_Nested(name="nested"), (6, 6, 3))
    x = keras.Input((12, 12, 3))
    y = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(3, 1, use_bias=False)(x))
    model = keras.Model(x, inner_model(y))
    expected = 12 * 12 * 3 * 3 + 6 * 6 * 4 * (3 * 3 * 3) + 6 * 6 * 2 * 4
    assert count_flops(model) == expected
    assert count_params(model) == 3 * 3 + (3 * 3 * 3 * 4 + 4) + 4 * 2


def test_params_exclude_bn_statistics_but_include_frozen_weights():
    x = keras.Input((4, 4, 3))
    conv = keras.layers.Conv2D(5, 1, use_bias=False)
    model = keras.Model(x, keras.layers.BatchNormalization()(conv(x)))
    assert model.count_params() == 15 + 4 * 5  # Keras counts moving mean / variance
    assert count_params(model) == 15 + 2 * 5  # PyTorch convention: gamma, beta only
    model.trainable = False
    assert count_params(model) == 25
    assert count_flops(model) == 4 * 4 * 5 * 3  # BN not counted


def test_input_shape_override_and_errors():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, keras.layers.Conv2D(2, 3, padding="same", use_bias=False)(x))
    assert count_flops(model, (8, 6, 3)) == 8 * 6 * 2 * 27
    with pytest.raises(ValueError, match="fully defined"):
        count_flops(model)
    with pytest.raises(TypeError, match="keras Model or Layer"):
        count_params(object())
    with pytest.raises(ValueError, match="not built"):
        count_params(keras.layers.Dense(3))


def test_summary_table_rows_and_ratios():
    model = single(keras.layers.Conv2D(10, 3, padding="same", use_bias=False), (100, 100, 10))
    macs = 100 * 100 * 10 * 90  # 9.0e6
    table = summary_table({"conv": model}, published={"conv": {"params_m": 0.0009, "gflops": 0.009}})
    lines = table.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("| model |")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:4] == ["conv", "100x100", "0.00", f"{macs / 1e9:.3f}"]
    assert cells[6:] == ["1.000", "1.000"]
    table = summary_table({"conv": model}, published={"conv": {"gflops": macs / 2**30, "gflops_divisor": 2**30}})
    assert table.strip().splitlines()[2].rstrip(" |").endswith("1.000")
    with pytest.raises(ValueError, match="non-empty dict"):
        summary_table([model])
