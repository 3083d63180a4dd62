"""`HeatmapHead`: feature -> K heatmaps, with an optional upsampling tail and optional PSA.

SimpleBaseline (Xiao, Wu, Wei, "Simple Baselines for Human Pose Estimation and Tracking",
ECCV 2018) deconv tail; HRNet / hourglass heads are the tail-less case (one 1x1 conv).
Polarized Self-Attention: Liu et al., 2021 (placement before the final conv is the proposal's
"PSA in the head" option).
"""

from __future__ import annotations

import keras

from kdpose_tf.models.layers.gated_psa import GatedPSA
from kdpose_tf.models.layers.inverted_residual import _make_psa
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.models.layers.upsample import Upsample
from kdpose_tf.utils.args import check_int

UPSAMPLE_MODES = ("deconv", "resize_conv")


@keras.saving.register_keras_serializable(package="kdpose_tf")
class HeatmapHead(keras.layers.Layer):
    """Heatmap head: [upsampling tail] [3x3 convs] [PSA] final conv to K channels, float32 output.

    Tail, `num_deconv_layers` times (each doubles the resolution):
      - upsample="deconv": Conv2DTranspose(deconv_filters, deconv_kernel, stride 2) + BN + ReLU
      - upsample="resize_conv": nearest 2x resize + 3x3 conv + BN + ReLU (Edge TPU friendly:
        RESIZE_NEAREST_NEIGHBOR + CONV_2D instead of TRANSPOSE_CONV).
    Then `num_conv_layers` x (3x3 conv(conv_filters) + BN + ReLU), optional PSA, and a final
    `final_kernel` conv to `num_keypoints` channels with bias. The final conv always computes in
    float32, so the output is float32 under a mixed precision policy.

    Args:
        num_keypoints: K output channels.
        num_deconv_layers: upsampling stages (default 0).
        deconv_filters: channels of each upsampling stage (default 256).
        deconv_kernel: transposed conv kernel, 2, 3 or 4 (default 4; ignored for resize_conv).
        upsample: "deconv" (default) or "resize_conv".
        num_conv_layers: extra 3x3 conv + BN + ReLU layers after the tail (default 0).
        conv_filters: their channels (default 256).
        psa: PolarizedSelfAttention (sequential) before the final conv (default False).
        psa_gated: with `psa`, the attention enters through a learnable gate initialised 0 (`GatedPSA`): the
            head starts as the same head without PSA, so PSA can be grafted onto a trained head (default False).
        psa_gate_scale: with `psa_gated`, the gate's step multiplier (`GatedPSA` gate_scale, default 1.0).
        final_kernel: kernel of the final conv, 1 or 3 (default 1).
        **kwargs: `name` (default "heatmap_head"), `dtype`, ...

    Example:
    >>> head = HeatmapHead(17, num_deconv_layers=1, deconv_filters=32)
    >>> tuple(head(keras.ops.zeros((2, 8, 6, 16))).shape)
    (2, 16, 12, 17)
    """

    def __init__(
        self,
        num_keypoints,
        num_deconv_layers=0,
        deconv_filters=256,
        deconv_kernel=4,
        upsample="deconv",
        num_conv_layers=0,
        conv_filters=256,
        psa=False,
        final_kernel=1,
        psa_gated=False,
        psa_gate_scale=1.0,
        **kwargs,
    ):
        check_int("num_keypoints", num_keypoints, 1, owner="HeatmapHead")
        check_int("num_deconv_layers", num_deconv_layers, 0, owner="HeatmapHead")
        check_int("deconv_filters", deconv_filters, 1, owner="HeatmapHead")
        check_int("num_conv_layers", num_conv_layers, 0, owner="HeatmapHead")
        check_int("conv_filters", conv_filters, 1, owner="HeatmapHead")
        if deconv_kernel not in (2, 3, 4):
            raise ValueError(f"HeatmapHead: `deconv_kernel` must be 2, 3 or 4, received {deconv_kernel!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"HeatmapHead: `upsample` must be one of {UPSAMPLE_MODES}, received {upsample!r}")
        if not isinstance(psa, bool):
            raise ValueError(f"HeatmapHead: `psa` must be a bool, received {psa!r}")
        if not isinstance(psa_gated, bool) or (psa_gated and not psa):
            raise ValueError(f"HeatmapHead: `psa_gated` must be a bool and needs psa=True, received "
                             f"psa_gated={psa_gated!r}, psa={psa!r}")
        if psa_gate_scale != 1.0 and not psa_gated:
            raise ValueError(f"HeatmapHead: `psa_gate_scale` needs psa_gated=True, received "
                             f"psa_gate_scale={psa_gate_scale!r}, psa_gated={psa_gated!r}")
        if final_kernel not in (1, 3):
            raise ValueError(f"HeatmapHead: `final_kernel` must be 1 or 3, received {final_kernel!r}")
        kwargs.setdefault("name", "heatmap_head")
        super().__init__(**kwargs)
        self.num_keypoints = num_keypoints
        self.num_deconv_layers = num_deconv_layers
        self.deconv_filters = deconv_filters
        self.deconv_kernel = deconv_kernel
        self.upsample = upsample
        self.num_conv_layers = num_conv_layers
        self.conv_filters = conv_filters
        self.psa = psa
        self.final_kernel = final_kernel
        self.psa_gated = psa_gated
        self.psa_gate_scale = psa_gate_scale

    def build(self, input_shape):
        n, dt = self.name, self.dtype_policy
        bn = dict(BN_KWARGS, dtype=dt)
        stages = []  # groups of layers, flattened below into one tracked list
        shape = tuple(input_shape)
        for i in range(self.num_deconv_layers):
            if self.upsample == "deconv":
                layers = [
                    keras.layers.Conv2DTranspose(
                        self.deconv_filters, self.deconv_kernel, strides=2, padding="same", use_bias=False,
                        name=f"{n}_deconv{i}", dtype=dt,
                    )
                ]
            else:
                layers = [
                    Upsample(2, interpolation="nearest", name=f"{n}_resize{i}", dtype=dt),
                    keras.layers.Conv2D(
                        self.deconv_filters, 3, padding="same", use_bias=False, name=f"{n}_resize{i}_conv", dtype=dt
                    ),
                ]
            layers += [
                keras.layers.BatchNormalization(name=f"{n}_up{i}_bn", **bn),
                keras.layers.ReLU(name=f"{n}_up{i}_relu", dtype=dt),
            ]
            stages.append(layers)
        for i in range(self.num_conv_layers):
            stages.append(
                [
                    keras.layers.Conv2D(
                        self.conv_filters, 3, padding="same", use_bias=False, name=f"{n}_conv{i}", dtype=dt
                    ),
                    keras.layers.BatchNormalization(name=f"{n}_conv{i}_bn", **bn),
                    keras.layers.ReLU(name=f"{n}_conv{i}_relu", dtype=dt),
                ]
            )
        if self.psa:
            stages.append([GatedPSA(gate_scale=self.psa_gate_scale, name=f"{n}_psa") if self.psa_gated else _make_psa(f"{n}_psa")])
        self.tail_layers = [layer for layers in stages for layer in layers]
        for layer in self.tail_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        # Kernel ~ N(0, 0.001), bias 0, as HRNet / SimpleBaseline / MMPose initialise the heatmap
        # conv: an untrained model then predicts ~0 (loss ~ mean(target^2)) instead of O(1) values,
        # which with Glorot init cost hundreds of steps of shrinking before any joint was learned.
        self.final_conv = keras.layers.Conv2D(
            self.num_keypoints, self.final_kernel, padding="same", name=f"{n}_final_conv", dtype="float32",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        )
        self.final_conv.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.tail_layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return self.final_conv(keras.ops.cast(x, "float32"))

    def compute_output_shape(self, input_shape):
        f = 2**self.num_deconv_layers
        h, w = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if h is None else h * f,
            None if w is None else w * f,
            self.num_keypoints,
        )

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_keypoints=self.num_keypoints,
            num_deconv_layers=self.num_deconv_layers,
            deconv_filters=self.deconv_filters,
            deconv_kernel=self.deconv_kernel,
            upsample=self.upsample,
            num_conv_layers=self.num_conv_layers,
            conv_filters=self.conv_filters,
            psa=self.psa,
            final_kernel=self.final_kernel,
            psa_gated=self.psa_gated,
            psa_gate_scale=self.psa_gate_scale,
        )
        return config
