"""Keypoint (black-box TFLite) teacher: MoveNet on real PARSE photos, mapping, pipeline, Distiller(None, ...)."""

import dataclasses

import keras
import numpy as np
import pytest

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.parse import read_parse
from kdpose_tf.data.pipeline import make_dataset
from kdpose_tf.data.transforms import AugmentConfig
from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.feature import FeatureDistillation
from kdpose_tf.distillation.keypoint_teacher import (
    KeypointTeacher,
    attach_teacher_keypoints,
    map_keypoints,
    strip_teacher_keypoints,
)
from kdpose_tf.errors import DataError, ShapeMismatchError
from kdpose_tf.keypoints import COCO17, LSP14
from kdpose_tf.models.losses import joints_mse

MOVENET = "movenet_singlepose_lightning_int8.tflite"


@pytest.fixture(scope="module")
def parse_test(data_dir):
    return list(read_parse(data_dir / "parse", split="test", on_bad_sample="skip"))[:24]


@pytest.fixture(scope="module")
def movenet(shared_dir):
    return KeypointTeacher(shared_dir / "models" / MOVENET)


def test_movenet_joints_land_on_the_parse_ground_truth(movenet, parse_test):
    # PCK@0.2 (torso = right shoulder to left hip, as the PCK metric) of the attached joints
    # against the PARSE labels, on real test photos; MoveNet scores ~70 % on its 12 joints here.
    samples = attach_teacher_keypoints(parse_test, movenet, LSP14, min_score=0.0, progress=False)
    kp = np.stack([s.extra["teacher_keypoints"] for s in samples])
    gt = np.stack([s.keypoints for s in samples])
    vis = np.stack([s.visibility for s in samples])
    torso = np.linalg.norm(gt[:, LSP14.index("right_shoulder")] - gt[:, LSP14.index("left_hip")], axis=-1)
    hit = np.linalg.norm(kp - gt, axis=-1) <= 0.2 * torso[:, None]
    known = [LSP14.index(n) for n in LSP14.names if n in COCO17.names]
    assert len(known) == 12
    mask = vis[:, known] > 0
    assert hit[:, known][mask].mean() > 0.5
    # Joints MoveNet does not have stay unknown.
    for name in ("neck", "head_top"):
        assert np.isnan(kp[:, LSP14.index(name)]).all()
        assert (np.stack([s.extra["teacher_scores"] for s in samples])[:, LSP14.index(name)] == 0).all()
    # The input samples are untouched.
    assert all("teacher_keypoints" not in s.extra for s in parse_test)


def test_min_score_drops_low_confidence_joints(movenet, parse_test):
    samples = attach_teacher_keypoints(parse_test[:8], movenet, LSP14, min_score=0.5, progress=False)
    for s in samples:
        dropped = np.isnan(s.extra["teacher_keypoints"]).any(axis=1)
        np.testing.assert_array_equal(dropped, s.extra["teacher_scores"] < 0.5)
    with pytest.raises(ValueError, match="min_score"):
        attach_teacher_keypoints(parse_test[:1], movenet, LSP14, min_score=2.0)


def test_fill_from_ground_truth_covers_the_joints_the_teacher_lacks(movenet, parse_test):
    plain = attach_teacher_keypoints(parse_test[:6], movenet, LSP14, min_score=0.5, progress=False)
    filled = attach_teacher_keypoints(parse_test[:6], movenet, LSP14, min_score=0.5, fill_from_ground_truth=True,
                                      progress=False)
    for p, f, s in zip(plain, filled, parse_test[:6]):
        known = np.isfinite(p.extra["teacher_keypoints"]).all(axis=1)
        labelled = s.visibility > 0
        np.testing.assert_array_equal(f.extra["teacher_keypoints"][known], p.extra["teacher_keypoints"][known])
        np.testing.assert_array_equal(f.extra["teacher_keypoints"][~known & labelled], s.keypoints[~known & labelled])
        assert np.isnan(f.extra["teacher_keypoints"][~known & ~labelled]).all()
        assert labelled[LSP14.index("neck")] and np.isfinite(f.extra["teacher_keypoints"][LSP14.index("neck")]).all()


def test_map_keypoints_by_name_hand_case():
    kp = np.arange(17 * 2, dtype=np.float64).reshape(1, 17, 2)
    sc = np.linspace(0.1, 0.9, 17, dtype=np.float32).reshape(1, 17)
    out, out_sc = map_keypoints(kp, sc, COCO17, LSP14)
    assert out.shape == (1, 14, 2) and out_sc.shape == (1, 14)
    # COCO index 5 = left_shoulder, LSP index 9 = left_shoulder; COCO 16 = right_ankle -> LSP 0.
    np.testing.assert_array_equal(out[0, 9], kp[0, 5])
    np.testing.assert_array_equal(out[0, 0], kp[0, 16])
    assert out_sc[0, 0] == sc[0, 16]
    assert np.isnan(out[0, 12]).all() and out_sc[0, 13] == 0
    with pytest.raises(ValueError, match=r"\(N, 17, 2\)"):
        map_keypoints(kp[:, :5], sc[:, :5], COCO17, LSP14)


def test_wrong_model_file_is_refused(tmp_path, shared_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        KeypointTeacher(tmp_path / "missing.tflite")
    # BlazePose outputs 195 landmark values, not MoveNet's (1, 1, 17, 3).
    with pytest.raises(ValueError, match=r"\(1, 1, 17, 3\)"):
        KeypointTeacher(shared_dir / "models" / "blazepose_landmark_lite.tflite")


def test_pipeline_warps_teacher_joints_like_the_ground_truth(parse_test):
    # Teacher joints = ground truth: after any augmentation (rotation, scale, flip) the teacher
    # heatmaps must equal the ground-truth ones wherever both exist.
    samples = []
    for i, s in enumerate(parse_test[:12]):
        t = s.keypoints.copy()
        t[i % 14] = np.nan  # one joint the teacher does not give
        samples.append(dataclasses.replace(s, extra={**s.extra, "teacher_keypoints": t,
                                                     "teacher_scores": np.ones(14, np.float32)}))
    codec = HeatmapCodec(input_size=(64, 64))
    aug = AugmentConfig(flip=True, rotation=30.0, rotation_prob=1.0, scale=(0.8, 1.2), half_body_prob=0.0)
    ds = make_dataset(samples, codec, LSP14, batch_size=12, training=True, augment=aug, shuffle=False, seed=3)
    _, y = next(iter(ds))
    assert set(y) == {"heatmaps", "target_weight", "teacher_heatmaps", "teacher_weight"}
    tw, w = y["teacher_weight"].numpy(), y["target_weight"].numpy()
    both = (tw > 0) & (w > 0)
    assert both.sum() > 100
    hm, thm = y["heatmaps"].numpy(), y["teacher_heatmaps"].numpy()
    np.testing.assert_allclose(thm.transpose(0, 3, 1, 2)[both], hm.transpose(0, 3, 1, 2)[both], atol=1e-6)
    # The joint each teacher left out has no KD weight, whatever the flip did with its index.
    assert (tw.sum(axis=1) <= 13).all()
    # Without teacher joints the dataset is the plain one.
    _, y2 = next(iter(make_dataset(strip_teacher_keypoints(samples), codec, LSP14, batch_size=4, training=False)))
    assert set(y2) == {"heatmaps", "target_weight"}


def test_pipeline_refuses_partly_attached_samples(parse_test):
    s0 = dataclasses.replace(parse_test[0], extra={"teacher_keypoints": parse_test[0].keypoints})
    with pytest.raises(DataError, match="teacher keypoints") as err:
        make_dataset([s0, parse_test[1]], HeatmapCodec(input_size=(64, 64)), LSP14)
    assert parse_test[1].image_path in str(err.value)
    bad = dataclasses.replace(parse_test[0], extra={"teacher_keypoints": np.zeros((3, 2))})
    with pytest.raises(DataError, match=r"expected \(14, 2\)"):
        make_dataset([bad], HeatmapCodec(input_size=(64, 64)), LSP14)


def _student(k=14, size=64):
    x = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", name="s_c")(x)
    return keras.Model(x, keras.layers.Conv2D(k, 1, name="s_hm")(h), name="student")


def test_distiller_without_teacher_model_uses_teacher_weight():
    student = _student()
    d = Distiller(None, student, alpha=1.0)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    s = student(x).numpy()
    t = np.random.default_rng(1).uniform(0, 1, s.shape).astype("float32")
    tw = np.zeros((2, 14), "float32")
    tw[:, :3] = 1.0
    y = {"heatmaps": np.zeros_like(t), "target_weight": np.ones((2, 14), "float32"),
         "teacher_heatmaps": t, "teacher_weight": tw}
    terms = d.compute_distillation_losses(x, y)
    # joints_mse: mean over batch and joints of w_k * mean-pixels (t - s)^2 (teacher weights, not target weights).
    expected = np.mean(tw * ((t - s) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(float(terms["kd_loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(terms["kd_loss"]), float(joints_mse(t, s, tw)), rtol=1e-5)
    assert float(terms["gt_weight"]) == 0.0


def test_distiller_without_teacher_model_errors():
    student = _student()
    d = Distiller(None, student)
    x = np.zeros((1, 64, 64, 3), "float32")
    with pytest.raises(ValueError, match="teacher_heatmaps"):
        d.compute_distillation_losses(x, {"heatmaps": np.zeros((1, 16, 16, 14), "float32")})
    with pytest.raises(ShapeMismatchError, match="keypoint counts differ"):
        d.compute_distillation_losses(x, {"teacher_heatmaps": np.zeros((1, 16, 16, 17), "float32")})
    with pytest.raises(ValueError, match="Feature distillation needs a Keras teacher"):
        Distiller(None, _student(), feature_distillations=[FeatureDistillation("a", "s_c")])
    assert Distiller.from_config(d.get_config()).teacher is None


def test_distiller_fits_on_movenet_joints(movenet, parse_test, tmp_path):
    from kdpose_tf.training import fit_resumable

    samples = attach_teacher_keypoints(parse_test[:8], movenet, LSP14, progress=False)
    student = _student()
    d = Distiller(None, student, alpha=0.5)
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = fit_resumable(d, samples, HeatmapCodec(input_size=(64, 64)), LSP14, tmp_path, epochs=2, batch_size=4,
                         verbose=0)
    assert len(hist["kd_loss"]) == 2 and all(v > 0 for v in hist["kd_loss"])
    assert np.isfinite(hist["loss"]).all()
