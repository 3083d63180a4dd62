"""Trained-like normalisation weights for timing untrained models.

A freshly built BatchNormalization has gamma 1, beta 0, moving mean 0 and variance 1, a LayerNormalization
gamma 1 and beta 0. The TFLite converter drops an ADD of zeros (and a MUL by ones), so an untrained export
can have fewer ops than the trained model users ship: the proposal student's untrained int8 graph had 112
fewer full-size ADDs (every BN it cannot fold into a conv). Latency depends on the graph, not on the
values, once the graph is the trained one's: the latency benchmarks draw these weights at random first.

Example:
>>> import keras
>>> model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.BatchNormalization()])
>>> trained_like(model)
1
"""

from __future__ import annotations

import keras
import numpy as np


def trained_like(model, seed=0) -> int:
    """Draw every BatchNormalization's gamma ~ U(0.5, 1.5), beta and mean ~ N(0, 0.2), variance ~ U(0.5, 1.5)
    and every LayerNormalization's gamma / beta likewise; returns how many layers were set."""
    rng = np.random.default_rng(seed)
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.built:
            c = tuple(layer.moving_mean.shape)
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, c))
            layer.moving_mean.assign(rng.normal(0, 0.2, c))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c))
            n += 1
        elif isinstance(layer, keras.layers.LayerNormalization) and layer.built:
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, tuple(layer.gamma.shape)))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, tuple(layer.beta.shape)))
            n += 1
    return n
