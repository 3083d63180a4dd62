"""`Distiller`: heatmap knowledge distillation from a frozen teacher into a student.

A `keras.Model` subclass trained through `fit` on every Keras backend (TensorFlow, JAX,
PyTorch). Like `keras.distillation.Distiller` it wraps a frozen teacher and a trainable
student, forwards `call` to the student, builds multi-output feature extractors by layer
name and puts the whole loss in `compute_loss` (written with `keras.ops` only), so Keras'
own `train_step` / `test_step` of each backend run it; unlike it, the loss is the pose one:
per-joint target weights, every stack of a stacked student supervised, KD per stack mapping,
weights that follow a schedule (FPD constant α, LSHM linear shift, DWPose decay) and
trainable feature adapters owned by the distiller (so `distiller.student` exports without them).

    loss = kd_w(i) · Σ_(a,b) KD(T_a, S_b) + gt_w(i) · Σ_b GT(Y, S_b) + f(i) · Σ_j FEAT_j

with `i` the training step (the optimizer's iteration count, see `Distiller`), KD = GT = `joints_mse` (KD with the teacher
heatmaps as the target, weighted by the target weights unless `use_target_weight_for_kd`
is False), `(a, b)` the teacher/student stack pairs of `stack_mapping`, and FEAT_j the
`FeatureDistillation` terms (their own weights inside). Stacks are summed (intermediate
supervision as in stacked hourglass training). Metrics: `loss`, `gt_loss`, `kd_loss`,
`feat_loss` (with feature terms), `kd_weight`, `gt_weight`; `test_step` reports the same.

References: Hinton et al. 2015; FPD (Zhang et al., CVPR 2019); DWPose (Yang et al., ICCVW 2023).

Example (tiny stand-in models; real ones come from `kdpose_tf.models` presets):
    >>> import numpy as np
    >>> from kdpose_tf.distillation.schedules import LSHMLinearSchedule
    >>> def tiny(name):
    ...     x = keras.Input((32, 32, 3))
    ...     return keras.Model(x, keras.layers.Conv2D(17, 1, strides=4, name=f"{name}_head")(x), name=name)
    >>> distiller = Distiller(tiny("teacher"), tiny("student"), alpha=LSHMLinearSchedule(total_steps=10))
    >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    >>> targets = {"heatmaps": np.zeros((4, 8, 8, 17), "float32"), "target_weight": np.ones((4, 17), "float32")}
    >>> history = distiller.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    >>> sorted(k for k in history.history if k.endswith("_loss"))
    ['gt_loss', 'kd_loss']

A teacher that is not a Keras model (a TFLite keypoint model such as MoveNet, see
`kdpose_tf.distillation.keypoint_teacher`) is used with `teacher=None`: its heatmaps come
with the data as `"teacher_heatmaps"`, and `"teacher_weight"` (B, K) says which joints it
supervises (its confident ones, labelled or not), replacing the target weights in KD.
"""

from __future__ import annotations

import keras
from keras import ops

from kdpose_tf.distillation.feature import FeatureDistillation, build_feature_extractor, output_list
from kdpose_tf.distillation.losses import heatmap_kd_loss, joints_mse
from kdpose_tf.distillation.schedules import WeightSchedule, get_schedule
from kdpose_tf.errors import ShapeMismatchError

STACK_MAPPINGS = ("final_to_all", "matched")
_RESIZE_TEACHER = (None, "bilinear")


class _Untracked:
    """Plain holder: Keras does not track what is stored here (feature-extractor graphs share
    the teacher's / student's layers; their weights are saved through teacher and student)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@keras.saving.register_keras_serializable(package="kdpose_tf")
class LastValue(keras.metrics.Metric):
    """Metric that reports the last value it was given (for scheduled loss weights)."""

    def __init__(self, name="last_value", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(shape=(), initializer="zeros", aggregation="mean", name="value")

    def update_state(self, value):
        self.value.assign(ops.cast(value, self.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def resolve_stack_mapping(stack_mapping, n_teacher, n_student):
    """Teacher/student stack index pairs for `stack_mapping` (see `Distiller`)."""
    if isinstance(stack_mapping, str):
        if stack_mapping == "final_to_all":
            return [(n_teacher - 1, j) for j in range(n_student)]
        if stack_mapping == "matched":
            if n_teacher != n_student:
                raise ShapeMismatchError(
                    f"stack_mapping='matched' needs as many teacher stacks as student stacks; "
                    f"received teacher {n_teacher}, student {n_student}. Use 'final_to_all' or a list of pairs."
                )
            return [(j, j) for j in range(n_student)]
        raise ValueError(f"`stack_mapping` must be one of {STACK_MAPPINGS} or a list of pairs; received {stack_mapping!r}.")
    try:
        pairs = [(int(a), int(b)) for a, b in stack_mapping]
    except (TypeError, ValueError):
        raise ValueError(
            f"`stack_mapping` must be one of {STACK_MAPPINGS} or a list of (teacher_idx, student_idx); "
            f"received {stack_mapping!r}."
        ) from None
    if not pairs:
        raise ValueError("`stack_mapping` list is empty; give at least one (teacher_idx, student_idx) pair.")
    out = []
    for a, b in pairs:
        if not (-n_teacher <= a < n_teacher and -n_student <= b < n_student):
            raise ValueError(
                f"stack pair ({a}, {b}) out of range: the teacher has {n_teacher} stacks, the student {n_student}."
            )
        out.append((a % n_teacher, b % n_student))
    return out


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


@keras.saving.register_keras_serializable(package="kdpose_tf")
class Distiller(keras.Model):
    """Distil a frozen pose teacher into a student (see the module docstring for the loss).

    Args:
        teacher: `keras.Model`, images (B, H, W, 3) in [0, 255] -> heatmaps (B, h, w, K) or a
            list of them (final last). Frozen inside the distiller (not among its trainable
            variables, always called with `training=False`); its own `trainable` flag is left as it is. `None`:
            the teacher's heatmaps come with the data (`"teacher_heatmaps"` in the targets,
            one stack, e.g. from a black-box keypoint teacher); no feature terms then.
        student: `keras.Model` with the same contract; the model that is trained.
        alpha: KD weight: a number in [0, 1] (FPD: `α·KD + (1−α)·GT`), a `WeightSchedule`
            (e.g. `LSHMLinearSchedule`, `DWPoseDecay`) or a callable `step -> alpha` or
            `step -> (kd_weight, gt_weight)`. Defaults to 0.5.
        kd_loss: `fn(teacher_hm, student_hm, target_weight) -> scalar`. Defaults to heatmap
            MSE (`joints_mse` with the teacher as target).
        gt_loss: `fn(gt_hm, student_hm, target_weight) -> scalar`. Defaults to `joints_mse`.
        use_target_weight_for_kd: weigh KD joints by the target weights. Defaults to True.
        stack_mapping: "final_to_all" (default: the teacher's final output supervises every
            student stack), "matched" (stack i to stack i; counts must match) or a list of
            `(teacher_idx, student_idx)` pairs.
        resize_teacher: None (default: teacher and student heatmap sizes must match, else
            ShapeMismatchError) or "bilinear" (teacher heatmaps resized to the student's).
        feature_distillations: `FeatureDistillation` terms. Defaults to none.
        name: model name. Defaults to "distiller".

    Cached teacher outputs: when the targets dict holds "teacher_heatmaps" (see
    `teacher.cache_teacher_outputs`), they are used and the teacher forward is skipped
    (unless feature terms need teacher features).

    Training step: the schedules read the 0-based step `i` of the optimizer update being
    computed. JAX runs the train step on a copy of the optimizer's state that the loss cannot
    read, so the distiller keeps its own counter: set from `optimizer.iterations` whenever
    Keras resets the metrics (the start of every epoch, `evaluate` and `*_on_batch`, i.e.
    after a checkpoint or `BackupAndRestore` restored the optimizer) and advanced by one per
    training batch. It is not saved: checkpoints hold the optimizer's count.

    `call` returns the student's heatmaps, followed by the tapped student features when
    there are feature terms (one student forward pass feeds every loss term); predict with
    `distiller.student`.
    """

    def __init__(
        self,
        teacher,
        student,
        alpha=0.5,
        kd_loss=None,
        gt_loss=None,
        use_target_weight_for_kd=True,
        stack_mapping="final_to_all",
        resize_teacher=None,
        feature_distillations=(),
        name="distiller",
        **kwargs,
    ):
        for arg, model in (("teacher", teacher), ("student", student)):
            if model is None and arg == "teacher":
                continue
            if not isinstance(model, keras.Model):
                raise ValueError(f"`{arg}` must be a keras.Model; received {type(model).__name__}.")
        if teacher is student:
            raise ValueError("`teacher` and `student` are the same object; give the student its own model.")
        schedule = get_schedule(alpha)
        for arg, fn in (("kd_loss", kd_loss), ("gt_loss", gt_loss)):
            if fn is not None and not callable(fn):
                raise ValueError(f"`{arg}` must be None or a callable; received {fn!r}.")
        if resize_teacher not in _RESIZE_TEACHER:
            raise ValueError(f"`resize_teacher` must be one of {_RESIZE_TEACHER}; received {resize_teacher!r}.")
        feature_distillations = list(feature_distillations or ())
        for fd in feature_distillations:
            if not isinstance(fd, FeatureDistillation):
                raise ValueError(
                    f"`feature_distillations` must hold FeatureDistillation objects; received {type(fd).__name__}."
                )
        if teacher is None and feature_distillations:
            raise ValueError(
                "Feature distillation needs a Keras teacher; received teacher=None (teacher heatmaps from "
                f"the data) with {len(feature_distillations)} feature_distillations."
            )
        # Inputs reach the student (and the teacher) as given, whatever the global dtype policy: each
        # model casts them by its own policy; the losses are computed in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(name=name, **kwargs)

        # The teacher is frozen *inside the distiller* (left out of its trainable variables and
        # always run with training=False); the model object the caller holds is not changed, so a
        # teacher built beside its distiller still trains on its own.
        self.teacher = teacher
        self.student = student
        self.schedule = schedule
        self._alpha_arg = alpha
        self.kd_loss_fn = kd_loss or heatmap_kd_loss
        self.gt_loss_fn = gt_loss or joints_mse
        self._custom_losses = (kd_loss is not None, gt_loss is not None)
        self.use_target_weight_for_kd = bool(use_target_weight_for_kd)
        self.resize_teacher = resize_teacher
        self.stack_mapping = stack_mapping

        s_shapes = [tuple(o.shape) for o in output_list(student)]
        # No teacher model: one stack of heatmaps arrives with the data, checked per batch.
        t_shapes = [tuple(o.shape) for o in output_list(teacher)] if teacher is not None else [s_shapes[-1]]
        self.n_teacher_stacks, self.n_student_stacks = len(t_shapes), len(s_shapes)
        self.stack_pairs = resolve_stack_mapping(stack_mapping, len(t_shapes), len(s_shapes))
        for a, b in self.stack_pairs:
            self._check_heatmap_shapes(t_shapes[a], s_shapes[b], a, b)
        self._student_hw = tuple(s_shapes[-1][1:3])

        self.feature_distillations = feature_distillations
        extractors = _Untracked(teacher=None, student=None)
        if feature_distillations:
            extractors.teacher = build_feature_extractor(
                teacher, [fd.teacher_layer for fd in feature_distillations], name=f"{teacher.name}_kd_taps"
            )
            extractors.student = build_feature_extractor(
                student, [fd.student_layer for fd in feature_distillations], name=f"{student.name}_kd_taps"
            )
            n_t, n_s = len(t_shapes), len(s_shapes)
            for j, fd in enumerate(feature_distillations):
                fd.build(tuple(extractors.teacher.outputs[n_t + j].shape), tuple(extractors.student.outputs[n_s + j].shape))
        self._extractors = extractors

        # "loss" is Keras' own loss tracker (the value compute_loss returns, batch-weighted).
        self.gt_loss_tracker = keras.metrics.Mean(name="gt_loss")
        self.kd_loss_tracker = keras.metrics.Mean(name="kd_loss")
        self.feat_loss_tracker = keras.metrics.Mean(name="feat_loss") if feature_distillations else None
        self.kd_weight_tracker = LastValue(name="kd_weight")
        self.gt_weight_tracker = LastValue(name="gt_weight")
        # Untracked: left out of the saved weights (checkpoints keep the optimizer's count).
        self._schedule_state = _Untracked(
            step=keras.Variable(0, dtype="int32", trainable=False, aggregation="only_first_replica",
                                name="schedule_step")
        )
        self.built = True

    def _check_heatmap_shapes(self, t_shape, s_shape, a, b):
        if len(t_shape) != 4 or len(s_shape) != 4:
            raise ShapeMismatchError(
                f"Heatmaps must be 4-D (B, h, w, K); teacher stack {a} is {t_shape}, student stack {b} is {s_shape}."
            )
        if t_shape[-1] != s_shape[-1]:
            raise ShapeMismatchError(
                f"Teacher and student keypoint counts differ: teacher stack {a} heatmaps {t_shape}, "
                f"student stack {b} heatmaps {s_shape}; K must match."
            )
        if tuple(t_shape[1:3]) != tuple(s_shape[1:3]) and self.resize_teacher is None:
            raise ShapeMismatchError(
                f"Teacher and student heatmap sizes differ: teacher stack {a} {t_shape}, student stack {b} "
                f"{s_shape}. Pass resize_teacher='bilinear' to resize the teacher's heatmaps to the student's."
            )

    # ------------------------------------------------------------------ Keras plumbing
    def _teacher_only_ids(self):
        """ids of the teacher's variables that the student does not share (frozen here)."""
        if self.teacher is None:
            return set()
        student = {id(v) for v in self.student.variables}
        return {id(v) for v in self.teacher.variables if id(v) not in student}

    @property
    def trainable_weights(self):
        """The student's trainable weights and the distiller's own (feature adapters); never the teacher's."""
        frozen = self._teacher_only_ids()
        return [v for v in super().trainable_weights if id(v) not in frozen]

    @property
    def non_trainable_weights(self):
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def non_trainable_variables(self):
        """Teacher, frozen and non-trainable student variables, and the schedule step (state that a
        stateless backend such as JAX carries through the train step and writes back)."""
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.variables if id(v) not in trainable] + [self._schedule_state.step]

    @property
    def metrics(self):
        trackers = [self.gt_loss_tracker, self.kd_loss_tracker]
        if self.feat_loss_tracker is not None:
            trackers.append(self.feat_loss_tracker)
        trackers += [self.kd_weight_tracker, self.gt_weight_tracker]
        own = {id(m) for m in trackers}
        # Keras' "loss" tracker (and any compiled metric) first, then the distiller's terms.
        return [m for m in super().metrics if id(m) not in own] + trackers

    def reset_metrics(self):
        """Reset the metrics and set the schedule step from the optimizer's iteration count."""
        super().reset_metrics()
        if getattr(self, "optimizer", None) is not None:
            # A host integer, not the optimizer's array: JAX must not get one buffer as two state entries.
            self._schedule_state.step.assign(int(ops.convert_to_numpy(self.optimizer.iterations)))

    def compile(self, optimizer="adam", **kwargs):
        """Compile with an optimizer. The loss is the distiller's own; `loss=` is refused."""
        if kwargs.get("loss") is not None:
            raise ValueError(
                f"Distiller defines its own loss (kd_loss / gt_loss / alpha); received loss={kwargs['loss']!r}."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs, training=None):
        if self.feature_distillations:
            return self._extractors.student(inputs, training=training)
        return self.student(inputs, training=training)

    # ------------------------------------------------------------------ the loss
    def compute_distillation_losses(self, x, y, training=False, step=None, y_pred=None):
        """All loss terms for one batch: dict with loss, gt_loss, kd_loss, feat_loss, kd_weight, gt_weight.

        `y_pred` is this distiller's `call` output on `x` (computed here when None). `step`
        defaults to the distiller's schedule step (see the class docstring). Values are
        float32 scalars.
        """
        y = y if isinstance(y, dict) else ({"heatmaps": y} if y is not None else {})
        nt, ns = self.n_teacher_stacks, self.n_student_stacks
        if y_pred is None:
            y_pred = self.call(x, training=training)
        s_out = _as_list(y_pred)
        s_heat, s_feat = s_out[:ns], s_out[ns:]
        cached = y.get("teacher_heatmaps")
        t_feat = []
        if self.feature_distillations:
            t_out = self._extractors.teacher(x, training=False)
            t_heat, t_feat = t_out[:nt], t_out[nt:]
        else:
            t_heat = None
        if cached is not None:
            t_heat = _as_list(cached)
            if len(t_heat) != nt:
                raise ShapeMismatchError(
                    f"Cached teacher_heatmaps hold {len(t_heat)} stacks; the teacher outputs {nt}."
                )
        elif t_heat is None:
            if self.teacher is None:
                raise ValueError(
                    "Distiller(teacher=None) takes the teacher's heatmaps from the data, but the targets hold no "
                    f"'teacher_heatmaps' (keys: {sorted(y)}). Attach teacher keypoints to the samples "
                    "(keypoint_teacher.attach_teacher_keypoints) or cache a Keras teacher's outputs."
                )
            t_heat = _as_list(self.teacher(x, training=False))
        if self.teacher is None:
            for a, b in self.stack_pairs:
                self._check_heatmap_shapes(tuple(t_heat[a].shape), tuple(s_heat[b].shape), a, b)

        s_heat = [ops.cast(h, "float32") for h in s_heat]
        t_heat = [ops.stop_gradient(ops.cast(h, "float32")) for h in t_heat]
        tw = y.get("target_weight")
        tw = None if tw is None else ops.cast(tw, "float32")
        kd_tw = tw if self.use_target_weight_for_kd else None
        if y.get("teacher_weight") is not None:
            # The teacher says which joints it knows (e.g. a keypoint model's confident joints).
            kd_tw = ops.cast(y["teacher_weight"], "float32")

        gt_loss = ops.convert_to_tensor(0.0, "float32")
        gt = y.get("heatmaps")
        if gt is not None:
            gts = _as_list(gt)
            if len(gts) == 1:
                gts = gts * ns
            elif len(gts) != ns:
                raise ShapeMismatchError(f"{len(gts)} ground-truth heatmap stacks for {ns} student stacks.")
            for g, s in zip(gts, s_heat):
                gt_loss = gt_loss + ops.cast(self.gt_loss_fn(ops.cast(g, "float32"), s, tw), "float32")

        kd_loss = ops.convert_to_tensor(0.0, "float32")
        for a, b in self.stack_pairs:
            t = t_heat[a]
            if tuple(t.shape[1:3]) != tuple(s_heat[b].shape[1:3]):
                t = ops.image.resize(t, tuple(s_heat[b].shape[1:3]), interpolation="bilinear")
            kd_loss = kd_loss + ops.cast(self.kd_loss_fn(t, s_heat[b], kd_tw), "float32")

        feat_loss = ops.convert_to_tensor(0.0, "float32")
        for fd, tf_, sf in zip(self.feature_distillations, t_feat, s_feat):
            feat_loss = feat_loss + fd(tf_, sf)

        step = ops.convert_to_tensor(self._schedule_state.step) if step is None else step
        kd_w, gt_w = self.schedule(step)
        kd_w, gt_w = ops.cast(kd_w, "float32"), ops.cast(gt_w, "float32")
        total = kd_w * kd_loss + gt_w * gt_loss
        if self.feature_distillations:
            total = total + ops.cast(self.schedule.feature_scale(step), "float32") * feat_loss
        reg = self.student.losses
        if reg:
            total = total + ops.cast(ops.sum(ops.stack([ops.cast(r, "float32") for r in reg])), "float32")
        return {
            "loss": total,
            "gt_loss": gt_loss,
            "kd_loss": kd_loss,
            "feat_loss": feat_loss,
            "kd_weight": kd_w,
            "gt_weight": gt_w,
        }

    def _update_trackers(self, terms, x):
        batch = ops.cast(ops.shape(x)[0], "float32")
        self.gt_loss_tracker.update_state(terms["gt_loss"], sample_weight=batch)
        self.kd_loss_tracker.update_state(terms["kd_loss"], sample_weight=batch)
        if self.feat_loss_tracker is not None:
            self.feat_loss_tracker.update_state(terms["feat_loss"], sample_weight=batch)
        self.kd_weight_tracker.update_state(terms["kd_weight"])
        self.gt_weight_tracker.update_state(terms["gt_weight"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The distillation loss of one batch (Keras' train / test step of every backend call this).

        Updates the term trackers, advances the schedule step on a training batch and returns
        the per-replica loss: under a `tf.distribute` strategy with n replicas, loss / n, so the
        summed gradients are those of the global-batch mean (as Keras' own losses do).
        `sample_weight` is not used (joints are weighted by the targets' weights).
        """
        terms = self.compute_distillation_losses(x, y, training=training, y_pred=y_pred)
        if training:
            self._schedule_state.step.assign_add(1)
        self._update_trackers(terms, x)
        loss = terms["loss"]
        # `distribute_strategy` exists on the TensorFlow backend only; the others shard one global batch.
        replicas = getattr(getattr(self, "distribute_strategy", None), "num_replicas_in_sync", 1)
        if replicas > 1:
            loss = ops.multiply(loss, ops.cast(1.0 / replicas, loss.dtype))
        return loss

    # ------------------------------------------------------------------ config
    def get_config(self):
        if any(self._custom_losses):
            raise NotImplementedError(
                "Distiller.get_config does not serialize custom kd_loss / gt_loss callables; "
                "save the student (distiller.student.save) or the weights (save_weights) instead."
            )
        alpha = self._alpha_arg
        if isinstance(alpha, WeightSchedule):
            alpha = keras.saving.serialize_keras_object(alpha)
        elif callable(alpha):
            raise NotImplementedError("A plain callable `alpha` cannot be serialized; use a WeightSchedule.")
        return {
            "name": self.name,
            "teacher": None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "alpha": alpha,
            "use_target_weight_for_kd": self.use_target_weight_for_kd,
            "stack_mapping": self.stack_mapping,
            "resize_teacher": self.resize_teacher,
            "feature_distillations": [keras.saving.serialize_keras_object(fd) for fd in self.feature_distillations],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if isinstance(config.get("alpha"), dict):
            config["alpha"] = keras.saving.deserialize_keras_object(config["alpha"])
        config["feature_distillations"] = [
            keras.saving.deserialize_keras_object(fd) for fd in config.get("feature_distillations", [])
        ]
        return cls(**config)
