"""`GatedPSA`: Polarized Self-Attention blended in through a learnable gate, the identity at init.

Grafting attention into a network that is already trained (an imported pretrained model) must not
change what it computes before fine-tuning starts, or part of the pretraining is lost at the first step.
PSA (`PolarizedSelfAttention`, Liu et al. 2021: same arguments, weights and attention maps) multiplies
its input by attention maps in (0, 1); here each map A enters as

    m(A) = 1 + g * (A - 1)

with g a learnable scalar (initial value `gate`, default 0): g = 0 gives m = 1 (the identity, exactly
in float), g = 1 gives the paper's PSA exactly, values between interpolate. Sequential layout:
``z = x * m(A_ch(x))``, ``y = z * m(A_sp(z))``; parallel: ``y = x * m(A_ch(x) + A_sp(x))``; one
branch: ``y = x * m(A(x))``. This is SkipInit / ReZero (De & Smith 2020, Bachlechner et al. 2020)
on the attention maps. At g = 0 the gate's gradient (e.g. ``<dL/dy, x * (A_ch - 1)>`` for the
channel branch) is not zero, so g moves at the first step and the attention's convolutions learn as
soon as it does.

A gate that starts at 0 next to trained weights gets small, noisy gradients: under Adam (whose step
is about the learning rate whatever the gradient's size) it moved by at most 0.0025 in a short
fine-tune. `gate_scale` s stores the gate as ``g = s * v`` with v the trained variable: Adam then
moves g s times faster, the same as a learning rate s times larger for the gate alone (Keras
optimizers have no per-variable rate), and the exported graph is unchanged (s * v is one constant).

Why gate the maps and not the output (``x + g * (PSA(x) - x)``, the same maths at g = 0 and 1): the
gated output is a full-size tensor, exactly 0 at init (a zero int8 calibration range), that costs three
more full-size ops (SUB, MUL, ADD); a gated map is as small as the map ((B, 1, 1, C) or (B, H, W, 1))
and 1 at init, so the layer keeps the reference's two full-size multiplies and nothing more.

TFLite: the reference layer's ops plus a SUB, a MUL by the gate and an ADD per map (full-int8 builtins).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kdpose_tf.models.layers.psa import PolarizedSelfAttention
from kdpose_tf.utils.args import check_positive


@keras.saving.register_keras_serializable(package="kdpose_tf")
class GatedPSA(PolarizedSelfAttention):
    """`PolarizedSelfAttention` whose attention maps A enter as ``1 + gate * (A - 1)``, `gate` a learnable
    scalar: the identity at gate 0, the reference layer at gate 1 (module docstring).

    Args:
        gate: initial value of the gate, a finite number (default 0.0: the layer starts as the identity).
        gate_scale: the gate's step multiplier, a finite number > 0 (default 1.0): the layer's weight
            `gate` holds g / gate_scale, so Adam moves g gate_scale times faster (module docstring).
        layout, mode, reduction, use_layer_norm: as `PolarizedSelfAttention` (defaults "sequential",
            "both", 2, True).
        name: layer name; the attention's convolutions are named "<name>_ch_wv", ... as in the reference.

    Example:
        >>> import numpy as np
        >>> x = np.random.RandomState(0).normal(size=(1, 8, 6, 4)).astype("float32")
        >>> layer = GatedPSA(name="psa")
        >>> bool(np.array_equal(np.asarray(layer(x)), x))   # gate 0: the identity
        True
        >>> float(layer.gate.numpy())
        0.0
    """

    def __init__(self, gate=0.0, layout="sequential", mode="both", reduction=2, use_layer_norm=True, gate_scale=1.0,
                 name=None, **kwargs):
        if isinstance(gate, bool) or not isinstance(gate, (int, float)) or not math.isfinite(gate):
            raise ValueError(f"GatedPSA: `gate` must be a finite number, received {gate!r}")
        gate_scale = check_positive("gate_scale", gate_scale, owner="GatedPSA")
        super().__init__(layout=layout, mode=mode, reduction=reduction, use_layer_norm=use_layer_norm, name=name,
                         **kwargs)
        self.gate_init = float(gate)
        self.gate_scale = gate_scale

    def build(self, input_shape):
        self.gate = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.gate_init / self.gate_scale),
                                    name="gate")
        super().build(input_shape)

    def gate_value(self):
        """The gate g the maps are blended with (the weight `gate` times `gate_scale`)."""
        return self.gate * self.gate_scale

    def call(self, inputs):
        gate = ops.cast(self.gate_value(), self.compute_dtype)

        def blend(attention):  # 1 at gate 0, the attention itself at gate 1
            return 1.0 + gate * (attention - 1.0)

        if self.mode == "channel":
            return inputs * blend(self.channel_weights(inputs))
        if self.mode == "spatial":
            return inputs * blend(self.spatial_weights(inputs))
        if self.layout == "sequential":
            z = inputs * blend(self.channel_weights(inputs))
            return z * blend(self.spatial_weights(z))
        return inputs * blend(self.channel_weights(inputs) + self.spatial_weights(inputs))

    def get_config(self):
        return {**super().get_config(), "gate": self.gate_init, "gate_scale": self.gate_scale}
