"""`HourglassBackbone`: stacked hourglass (Newell) and its inverted-residual LSHM variant.

Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016
(FPD teacher 8x256 / student 4x128, Zhang et al. CVPR 2019); LSHM students use MobileNetV2
inverted residual blocks (Sandler et al., CVPR 2018) in the same topology.

Output contract (see `kdpose_tf.models.backbone`): a dict
    {"P2": last stack's feature (B, H/4, W/4, filters),
     "heatmaps_stack0": (B, H/4, W/4, K), ..., "heatmaps_stack{n-2}": ...}  (float32)
The intermediate stacks predict their own heatmaps (needed inside the backbone: they are
remapped by 1x1 convs and added into the next stack's input). The *final* stack's heatmaps are
made by the `PoseEstimator`'s head (a `HeatmapHead` with just its final 1x1 conv is exactly
Newell's last score conv), so `PoseEstimator` outputs
`[heatmaps_stack0, ..., heatmaps_stack{n-2}, head(P2)]`, one tensor per supervised stack.
"""

from __future__ import annotations

import keras

from kdpose_tf.models.backbone import Backbone, normalize_images
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.utils.args import check_int
from kdpose_tf.models.hourglass.hourglass_layers import (
    BLOCK_TYPES,
    hourglass_module,
    hourglass_stem,
    residual_stack,
)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class HourglassBackbone(Backbone):
    """Stacked hourglass backbone with intermediate supervision.

    Stem (7x7/2 conv, residual, max-pool, 2 residuals -> 1/4 resolution, `filters` channels),
    then `num_stacks` hourglass modules of order `order`. After each hourglass:
    `blocks_per_level` residual blocks, a 1x1 conv + BN + ReLU ("stack{s}_lin"). Every stack but the
    last predicts heatmaps with a 1x1 conv ("stack{s}_heatmaps", float32), and the next stack's input is
    x + conv1x1(feature) ("stack{s}_feature_remap") + conv1x1(heatmaps) ("stack{s}_heatmap_remap").

    Args:
        num_stacks: number of hourglass modules (default 2).
        filters: width of every hourglass (default 256).
        order: hourglass recursion depth (default 4: 64x64 -> 4x4 at 256x256 input).
        block: "bottleneck" (Newell residual, `BottleneckResidual`) or "inverted_residual" (LSHM).
        blocks_per_level: residual blocks at each position of the module (default 1, Newell nModules).
        expansion: expansion t of inverted residual blocks (default 2; ignored for bottleneck).
        num_keypoints: K, channels of the intermediate heatmaps (default 17).
        stem_filters: channels of the 7x7 stem conv; the stem residuals use 2*stem_filters.
            Default None = 64 (Newell).
        psa: PolarizedSelfAttention after the 3x3 conv of every hourglass block (default False).
        preactivation: bottleneck block order (default False = conv-BN-ReLU; True = Newell's BN-ReLU-conv).
        input_shape: (H, W, 3), H and W divisible by 4 * 2**order (None allowed) (default (256, 256, 3)).
        **kwargs: `name` (default "hourglass_backbone"), `trainable`, `dtype`.

    Example:
    >>> bb = HourglassBackbone(num_stacks=2, filters=16, num_keypoints=16, input_shape=(64, 64, 3))
    >>> sorted(bb.output.keys())
    ['P2', 'heatmaps_stack0']
    """

    def __init__(
        self,
        num_stacks=2,
        filters=256,
        order=4,
        block="bottleneck",
        blocks_per_level=1,
        expansion=2,
        num_keypoints=17,
        stem_filters=None,
        psa=False,
        preactivation=False,
        input_shape=(256, 256, 3),
        **kwargs,
    ):
        check_int("num_stacks", num_stacks, owner="HourglassBackbone")
        check_int("filters", filters, 2, owner="HourglassBackbone")
        check_int("order", order, owner="HourglassBackbone")
        check_int("blocks_per_level", blocks_per_level, owner="HourglassBackbone")
        check_int("expansion", expansion, owner="HourglassBackbone")
        check_int("num_keypoints", num_keypoints, owner="HourglassBackbone")
        if stem_filters is not None:
            check_int("stem_filters", stem_filters, owner="HourglassBackbone")
        if block not in BLOCK_TYPES:
            raise ValueError(f"HourglassBackbone: `block` must be one of {BLOCK_TYPES}, received {block!r}")
        for arg, v in (("psa", psa), ("preactivation", preactivation)):
            if not isinstance(v, bool):
                raise ValueError(f"HourglassBackbone: `{arg}` must be a bool, received {v!r}")
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"HourglassBackbone: `input_shape` must be (H, W, 3), received {input_shape!r}")
        div = 4 * 2**order
        for d in input_shape[:2]:
            if d is not None and d % div:
                raise ValueError(
                    f"HourglassBackbone: input height and width must be divisible by 4 * 2**order = {div}, "
                    f"received input_shape={input_shape!r} with order={order}"
                )
        kwargs.setdefault("name", "hourglass_backbone")

        block_kwargs = dict(block=block, expansion=expansion, preactivation=preactivation)
        images = keras.Input(shape=input_shape, name="images")
        x = normalize_images(images)
        x = hourglass_stem(x, filters, 64 if stem_filters is None else stem_filters, **block_kwargs)
        outputs = {}
        feature = None
        for s in range(num_stacks):
            p = f"stack{s}"
            y = hourglass_module(x, order, filters, blocks_per_level, p, psa=psa, **block_kwargs)
            y = residual_stack(y, filters, blocks_per_level, f"{p}_out", psa=psa, **block_kwargs)
            y = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{p}_lin")(y)
            y = keras.layers.BatchNormalization(name=f"{p}_lin_bn", **BN_KWARGS)(y)
            feature = keras.layers.ReLU(name=f"{p}_lin_relu")(y)
            if s < num_stacks - 1:
                # N(0, 0.001) like the final head conv: untrained heatmaps start near 0, not O(1)
                heat = keras.layers.Conv2D(
                    num_keypoints, 1, name=f"{p}_heatmaps", dtype="float32",
                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                )(feature)
                outputs[f"heatmaps_stack{s}"] = heat
                remap_f = keras.layers.Conv2D(filters, 1, name=f"{p}_feature_remap")(feature)
                remap_h = keras.layers.Conv2D(filters, 1, name=f"{p}_heatmap_remap")(heat)
                x = keras.layers.Add(name=f"{p}_merge")([x, remap_f, remap_h])
        outputs = {"P2": feature, **outputs}
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        self.num_stacks = num_stacks
        self.filters = filters
        self.order = order
        self.block = block
        self.blocks_per_level = blocks_per_level
        self.expansion = expansion
        self.num_keypoints = num_keypoints
        self.stem_filters = stem_filters
        self.psa = psa
        self.preactivation = preactivation
        self.image_shape = input_shape

    @property
    def intermediate_heatmap_keys(self):
        """Output keys of the intermediate (non-final) stacks' heatmaps, in stack order."""
        return [f"heatmaps_stack{s}" for s in range(self.num_stacks - 1)]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_stacks=self.num_stacks,
            filters=self.filters,
            order=self.order,
            block=self.block,
            blocks_per_level=self.blocks_per_level,
            expansion=self.expansion,
            num_keypoints=self.num_keypoints,
            stem_filters=self.stem_filters,
            psa=self.psa,
            preactivation=self.preactivation,
            input_shape=list(self.image_shape),
        )
        return config
