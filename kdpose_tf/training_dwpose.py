"""DWPose's two stages as resumable training runs on `PoseSample`s (`kdpose distill --method dwpose`).

The distillers of each stage come from `kdpose_tf.distillation.dwpose`; this module runs them through
`kdpose_tf.training.fit_resumable`, so it sits in the training layer, above distillation.

Example:
>>> student, history = run_two_stage(teacher, student, samples, student.codec, COCO17, "runs/dw", epochs=10)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras

from kdpose_tf.distillation.dwpose import (
    resolve_head_layers,
    stage1_distiller,
    stage2_distiller,
    stage2_epochs,
)
from kdpose_tf.distillation.keypoint_teacher import strip_teacher_keypoints
from kdpose_tf.training import fit_resumable


def run_two_stage(teacher, student, samples, codec, keypoint_set, run_dir, epochs, stage2_fraction=0.2,
                  alpha=5e-5, beta=0.1, gamma=1.0, feature_layers=None, optimizer_fn=None, strategy=None,
                  batch_size=32, **fit_kwargs):
    """DWPose's two stages on `PoseSample`s, each stage resumable (`kdpose distill --method dwpose`).

    Stage 1 runs in `run_dir/stage1`, stage 2 in `run_dir/stage2` through `fit_resumable`; a killed run
    resumes in the stage it was in.

    Args:
        teacher, student: as in `kdpose_tf.distillation.dwpose.two_stage_distill`. `teacher=None`: stage 1 distils from the
            keypoint-teacher joints attached to `samples` (`keypoint_teacher`), with no L_fea.
        samples, codec, keypoint_set: training data for `fit_resumable`.
        run_dir: checkpoint folder. epochs: stage-1 epochs.
        alpha, beta, gamma: α (L_fea), β (logit KD), γ (stage 2) of the paper, as in `two_stage_distill`.
        feature_layers: (teacher layer, student layer) names for L_fea, or None (no L_fea).
        optimizer_fn: `(total_steps) -> optimizer`. Default Adam(1e-3).
        strategy: tf.distribute strategy whose scope builds the distillers (default: none, the current one).
        batch_size, **fit_kwargs: passed to `fit_resumable`.

    Returns:
        (student, history) with the two stages' curves concatenated (keys prefixed "stage2_" for stage 2).
    """
    if feature_layers is not None and (len(feature_layers) != 2 or not all(feature_layers)):
        raise ValueError(f"feature_layers must be (teacher layer, student layer) names or None, got {feature_layers!r}")
    optimizer_fn = optimizer_fn or (lambda steps: keras.optimizers.Adam(1e-3))
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    spe = max(1, len(samples) // batch_size)
    # A PoseEstimator's head is its `head`; other models: the layers after the feature layer.
    head = resolve_head_layers(student, feature_layer=None if hasattr(student, "head") or not feature_layers
                               else feature_layers[1])
    with scope():
        stage1 = stage1_distiller(teacher, student, epochs, spe, feature_layers, alpha, beta)
        stage1.compile(optimizer=optimizer_fn(spe * epochs))
    history = fit_resumable(stage1, samples, codec, keypoint_set, Path(run_dir) / "stage1", epochs=epochs,
                            batch_size=batch_size, **fit_kwargs)
    epochs2 = stage2_epochs(epochs, stage2_fraction)
    # Stage 2's teacher is the trained student itself, never a keypoint teacher's joints.
    samples = strip_teacher_keypoints(samples)
    with scope(), stage2_distiller(student, head, gamma) as stage2:
        stage2.compile(optimizer=optimizer_fn(spe * epochs2))
        history2 = fit_resumable(stage2, samples, codec, keypoint_set, Path(run_dir) / "stage2", epochs=epochs2,
                                 batch_size=batch_size, **fit_kwargs)
    history = dict(history)
    history.update({f"stage2_{k}": v for k, v in history2.items()})
    return student, history
