"""Schedules: hand-computed weights, serialization, and the weights actually used inside fit."""

import keras
import numpy as np
import pytest
from test_distiller import photo_batch, tiny

from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.schedules import ConstantWeight, DWPoseDecay, LSHMLinearSchedule, get_schedule


def pair(sched, step):
    kd, gt = sched(step)
    return float(kd), float(gt)


def test_constant_weight():
    assert pair(ConstantWeight(0.3), 0) == pytest.approx((0.3, 0.7))
    assert pair(ConstantWeight(0.3), 999) == pytest.approx((0.3, 0.7))
    assert pair(ConstantWeight(1.0, gt_weight=0.0), 5) == (1.0, 0.0)
    assert pair(get_schedule(0.8), 0) == pytest.approx((0.8, 0.2))
    assert pair(get_schedule(lambda i: (2.0, 3.0)), 0) == (2.0, 3.0)
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0.0, 1.0\], received 1.5"):
        ConstantWeight(1.5)


def test_lshm_linear_hand_numbers():
    s = LSHMLinearSchedule(total_steps=100)
    # KD 0.6 - 0.1*2i/I, GT 0.4 + 0.1*2i/I
    assert pair(s, 0) == pytest.approx((0.6, 0.4))
    assert pair(s, 25) == pytest.approx((0.55, 0.45))
    assert pair(s, 50) == pytest.approx((0.5, 0.5))
    assert pair(s, 100) == pytest.approx((0.4, 0.6))
    assert pair(s, 400) == pytest.approx((0.4, 0.6))  # clipped after I
    s2 = LSHMLinearSchedule(total_steps=40, sigma=0.2)
    assert pair(s2, 10) == pytest.approx((0.5, 0.5))  # 0.6 - 0.2*20/40
    with pytest.raises(ValueError, match="total_steps"):
        LSHMLinearSchedule(0)


def test_dwpose_decay_hand_numbers():
    s = DWPoseDecay(max_epochs=10, steps_per_epoch=100, kd_scale=0.1)
    # r(t) = 1 - (t-1)/10, t = step // 100 + 1
    assert pair(s, 0) == pytest.approx((0.1, 1.0))
    assert pair(s, 99) == pytest.approx((0.1, 1.0))
    assert pair(s, 250) == pytest.approx((0.08, 1.0))  # t = 3: r = 0.8
    assert float(s.feature_scale(250)) == pytest.approx(0.8)
    assert float(s.feature_scale(999)) == pytest.approx(0.1)  # t = 10
    assert float(s.feature_scale(5000)) == pytest.approx(0.1)  # clipped at t_max
    with pytest.raises(ValueError, match="steps_per_epoch"):
        DWPoseDecay(10, 0)


@pytest.mark.parametrize("sched", [ConstantWeight(0.2, gt_weight=0.5), LSHMLinearSchedule(7, sigma=0.3), DWPoseDecay(3, 2, 0.1, 0.9)])
def test_config_round_trip(sched):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert type(restored) is type(sched) and restored.get_config() == sched.get_config()
    for step in (0, 3, 6):
        assert pair(restored, step) == pytest.approx(pair(sched, step))


@pytest.mark.parametrize(
    "sched,formula",
    [
        (LSHMLinearSchedule(total_steps=6), lambda i: (0.6 - 0.1 * 2 * i / 6, 0.4 + 0.1 * 2 * i / 6)),
        (DWPoseDecay(max_epochs=3, steps_per_epoch=2, kd_scale=0.1), lambda i: (0.1 * (1 - (i // 2) / 3), 1.0)),
    ],
)
def test_weights_used_in_fit(data_dir, sched, formula):
    x, y = photo_batch(data_dir, n=8)
    d = Distiller(tiny("teacher", 8, seed=1), tiny("student", 8, seed=2), alpha=sched)
    d.compile(optimizer=keras.optimizers.SGD(1e-3))
    hist = d.fit(x, y, batch_size=4, epochs=3, verbose=0)  # 2 steps per epoch
    assert int(d.optimizer.iterations.numpy()) == 6
    for epoch in range(3):
        last_step = 2 * epoch + 1  # 0-based step of the epoch's last batch
        kd, gt = formula(last_step)
        np.testing.assert_allclose(hist.history["kd_weight"][epoch], kd, rtol=1e-6)
        np.testing.assert_allclose(hist.history["gt_weight"][epoch], gt, rtol=1e-6)
    # evaluate uses the weights of the current iteration count (6)
    res = d.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(res["kd_weight"], float(sched(6)[0]), rtol=1e-6)
    np.testing.assert_allclose(res["loss"], res["kd_weight"] * res["kd_loss"] + res["gt_weight"] * res["gt_loss"], rtol=1e-5)
