"""`HRNetBackbone`: the high-resolution network of Sun et al., CVPR 2019 (HRNet-W32 / W48).

Topology (the pose variant of the authors' reference implementation, "Deep High-Resolution
Representation Learning for Human Pose Estimation", Sun, Xiao, Liu, Wang, CVPR 2019):

- stem: two 3x3 stride-2 conv-BN-ReLU to `stem_width` (64) channels (1/4 resolution);
- stage 1: `stage_blocks[0]` bottleneck blocks of width `stage1_filters` (64 -> 256 channels);
- transition 1: 3x3 conv-BN-ReLU 256 -> C (same resolution) and 3x3/2 conv-BN-ReLU 256 -> 2C;
- stages 2, 3, 4: `stage_modules[1:]` = (1, 4, 3) high-resolution modules with 2, 3, 4 branches of
  widths C, 2C, 4C, 8C; each module runs `stage_blocks[s]` basic blocks per branch then fuses all
  branches (see `HRNetFusion`); between stages a 3x3/2 conv-BN-ReLU from the lowest-resolution
  branch opens the new branch.
- The last module of stage 4 fuses into the highest-resolution branch only
  (`multiscale_output=False`, as in the pose network), which is what the pose head consumes.

Outputs: dict {"P2": C at 1/4, "P3": 2C at 1/8, "P4": 4C at 1/16, "P5": 8C at 1/32}. "P2" is the fused
high-resolution output. With `multiscale_output=False` the last module has no fusion into branches
1-3, so "P3".."P5" are those branches' outputs after the module's residual blocks (no parameters are
added for them); with `multiscale_output=True` they are fused outputs like "P2" (HRNetV2-style, more
parameters than the published pose model).

Layer names (stages 1-based as in the paper, modules / branches / blocks 0-based):
`stem_conv1`, `stem_bn1`, `stage1_module0_branch0_block{k}` (its convs `..._conv1`),
`transition{s}_branch{b}_conv`, `stage{s}_module{m}_branch{b}_block{k}` (sub-layers `_conv1`, `_bn1`, ...),
`stage{s}_module{m}_fuse{i}` (fused output i of module m).
"""

from __future__ import annotations

import keras

from kdpose_tf.models.backbone import Backbone, normalize_images
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.utils.args import check_int_tuple
from kdpose_tf.models.hrnet.hrnet_layers import (
    HRNetBasicBlock,
    HRNetBottleneck,
    HRNetFusion,
)


def _conv_bn_relu(x, filters, strides, name):
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn", **BN_KWARGS)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class HRNetBackbone(Backbone):
    """HRNet backbone (Sun, Xiao, Liu, Wang, "Deep High-Resolution Representation Learning for
    Human Pose Estimation", CVPR 2019). See the module docstring for topology and names.

    With the defaults this is HRNet-W32; `width=48` gives HRNet-W48. Input: float32 RGB in
    [0, 255] (normalised inside the graph).

    Args:
        width: int, C, the width of the highest-resolution branch (default 32).
        stage_blocks: 4 ints, residual blocks per branch in stages 1-4 (default (4, 4, 4, 4)).
        stage_modules: 4 ints, modules per stage (default (1, 1, 4, 3)); stage 1 must be 1.
        stem_width: int, channels of the two stem convs (default 64).
        stage1_filters: int, bottleneck width of stage 1 (default 64, i.e. 256 channels out).
        psa: bool, a PolarizedSelfAttention after the first 3x3 conv of every residual block
            (default False; the seed proposal's ablation).
        multiscale_output: bool, whether the last module also fuses into branches 1-3
            (default False, the published pose network).
        input_shape: (height, width, 3); height and width divisible by 32 (default (256, 192, 3)).
        **kwargs: `name`, `dtype`, `trainable` of the keras.Model.

    Example (a tiny width-8 HRNet with one block per module; branch widths C, 2C, 4C, 8C):
        >>> backbone = HRNetBackbone(width=8, stage_blocks=(1, 1, 1, 1), stage_modules=(1, 1, 1, 1),
        ...                          input_shape=(64, 64, 3))
        >>> features = backbone(keras.ops.zeros((2, 64, 64, 3)))   # float32 RGB in [0, 255]
        >>> {level: tuple(f.shape) for level, f in features.items()}
        {'P2': (2, 16, 16, 8), 'P3': (2, 8, 8, 16), 'P4': (2, 4, 4, 32), 'P5': (2, 2, 2, 64)}
    """

    def __init__(
        self,
        width=32,
        stage_blocks=(4, 4, 4, 4),
        stage_modules=(1, 1, 4, 3),
        stem_width=64,
        stage1_filters=64,
        psa=False,
        multiscale_output=False,
        input_shape=(256, 192, 3),
        **kwargs,
    ):
        for arg, value in (("width", width), ("stem_width", stem_width), ("stage1_filters", stage1_filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{arg}` must be a positive int, received {value!r}")
        stage_blocks = check_int_tuple("stage_blocks", stage_blocks, length=4, owner="HRNetBackbone")
        stage_modules = check_int_tuple("stage_modules", stage_modules, length=4, owner="HRNetBackbone")
        if stage_modules[0] != 1:
            raise ValueError(f"`stage_modules[0]` (stage 1) must be 1, received {stage_modules!r}")
        for arg, value in (("psa", psa), ("multiscale_output", multiscale_output)):
            if not isinstance(value, bool):
                raise ValueError(f"`{arg}` must be a bool, received {value!r}")
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"`input_shape` must be (height, width, 3), received {input_shape!r}")
        for size in input_shape[:2]:
            if size is not None and (not isinstance(size, int) or size <= 0 or size % 32):
                raise ValueError(
                    f"`input_shape` height and width must be positive multiples of 32 (four branches down "
                    f"to 1/32), received {tuple(input_shape)!r}"
                )
        input_shape = tuple(input_shape)
        channels = [width * 2**b for b in range(4)]

        inputs = keras.Input(shape=input_shape, name="images")
        x = normalize_images(inputs)
        for i in (1, 2):
            x = keras.layers.Conv2D(
                stem_width, 3, strides=2, padding="same", use_bias=False, name=f"stem_conv{i}",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            )(x)
            x = keras.layers.BatchNormalization(name=f"stem_bn{i}", **BN_KWARGS)(x)
            x = keras.layers.ReLU(name=f"stem_relu{i}")(x)

        for k in range(stage_blocks[0]):
            x = HRNetBottleneck(stage1_filters, psa=psa, name=f"stage1_module0_branch0_block{k}")(x)
        branches = [x]

        outputs = None
        for stage in (2, 3, 4):
            num_branches = stage
            # Transition: adapt existing branches whose width differs, open one new branch.
            new = []
            for b in range(num_branches):
                if b < len(branches):
                    if branches[b].shape[-1] != channels[b]:
                        new.append(_conv_bn_relu(branches[b], channels[b], 1, f"transition{stage - 1}_branch{b}"))
                    else:
                        new.append(branches[b])
                else:
                    new.append(_conv_bn_relu(branches[-1], channels[b], 2, f"transition{stage - 1}_branch{b}"))
            branches = new

            num_modules = stage_modules[stage - 1]
            for m in range(num_modules):
                prefix = f"stage{stage}_module{m}"
                for b in range(num_branches):
                    y = branches[b]
                    for k in range(stage_blocks[stage - 1]):
                        y = HRNetBasicBlock(channels[b], psa=psa, name=f"{prefix}_branch{b}_block{k}")(y)
                    branches[b] = y
                last = stage == 4 and m == num_modules - 1
                num_outputs = num_branches if (not last or multiscale_output) else 1
                fused = [HRNetFusion(i, channels[i], name=f"{prefix}_fuse{i}")(branches) for i in range(num_outputs)]
                if last:
                    outputs = fused + branches[len(fused):]
                branches = fused if len(fused) == num_branches else branches

        features = {f"P{level + 2}": outputs[level] for level in range(4)}
        super().__init__(inputs=inputs, outputs=features, **kwargs)

        self.width = width
        self.stage_blocks = stage_blocks
        self.stage_modules = stage_modules
        self.stem_width = stem_width
        self.stage1_filters = stage1_filters
        self.psa = psa
        self.multiscale_output = multiscale_output
        self.image_shape = input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "width": self.width,
                "stage_blocks": list(self.stage_blocks),
                "stage_modules": list(self.stage_modules),
                "stem_width": self.stem_width,
                "stage1_filters": self.stage1_filters,
                "psa": self.psa,
                "multiscale_output": self.multiscale_output,
                "input_shape": list(self.image_shape),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("stage_blocks", "stage_modules", "input_shape"):
            if key in config and config[key] is not None:
                config[key] = tuple(config[key])
        return cls(**config)
