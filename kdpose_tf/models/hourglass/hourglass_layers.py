"""Functional builders of the stacked hourglass: residual stacks, the stem, one hourglass module.

Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016.
They wire named block layers (`BottleneckResidual` or `InvertedResidual`) into the backbone's
functional graph, so every block is addressable by its layer name (feature distillation):

    stem_conv, stem_bn, stem_res1_b0, stem_pool, stem_res2_b0, stem_res3_b0
    stack{s}_hg{o}_up1_b{j}, stack{s}_hg{o}_pool, stack{s}_hg{o}_low1_b{j}, stack{s}_hg{o}_low3_b{j},
    stack{s}_hg{o}_upsample, stack{s}_hg{o}_add, stack{s}_hg1_low2_b{j}
with o the order of the (recursive) module, 4 = outermost, 1 = innermost.
"""

from __future__ import annotations

import keras

from kdpose_tf.models.layers.inverted_residual import InvertedResidual
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.models.layers.residual import BottleneckResidual
from kdpose_tf.models.layers.upsample import Upsample

BLOCK_TYPES = ("bottleneck", "inverted_residual")


def make_block(block, filters, name, expansion=2, psa=False, preactivation=False):
    """One residual block layer of the given type ("bottleneck" or "inverted_residual")."""
    if block == "bottleneck":
        return BottleneckResidual(filters, preactivation=preactivation, psa=psa, name=name)
    if block == "inverted_residual":
        return InvertedResidual(filters, expansion=expansion, psa=psa, name=name)
    raise ValueError(f"unknown block {block!r}; expected one of {BLOCK_TYPES}")


def residual_stack(x, filters, num_blocks, name, **block_kwargs):
    """Apply `num_blocks` blocks named `{name}_b{j}`; the first one changes the width if needed."""
    for j in range(num_blocks):
        x = make_block(filters=filters, name=f"{name}_b{j}", **block_kwargs)(x)
    return x


def hourglass_stem(x, filters, stem_filters=64, **block_kwargs):
    """Newell's stem: 7x7/2 conv + BN + ReLU, residual to 2*stem_filters, 2x2 max-pool,
    residual at 2*stem_filters, residual to `filters`. Output at 1/4 of the input resolution."""
    mid = 2 * stem_filters
    x = keras.layers.Conv2D(stem_filters, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(name="stem_bn", **BN_KWARGS)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = residual_stack(x, mid, 1, "stem_res1", **block_kwargs)
    x = keras.layers.MaxPooling2D(2, name="stem_pool")(x)
    x = residual_stack(x, mid, 1, "stem_res2", **block_kwargs)
    x = residual_stack(x, filters, 1, "stem_res3", **block_kwargs)
    return x


def hourglass_module(x, order, filters, blocks_per_level, prefix, **block_kwargs):
    """One recursive hourglass of the given order (Newell Fig. 3).

    up1 = blocks(x); low = blocks(maxpool(x)); low = hourglass(low, order-1) (or blocks at order 1);
    low = blocks(low); return up1 + nearest_upsample(low). Width stays `filters` throughout.
    """
    p = f"{prefix}_hg{order}"
    up1 = residual_stack(x, filters, blocks_per_level, f"{p}_up1", **block_kwargs)
    low = keras.layers.MaxPooling2D(2, name=f"{p}_pool")(x)
    low = residual_stack(low, filters, blocks_per_level, f"{p}_low1", **block_kwargs)
    if order > 1:
        low = hourglass_module(low, order - 1, filters, blocks_per_level, prefix, **block_kwargs)
    else:
        low = residual_stack(low, filters, blocks_per_level, f"{p}_low2", **block_kwargs)
    low = residual_stack(low, filters, blocks_per_level, f"{p}_low3", **block_kwargs)
    up2 = Upsample(2, interpolation="nearest", name=f"{p}_upsample")(low)
    return keras.layers.Add(name=f"{p}_add")([up1, up2])
