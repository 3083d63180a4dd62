"""Heatmap losses: the target-weighted joints MSE used by every kdpose_tf model.

JointsMSE = 1/K sum_k w_k * mean_pixels (m_k - m_hat_k)^2, averaged over the batch
(MMPose `KeypointMSELoss(use_target_weight=True)`, HRNet's JointsMSELoss without its 0.5 factor;
the weight enters linearly, so for 0/1 weights both agree). Distillation uses the same form
with the teacher's heatmaps as target.
"""

from __future__ import annotations

import keras
from keras import ops

from kdpose_tf.errors import ShapeMismatchError


def per_joint_mse(y_true, y_pred):
    """Mean squared error over the pixels of each heatmap: (B, h, w, K) x 2 -> (B, K), float32."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    return ops.mean(ops.square(y_pred - y_true), axis=(1, 2))


def joints_mse(y_true, y_pred, target_weight=None, sample_weight=None):
    """Target-weighted joints MSE, a scalar.

    Args:
        y_true: target heatmaps (B, h, w, K).
        y_pred: predicted heatmaps (B, h, w, K) (any float dtype; computed in float32).
        target_weight: per-joint weights w (B, K) or (B, K, 1); None = all ones.
        sample_weight: optional per-sample weights (B,) multiplying each sample's loss before the
            batch mean (default None).

    Returns:
        mean_b [ 1/K sum_k w_bk * mean_pixels (y_pred - y_true)^2 ].

    Example:
    >>> import numpy as np
    >>> float(joints_mse(np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2, 2)), np.array([[1.0, 0.0]])))
    0.5
    """
    if tuple(y_true.shape[1:]) != tuple(y_pred.shape[1:]):
        raise ShapeMismatchError(
            f"joints_mse: target heatmaps {tuple(y_true.shape)} and predictions {tuple(y_pred.shape)} "
            "must have the same (h, w, K)"
        )
    loss = per_joint_mse(y_true, y_pred)  # (B, K)
    if target_weight is not None:
        w = ops.cast(target_weight, "float32")
        w = ops.reshape(w, (-1, loss.shape[-1]))
        loss = loss * w
    loss = ops.mean(loss, axis=-1)  # (B,)
    if sample_weight is not None:
        loss = loss * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.mean(loss)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class JointsMSELoss(keras.losses.Loss):
    """`joints_mse` as a Keras Loss: pass the target weight (B, K) as `sample_weight`.

    `call` returns the per-joint pixel-mean squared error (B, K); Keras multiplies it by the
    sample weight and the default "sum_over_batch_size" reduction divides the sum by B*K, which
    is exactly `joints_mse(y_true, y_pred, target_weight)`.

    Args:
        reduction: Keras reduction (default "sum_over_batch_size").
        name: default "joints_mse".

    Example:
    >>> loss = JointsMSELoss()
    >>> # loss(target_heatmaps, predicted_heatmaps, sample_weight=target_weight)
    """

    def __init__(self, reduction="sum_over_batch_size", name="joints_mse", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return per_joint_mse(y_true, y_pred)
