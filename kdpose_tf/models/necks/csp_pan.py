"""`DepthwiseCSPPAN`: the depthwise CSP-PAN neck of PP-PicoDet.

Yu et al., "PP-PicoDet: A Better Real-Time Object Detector on Mobile Devices", arXiv:2111.00902
(2021). 1x1 convs bring every input level to the same channel count; a
top-down path (nearest 2x upsampling + concat + CSP block) and a bottom-up path (depthwise kxk
stride-2 downsample + concat + CSP block); every CSP block is built from 1x1 convs and a
depthwise kxk + pointwise pair; optionally one extra stride-2 level.

A keras Layer taking the backbone's dict of features and returning a dict with the same level
names (plus the next level, e.g. "P6", when ``use_extra_level``). It plugs into
``PoseEstimator(..., neck=DepthwiseCSPPAN(...))``, which reads the highest-resolution output.
"""

from __future__ import annotations

import keras
from keras import layers

from kdpose_tf.models.layers.norm import BN_KWARGS

from kdpose_tf.models.layers.upsample import Upsample

_ACTIVATIONS = ("relu", "relu6", "hard_swish", "leaky_relu")


@keras.saving.register_keras_serializable(package="kdpose_tf")
class DepthwiseCSPPAN(keras.layers.Layer):
    """PP-PicoDet CSP-PAN neck with depthwise convolutions.

    Args:
        out_channels: channels of every output level (default None = the smallest input
            channel count).
        kernel_size: depthwise kernel size, odd (default 5).
        num_csp_blocks: bottlenecks inside each CSP block (default 1).
        use_extra_level: add one more stride-2 level after the last one (default False).
        in_levels: input levels, highest resolution first, each half the previous resolution
            (default ("P2", "P3", "P4", "P5")).
        activation: "relu" (default), "relu6", "hard_swish" or "leaky_relu".
        **kwargs: layer arguments (`name`, default "csp_pan"; `dtype`).

    Example:
        >>> neck = DepthwiseCSPPAN(in_levels=("P3", "P4", "P5"))
        >>> out = neck({"P3": keras.Input((32, 24, 64)), "P4": keras.Input((16, 12, 128)),
        ...             "P5": keras.Input((8, 6, 256))})   # every level: 64 channels
    """

    def __init__(
        self,
        out_channels=None,
        kernel_size=5,
        num_csp_blocks=1,
        use_extra_level=False,
        in_levels=("P2", "P3", "P4", "P5"),
        activation="relu",
        **kwargs,
    ):
        if out_channels is not None and (isinstance(out_channels, bool) or not isinstance(out_channels, int)
                                         or out_channels < 2):
            raise ValueError(f"DepthwiseCSPPAN: out_channels must be None or an int >= 2, received {out_channels!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"DepthwiseCSPPAN: kernel_size must be an odd positive int, received {kernel_size!r}")
        if isinstance(num_csp_blocks, bool) or not isinstance(num_csp_blocks, int) or num_csp_blocks < 1:
            raise ValueError(f"DepthwiseCSPPAN: num_csp_blocks must be an int >= 1, received {num_csp_blocks!r}")
        if not isinstance(use_extra_level, bool):
            raise ValueError(f"DepthwiseCSPPAN: use_extra_level must be a bool, received {use_extra_level!r}")
        if isinstance(in_levels, str) or len(tuple(in_levels)) < 2 or not all(
            isinstance(k, str) and k.startswith("P") and k[1:].isdigit() for k in in_levels
        ):
            raise ValueError(
                f"DepthwiseCSPPAN: in_levels must be >= 2 level names like 'P3', received {in_levels!r}"
            )
        nums = [int(k[1:]) for k in in_levels]
        if any(b != a + 1 for a, b in zip(nums, nums[1:])):
            raise ValueError(f"DepthwiseCSPPAN: in_levels must be consecutive, highest resolution first, received {in_levels!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"DepthwiseCSPPAN: activation must be one of {_ACTIVATIONS}, received {activation!r}")
        kwargs.setdefault("name", "csp_pan")
        super().__init__(**kwargs)
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.num_csp_blocks = num_csp_blocks
        self.use_extra_level = use_extra_level
        self.in_levels = tuple(in_levels)
        self.activation = activation

    # ------------------------------------------------------------------ sub-layer factories
    def _act(self, name):
        if self.activation == "leaky_relu":
            return layers.LeakyReLU(0.1, name=name, dtype=self.dtype_policy)
        return layers.Activation(self.activation, name=name, dtype=self.dtype_policy)

    def _conv(self, filters, name, kernel=1, strides=1, depthwise=False):
        kw = dict(strides=strides, padding="same", use_bias=False, dtype=self.dtype_policy)
        conv = (layers.DepthwiseConv2D(kernel, name=f"{name}_conv", **kw) if depthwise
                else layers.Conv2D(filters, kernel, name=f"{name}_conv", **kw))
        norm = layers.BatchNormalization(name=f"{name}_bn", dtype=self.dtype_policy, **BN_KWARGS)
        return [conv, norm, self._act(f"{name}_act")]

    def _dw_pw(self, filters, name, strides=1):
        return self._conv(None, f"{name}_dw", self.kernel_size, strides, True) + self._conv(filters, f"{name}_pw")

    def _csp(self, filters, name):
        mid = max(1, filters // 2)
        blocks = []
        for i in range(self.num_csp_blocks):
            blocks.append(self._conv(mid, f"{name}_block{i}_conv1") + self._dw_pw(mid, f"{name}_block{i}_conv2"))
        return {
            "main": self._conv(mid, f"{name}_main"),
            "short": self._conv(mid, f"{name}_short"),
            "blocks": blocks,
            "concat": layers.Concatenate(name=f"{name}_concat", dtype=self.dtype_policy),
            "final": self._conv(filters, f"{name}_final"),
        }

    @staticmethod
    def _seq(seq, x):
        for layer in seq:
            x = layer(x)
        return x

    def _run_csp(self, csp, x):
        main = self._seq(csp["main"], x)
        for block in csp["blocks"]:
            main = self._seq(block, main)
        return self._seq(csp["final"], csp["concat"]([main, self._seq(csp["short"], x)]))

    # ------------------------------------------------------------------ keras API
    def _check_shapes(self, input_shape):
        if not isinstance(input_shape, dict):
            raise ValueError(f"DepthwiseCSPPAN expects a dict of features, received {type(input_shape).__name__}")
        missing = [k for k in self.in_levels if k not in input_shape]
        if missing:
            raise ValueError(
                f"DepthwiseCSPPAN: levels {missing} missing from the input; received {sorted(input_shape)}, "
                f"expected {list(self.in_levels)}"
            )
        shapes = [tuple(input_shape[k]) for k in self.in_levels]
        for (a, sa), (b, sb) in zip(zip(self.in_levels, shapes), zip(self.in_levels[1:], shapes[1:])):
            if sa[1] is not None and sb[1] is not None and (sa[1] != 2 * sb[1] or sa[2] != 2 * sb[2]):
                raise ValueError(
                    f"DepthwiseCSPPAN: level {b} {sb[1:3]} must be half the size of {a} {sa[1:3]}"
                )
        return shapes

    def _channels(self, shapes):
        return self.out_channels or min(int(s[-1]) for s in shapes)

    def build(self, input_shape):
        shapes = self._check_shapes(input_shape)
        c = self._channels(shapes)
        n = len(self.in_levels)
        p = self.name
        self.reduce = [self._conv(c, f"{p}_reduce_{k}") for k in self.in_levels]
        self.upsample = [Upsample(2, interpolation="nearest", name=f"{p}_td{i}_up", dtype=self.dtype_policy)
                         for i in range(n - 1)]
        self.td_concat = [layers.Concatenate(name=f"{p}_td{i}_concat", dtype=self.dtype_policy) for i in range(n - 1)]
        self.td_csp = [self._csp(c, f"{p}_td{i}_csp") for i in range(n - 1)]
        self.downsample = [self._dw_pw(c, f"{p}_bu{i}_down", strides=2) for i in range(n - 1)]
        self.bu_concat = [layers.Concatenate(name=f"{p}_bu{i}_concat", dtype=self.dtype_policy) for i in range(n - 1)]
        self.bu_csp = [self._csp(c, f"{p}_bu{i}_csp") for i in range(n - 1)]
        if self.use_extra_level:
            self.extra_in = self._dw_pw(c, f"{p}_extra_in", strides=2)
            self.extra_out = self._dw_pw(c, f"{p}_extra_out", strides=2)
            self.extra_add = layers.Add(name=f"{p}_extra_add", dtype=self.dtype_policy)
        # Build every sub-layer by tracing symbolic inputs once.
        self._run({k: keras.KerasTensor(tuple(input_shape[k]), dtype=self.compute_dtype) for k in self.in_levels})
        super().build(input_shape)

    def _run(self, inputs):
        n = len(self.in_levels)
        feats = [self._seq(self.reduce[i], inputs[k]) for i, k in enumerate(self.in_levels)]
        inner = [feats[-1]]
        for idx in range(n - 1, 0, -1):
            j = n - 1 - idx
            up = self.upsample[j](inner[0])
            inner.insert(0, self._run_csp(self.td_csp[j], self.td_concat[j]([up, feats[idx - 1]])))
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self._seq(self.downsample[idx], outs[-1])
            outs.append(self._run_csp(self.bu_csp[idx], self.bu_concat[idx]([down, inner[idx + 1]])))
        result = dict(zip(self.in_levels, outs))
        if self.use_extra_level:
            extra = self.extra_add([self._seq(self.extra_in, feats[-1]), self._seq(self.extra_out, outs[-1])])
            result[self._extra_name()] = extra
        return result

    def _extra_name(self):
        return f"P{int(self.in_levels[-1][1:]) + 1}"

    def call(self, inputs):
        return self._run(inputs)

    def compute_output_shape(self, input_shape):
        shapes = self._check_shapes(input_shape)
        c = self._channels(shapes)
        out = {k: tuple(s[:-1]) + (c,) for k, s in zip(self.in_levels, shapes)}
        if self.use_extra_level:
            s = shapes[-1]
            half = lambda v: None if v is None else (v + 1) // 2  # noqa: E731
            out[self._extra_name()] = (s[0], half(s[1]), half(s[2]), c)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "out_channels": self.out_channels,
                "kernel_size": self.kernel_size,
                "num_csp_blocks": self.num_csp_blocks,
                "use_extra_level": self.use_extra_level,
                "in_levels": list(self.in_levels),
                "activation": self.activation,
            }
        )
        return config
