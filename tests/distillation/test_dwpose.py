"""DWPose two-stage distillation: stage 1 schedule, stage 2 trains only the (re-initialised) head."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_distiller import photo_batch, tiny

from kdpose_tf.distillation.dwpose import resolve_head_layers, two_stage_distill


class Snapshot(keras.callbacks.Callback):
    """Records the student's weights by layer at the start of each fit."""

    def __init__(self, student):
        super().__init__()
        self.student, self.starts = student, []

    def on_train_begin(self, logs=None):
        self.starts.append({l.name: [w.copy() for w in l.get_weights()] for l in self.student.layers})


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def test_two_stage_tiny_model(data_dir):
    x, y = photo_batch(data_dir, n=8)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # 2 steps per epoch
    teacher, student = tiny("teacher", 16, seed=1), tiny("student", 8, seed=2)
    head = ["student_s0_c", "student_s0_hm"]
    snap = Snapshot(student)
    out, h1, h2 = two_stage_distill(
        teacher, student, ds, epochs=3, stage2_fraction=0.34, feature_layers=("teacher_c2", "student_c2"),
        head_layer_names=head, callbacks=[snap], optimizer_fn=lambda: keras.optimizers.Adam(1e-2), verbose=0,
    )
    assert out is student and len(h1.epoch) == 3 and len(h2.epoch) == 1
    # stage 1: GT weight 1, KD weight beta * r(t), r = 1, 2/3, 1/3
    np.testing.assert_allclose(h1.history["kd_weight"], [0.1, 0.1 * 2 / 3, 0.1 / 3], rtol=1e-6)
    assert h1.history["gt_weight"] == [1.0, 1.0, 1.0] and "feat_loss" in h1.history
    # stage 2: KD only (gamma = 1)
    assert h2.history["kd_weight"] == [1.0] and h2.history["gt_weight"] == [0.0]
    after1, start2 = snap.starts
    end = {l.name: l.get_weights() for l in student.layers}
    for name in ("student_c1", "student_c2"):  # backbone: frozen in stage 2, bit for bit
        assert _same(start2[name], end[name])
        assert not _same(snap.starts[0][name], end[name])  # but it did train in stage 1
    for name in head:  # head re-initialised at the start of stage 2 and trained
        assert not _same(start2[name], end[name])
    assert all(l.trainable for l in student.layers)  # flags restored


def test_two_stage_pose_estimator_default_head(data_dir):
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    x, y = photo_batch(data_dir, n=4)
    y = {"heatmaps": np.repeat(y["heatmaps"], 4, axis=-1), "target_weight": np.repeat(y["target_weight"], 4, axis=-1)}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    teacher = PoseEstimator(HourglassBackbone(num_stacks=1, filters=8, order=1, num_keypoints=16, input_shape=(32, 32, 3), name="t_hg"), keypoint_set="mpii16", name="teacher")
    student = PoseEstimator(HourglassBackbone(num_stacks=1, filters=8, order=1, num_keypoints=16, input_shape=(32, 32, 3), name="s_hg"), keypoint_set="mpii16", name="student")
    assert resolve_head_layers(student) == [student.head.name]
    bb_before = [w.copy() for w in student.backbone.get_weights()]
    snap = Snapshot(student)
    two_stage_distill(teacher, student, ds, epochs=1, stage2_fraction=1.0, callbacks=[snap], verbose=0)
    start2 = snap.starts[1]
    assert not _same(bb_before, student.backbone.get_weights())  # stage 1 trained the backbone
    assert _same(start2[student.backbone.name], student.backbone.get_weights())  # stage 2 did not
    assert not _same(start2[student.head.name], student.head.get_weights())


def test_head_resolution_errors():
    student = tiny("student", 8)
    with pytest.raises(ValueError, match="Cannot tell the head"):
        resolve_head_layers(student)
    with pytest.raises(ValueError, match="not layers"):
        resolve_head_layers(student, head_layer_names=["nope"])
    assert resolve_head_layers(student, feature_layer="student_c2") == ["student_s0_c", "student_s0_hm"]
    assert resolve_head_layers(student, head_predicate=lambda l: l.name.endswith("_hm")) == ["student_s0_hm"]
    with pytest.raises(ValueError, match="epochs"):
        two_stage_distill(tiny("t", 8), student, None, epochs=0)


def test_run_two_stage_on_samples_with_feature_distillation_resumes(tmp_path, data_dir):
    """`run_two_stage` (the CLI's DWPose path): both stages, L_fea on a nested backbone layer, and a
    second call on the same run directory resumes (finished stages are not trained again)."""
    from kdpose_tf.data.coco import read_coco
    from kdpose_tf.training_dwpose import run_two_stage
    from kdpose_tf.keypoints import COCO17
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    samples = read_coco(data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json")[:16]

    def make(filters, name):
        backbone = HourglassBackbone(num_stacks=2, filters=filters, order=2, block="inverted_residual",
                                     num_keypoints=17, input_shape=(32, 32, 3), name=f"{name}_backbone")
        return PoseEstimator(backbone, keypoint_set="coco17", name=name)

    teacher, student = make(16, "teacher"), make(8, "student")
    kwargs = dict(run_dir=tmp_path, epochs=2, batch_size=8, feature_layers=("stack1_lin_relu", "stack1_lin_relu"),
                  verbose=0)
    student, history = run_two_stage(teacher, student, samples, student.codec, COCO17, **kwargs)
    assert len(history["feat_loss"]) == 2 and all(v > 0 for v in history["feat_loss"])
    assert len(history["stage2_loss"]) == 1  # 20 % of 2 epochs, at least one
    assert history["stage2_gt_weight"] == [0.0]
    weights = [w.copy() for w in student.get_weights()]
    again, history2 = run_two_stage(teacher, student, samples, student.codec, COCO17, **kwargs)
    assert history2["loss"] == history["loss"]  # restored from the run directory, not retrained
    assert all(np.array_equal(a, b) for a, b in zip(weights, again.get_weights()))
