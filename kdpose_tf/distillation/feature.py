"""Feature distillation: match a student feature map to a teacher feature map by layer name.

`FeatureDistillation` is a Keras layer owned by the `Distiller` (not by the student): it holds
the trainable 1×1 "align" convolution that maps the student's channels to the teacher's, so
the adapter trains with the student and is dropped when `distiller.student` is exported.
The loss is plain MSE over every element after the student feature is aligned and resized
to the teacher's spatial size (DWPose's L_fea, Yang et al., ICCVW 2023; FitNets-style hint).

`build_feature_extractor(model, layer_names)` builds a functional model that returns the
model's outputs followed by the named intermediate features in one forward pass (the
approach of `keras.distillation.Distiller._create_feature_extractor`), also finding layers
one level down in nested functional sub-models (e.g. a PoseEstimator's backbone).
"""

from __future__ import annotations

import difflib

import keras
from keras import ops

from kdpose_tf.errors import ShapeMismatchError

_ALIGNS = ("conv1x1", None)
_RESIZES = ("bilinear", "nearest", None)


def _all_layer_names(model):
    names = []
    for layer in model.layers:
        names.append(layer.name)
        if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
            names.extend(sub.name for sub in layer.layers)
    return names


def _single(inputs):
    return inputs[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else inputs


def _layer_output(model, layer_name):
    """A symbolic tensor of `model`'s graph (connected to model.inputs) for `layer_name`."""
    try:
        layer = model.get_layer(name=layer_name)
        return layer.output
    except ValueError:
        pass
    for outer in model.layers:
        if not isinstance(outer, keras.Model) or not hasattr(outer, "get_layer"):
            continue
        try:
            inner = outer.get_layer(name=layer_name)
        except ValueError:
            continue
        sub = keras.Model(_single(outer.inputs), inner.output, name=f"{outer.name}_{layer_name}_tap")
        node = outer._inbound_nodes[-1]
        args, kwargs = node.arguments.args, node.arguments.kwargs
        return sub(*args, **kwargs)
    close = difflib.get_close_matches(layer_name, _all_layer_names(model), n=5, cutoff=0.4)
    raise ValueError(
        f"Model '{model.name}' has no layer named '{layer_name}'. "
        f"Closest layer names: {close or 'none'}; see model.summary() for all of them."
    )


def output_list(model):
    """The model's symbolic outputs as a list (one per stack, final last)."""
    outputs = model.outputs if getattr(model, "outputs", None) is not None else [model.output]
    if isinstance(outputs, dict):
        raise ValueError(f"Model '{model.name}' outputs a dict; expected a tensor or a list of heatmaps.")
    return list(outputs)


def build_feature_extractor(model, layer_names, name=None):
    """Functional model: `images -> [*model outputs, *features at layer_names]`.

    Args:
        model: a functional `keras.Model` (it must have symbolic `inputs`).
        layer_names: names of layers whose outputs are wanted (top level, or one level down
            inside a nested functional sub-model).
        name: name of the extractor. Defaults to `"<model>_feature_extractor"`.

    Raises:
        ValueError: a name is not a layer of the model (the message lists close names).

    Example:
        >>> x = keras.Input((32, 32, 3))
        >>> feature = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="feat")(x)
        >>> model = keras.Model(x, keras.layers.Conv2D(17, 1, name="head")(feature))
        >>> extractor = build_feature_extractor(model, ["feat"])
        >>> [tuple(output.shape) for output in extractor.outputs]   # heatmaps, then the feature
        [(None, 8, 8, 17), (None, 8, 8, 8)]
    """
    if getattr(model, "inputs", None) is None:
        raise ValueError(
            f"Feature distillation needs a functional model with symbolic inputs; "
            f"'{model.name}' ({type(model).__name__}) has none."
        )
    features = [_layer_output(model, n) for n in layer_names]
    return keras.Model(
        _single(model.inputs), output_list(model) + features, name=name or f"{model.name}_feature_extractor"
    )


@keras.saving.register_keras_serializable(package="kdpose_tf")
class FeatureDistillation(keras.layers.Layer):
    """MSE between a (1×1-aligned, resized) student feature and a teacher feature.

    `loss = weight · mean((resize(align(s)) − t)²)`, with `align` a trainable 1×1 conv from the
    student's channels to the teacher's (or the identity when `align=None`) and `resize` a
    resize of the student feature to the teacher's spatial size. The teacher feature is a
    constant (no gradient).

    Args:
        teacher_layer: name of the teacher layer whose output is the target.
        student_layer: name of the student layer whose output is aligned to it.
        weight: loss weight (DWPose's α = 5e-5). Defaults to 1.0.
        align: "conv1x1" (default) or None (channels must then match).
        resize: "bilinear" (default), "nearest" or None (sizes must then match).
        name: layer name. Defaults to `"feat_<student_layer>_to_<teacher_layer>"`.

    Example (the loss by hand: a student feature of zeros against a teacher feature of twos,
    no adapter, nearest resize 4x4 -> 8x8: 0.5 * mean((0 - 2)^2) = 2.0):
        >>> import numpy as np
        >>> fd = FeatureDistillation("t", "s", weight=0.5, align=None, resize="nearest")
        >>> fd.build((1, 8, 8, 4), (1, 4, 4, 4))   # (teacher shape, student shape)
        >>> float(fd(np.full((1, 8, 8, 4), 2.0, "float32"), np.zeros((1, 4, 4, 4), "float32")))
        2.0

    In a `Distiller`, which finds both layers by name and builds the 1x1 adapter (8 -> 32 channels):
        >>> from kdpose_tf.distillation.distiller import Distiller
        >>> def tiny(name, width):
        ...     x = keras.Input((32, 32, 3))
        ...     f = keras.layers.Conv2D(width, 3, strides=4, padding="same", name=f"{name}_feat")(x)
        ...     return keras.Model(x, keras.layers.Conv2D(17, 1, name=f"{name}_head")(f), name=name)
        >>> fd = FeatureDistillation("teacher_feat", "student_feat", weight=5e-5)
        >>> distiller = Distiller(tiny("teacher", 32), tiny("student", 8), feature_distillations=[fd])
        >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> targets = {"heatmaps": np.zeros((4, 8, 8, 17), "float32"),
        ...            "target_weight": np.ones((4, 17), "float32")}
        >>> history = distiller.fit(images, targets, epochs=1, batch_size=2, verbose=0)
        >>> sorted(k for k in history.history if k.endswith("_loss"))
        ['feat_loss', 'gt_loss', 'kd_loss']
        >>> tuple(fd.adapter.kernel.shape)
        (1, 1, 8, 32)
    """

    def __init__(self, teacher_layer, student_layer, weight=1.0, align="conv1x1", resize="bilinear", name=None, **kwargs):
        for arg, value in (("teacher_layer", teacher_layer), ("student_layer", student_layer)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"`{arg}` must be a non-empty layer name; received {value!r}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"`weight` must be a number >= 0; received {weight!r}.")
        if align not in _ALIGNS:
            raise ValueError(f"`align` must be one of {_ALIGNS}; received {align!r}.")
        if resize not in _RESIZES:
            raise ValueError(f"`resize` must be one of {_RESIZES}; received {resize!r}.")
        name = name or f"feat_{student_layer}_to_{teacher_layer}".replace("/", "_")
        super().__init__(name=name, **kwargs)
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.weight = float(weight)
        self.align = align
        self.resize = resize
        self.adapter = None

    def check_shapes(self, teacher_shape, student_shape):
        """Raise ShapeMismatchError when the shapes cannot be reconciled by this term's settings."""
        t_hw, s_hw = tuple(teacher_shape[1:3]), tuple(student_shape[1:3])
        if len(teacher_shape) != 4 or len(student_shape) != 4:
            raise ShapeMismatchError(
                f"{self.name}: feature distillation needs 4-D features (B, h, w, C); teacher layer "
                f"'{self.teacher_layer}' gives {tuple(teacher_shape)}, student layer "
                f"'{self.student_layer}' gives {tuple(student_shape)}."
            )
        if self.align is None and teacher_shape[-1] != student_shape[-1]:
            raise ShapeMismatchError(
                f"{self.name}: channels differ (teacher '{self.teacher_layer}' {tuple(teacher_shape)}, student "
                f"'{self.student_layer}' {tuple(student_shape)}) and align=None; use align='conv1x1'."
            )
        if self.resize is None and t_hw != s_hw:
            raise ShapeMismatchError(
                f"{self.name}: spatial sizes differ (teacher '{self.teacher_layer}' {tuple(teacher_shape)}, student "
                f"'{self.student_layer}' {tuple(student_shape)}) and resize=None; use resize='bilinear'."
            )

    def build(self, teacher_feature_shape, student_feature_shape=None):
        # Argument names match `call`'s, so Keras can build the layer on its first call.
        teacher_shape, student_shape = teacher_feature_shape, student_feature_shape
        if student_shape is None:  # called as build([teacher_shape, student_shape])
            teacher_shape, student_shape = teacher_shape
        self.check_shapes(teacher_shape, student_shape)
        if self.align == "conv1x1" and self.adapter is None:
            self.adapter = keras.layers.Conv2D(
                int(teacher_shape[-1]), 1, use_bias=True, dtype="float32", name=f"{self.name}_align"
            )
            self.adapter.build(tuple(student_shape[:-1]) + (int(student_shape[-1]),))
        self.built = True

    def call(self, teacher_feature, student_feature):
        t = ops.stop_gradient(ops.cast(teacher_feature, "float32"))
        s = ops.cast(student_feature, "float32")
        if self.adapter is not None:
            s = self.adapter(s)
        t_hw = tuple(t.shape[1:3])
        if self.resize is not None and tuple(s.shape[1:3]) != t_hw:
            s = ops.image.resize(s, t_hw, interpolation=self.resize)
        return self.weight * ops.mean(ops.square(s - t))

    def get_build_config(self):
        # Built by the Distiller from the models' feature shapes, not from a saved config.
        return None

    def build_from_config(self, config):
        pass

    def compute_output_shape(self, teacher_feature_shape, student_feature_shape=None):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_layer": self.teacher_layer,
                "student_layer": self.student_layer,
                "weight": self.weight,
                "align": self.align,
                "resize": self.resize,
            }
        )
        return config
