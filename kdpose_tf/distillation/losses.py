"""Heatmap losses used by the distiller.

`joints_mse` is the contract loss of ARCHITECTURE.md (MMPose KeypointMSELoss with
use_target_weight): 1/K Σ_k w_k · mean_pixels (m_k − m̂_k)², averaged over the batch.
It lives in `kdpose_tf.models.losses` (PoseEstimator uses it too) and is re-exported here.

`heatmap_kd_loss` is the FPD / LSHM KD term: the same form with the teacher heatmaps as the
target (w_k = target weight by default, 1 when the distiller is told not to use them).
"""

from __future__ import annotations

from keras import ops

from kdpose_tf.models.losses import joints_mse  # noqa: F401  (re-exported for the distiller)


def heatmap_kd_loss(teacher_heatmaps, student_heatmaps, target_weight=None):
    """KD heatmap loss: `joints_mse` with the teacher heatmaps as the target (FPD's L_pd).

    Args:
        teacher_heatmaps: (B, h, w, K) teacher output (treated as a constant).
        student_heatmaps: (B, h, w, K) student output.
        target_weight: optional (B, K); None weighs every joint 1.
    """
    teacher_heatmaps = ops.stop_gradient(ops.cast(teacher_heatmaps, "float32"))
    return joints_mse(teacher_heatmaps, student_heatmaps, target_weight)


__all__ = ["joints_mse", "heatmap_kd_loss"]
