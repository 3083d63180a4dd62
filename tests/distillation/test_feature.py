"""FeatureDistillation: loss by hand / independent reference, layer lookup, adapter ownership."""

import cv2
import keras
import numpy as np
import pytest
from test_distiller import photo_batch, tiny

from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.feature import FeatureDistillation, build_feature_extractor
from kdpose_tf.errors import ShapeMismatchError


def test_loss_hand_computed_fixed_tensors():
    # student (1,1,1,2) = [1, 2]; adapter kernel [[1],[1]], bias 0.5 -> 3.5; teacher 3 -> (0.5)^2 = 0.25; weight 2
    fd = FeatureDistillation("t", "s", weight=2.0)
    fd.build((1, 1, 1, 1), (1, 1, 1, 2))
    fd.adapter.kernel.assign(np.ones((1, 1, 2, 1), "float32"))
    fd.adapter.bias.assign([0.5])
    loss = fd(np.full((1, 1, 1, 1), 3.0, "float32"), np.array([[[[1.0, 2.0]]]], "float32"))
    assert float(loss) == pytest.approx(0.5)
    # identity align, 2x2 student -> 4x4 teacher, nearest resize: each value repeats 4 times
    fd2 = FeatureDistillation("t", "s", align=None, resize="nearest")
    fd2.build((1, 4, 4, 1), (1, 2, 2, 1))
    s = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 2, 2, 1)
    # teacher zeros: mean of 4 copies each of 1,4,9,16 = 30/4 = 7.5
    assert float(fd2(np.zeros((1, 4, 4, 1), "float32"), s)) == pytest.approx(7.5)


def test_loss_matches_independent_reference_on_photos(data_dir):
    x, _ = photo_batch(data_dir, n=2)
    rng = np.random.default_rng(0)
    s_feat = (x[..., :3] / 255.0)[:, ::4, ::4, :]  # 8x8x3 real image feature
    t_feat = rng.normal(size=(2, 16, 16, 5)).astype("float32")
    fd = FeatureDistillation("t", "s", weight=0.5)
    fd.build(t_feat.shape, s_feat.shape)
    kernel = rng.normal(size=(1, 1, 3, 5)).astype("float32")
    bias = rng.normal(size=(5,)).astype("float32")
    fd.adapter.kernel.assign(kernel)
    fd.adapter.bias.assign(bias)
    aligned = s_feat @ kernel[0, 0] + bias
    up = np.stack([cv2.resize(a, (16, 16), interpolation=cv2.INTER_LINEAR) for a in aligned])
    ref = 0.5 * np.mean((up - t_feat) ** 2)
    np.testing.assert_allclose(float(fd(t_feat, s_feat)), ref, rtol=1e-4)


def test_errors_and_close_names():
    student = tiny("student", 8)
    with pytest.raises(ValueError, match="student_c2") as err:
        build_feature_extractor(student, ["student_c3"])
    assert "no layer named 'student_c3'" in str(err.value)
    with pytest.raises(ShapeMismatchError, match="align=None"):
        Distiller(tiny("teacher", 16), student, feature_distillations=[FeatureDistillation("teacher_c2", "student_c2", align=None)])
    with pytest.raises(ValueError, match="align"):
        FeatureDistillation("a", "b", align="conv3x3")


def test_nested_layer_lookup(data_dir):
    inner = tiny("backbone", 8)
    x = keras.Input((32, 32, 3))
    outer = keras.Model(x, keras.layers.Conv2D(4, 1, name="head")(inner(x)), name="outer")
    ex = build_feature_extractor(outer, ["backbone_c2"])
    imgs, _ = photo_batch(data_dir, n=2)
    ref = keras.Model(inner.input, inner.get_layer("backbone_c2").output)(imgs)
    out = ex(imgs)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(ref), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(outer(imgs)), atol=1e-6)


def test_distiller_feature_term_and_adapter_ownership(data_dir, tmp_path):
    x, y = photo_batch(data_dir, n=4)
    teacher, student = tiny("teacher", 16, seed=1), tiny("student", 8, seed=2)
    fd = FeatureDistillation("teacher_c1", "student_c2", weight=0.1)  # 16x16x16 vs 8x8x8
    d = Distiller(teacher, student, alpha=0.5, feature_distillations=[fd])
    terms = d.compute_distillation_losses(x, y, step=0)
    t_feat = keras.Model(teacher.input, teacher.get_layer("teacher_c1").output)(x)
    s_feat = keras.Model(student.input, student.get_layer("student_c2").output)(x)
    np.testing.assert_allclose(float(terms["feat_loss"]), float(fd(t_feat, s_feat)), rtol=1e-5)
    np.testing.assert_allclose(
        float(terms["loss"]), 0.5 * float(terms["kd_loss"]) + 0.5 * float(terms["gt_loss"]) + float(terms["feat_loss"]), rtol=1e-5
    )
    adapter_ids = {id(v) for v in fd.adapter.weights}
    assert len(adapter_ids) == 2
    assert not adapter_ids & {id(v) for v in student.weights}
    assert adapter_ids <= {id(v) for v in d.trainable_weights}
    k_before = np.asarray(fd.adapter.kernel).copy()
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert "feat_loss" in hist.history
    assert not np.array_equal(k_before, np.asarray(fd.adapter.kernel))  # the adapter trains
    d.student.save(tmp_path / "student.keras")
    reloaded = keras.saving.load_model(tmp_path / "student.keras")
    assert len(reloaded.weights) == len(student.weights)


def test_feature_distillation_builds_on_its_first_call():
    # Keras builds a layer from call()'s argument names: build() must take the same ones.
    import numpy as np

    from kdpose_tf.distillation.feature import FeatureDistillation as FD

    fd = FD("t", "s")
    loss = fd(np.full((1, 4, 4, 8), 2.0, "float32"), np.zeros((1, 4, 4, 4), "float32"))
    assert fd.built and fd.adapter is not None and float(loss) > 0
