"""Building blocks of HRNet (Sun, Xiao, Liu, Wang, "Deep High-Resolution Representation
Learning for Human Pose Estimation", CVPR 2019).

Three layers, each a faithful port of the reference design (all convolutions without bias,
each followed by BatchNormalization with PyTorch's momentum 0.1 / epsilon 1e-5):

- `HRNetBasicBlock`: two 3x3 convs (ResNet basic block, expansion 1), used in stages 2-4.
- `HRNetBottleneck`: 1x1 -> 3x3 -> 1x1 (x4 expansion) ResNet bottleneck, used in stage 1.
- `HRNetFusion`: the multi-scale fusion unit producing one output branch from all input
  branches (identity, strided 3x3 convs down, 1x1 conv + BN + nearest upsampling up; sum; ReLU).

Both residual blocks accept `psa=True` to place a `PolarizedSelfAttention` right after the
first 3x3 conv (+BN+ReLU) of the block (where the project proposal places PSA, Liu et al.,
arXiv:2107.00782; configurable so the placement can be ablated).
"""

from __future__ import annotations

import keras

from kdpose_tf.models.layers.upsample import Upsample
from kdpose_tf.models.layers.norm import BN_KWARGS
from kdpose_tf.models.layers.psa import PolarizedSelfAttention
from kdpose_tf.utils.args import check_int



def _conv(layer, filters, kernel_size, strides=1, suffix=""):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        dtype=layer.dtype_policy,
        name=f"{layer.name}_{suffix}",
    )


def _bn(layer, suffix):
    return keras.layers.BatchNormalization(
        dtype=layer.dtype_policy, name=f"{layer.name}_{suffix}", **BN_KWARGS
    )


def _make_psa(layer, channels):
    return PolarizedSelfAttention(dtype=layer.dtype_policy, name=f"{layer.name}_psa")


class _ResidualBlock(keras.layers.Layer):
    """Shared plumbing of the two residual blocks: a chain of (conv, bn) pairs plus shortcut."""

    expansion = 1

    def __init__(self, filters, strides=1, downsample=None, psa=False, **kwargs):
        super().__init__(**kwargs)
        check_int("filters", filters, owner=type(self).__name__)
        if strides not in (1, 2):
            raise ValueError(f"`strides` must be 1 or 2, received {strides!r}")
        if downsample not in (None, True, False):
            raise ValueError(f"`downsample` must be None (automatic), True or False, received {downsample!r}")
        if not isinstance(psa, bool):
            raise ValueError(f"`psa` must be a bool, received {psa!r}")
        self.filters = filters
        self.strides = strides
        self.downsample = downsample
        self.psa = psa

    def _spec(self):
        """List of (suffix, filters, kernel, strides) convs in order."""
        raise NotImplementedError

    def _psa_after(self):
        """Index of the conv after which PSA goes (the first 3x3 conv)."""
        raise NotImplementedError

    def _needs_projection(self, input_shape):
        if self.downsample is not None:
            return self.downsample
        return self.strides != 1 or input_shape[-1] != self.filters * self.expansion

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.convs, self.bns = [], []
        self.psa_layer = None
        for i, (suffix, filters, kernel, strides) in enumerate(self._spec()):
            conv = _conv(self, filters, kernel, strides, suffix=f"conv{suffix}")
            bn = _bn(self, f"bn{suffix}")
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn.build(shape)
            self.convs.append(conv)
            self.bns.append(bn)
            if self.psa and i == self._psa_after():
                self.psa_layer = _make_psa(self, filters)
                self.psa_layer.build(shape)
        self.proj_conv = self.proj_bn = None
        if self._needs_projection(input_shape):
            self.proj_conv = _conv(self, self.filters * self.expansion, 1, self.strides, suffix="downsample_conv")
            self.proj_bn = _bn(self, "downsample_bn")
            self.proj_conv.build(tuple(input_shape))
            self.proj_bn.build(self.proj_conv.compute_output_shape(tuple(input_shape)))
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = bn(conv(x), training=training)
            if i != last:
                x = keras.ops.relu(x)
            if self.psa_layer is not None and i == self._psa_after():
                x = self.psa_layer(x)
        shortcut = inputs
        if self.proj_conv is not None:
            shortcut = self.proj_bn(self.proj_conv(inputs), training=training)
        return keras.ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]
        if self.strides != 1:
            height = None if height is None else -(-height // self.strides)
            width = None if width is None else -(-width // self.strides)
        return (batch, height, width, self.filters * self.expansion)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "downsample": self.downsample, "psa": self.psa})
        return config


@keras.saving.register_keras_serializable(package="kdpose_tf")
class HRNetBasicBlock(_ResidualBlock):
    """HRNet basic residual block: 3x3 conv-BN-ReLU, 3x3 conv-BN, add shortcut, ReLU.

    He et al. 2016 basic block as used in HRNet stages 2-4 (Sun et al., CVPR 2019).
    Sub-layer names: `{name}_conv1`, `{name}_bn1`, `{name}_conv2`, `{name}_bn2`,
    `{name}_downsample_conv/_bn` (only when the shape changes), `{name}_psa`.

    Args:
        filters: int, output channels.
        strides: 1 or 2, stride of the first conv (default 1).
        downsample: None (default: a 1x1 projection shortcut when the shape changes), or a bool.
        psa: bool, put a PolarizedSelfAttention after the first 3x3 conv (default False).

    Example:
        >>> y = HRNetBasicBlock(32, name="blk")(keras.ops.ones((1, 16, 12, 32)))
    """

    expansion = 1

    def _spec(self):
        return [("1", self.filters, 3, self.strides), ("2", self.filters, 3, 1)]

    def _psa_after(self):
        return 0


@keras.saving.register_keras_serializable(package="kdpose_tf")
class HRNetBottleneck(_ResidualBlock):
    """HRNet bottleneck block: 1x1 (filters), 3x3 (filters), 1x1 (4*filters), add shortcut, ReLU.

    The ResNet bottleneck (expansion 4) of HRNet stage 1 (Sun et al., CVPR 2019): with
    `filters=64` the block outputs 256 channels. Sub-layer names `{name}_conv1..3`, `{name}_bn1..3`,
    `{name}_downsample_conv/_bn`, `{name}_psa` (after the 3x3 conv when `psa=True`).

    Args:
        filters: int, bottleneck width (output is 4 * filters).
        strides: 1 or 2, stride of the 3x3 conv (default 1).
        downsample: None (default: automatic projection shortcut), or a bool.
        psa: bool, PolarizedSelfAttention after the 3x3 conv (default False).

    Example:
        >>> y = HRNetBottleneck(64, name="b")(keras.ops.ones((1, 16, 12, 64)))  # (1, 16, 12, 256)
    """

    expansion = 4

    def _spec(self):
        return [("1", self.filters, 1, 1), ("2", self.filters, 3, self.strides), ("3", self.filters * 4, 1, 1)]

    def _psa_after(self):
        return 1


@keras.saving.register_keras_serializable(package="kdpose_tf")
class HRNetFusion(keras.layers.Layer):
    """One output of HRNet's multi-scale fusion (exchange unit), Sun et al. CVPR 2019.

    Given the list of branch features x_0..x_{n-1} (branch j at stride 4 * 2**j), output branch
    `output_index` = i is ReLU(sum_j f_ij(x_j)) with
    - f_ii = identity,
    - j > i (lower resolution): 1x1 conv to C_i + BN + nearest upsampling by 2**(j-i),
    - j < i (higher resolution): i-j chained 3x3 stride-2 convs + BN; the intermediate ones keep
      C_j channels and have a ReLU, the last one maps to C_i without ReLU.
    Sub-layer names: `{name}_from{j}_conv` / `_bn` (up) and `{name}_from{j}_conv{k}` / `_bn{k}` (down).

    Args:
        output_index: int >= 0, the branch this unit produces.
        filters: int, output channels C_i.

    Example:
        >>> xs = [keras.ops.ones((1, 16, 12, 32)), keras.ops.ones((1, 8, 6, 64))]
        >>> y = HRNetFusion(0, 32, name="fuse0")(xs)  # (1, 16, 12, 32)
    """

    def __init__(self, output_index, filters, **kwargs):
        super().__init__(**kwargs)
        if isinstance(output_index, bool) or not isinstance(output_index, int) or output_index < 0:
            raise ValueError(f"`output_index` must be an int >= 0, received {output_index!r}")
        check_int("filters", filters, owner=type(self).__name__)
        self.output_index = output_index
        self.filters = filters

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        i = self.output_index
        if i >= len(shapes):
            raise ValueError(
                f"{self.name}: output_index {i} needs at least {i + 1} input branches, received {len(shapes)}"
            )
        if shapes[i][-1] != self.filters:
            raise ValueError(
                f"{self.name}: branch {i} has {shapes[i][-1]} channels, expected `filters`={self.filters}"
            )
        self.paths = []
        for j, shape in enumerate(shapes):
            path = []
            if j > i:
                conv, bn = _conv(self, self.filters, 1, 1, f"from{j}_conv"), _bn(self, f"from{j}_bn")
                conv.build(shape)
                bn.build(conv.compute_output_shape(shape))
                up = Upsample(
                    2 ** (j - i), interpolation="nearest", dtype=self.dtype_policy, name=f"{self.name}_from{j}_up"
                )
                path = [(conv, bn, False), up]
            elif j < i:
                for k in range(i - j):
                    last = k == i - j - 1
                    filters = self.filters if last else shape[-1]
                    conv = _conv(self, filters, 3, 2, f"from{j}_conv{k}")
                    bn = _bn(self, f"from{j}_bn{k}")
                    conv.build(shape)
                    shape = conv.compute_output_shape(shape)
                    bn.build(shape)
                    path.append((conv, bn, not last))
            self.paths.append(path)
        super().build(input_shape)

    def call(self, inputs, training=None):
        i = self.output_index
        total = None
        for j, (x, path) in enumerate(zip(inputs, self.paths)):
            for step in path:
                if isinstance(step, Upsample):
                    x = step(x)
                    continue
                conv, bn, relu = step
                x = bn(conv(x), training=training)
                if relu:
                    x = keras.ops.relu(x)
            total = x if total is None else total + x
        return keras.ops.relu(total)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[self.output_index])
        return shape[:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"output_index": self.output_index, "filters": self.filters})
        return config
