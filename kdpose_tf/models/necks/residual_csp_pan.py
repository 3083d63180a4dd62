"""`ResidualCSPPAN`: the depthwise CSP-PAN neck added to a trained head's input through zero-initialised
projections, so the network it is grafted onto computes exactly what it did before fine-tuning.

A trained top-down network (an imported PP-TinyPose, whose head reads one stride-4 feature) has no
place for a neck that replaces its head's input: a new neck's random output would throw the head's
training away. This layer keeps the head's feature and adds the neck's contribution beside it:

    y = feature + sum_l Up_l(P_l(PAN(branches)_l))

`PAN` is `DepthwiseCSPPAN` (PP-PicoDet, Yu et al. 2021) on the backbone's multi-resolution branch
outputs (highest resolution first), `P_l` a 1x1 convolution per output level to the feature's channels
with kernel and bias initialised to zero (so y = feature at init; the projections' gradients are not
zero, so they learn at the first step), and `Up_l` nearest upsampling by 2^l (`Upsample`: no TILE for
the Edge TPU) to the feature's size. Every PAN output level is merged, not only the highest-resolution
one: with one level the PAN's bottom-up path would be computed (and counted) for nothing.

`projection_scale` s is the projections' step multiplier: each P_l's kernel and bias are stored divided
by s and used times s, so Adam (whose step is about the learning rate) moves the zero-initialised
projections s times faster, as a learning rate s times larger for them alone would; the exported
graph is the same one CONV_2D per level (s times the kernel is a constant).

Returns ``{feature: y}``, which `PoseEstimator(..., neck=ResidualCSPPAN(...))` passes to its head.
"""

from __future__ import annotations

import keras
from keras import ops

from kdpose_tf.models.layers.upsample import Upsample
from kdpose_tf.models.necks.csp_pan import DepthwiseCSPPAN
from kdpose_tf.utils.args import check_positive


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ResidualCSPPAN(keras.layers.Layer):
    """feature + zero-initialised projections of a depthwise CSP-PAN over the branch outputs (module docstring).

    Args:
        feature: key of the head's input in the backbone's feature dict (default "P2").
        branches: keys of the PAN's inputs, highest resolution first, each half the size of the previous;
            the first at the feature's size (default ("branch0", "branch1", "branch2", "branch3")).
        out_channels, kernel_size, num_csp_blocks, activation: of the `DepthwiseCSPPAN` (defaults None =
            the smallest branch width, 5, 1, "relu").
        projection_scale: the zero-initialised projections' step multiplier, a finite number > 0 (default
            1.0; module docstring).
        **kwargs: layer arguments (`name`, default "csp_pan"; `dtype`). Sub-layers: "<name>_pan_..."
            (the PAN), "<name>_project<l>", "<name>_up<l>", "<name>_merge".

    Example:
        >>> import numpy as np
        >>> feats = {"P2": np.ones((1, 16, 12, 8), "float32"), "branch0": np.ones((1, 16, 12, 8), "float32"),
        ...          "branch1": np.ones((1, 8, 6, 16), "float32")}
        >>> neck = ResidualCSPPAN(branches=("branch0", "branch1"))
        >>> out = neck(feats)
        >>> sorted(out), bool(np.array_equal(np.asarray(out["P2"]), feats["P2"]))   # the feature itself at init
        (['P2'], True)
    """

    def __init__(self, feature="P2", branches=("branch0", "branch1", "branch2", "branch3"), out_channels=None,
                 kernel_size=5, num_csp_blocks=1, activation="relu", projection_scale=1.0, **kwargs):
        if not isinstance(feature, str) or not feature:
            raise ValueError(f"ResidualCSPPAN: `feature` must be a feature name (str), received {feature!r}")
        if isinstance(branches, str) or not isinstance(branches, (list, tuple)) or len(branches) < 2 or not all(
                isinstance(b, str) and b for b in branches) or len(set(branches)) != len(branches):
            raise ValueError(f"ResidualCSPPAN: `branches` must be >= 2 distinct feature names, highest resolution "
                             f"first, received {branches!r}")
        if feature in branches:
            raise ValueError(f"ResidualCSPPAN: `feature` {feature!r} must not be one of the branches {list(branches)}")
        projection_scale = check_positive("projection_scale", projection_scale, owner="ResidualCSPPAN")
        kwargs.setdefault("name", "csp_pan")
        super().__init__(**kwargs)
        self.feature = feature
        self.branches = tuple(branches)
        self.out_channels, self.kernel_size = out_channels, kernel_size
        self.num_csp_blocks, self.activation = num_csp_blocks, activation
        self.projection_scale = projection_scale
        DepthwiseCSPPAN(**self._pan_kwargs())  # checks the PAN's arguments now; its layers are made in build

    def _pan_kwargs(self):
        return dict(out_channels=self.out_channels, kernel_size=self.kernel_size, num_csp_blocks=self.num_csp_blocks,
                    in_levels=self._levels(), activation=self.activation, name=f"{self.name}_pan")

    def _levels(self):
        """The PAN's level names for the branches (its names only: "P2", "P3", ...)."""
        return tuple(f"P{2 + i}" for i in range(len(self.branches)))

    def _check_shapes(self, input_shape):
        if not isinstance(input_shape, dict):
            raise ValueError(f"ResidualCSPPAN expects a dict of features, received {type(input_shape).__name__}")
        missing = [k for k in (self.feature, *self.branches) if k not in input_shape]
        if missing:
            raise ValueError(f"ResidualCSPPAN: features {missing} missing from the input; received "
                             f"{sorted(input_shape)}")
        feature, first = tuple(input_shape[self.feature]), tuple(input_shape[self.branches[0]])
        if feature[1:3] != first[1:3]:
            raise ValueError(f"ResidualCSPPAN: branch {self.branches[0]!r} {first[1:3]} must have the size of the "
                             f"feature {self.feature!r} {feature[1:3]}")
        return feature

    def build(self, input_shape):
        feature = self._check_shapes(input_shape)
        channels = int(feature[-1])
        levels = self._levels()
        dt, n = self.dtype_policy, self.name
        pan_input = {lvl: tuple(input_shape[b]) for lvl, b in zip(levels, self.branches)}
        self.pan = DepthwiseCSPPAN(**self._pan_kwargs(), dtype=dt)
        self.pan.build(pan_input)
        pan_output = self.pan.compute_output_shape(pan_input)
        self.project = [keras.layers.Conv2D(channels, 1, kernel_initializer="zeros", bias_initializer="zeros",
                                            name=f"{n}_project{i}", dtype=dt) for i in range(len(levels))]
        self.up = [None] + [Upsample(2 ** i, interpolation="nearest", name=f"{n}_up{i}", dtype=dt)
                            for i in range(1, len(levels))]
        self.merge = keras.layers.Add(name=f"{n}_merge", dtype=dt)
        for i, lvl in enumerate(levels):
            self.project[i].build(pan_output[lvl])
        super().build(input_shape)

    def call(self, inputs):
        outs = self.pan({lvl: inputs[b] for lvl, b in zip(self._levels(), self.branches)})
        terms = [inputs[self.feature]]
        for i, lvl in enumerate(self._levels()):
            t = self._projection(i, outs[lvl])
            terms.append(t if self.up[i] is None else self.up[i](t))
        return {self.feature: self.merge(terms)}

    def _projection(self, i, x):
        conv = self.project[i]
        if self.projection_scale == 1.0:
            return conv(x)
        s = self.projection_scale
        return ops.conv(x, conv.kernel * s, strides=1, padding="valid") + conv.bias * s

    def compute_output_shape(self, input_shape):
        return {self.feature: self._check_shapes(input_shape)}

    def get_config(self):
        config = super().get_config()
        config.update({"feature": self.feature, "branches": list(self.branches), "out_channels": self.out_channels,
                       "kernel_size": self.kernel_size, "num_csp_blocks": self.num_csp_blocks,
                       "activation": self.activation, "projection_scale": self.projection_scale})
        return config
