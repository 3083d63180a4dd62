"""Resumable training runs for pose models and distillers; the optimizer and distribution strategy
the command line uses.

`fit_resumable` wraps `model.fit` so that a run killed at any point resumes from its last
finished epoch with the same model weights, optimizer state (hence the step counter that
drives the distillation schedules), epoch number, learning curves and data order.

What is saved after every epoch, atomically, in `run_dir`:
    checkpoint.weights.h5   model weights + optimizer variables (Keras `save_weights`)
    state.json              {"epoch", "history", "seed", "steps_per_epoch", "identity", ...}
The data order of epoch e is a permutation drawn from `seed + e`, so a resumed run sees
the same samples in the same order as an uninterrupted one; augmentation noise differs.

Example (a tiny Distiller on 8 synthetic 64x64 images, 32x32 crops, 2 steps per epoch; the
KD weight follows `LSHMLinearSchedule` over 8 steps, 0.6 - 0.2 * step / 8, logged at each epoch's
last step 1, 3, 5, 7):
>>> import tempfile
>>> from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
>>> from kdpose_tf.data.coco import read_coco
>>> from kdpose_tf.data.synthetic import generate_synthetic_dataset
>>> from kdpose_tf.distillation.distiller import Distiller
>>> from kdpose_tf.distillation.schedules import LSHMLinearSchedule
>>> from kdpose_tf.keypoints import COCO17
>>> tmp = Path(tempfile.mkdtemp())
>>> samples = read_coco(*generate_synthetic_dataset(tmp / "synth", num_images=8, image_size=(64, 64),
...                                                 progress=False))
>>> def tiny(name):
...     x = keras.Input((32, 32, 3))
...     return keras.Model(x, keras.layers.Conv2D(17, 1, strides=4, name=f"{name}_head")(x), name=name)
>>> def distiller():
...     model = Distiller(tiny("teacher"), tiny("student"), alpha=LSHMLinearSchedule(total_steps=8))
...     model.compile(optimizer=keras.optimizers.Adam(1e-3))
...     return model
>>> codec = HeatmapCodec((32, 32), (8, 8))
>>> history = fit_resumable(distiller(), samples, codec, COCO17, tmp / "run", epochs=2, batch_size=4, verbose=0)
>>> sorted(p.name for p in (tmp / "run").iterdir())
['checkpoint.weights.h5', 'state.json']
>>> read_run_state(tmp / "run")["epoch"]
2

A new process (here a fresh model) asked for 4 epochs resumes at epoch 3, optimizer step included:
>>> history = fit_resumable(distiller(), samples, codec, COCO17, tmp / "run", epochs=4, batch_size=4, verbose=0)
>>> [round(w, 3) for w in history["kd_weight"]]
[0.575, 0.525, 0.475, 0.425]
"""

from __future__ import annotations

import hashlib
import contextlib
import json
from pathlib import Path

import keras
import numpy as np

from kdpose_tf.data.pipeline import make_training_data
from kdpose_tf.errors import RunDirError
from kdpose_tf.utils import io

CHECKPOINT_NAME = "checkpoint.weights.h5"
STATE_NAME = "state.json"


def make_optimizer(lr, total_steps):
    """Adam with a cosine-decayed learning rate (`lr` down to 5 % of it over `total_steps`)."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, int(total_steps)), alpha=0.05)
    return keras.optimizers.Adam(schedule)


STRATEGIES = ("none", "mirrored", "multiworker", "tpu")


class _NoStrategy:
    """"none" on a backend without tf.distribute: one replica, a scope that changes nothing."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def make_strategy(name="none"):
    """The `tf.distribute` strategy called `name` (one of `STRATEGIES`; "none": the default one).

    "multiworker" reads TF_CONFIG; "tpu" connects to the TPU cluster the environment names.
    On another Keras backend (JAX, PyTorch) only "none" exists: one replica, a no-op `scope()`.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if name in (None, "none"):
            return _NoStrategy()
        raise ValueError(f"distribution strategy {name!r} is a tf.distribute one and needs the TensorFlow backend; "
                         f"Keras runs on {backend!r} (KERAS_BACKEND)")
    import tensorflow as tf  # tf.distribute exists only with TensorFlow

    if name in (None, "none"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"distribution strategy must be one of {STRATEGIES}, got {name!r}")


def read_run_state(run_dir) -> dict | None:
    """The saved state of a run directory, or None when it holds no finished epoch."""
    run_dir = Path(run_dir)
    state_path = run_dir / STATE_NAME
    if not state_path.exists() or not (run_dir / CHECKPOINT_NAME).exists():
        return None
    try:
        state = json.loads(state_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{state_path}: corrupt run state ({e}); {_START_FRESH.format(run_dir=run_dir)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or \
            not isinstance(state.get("history"), dict):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise RunDirError(f"{state_path}: expected keys 'epoch' (int) and 'history' (dict), got {keys}; "
                          + _START_FRESH.format(run_dir=run_dir))
    return state


_START_FRESH = "to start fresh, give another run directory (--run-dir) or delete {run_dir}"


def samples_fingerprint(samples) -> str:
    """A short hash of what training reads from `samples`: image file names, boxes, joints and flags.

    File names rather than paths, so the same data read from another folder is the same run.
    """
    h = hashlib.sha256()
    for s in samples:
        h.update(Path(str(s.image_path)).name.encode())
        for array in (s.bbox, s.keypoints, s.visibility):
            h.update(np.ascontiguousarray(array, np.float32).tobytes())
    return h.hexdigest()[:16]


def check_run_identity(run_dir, saved, identity):
    """Raise RunDirError, saying what differs, when the `identity` of a run is not the one (`saved`)
    its run directory was started with."""
    differences = [f"{key} {saved.get(key)!r} there, {identity.get(key)!r} now"
                   for key in sorted(set(saved) | set(identity)) if saved.get(key) != identity.get(key)]
    if differences:
        raise RunDirError(f"{run_dir} holds another run ({'; '.join(differences)}): it is not resumed; "
                          + _START_FRESH.format(run_dir=run_dir))


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state and the learning curves after each epoch, atomically.

    Args:
        run_dir: directory for `checkpoint.weights.h5` and `state.json`.
        history: curves of the epochs already run (from an earlier, interrupted run).
        extra_state: JSON-serialisable dict stored alongside (seed, schedule settings, ...).
    """

    def __init__(self, run_dir, history=None, extra_state=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.extra_state = dict(extra_state or {})

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        with io.atomic_path(self.run_dir / CHECKPOINT_NAME) as tmp:
            self.model.save_weights(str(tmp))
        state = dict(self.extra_state, epoch=epoch + 1, history=self.history)
        io.write_json(self.run_dir / STATE_NAME, state)


def epoch_ordered_samples(samples, seed, first_epoch, epochs, steps_per_epoch, batch_size):
    """Samples for epochs [first_epoch, epochs), each epoch a permutation drawn from seed + epoch."""
    per_epoch = steps_per_epoch * batch_size
    ordered = []
    for epoch in range(first_epoch, epochs):
        rng = np.random.default_rng(seed + epoch)
        idx = rng.permutation(len(samples))
        while len(idx) < per_epoch:  # datasets smaller than one epoch's worth wrap around
            idx = np.concatenate([idx, rng.permutation(len(samples))])
        ordered.extend(samples[i] for i in idx[:per_epoch])
    return ordered


def fit_resumable(
    model,
    train_samples,
    codec,
    keypoint_set,
    run_dir,
    epochs,
    batch_size=32,
    val_samples=None,
    augment=None,
    seed=0,
    callbacks=(),
    verbose="auto",
    steps_per_epoch=None,
    dataset_fn=None,
    run_identity=None,
):
    """Train a compiled `model` (PoseEstimator or Distiller) with resume-after-kill.

    Args:
        model: a compiled keras.Model whose train_step takes
            `(images, {"heatmaps", "target_weight"})` batches.
        train_samples: list of PoseSample.
        codec: the HeatmapCodec shared by the data pipeline and the model.
        keypoint_set: KeypointSet (flip pairs for augmentation).
        run_dir: where checkpoints and curves go; an existing run there is resumed.
        epochs: total number of epochs (not additional ones).
        batch_size: global batch size. Default 32.
        val_samples: optional list of PoseSample for validation losses.
        augment: AugmentConfig or None (pipeline default).
        seed: seed of the data order and augmentation. Default 0.
        callbacks: extra Keras callbacks.
        steps_per_epoch: default len(train_samples) // batch_size (at least 1).
        dataset_fn: override of `kdpose_tf.data.pipeline.make_training_data` (tf.data on TensorFlow,
            a `keras.utils.PyDataset` on the other backends) for tests and caching.
        run_identity: JSON-serialisable dict of what else defines the run (model, data spec, learning
            rate, ...; the command line passes its arguments). Saved in state.json with the seed,
            batch size, steps per epoch, sample count and `samples_fingerprint`; a run directory
            started with another identity is not resumed (RunDirError saying what differs).

    Returns:
        dict of learning curves over all epochs, the resumed ones included.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not train_samples:
        raise ValueError("train_samples is empty: nothing to train on")
    dataset_fn = dataset_fn or make_training_data
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = steps_per_epoch or max(1, len(train_samples) // batch_size)

    identity = json.loads(json.dumps(io.jsonable({
        **(run_identity or {}), "seed": seed, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
        "num_samples": len(train_samples), "data_fingerprint": samples_fingerprint(train_samples)})))
    state = read_run_state(run_dir)
    first_epoch, history = 0, {}
    if state is not None:
        first_epoch, history = state["epoch"], state["history"]
        saved = state.get("identity")
        if saved is None:  # written before identities were recorded: its seed and steps per epoch only
            saved = {k: state[k] for k in ("seed", "steps_per_epoch") if state.get(k) is not None}
            check_run_identity(run_dir, saved, {k: identity[k] for k in saved})
        else:
            check_run_identity(run_dir, saved, identity)
        _build_variables(model, train_samples[:1], codec, keypoint_set, dataset_fn)
        try:
            model.load_weights(str(run_dir / CHECKPOINT_NAME))
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunDirError(f"{run_dir / CHECKPOINT_NAME}: cannot restore this checkpoint ({first}); "
                              + _START_FRESH.format(run_dir=run_dir)) from None
        if first_epoch >= epochs:
            return history

    ordered = epoch_ordered_samples(train_samples, seed, first_epoch, epochs, steps_per_epoch, batch_size)
    train_ds = dataset_fn(
        ordered, codec, keypoint_set, batch_size=batch_size, training=True, augment=augment,
        shuffle=False, seed=seed + first_epoch, drop_remainder=True,
    )
    val_ds = None
    if val_samples:
        val_ds = dataset_fn(val_samples, codec, keypoint_set, batch_size=batch_size, training=False, shuffle=False)
    # Optimizer variables created inside the first traced train step make TensorFlow trace it a second
    # time (a tf.function may create variables only on its first trace); built here, it is traced once.
    _build_variables(model, train_samples[:1], codec, keypoint_set, dataset_fn)
    checkpoint = ResumableCheckpoint(
        run_dir, history,
        extra_state={"seed": seed, "steps_per_epoch": steps_per_epoch, "epochs": epochs, "identity": identity},
    )
    model.fit(
        train_ds,
        epochs=epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=val_ds,
        callbacks=[checkpoint, *callbacks],
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles (seeded per epoch); Keras would only warn
    )
    return checkpoint.history


def _build_variables(model, samples, codec, keypoint_set, dataset_fn):
    """Create model and optimizer variables: saved weights can be loaded into them, and the train step
    traced once."""
    if model.built and (model.optimizer is None or model.optimizer.built):
        return
    batch = next(iter(dataset_fn(samples, codec, keypoint_set, batch_size=1, training=False, shuffle=False)))
    images, _ = batch
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow only: mirrored variables need its scope
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if not model.built:
            model(images, training=False)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def average_weights(models, into=None):
    """Uniform weight soup: every variable set to its mean over `models` (Wortsman et al., "Model
    soups", ICML 2022).

    For students fine-tuned from the same starting weights (several seeds of one `kdpose distill`
    recipe), the averaged model is one network of the same size and speed, and shipping it needs no
    seed picked on the test set. It is not a way to gain accuracy: on distilled PP-TinyPose students
    it matched the seeds' mean (`benchmarks/results/distill_gpu_finetune.md`).

    Args:
        models: two or more Keras models with the same variables (paths and shapes).
        into: the model that receives the mean (default: ``models[0]``, changed in place).
            Non-float variables (counters) keep `into`'s values.

    Returns:
        `into` (or ``models[0]``).

    Example:
    >>> import keras, numpy as np
    >>> def net(value):
    ...     m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    ...     m.set_weights([np.full((2, 1), value, "float32"), np.zeros(1, "float32")])
    ...     return m
    >>> soup = average_weights([net(1.0), net(2.0), net(6.0)])
    >>> soup.get_weights()[0].ravel().tolist()
    [3.0, 3.0]
    """
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"average_weights needs two or more models, got {len(models)}")
    into = models[0] if into is None else into

    def table(model):  # variable path without the model's own name (models may be named differently)
        prefix = f"{model.name}/"
        return {v.path[len(prefix):] if v.path.startswith(prefix) else v.path: v for v in model.weights}

    target = table(into)
    tables = []
    for i, m in enumerate(models):
        t = table(m)
        missing, extra = sorted(set(target) - set(t)), sorted(set(t) - set(target))
        if missing or extra:
            raise ValueError(f"average_weights: model {i} ({m.name!r}) has other variables than "
                             f"{into.name!r}: missing {missing[:3]}, unexpected {extra[:3]}")
        for key, v in target.items():
            if tuple(t[key].shape) != tuple(v.shape):
                raise ValueError(f"average_weights: model {i} ({m.name!r}) variable {key} has shape "
                                 f"{tuple(t[key].shape)}, expected {tuple(v.shape)}")
        tables.append(t)
    for key, v in target.items():
        if not np.issubdtype(np.dtype(keras.backend.standardize_dtype(v.dtype)), np.floating):
            continue
        v.assign(np.mean([np.asarray(t[key].numpy(), np.float64) for t in tables], axis=0).astype(v.dtype))
    return into
