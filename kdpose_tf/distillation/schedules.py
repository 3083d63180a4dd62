"""Loss-weight schedules for distillation, driven by the optimizer's iteration counter.

A schedule maps the 0-based training step `i` (the optimizer's `iterations` before the
update of that step) to a pair `(kd_weight, gt_weight)`, and to a `feature_scale` that
multiplies the feature-distillation terms (1 except for DWPose's decay). The distiller's
loss is then `kd_weight · L_kd + gt_weight · L_gt + feature_scale · Σ_j w_j · L_feat_j`.

Schedules are small serializable objects (`get_config` / `from_config`, registered with
Keras) so that they can travel with a config. They are evaluated inside the compiled train
step, so `step` may be a scalar tensor; they use `keras.ops` only.

- `ConstantWeight(alpha)`: FPD (Zhang et al., CVPR 2019), `α·L_kd + (1−α)·L_gt`.
- `LSHMLinearSchedule(total_steps, sigma=0.1)`: the lightweight stacked hourglass paper's
  `(0.6 − σ·2i/I)·L_kd + (0.4 + σ·2i/I)·L_gt`.
- `DWPoseDecay(max_epochs, steps_per_epoch)`: DWPose (Yang et al., ICCVW 2023) stage 1,
  `L_gt + r(t)·(α·L_fea + β·L_logit)`, `r(t) = 1 − (t−1)/t_max`, `t` the 1-based epoch.

Example:
    >>> sched = LSHMLinearSchedule(total_steps=1000)
    >>> kd, gt = sched(500)     # scalar float32 tensors
    >>> round(float(kd), 4), round(float(gt), 4)
    (0.5, 0.5)
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kdpose_tf.utils.args import check_int, check_number


class WeightSchedule:
    """Base class: `__call__(step) -> (kd_weight, gt_weight)`; `feature_scale(step)` (1 by default)."""

    def __call__(self, step):
        raise NotImplementedError

    def feature_scale(self, step):
        return ops.convert_to_tensor(1.0, "float32")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="kdpose_tf")
class ConstantWeight(WeightSchedule):
    """Constant weights: `alpha·L_kd + (1 − alpha)·L_gt` (FPD, Zhang et al., CVPR 2019).

    Args:
        alpha: KD weight in [0, 1]. Defaults to 0.5.
        gt_weight: GT weight; None (default) means `1 − alpha`. Give it explicitly for
            KD-only training (`ConstantWeight(1.0, gt_weight=0.0)`) or other sums.

    Example:
        >>> [float(w) for w in ConstantWeight(0.5)(0)]
        [0.5, 0.5]
        >>> [float(w) for w in ConstantWeight(1.0, gt_weight=0.0)(0)]   # KD only
        [1.0, 0.0]
    """

    def __init__(self, alpha=0.5, gt_weight=None):
        self.alpha = check_number("alpha", alpha, 0.0, None if gt_weight is not None else 1.0, owner="ConstantWeight")
        self.gt_weight = None if gt_weight is None else check_number("gt_weight", gt_weight, 0.0)

    def __call__(self, step):
        gt = 1.0 - self.alpha if self.gt_weight is None else self.gt_weight
        return ops.convert_to_tensor(self.alpha, "float32"), ops.convert_to_tensor(gt, "float32")

    def get_config(self):
        return {"alpha": self.alpha, "gt_weight": self.gt_weight}


@keras.saving.register_keras_serializable(package="kdpose_tf")
class LSHMLinearSchedule(WeightSchedule):
    """Linear KD → GT shift of the lightweight stacked hourglass (LSHM) paper.

    KD weight `kd_start − σ·2i/I`, GT weight `gt_start + σ·2i/I`, `i` the step, `I` the total;
    `i` is clipped to `[0, I]` so the weights stay at their final values after `I` steps.

    Args:
        total_steps: I, the number of training steps (> 0).
        sigma: σ. Defaults to 0.1 (KD weight 0.6 → 0.4).
        kd_start: KD weight at step 0. Defaults to 0.6.
        gt_start: GT weight at step 0. Defaults to 0.4.

    Example:
        >>> [round(float(w), 4) for w in LSHMLinearSchedule(100)(25)]   # 0.6 - 0.1*2*25/100
        [0.55, 0.45]
        >>> [round(float(w), 4) for w in LSHMLinearSchedule(100)(500)]  # clipped at step 100
        [0.4, 0.6]
    """

    def __init__(self, total_steps, sigma=0.1, kd_start=0.6, gt_start=0.4):
        self.total_steps = check_int("total_steps", total_steps)
        self.sigma = check_number("sigma", sigma)
        self.kd_start = check_number("kd_start", kd_start)
        self.gt_start = check_number("gt_start", gt_start)

    def __call__(self, step):
        i = ops.clip(ops.cast(step, "float32"), 0.0, float(self.total_steps))
        shift = self.sigma * 2.0 * i / float(self.total_steps)
        return self.kd_start - shift, self.gt_start + shift

    def get_config(self):
        return {
            "total_steps": self.total_steps,
            "sigma": self.sigma,
            "kd_start": self.kd_start,
            "gt_start": self.gt_start,
        }


@keras.saving.register_keras_serializable(package="kdpose_tf")
class DWPoseDecay(WeightSchedule):
    """DWPose stage-1 decay `r(t) = 1 − (t − 1)/t_max`, `t = step // steps_per_epoch + 1`.

    Returns `(kd_scale·r(t), gt_weight)`; `feature_scale(step) = r(t)`, so with the
    feature terms weighted α (`FeatureDistillation(weight=α)`) and `kd_scale=β` the loss is
    `L_gt + r(t)·(α·L_fea + β·L_logit)` (Yang et al., "Effective Whole-body Pose Estimation
    with Two-stages Distillation", ICCVW 2023). `t` is clipped to `[1, t_max]`.

    Args:
        max_epochs: t_max (> 0).
        steps_per_epoch: optimizer steps per epoch (> 0).
        kd_scale: β, multiplies the logit (heatmap) KD term. Defaults to 1.0.
        gt_weight: weight of the GT term. Defaults to 1.0.

    Example:
        >>> decay = DWPoseDecay(10, 100, kd_scale=0.1)
        >>> [round(float(w), 4) for w in decay(250)]   # epoch t = 3: r = 1 - 2/10 = 0.8
        [0.08, 1.0]
        >>> round(float(decay.feature_scale(250)), 4)
        0.8
    """

    def __init__(self, max_epochs, steps_per_epoch, kd_scale=1.0, gt_weight=1.0):
        self.max_epochs = check_int("max_epochs", max_epochs)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch)
        self.kd_scale = check_number("kd_scale", kd_scale, 0.0)
        self.gt_weight = check_number("gt_weight", gt_weight, 0.0)

    def decay(self, step):
        """r(t) for the 0-based step."""
        epoch = ops.floor(ops.cast(step, "float32") / float(self.steps_per_epoch)) + 1.0
        epoch = ops.clip(epoch, 1.0, float(self.max_epochs))
        return 1.0 - (epoch - 1.0) / float(self.max_epochs)

    def __call__(self, step):
        return self.kd_scale * self.decay(step), ops.convert_to_tensor(self.gt_weight, "float32")

    def feature_scale(self, step):
        return self.decay(step)

    def get_config(self):
        return {
            "max_epochs": self.max_epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "kd_scale": self.kd_scale,
            "gt_weight": self.gt_weight,
        }


class _CallableSchedule(WeightSchedule):
    """Wraps a plain `fn(step) -> alpha` or `fn(step) -> (kd_weight, gt_weight)`."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, step):
        out = self.fn(step)
        if isinstance(out, (tuple, list)):
            if len(out) != 2:
                raise ValueError(f"A schedule must return alpha or (kd_weight, gt_weight); received {len(out)} values.")
            return ops.cast(out[0], "float32"), ops.cast(out[1], "float32")
        alpha = ops.cast(out, "float32")
        return alpha, 1.0 - alpha


def get_schedule(alpha):
    """Turn the distiller's `alpha` argument into a `WeightSchedule`.

    Accepts a number in [0, 1] (→ `ConstantWeight`), a `WeightSchedule`, or a callable of
    the step returning alpha or `(kd_weight, gt_weight)`.
    """
    if isinstance(alpha, WeightSchedule):
        return alpha
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        return ConstantWeight(alpha)
    if callable(alpha):
        return _CallableSchedule(alpha)
    raise ValueError(
        "`alpha` must be a number in [0, 1], a WeightSchedule or a callable of the step; "
        f"received {alpha!r} ({type(alpha).__name__})."
    )
