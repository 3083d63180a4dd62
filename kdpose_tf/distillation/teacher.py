"""Teacher sources and teacher-output caching.

`load_teacher(source)` accepts a `keras.Model`, a path to a `.keras` file, or a preset name /
preset directory (through `PoseEstimator.from_preset`, i.e. `kdpose_tf.models.preset_utils`).
The teacher comes back frozen (`trainable = False`).

`cache_teacher_outputs(teacher, dataset)` runs the teacher once over a batched, un-augmented
dataset of `(images, targets)` and returns a `tf.data.Dataset` of
`(images, {**targets, "teacher_heatmaps": ...})` with the same batches. The `Distiller`
uses cached heatmaps when present and skips the teacher forward pass. Only valid when the
images are identical every epoch (no random augmentation): the cached heatmaps belong to
the exact crops they were computed on.

Example (tiny 1x1-conv models on 32x32 crops; the teacher saved to a temporary .keras file):
    >>> import tempfile
    >>> import tensorflow as tf
    >>> from kdpose_tf.distillation.distiller import Distiller
    >>> def tiny(name):
    ...     x = keras.Input((32, 32, 3))
    ...     return keras.Model(x, keras.layers.Conv2D(17, 1, strides=4, name=f"{name}_head")(x), name=name)
    >>> path = Path(tempfile.mkdtemp()) / "teacher.keras"
    >>> tiny("teacher").save(path)
    >>> teacher = load_teacher(path)
    >>> teacher.name, teacher.trainable
    ('teacher', False)
    >>> images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    >>> targets = {"heatmaps": np.zeros((6, 8, 8, 17), "float32"), "target_weight": np.ones((6, 17), "float32")}
    >>> crops_ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)   # no augmentation
    >>> train = cache_teacher_outputs(teacher, crops_ds)
    >>> sorted(train.element_spec[1]), [int(x.shape[0]) for x, _ in train]   # same batches
    (['heatmaps', 'target_weight', 'teacher_heatmaps'], [4, 2])
    >>> distiller = Distiller(teacher, tiny("student"))
    >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> history = distiller.fit(train.shuffle(8), epochs=1, shuffle=False, verbose=0)   # no teacher forward pass
    >>> sorted(k for k in history.history if k.endswith("_loss"))
    ['gt_loss', 'kd_loss']
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from kdpose_tf.distillation import feature  # noqa: F401  (registers FeatureDistillation's Keras objects for loading)
from kdpose_tf.errors import PresetError
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.models.preset_utils import load_keras_file


def load_teacher(source, compile=False):
    """Return a frozen teacher `keras.Model` from a model, a `.keras` path or a preset.

    Args:
        source: a `keras.Model`; a `str`/`Path` to a `.keras` file; or a preset name or
            preset directory understood by `PoseEstimator.from_preset`.
        compile: passed to `keras.saving.load_model` for `.keras` files. Defaults to False.

    Raises:
        ValueError: `source` is of another type.
        FileNotFoundError: a `.keras` path that does not exist.
        PresetError: a name that is neither a `.keras` file nor a loadable preset.
    """
    if isinstance(source, keras.Model):
        model = source
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".keras":
            if not path.is_file():
                raise FileNotFoundError(f"Teacher file {path} does not exist (expected a saved .keras model).")
            model = load_keras_file(path, compile=compile)
        else:
            model = _from_preset(str(source))
    else:
        raise ValueError(
            f"`source` must be a keras.Model, a .keras path or a preset name/directory; "
            f"received {type(source).__name__}."
        )
    model.trainable = False
    return model


def _from_preset(preset):
    try:
        return PoseEstimator.from_preset(preset)
    except PresetError:
        raise
    except Exception as err:  # preset loader errors other than PresetError
        raise PresetError(f"Cannot load teacher preset '{preset}': {err}") from err


def _first_dim(structure):
    return int(keras.tree.flatten(structure)[0].shape[0])


def cache_teacher_outputs(teacher, dataset, verbose=False):
    """Run `teacher` once over `dataset` and attach its heatmaps to the targets.

    Args:
        teacher: `keras.Model` (called with `training=False`).
        dataset: batched `tf.data.Dataset` (or any iterable) of `(images, targets_dict)`,
            without random augmentation.
        verbose: show a tqdm bar. Defaults to False.

    Returns:
        `tf.data.Dataset` of `(images, {**targets, "teacher_heatmaps": hm})` with the same
        batch sizes; `hm` is a tensor, or a tuple of tensors (one per teacher stack). Needs TensorFlow.
    """
    import tensorflow as tf  # the cache is a tf.data.Dataset
    if not isinstance(teacher, keras.Model):
        raise ValueError(f"`teacher` must be a keras.Model; received {type(teacher).__name__}.")
    images, targets, outputs, sizes = [], [], [], []
    iterator = dataset
    if verbose:
        from tqdm import tqdm

        iterator = tqdm(dataset, desc="caching teacher outputs")
    for batch in iterator:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], dict)):
            raise ValueError("`dataset` must yield (images, targets_dict) batches.")
        x, y = batch
        out = teacher(x, training=False)
        out = tuple(np.asarray(o, dtype="float32") for o in out) if isinstance(out, (list, tuple)) else np.asarray(out, "float32")
        images.append(np.asarray(x))
        targets.append({k: np.asarray(v) for k, v in y.items()})
        outputs.append(out)
        sizes.append(_first_dim(x))
    if not images:
        raise ValueError("`dataset` is empty; nothing to cache.")
    if len(set(sizes[:-1])) > 1 or (len(sizes) > 1 and sizes[-1] > sizes[0]):
        raise ValueError(f"`dataset` must have a fixed batch size (only the last batch smaller); got sizes {sizes}.")
    x_all = np.concatenate(images)
    y_all = {k: np.concatenate([t[k] for t in targets]) for k in targets[0]}
    if isinstance(outputs[0], tuple):
        y_all["teacher_heatmaps"] = tuple(np.concatenate([o[i] for o in outputs]) for i in range(len(outputs[0])))
    else:
        y_all["teacher_heatmaps"] = np.concatenate(outputs)
    return tf.data.Dataset.from_tensor_slices((x_all, y_all)).batch(sizes[0])
