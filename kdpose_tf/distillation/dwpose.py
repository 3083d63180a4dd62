"""DWPose two-stage pose distillation (Yang et al., "Effective Whole-body Pose Estimation with
Two-stages Distillation", ICCVW 2023), for heatmap models.

Stage 1 (from scratch): `L = L_gt + r(t)·(α·L_fea + β·L_logit)`, `r(t) = 1 − (t−1)/t_max`,
L_fea the MSE between the student's last backbone feature (1×1-aligned to the teacher's
channels) and the teacher's, L_logit the heatmap KD loss. α = 5e-5 and β = 0.1 as in the paper.

Stage 2 (head-aware self-distillation): the stage-1 student (a frozen copy) becomes the
teacher; the student's backbone is frozen, its head re-initialised and trained alone with
`γ·L_logit` (no GT term) for ~20 % of the stage-1 epochs.

Example (tiny conv models on 32x32 crops; 3 stage-1 epochs, so r(t) = 1, 2/3, 1/3, then 1 stage-2 epoch):
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> def tiny(name, width):
    ...     x = keras.Input((32, 32, 3))
    ...     f = keras.layers.Conv2D(width, 3, strides=4, padding="same", activation="relu",
    ...                             name=f"{name}_backbone_out")(x)
    ...     h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_head_conv")(f)
    ...     return keras.Model(x, keras.layers.Conv2D(17, 1, name=f"{name}_head_out")(h), name=name)
    >>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    >>> targets = {"heatmaps": np.zeros((8, 8, 8, 17), "float32"), "target_weight": np.ones((8, 17), "float32")}
    >>> train_ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    >>> student, h1, h2 = two_stage_distill(
    ...     tiny("teacher", 16), tiny("student", 8), train_ds, epochs=3, stage2_fraction=0.34,
    ...     feature_layers=("teacher_backbone_out", "student_backbone_out"),
    ...     head_layer_names=["student_head_conv", "student_head_out"], verbose=0)
    >>> [round(w, 4) for w in h1.history["kd_weight"]], h1.history["gt_weight"]   # beta * r(t), 1
    ([0.1, 0.0667, 0.0333], [1.0, 1.0, 1.0])
    >>> "feat_loss" in h1.history
    True
    >>> len(h2.epoch), h2.history["kd_weight"], h2.history["gt_weight"]   # gamma, no GT term
    (1, [1.0], [0.0])
"""

from __future__ import annotations

import contextlib
import numbers

import keras

from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.feature import FeatureDistillation
from kdpose_tf.distillation.schedules import ConstantWeight, DWPoseDecay


def resolve_head_layers(model, head_layer_names=None, head_predicate=None, feature_layer=None):
    """Names of the top-level layers of `model` that form its head.

    Exactly one source is used, in this order: `head_layer_names`; `head_predicate(layer)`;
    every layer after `feature_layer` in the model's (topological) layer order; the
    `head` attribute of a PoseEstimator-like model.
    """
    names = [layer.name for layer in model.layers]
    if head_layer_names is not None:
        missing = [n for n in head_layer_names if n not in names]
        if missing:
            raise ValueError(f"head_layer_names {missing} are not layers of '{model.name}'; its layers: {names}.")
        head = list(head_layer_names)
    elif head_predicate is not None:
        head = [layer.name for layer in model.layers if head_predicate(layer)]
    elif feature_layer is not None:
        if feature_layer not in names:
            raise ValueError(f"feature_layer '{feature_layer}' is not a layer of '{model.name}'; its layers: {names}.")
        head = names[names.index(feature_layer) + 1 :]
    elif isinstance(getattr(model, "head", None), keras.layers.Layer):
        head = [model.head.name]
    else:
        raise ValueError(
            f"Cannot tell the head of '{model.name}': pass head_layer_names, head_predicate or feature_layer "
            "(the layers after it form the head)."
        )
    head = [n for n in head if model.get_layer(n).weights]
    if not head:
        raise ValueError(f"The head of '{model.name}' resolved to no layer with weights.")
    return head


def reinitialize_layers(model, layer_names):
    """Re-initialise the named layers' weights (fresh initializers, as a new model would get)."""
    fresh = keras.models.clone_model(model)
    for name in layer_names:
        model.get_layer(name).set_weights(fresh.get_layer(name).get_weights())


def frozen_copy(model):
    """An independent copy of `model` with the same weights, frozen."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def _steps_per_epoch(train_data, steps_per_epoch):
    if steps_per_epoch is not None:
        return steps_per_epoch
    if isinstance(train_data, keras.utils.PyDataset):
        n = train_data.num_batches or 0
    else:  # a tf.data.Dataset knows its batch count (negative when infinite or unknown)
        cardinality = getattr(train_data, "cardinality", None)
        n = int(cardinality()) if callable(cardinality) else 0
    if n > 0:
        return n
    raise ValueError(
        "Cannot infer steps_per_epoch from train_data (needs a finite tf.data.Dataset or a keras.utils.PyDataset "
        "with a length); pass steps_per_epoch."
    )


def two_stage_distill(
    teacher,
    student,
    train_data,
    epochs,
    stage2_fraction=0.2,
    validation_data=None,
    callbacks=None,
    optimizer_fn=None,
    feature_layers=None,
    alpha=5e-5,
    beta=0.1,
    gamma=1.0,
    head_layer_names=None,
    head_predicate=None,
    steps_per_epoch=None,
    use_target_weight_for_kd=True,
    verbose="auto",
):
    """Run DWPose stage 1 then stage 2; returns `(student, history1, history2)`.

    Args:
        teacher: frozen teacher `keras.Model` (images -> heatmaps or list of heatmaps).
        student: student `keras.Model` (trained in place).
        train_data: batched `tf.data.Dataset` or `keras.utils.PyDataset` of
            `(images, {"heatmaps", "target_weight"})`.
        epochs: stage-1 epochs (t_max of the decay).
        stage2_fraction: stage-2 epochs as a fraction of `epochs` (at least 1). Defaults to 0.2.
        validation_data: passed to both `fit` calls. Defaults to None.
        callbacks: list of callbacks for both stages. Defaults to None.
        optimizer_fn: `() -> keras.optimizers.Optimizer`, called once per stage. Defaults to Adam(1e-3).
        feature_layers: `(teacher_layer, student_layer)` for L_fea (the last backbone
            features); None trains stage 1 with the logit term only. Defaults to None.
        alpha: L_fea weight α. Defaults to 5e-5.
        beta: L_logit weight β. Defaults to 0.1.
        gamma: stage-2 KD weight γ. Defaults to 1.0.
        head_layer_names / head_predicate: the student's head (see `resolve_head_layers`);
            without them the layers after `feature_layers[1]`, else `student.head`.
        steps_per_epoch: optimizer steps per epoch; inferred from a finite dataset.
        use_target_weight_for_kd: weigh KD joints by target weights. Defaults to True.
        verbose: `fit` verbosity. Defaults to "auto".
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer; received {epochs!r}.")
    if not isinstance(stage2_fraction, numbers.Real) or not 0 < stage2_fraction <= 1:
        raise ValueError(f"`stage2_fraction` must be in (0, 1]; received {stage2_fraction!r}.")
    if feature_layers is not None and (not isinstance(feature_layers, (tuple, list)) or len(feature_layers) != 2):
        raise ValueError(f"`feature_layers` must be (teacher_layer, student_layer); received {feature_layers!r}.")
    optimizer_fn = optimizer_fn or (lambda: keras.optimizers.Adam(1e-3))
    spe = _steps_per_epoch(train_data, steps_per_epoch)
    head = resolve_head_layers(
        student, head_layer_names, head_predicate, feature_layers[1] if feature_layers else None
    )
    fit = dict(validation_data=validation_data, callbacks=callbacks, verbose=verbose, shuffle=False)
    stage1 = stage1_distiller(teacher, student, epochs, spe, feature_layers, alpha, beta, use_target_weight_for_kd)
    stage1.compile(optimizer=optimizer_fn())
    history1 = stage1.fit(train_data, epochs=epochs, **fit)
    with stage2_distiller(student, head, gamma, use_target_weight_for_kd) as stage2:
        stage2.compile(optimizer=optimizer_fn())
        history2 = stage2.fit(train_data, epochs=stage2_epochs(epochs, stage2_fraction), **fit)
    return student, history1, history2


def stage2_epochs(epochs, stage2_fraction):
    """Stage-2 epochs: `stage2_fraction` of stage 1's, at least 1."""
    return max(1, round(epochs * stage2_fraction))


def stage1_distiller(teacher, student, epochs, steps_per_epoch, feature_layers=None, alpha=5e-5, beta=0.1,
                     use_target_weight_for_kd=True):
    """Stage 1: GT + r(t)·(α·L_fea + β·L_logit), from scratch (uncompiled Distiller)."""
    fds = []
    if feature_layers is not None:
        fds = [FeatureDistillation(feature_layers[0], feature_layers[1], weight=alpha, name="dwpose_fea")]
    return Distiller(
        teacher,
        student,
        alpha=DWPoseDecay(epochs, steps_per_epoch, kd_scale=beta, gt_weight=1.0),
        use_target_weight_for_kd=use_target_weight_for_kd,
        feature_distillations=fds,
        name="dwpose_stage1",
    )


@contextlib.contextmanager
def stage2_distiller(student, head, gamma=1.0, use_target_weight_for_kd=True):
    """Stage 2: head-aware self-distillation; yields an uncompiled Distiller.

    The trained student (a frozen copy) is the teacher, the student's head layers are
    re-initialised and only they train (KD only, weight γ). Trainable flags are restored on exit.
    """
    self_teacher = frozen_copy(student)
    reinitialize_layers(student, head)
    flags = {layer.name: layer.trainable for layer in student.layers}
    for layer in student.layers:
        layer.trainable = layer.name in head
    try:
        yield Distiller(
            self_teacher,
            student,
            alpha=ConstantWeight(gamma, gt_weight=0.0),
            use_target_weight_for_kd=use_target_weight_for_kd,
            stack_mapping="matched",
            name="dwpose_stage2",
        )
    finally:
        for layer in student.layers:
            layer.trainable = flags[layer.name]
