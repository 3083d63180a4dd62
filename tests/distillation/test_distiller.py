"""Distiller: loss formula, stack mappings, fit/evaluate, checkpoints, shape checks, mixed precision."""

import json

import cv2
import keras
import numpy as np
import pytest

from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.schedules import ConstantWeight
from kdpose_tf.errors import ShapeMismatchError

KP = (0, 5, 6, 11)  # nose, shoulders, left hip


def photo_batch(data_dir, n=8, size=32, hm=8):
    """n real COCO photos resized to size², Gaussian heatmaps (hm², K=4) at their keypoints."""
    root = data_dir / "coco_mini"
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    people = [a for a in ann["annotations"] if a["num_keypoints"] >= 8][:n]
    xs, hms, tws = [], [], []
    yy, xx = np.mgrid[0:hm, 0:hm].astype("float32")
    for a in people:
        img = cv2.imread(str(root / "train2017" / files[a["image_id"]]))[:, :, ::-1]
        h, w = img.shape[:2]
        xs.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype("float32"))
        kps = np.asarray(a["keypoints"], "float32").reshape(-1, 3)[list(KP)]
        maps = [np.exp(-((xx - x * hm / w) ** 2 + (yy - y * hm / h) ** 2) / 2.0) for x, y, _ in kps]
        hms.append(np.stack(maps, -1))
        tws.append((kps[:, 2] > 0).astype("float32"))
    return np.stack(xs), {"heatmaps": np.stack(hms).astype("float32"), "target_weight": np.stack(tws)}


def tiny(name, width, stacks=1, k=4, size=32, seed=0):
    """Tiny functional pose model: 32² image -> list/one (8², k) heatmap(s)."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731
    x = keras.Input((size, size, 3), name=f"{name}_in")
    h = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=f"{name}_norm")(x)
    h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(1), name=f"{name}_c1")(h)
    h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(2), name=f"{name}_c2")(h)
    outs = []
    for s in range(stacks):
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init(3 + 2 * s), name=f"{name}_s{s}_c")(h)
        outs.append(keras.layers.Conv2D(k, 1, kernel_initializer=init(4 + 2 * s), name=f"{name}_s{s}_hm")(h))
    return keras.Model(x, outs if stacks > 1 else outs[0], name=name)


def np_joints_mse(t, p, w=None):
    per = ((np.asarray(p, "float64") - np.asarray(t, "float64")) ** 2).mean(axis=(1, 2))
    if w is not None:
        per = per * w
    return per.mean()


def const_model(name, values, size=2):
    """Image (size², 3) -> heatmaps of constant per-joint `values` (1x1 conv, zero kernel, bias)."""
    x = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(len(values), 1, kernel_initializer="zeros", name=f"{name}_hm")
    model = keras.Model(x, conv(x), name=name)
    conv.bias.assign(np.asarray(values, "float32"))
    return model


def test_combined_loss_hand_computed():
    # student heatmaps 0.5 everywhere, teacher 0.3, GT joint 0 = one-hot at (0,0), joint 1 zeros;
    # target weights (1, 0); alpha 0.25.
    # KD  = 1/2 (1·mean(0.2²) + 0) = 0.02;  GT = 1/2 (1·(0.25+3·0.25)/4 + 0) = 0.125
    # loss = 0.25·0.02 + 0.75·0.125 = 0.09875
    d = Distiller(const_model("t", [0.3, 0.3]), const_model("s", [0.5, 0.5]), alpha=0.25)
    gt = np.zeros((1, 2, 2, 2), "float32")
    gt[0, 0, 0, 0] = 1.0
    y = {"heatmaps": gt, "target_weight": np.array([[1.0, 0.0]], "float32")}
    terms = d.compute_distillation_losses(np.zeros((1, 2, 2, 3), "float32"), y, step=0)
    assert float(terms["kd_loss"]) == pytest.approx(0.02, abs=1e-7)
    assert float(terms["gt_loss"]) == pytest.approx(0.125, abs=1e-7)
    assert float(terms["loss"]) == pytest.approx(0.09875, abs=1e-7)
    # KD without target weights: 1/2 (0.04 + 0.04) = 0.04
    d2 = Distiller(const_model("t2", [0.3, 0.3]), const_model("s2", [0.5, 0.5]), alpha=0.25, use_target_weight_for_kd=False)
    assert float(d2.compute_distillation_losses(np.zeros((1, 2, 2, 3), "float32"), y, step=0)["kd_loss"]) == pytest.approx(0.04, abs=1e-7)


@pytest.mark.parametrize(
    "mapping,t_stacks,s_stacks,pairs",
    [
        ("final_to_all", 2, 3, [(1, 0), (1, 1), (1, 2)]),
        ("matched", 2, 2, [(0, 0), (1, 1)]),
        ([(0, 1), (-1, -1)], 2, 2, [(0, 1), (1, 1)]),
    ],
)
def test_stack_mapping_loss_on_photos(data_dir, mapping, t_stacks, s_stacks, pairs):
    x, y = photo_batch(data_dir, n=4)
    teacher, student = tiny("teacher", 16, t_stacks, seed=1), tiny("student", 8, s_stacks, seed=7)
    d = Distiller(teacher, student, alpha=0.3, stack_mapping=mapping)
    assert d.stack_pairs == pairs
    terms = d.compute_distillation_losses(x, y, step=0)
    t_out = [np.asarray(o) for o in teacher(x)]
    s_out = [np.asarray(o) for o in student(x)]
    tw = y["target_weight"]
    kd = sum(np_joints_mse(t_out[a], s_out[b], tw) for a, b in pairs)
    gt = sum(np_joints_mse(y["heatmaps"], s, tw) for s in s_out)  # GT on every student stack
    np.testing.assert_allclose(float(terms["kd_loss"]), kd, rtol=1e-5)
    np.testing.assert_allclose(float(terms["gt_loss"]), gt, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), 0.3 * kd + 0.7 * gt, rtol=1e-5)


def test_stack_mapping_errors():
    with pytest.raises(ShapeMismatchError, match="teacher 2, student 3"):
        Distiller(tiny("t", 8, 2), tiny("s", 8, 3), stack_mapping="matched")
    with pytest.raises(ValueError, match="out of range"):
        Distiller(tiny("t2", 8, 2), tiny("s2", 8, 2), stack_mapping=[(2, 0)])
    with pytest.raises(ValueError, match="received 'all'"):
        Distiller(tiny("t3", 8), tiny("s3", 8), stack_mapping="all")
    with pytest.raises(ValueError, match="alpha"):
        Distiller(tiny("t4", 8), tiny("s4", 8), alpha="high")
    with pytest.raises(ValueError, match="keras.Model"):
        Distiller(tiny("t5", 8), "student")


def test_shape_mismatch_and_bilinear_resize(data_dir):
    teacher = tiny("teacher", 8, size=32)  # 8x8 heatmaps
    x_in = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="s_c1")(x_in)
    student = keras.Model(x_in, keras.layers.Conv2D(4, 1, name="s_hm")(h), name="student")  # 16x16
    with pytest.raises(ShapeMismatchError) as err:
        Distiller(teacher, student)
    assert "(None, 8, 8, 4)" in str(err.value) and "(None, 16, 16, 4)" in str(err.value)
    d = Distiller(teacher, student, alpha=1.0, resize_teacher="bilinear")
    x, y = photo_batch(data_dir, n=2, hm=16)
    t = np.asarray(teacher(x))
    t_up = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_LINEAR) for im in t])  # independent resize
    kd = np_joints_mse(t_up, np.asarray(student(x)), y["target_weight"])
    np.testing.assert_allclose(float(d.compute_distillation_losses(x, y, step=0)["kd_loss"]), kd, rtol=1e-4)
    k_student = keras.Model(x_in, keras.layers.Conv2D(5, 1, name="s_hm5")(h))
    with pytest.raises(ShapeMismatchError, match="keypoint counts"):
        Distiller(teacher, k_student, resize_teacher="bilinear")


def test_fit_evaluate_trains_student_only(data_dir, tmp_path):
    x, y = photo_batch(data_dir, n=8)
    teacher, student = tiny("teacher", 16, 2, seed=1), tiny("student", 8, 2, seed=5)
    t_before = [w.copy() for w in teacher.get_weights()]
    s_before = [w.copy() for w in student.get_weights()]
    d = Distiller(teacher, student, alpha=0.5)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = d.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for key in ("loss", "gt_loss", "kd_loss", "kd_weight"):
        assert len(hist.history[key]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(t_before, teacher.get_weights()))
    assert all(not np.array_equal(a, b) for a, b in zip(s_before, student.get_weights()))
    res = d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert set(res) == {"loss", "gt_loss", "kd_loss", "kd_weight", "gt_weight"}
    terms = d.compute_distillation_losses(x, y, training=False)
    for key in ("loss", "gt_loss", "kd_loss"):
        np.testing.assert_allclose(res[key], float(terms[key]), rtol=1e-5)
    # the student saves and reloads on its own
    d.student.save(tmp_path / "student.keras")
    reloaded = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(np.asarray(reloaded(x)[-1]), np.asarray(student(x)[-1]), atol=1e-6)


def test_checkpoint_weights_and_backup_restore(data_dir, tmp_path):
    x, y = photo_batch(data_dir, n=8)
    d = Distiller(tiny("teacher", 16, seed=1), tiny("student", 8, seed=5))
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    ckpt = tmp_path / "d.weights.h5"
    d.fit(x, y, batch_size=4, epochs=1, verbose=0,
          callbacks=[keras.callbacks.ModelCheckpoint(str(ckpt), save_weights_only=True)])
    assert ckpt.is_file()
    d2 = Distiller(tiny("teacher", 16, seed=11), tiny("student", 8, seed=15))
    d2.load_weights(ckpt)
    for a, b in zip(d.student.get_weights() + d.teacher.get_weights(), d2.student.get_weights() + d2.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    backup = tmp_path / "backup"
    d3 = Distiller(tiny("teacher", 16, seed=1), tiny("student", 8, seed=5))
    d3.compile(optimizer=keras.optimizers.SGD(1e-2))
    with pytest.raises(RuntimeError, match="interrupted"):
        d3.fit(x, y, batch_size=4, epochs=4, verbose=0,
               callbacks=[keras.callbacks.BackupAndRestore(str(backup)), Interrupt()])
    after_two = [w.copy() for w in d3.student.get_weights()]
    d4 = Distiller(tiny("teacher", 16, seed=1), tiny("student", 8, seed=21))
    d4.compile(optimizer=keras.optimizers.SGD(1e-2))

    class Capture(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = [w.copy() for w in self.model.student.get_weights()]
            self.iterations = int(self.model.optimizer.iterations.numpy())

    cap = Capture()
    hist = d4.fit(x, y, batch_size=4, epochs=4, verbose=0,
                  callbacks=[keras.callbacks.BackupAndRestore(str(backup)), cap])
    assert hist.epoch == [2, 3]  # resumed after the two finished epochs
    assert cap.iterations == 4  # optimizer state (2 epochs x 2 steps) restored too
    for a, b in zip(after_two, cap.start):
        np.testing.assert_array_equal(a, b)


def test_mixed_precision_student(data_dir):
    x, y = photo_batch(data_dir, n=4)
    teacher = tiny("teacher", 16, seed=1)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        student = tiny("student", 8, seed=5)
        d = Distiller(teacher, student, alpha=ConstantWeight(0.5))
        d.compile(optimizer=keras.optimizers.SGD(1e-2))
        assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
        hist = d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert student.outputs[0].dtype == "float16"
    assert np.isfinite(hist.history["loss"][0]) and hist.history["kd_loss"][0] > 0


def test_config_round_trip(data_dir):
    from kdpose_tf.distillation.feature import FeatureDistillation
    from kdpose_tf.distillation.schedules import LSHMLinearSchedule

    x, y = photo_batch(data_dir, n=2)
    d = Distiller(tiny("teacher", 16, 2, seed=1), tiny("student", 8, 2, seed=2), alpha=LSHMLinearSchedule(10),
                  stack_mapping="matched", feature_distillations=[FeatureDistillation("teacher_c2", "student_c1", weight=0.5)])
    d2 = Distiller.from_config(d.get_config())
    assert d2.stack_pairs == [(0, 0), (1, 1)] and d2.schedule.get_config() == d.schedule.get_config()
    assert d2.feature_distillations[0].weight == 0.5
    d2.set_weights(d.get_weights())
    a, b = d.compute_distillation_losses(x, y, step=3), d2.compute_distillation_losses(x, y, step=3)
    for key in ("loss", "kd_loss", "gt_loss", "feat_loss", "kd_weight"):
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-6)


def test_constructing_a_distiller_leaves_the_teacher_trainable(data_dir):
    """Regression (issue 12): `kdpose demo` built its Distiller before training the teacher, and the
    constructor's `teacher.trainable = False` left the teacher with nothing to train. The distiller
    freezes the teacher only for itself: the user's teacher still trains on its own, and the
    distiller's optimizer sees the student's variables only."""
    x, y = photo_batch(data_dir, n=8)
    teacher, student = tiny("teacher", 16, seed=1), tiny("student", 8, seed=5)
    n_teacher = len(teacher.trainable_weights)
    d = Distiller(teacher, student, alpha=0.5)
    assert teacher.trainable and len(teacher.trainable_weights) == n_teacher > 0
    assert {id(v) for v in d.trainable_variables} == {id(v) for v in student.trainable_variables}
    assert {id(v) for v in teacher.weights} <= {id(v) for v in d.non_trainable_weights}

    # the teacher, trained after the distiller was built, learns
    before = [w.copy() for w in teacher.get_weights()]
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    teacher.fit(x, y["heatmaps"], batch_size=4, epochs=1, verbose=0)
    assert all(not np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))

    # the distiller then trains the student only
    t_before = [w.copy() for w in teacher.get_weights()]
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(t_before, teacher.get_weights()))
    assert len(d.optimizer.variables) == 2 + 2 * len(student.trainable_weights)  # iterations, lr, Adam m and v
