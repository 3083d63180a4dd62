"""Teacher sources and teacher-output caching."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_distiller import photo_batch, tiny

from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.teacher import cache_teacher_outputs, load_teacher
from kdpose_tf.errors import PresetError


def test_load_teacher_sources(data_dir, tmp_path):
    x, _ = photo_batch(data_dir, n=2)
    model = tiny("teacher", 8, 2, seed=3)
    assert load_teacher(model) is model and not model.trainable
    model.save(tmp_path / "t.keras")
    loaded = load_teacher(tmp_path / "t.keras")
    assert not loaded.trainable
    for a, b in zip(loaded(x), model(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_teacher(tmp_path / "missing.keras")
    with pytest.raises(PresetError, match="no_such_preset"):
        load_teacher("no_such_preset")
    with pytest.raises(ValueError, match="received int"):
        load_teacher(3)


def test_load_teacher_from_preset_directory(data_dir, tmp_path):
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    bb = HourglassBackbone(num_stacks=2, filters=8, order=2, num_keypoints=16, input_shape=(32, 32, 3))
    est = PoseEstimator(bb, keypoint_set="mpii16")
    est.save_to_preset(tmp_path / "teacher_preset")
    teacher = load_teacher(str(tmp_path / "teacher_preset"))
    x, _ = photo_batch(data_dir, n=2)
    assert isinstance(teacher, PoseEstimator) and not teacher.trainable
    np.testing.assert_allclose(np.asarray(teacher(x)[-1]), np.asarray(est(x)[-1]), atol=1e-5)


def test_cached_and_uncached_give_same_losses(data_dir):
    x, y = photo_batch(data_dir, n=8)
    teacher = tiny("teacher", 16, 2, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)  # batches 3, 3, 2
    cached = cache_teacher_outputs(teacher, ds)
    sizes = [int(b[0].shape[0]) for b in cached]
    assert sizes == [3, 3, 2]
    first = next(iter(cached))
    np.testing.assert_allclose(np.asarray(first[1]["teacher_heatmaps"][1]), np.asarray(teacher(x[:3])[1]), atol=1e-6)

    def evaluate(data, student_seed=5):
        d = Distiller(teacher, tiny("student", 8, 2, seed=student_seed), alpha=0.5, stack_mapping="matched")
        d.compile(optimizer=keras.optimizers.SGD(1e-2))
        return d.evaluate(data, verbose=0, return_dict=True)

    plain, from_cache = evaluate(ds), evaluate(cached)
    for key in ("loss", "kd_loss", "gt_loss"):
        np.testing.assert_allclose(from_cache[key], plain[key], rtol=1e-5)
    # the cached heatmaps are really used (the teacher forward is skipped): a cache made by another
    # teacher gives that teacher's KD loss, not the distiller's teacher's
    other = tiny("other_teacher", 16, 2, seed=9)
    other_cache = cache_teacher_outputs(other, ds)
    d = Distiller(other, tiny("student", 8, 2, seed=5), alpha=0.5, stack_mapping="matched")
    d.compile(optimizer="sgd")
    expected = d.evaluate(ds, verbose=0, return_dict=True)["kd_loss"]
    np.testing.assert_allclose(evaluate(other_cache)["kd_loss"], expected, rtol=1e-5)
    assert abs(expected - plain["kd_loss"]) > 1e-4


def test_cache_validation():
    with pytest.raises(ValueError, match="keras.Model"):
        cache_teacher_outputs("teacher", [])
    with pytest.raises(ValueError, match="empty"):
        cache_teacher_outputs(tiny("t", 8), tf.data.Dataset.from_tensor_slices((np.zeros((0, 32, 32, 3), "float32"), {"heatmaps": np.zeros((0, 8, 8, 4), "float32")})).batch(2))
