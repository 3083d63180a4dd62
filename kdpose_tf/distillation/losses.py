"""Heatmap losses used by the distiller.

`joints_mse` is the contract loss of ARCHITECTURE.md (MMPose KeypointMSELoss with
use_target_weight): 1/K Σ_k w_k · mean_pixels (m_k − m̂_k)², averaged over the batch.
It is imported from `kdpose_tf.models.losses` when that module exists; the fallback below
is the same formula (the lead de-duplicates once both exist).

`heatmap_kd_loss` is the FPD / LSHM KD term: the same form with the teacher heatmaps as the
target (w_k = target weight by default, 1 when the distiller is told not to use them).
"""

from __future__ import annotations

from keras import ops


def _joints_mse(y_true, y_pred, target_weight=None):
    """1/K Σ_k w_k · mean_pixels (y_true_k − y_pred_k)², averaged over the batch.

    Args:
        y_true: (B, h, w, K) target heatmaps.
        y_pred: (B, h, w, K) predicted heatmaps.
        target_weight: optional (B, K) per-joint weights (visibility); None means all 1.

    Returns:
        A float32 scalar.

    Example:
        >>> loss = joints_mse(heatmaps, model(images)[-1], target_weight)
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    per_joint = ops.mean(ops.square(y_pred - y_true), axis=(1, 2))  # (B, K)
    if target_weight is not None:
        per_joint = per_joint * ops.cast(target_weight, "float32")
    return ops.mean(per_joint)


try:  # the models engineer's implementation is the reference when present
    from kdpose_tf.models.losses import joints_mse  # noqa: F401
except ImportError:  # pragma: no cover - depends on the tree's state
    joints_mse = _joints_mse


def heatmap_kd_loss(teacher_heatmaps, student_heatmaps, target_weight=None):
    """KD heatmap loss: `joints_mse` with the teacher heatmaps as the target (FPD's L_pd).

    Args:
        teacher_heatmaps: (B, h, w, K) teacher output (treated as a constant).
        student_heatmaps: (B, h, w, K) student output.
        target_weight: optional (B, K); None weighs every joint 1.
    """
    teacher_heatmaps = ops.stop_gradient(ops.cast(teacher_heatmaps, "float32"))
    return joints_mse(teacher_heatmaps, student_heatmaps, target_weight)


def feature_mse(teacher_feature, student_feature):
    """Plain mean squared error over every element (DWPose's feature term)."""
    t = ops.stop_gradient(ops.cast(teacher_feature, "float32"))
    s = ops.cast(student_feature, "float32")
    return ops.mean(ops.square(s - t))


__all__ = ["joints_mse", "heatmap_kd_loss", "feature_mse"]
