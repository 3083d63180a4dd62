"""Training batches for top-down heatmap models, plus inference crops and their inverse map.

A list of `PoseSample`s becomes batches
`(images float32 (B, H, W, 3) in [0, 255], {"heatmaps": (B, h, w, K), "target_weight": (B, K)})`.
Each element is made by one NumPy/OpenCV worker (`PoseExamples`: read image, affine crop,
augmentation, heatmap encoding, teacher targets warped like the labels), used by two data paths:

- `make_dataset`: a `tf.data.Dataset` (the worker in `tf.numpy_function`, mapped in parallel,
  static shapes); needs TensorFlow.
- `PoseBatches`: a `keras.utils.PyDataset` (the worker on a thread pool per batch); needs no
  TensorFlow, for Keras on JAX or PyTorch.

`make_training_data` picks the one for the current Keras backend. Both are deterministic for a
fixed `seed`: each element's generator is seeded with (seed, position in the stream, sample
index), so without shuffling both paths yield the same batches.

Example:
>>> from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
>>> ds = make_dataset(samples, HeatmapCodec((256, 192)), "coco17", batch_size=8, seed=0)  # doctest: +SKIP
>>> images, targets = next(iter(ds))  # doctest: +SKIP
>>> images.shape, targets["heatmaps"].shape  # doctest: +SKIP
(TensorShape([8, 256, 192, 3]), TensorShape([8, 64, 48, 17]))
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from kdpose_tf.data import images
from kdpose_tf.data.transforms import (
    AugmentConfig,
    affine_points,
    augmented_crop,
    box_to_center_scale,
    compose_affine,
    crop_person,
    get_affine_transform,
    invert_affine,
    warp_heatmaps,
)
from kdpose_tf.data.sample import TEACHER_HEATMAP_MATRIX, TEACHER_HEATMAP_WEIGHT, TEACHER_HEATMAPS, TEACHER_KEYPOINTS
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import get_keypoint_set


def _read_image(path):
    return images.read_image(path)


class _ImageSource:
    """read_image with an optional thread-safe in-memory cache."""

    def __init__(self, cache):
        self.cache = {} if cache else None
        self.lock = threading.Lock()

    def __call__(self, path):
        if self.cache is None:
            return _read_image(path)
        with self.lock:
            img = self.cache.get(path)
        if img is None:
            img = _read_image(path)
            with self.lock:
                self.cache[path] = img
        return img


def _check_samples(samples, keypoint_set):
    if len(samples) == 0:
        raise ValueError("make_dataset needs at least one PoseSample, got an empty list")
    k = keypoint_set.num_keypoints
    for s in samples:
        if s.num_keypoints != k:
            raise DataError(
                f"sample has {s.num_keypoints} keypoints but keypoint set {keypoint_set.name!r} has {k}",
                path=s.image_path,
                field="keypoints",
                annotation_id=s.annotation_id,
            )
    missing = sorted({s.image_path for s in samples if not os.path.isfile(s.image_path)})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"image file not found{more}", path=missing[0], field="image_path")


class PoseExamples:
    """The per-element work of both data paths: `examples(position, index)` -> NumPy arrays.

    Reads sample `index`'s image, crops and augments it with a generator seeded by
    (seed, position, index), encodes the heatmaps and, when the samples carry a teacher's joints
    or heatmaps, warps and flips those like the labels.

    Args:
        samples: list of `PoseSample` (checked: joint count, image files).
        codec: `HeatmapCodec`.
        keypoint_set: `KeypointSet` or its name.
        augment: `AugmentConfig`.
        seed: int seed.
        cache_images: keep decoded images in memory. Default False.

    Returns (of a call): image float32 (H, W, 3), heatmaps (h, w, K), target weight (K,), then
    with a teacher its heatmaps (h, w, K) and weight (K,); `targets(outs)` names them.
    """

    def __init__(self, samples, codec, keypoint_set, augment, seed, cache_images=False):
        keypoint_set = get_keypoint_set(keypoint_set)
        samples = list(samples)
        _check_samples(samples, keypoint_set)
        self.codec, self.keypoint_set, self.augment, self.seed = codec, keypoint_set, augment, int(seed)
        self.input_size, self.heatmap_size = tuple(codec.input_size), tuple(codec.heatmap_size)
        self.num_keypoints = keypoint_set.num_keypoints
        self.source = _ImageSource(cache_images)
        self.paths = [s.image_path for s in samples]
        self.boxes = np.stack([s.bbox for s in samples]).astype(np.float64)
        self.kps = np.stack([s.keypoints for s in samples]).astype(np.float64)
        self.viss = np.stack([s.visibility for s in samples]).astype(np.float64)
        self.ann_ids = [s.annotation_id for s in samples]
        k = self.num_keypoints
        self.teacher_kps = _teacher_keypoints(samples, k)
        self.teacher_hms = _teacher_heatmaps(samples, k)
        if self.teacher_kps is not None and self.teacher_hms is not None:
            raise DataError("samples carry both teacher keypoints and teacher heatmaps; attach one kind (an ensemble "
                            "of keypoint and heatmap teachers goes through attach_teacher_heatmaps)",
                            path=samples[0].image_path, annotation_id=samples[0].annotation_id)
        self.has_teacher = self.teacher_kps is not None or self.teacher_hms is not None
        self.num_outputs = 5 if self.has_teacher else 3
        # student heatmap pixel u -> its input-crop pixel stride·u (the codec's convention)
        self.hm_to_crop = np.array([[codec.stride[0], 0.0, 0.0], [0.0, codec.stride[1], 0.0]])
        self.flip_index = np.asarray(keypoint_set.flip_index)

    def __len__(self):
        return len(self.paths)

    def _teacher_targets(self, index, out):
        if self.teacher_kps is not None:
            return self.codec.encode(out[3], np.isfinite(out[3]).all(axis=1).astype(np.float64))
        t_hm, t_matrix, t_weight = self.teacher_hms
        crop_matrix, flipped = out[-2], out[-1]
        # student heatmap pixel -> crop -> image -> teacher grid, then resampled onto the student grid
        to_teacher = compose_affine(t_matrix[index], compose_affine(invert_affine(crop_matrix), self.hm_to_crop))
        hm = warp_heatmaps(t_hm[index].astype(np.float32), invert_affine(to_teacher), self.heatmap_size)
        weight = t_weight[index]
        if flipped:  # the flip is in crop_matrix; left/right channels swap like the labels
            hm, weight = hm[..., self.flip_index], weight[self.flip_index]
        return np.ascontiguousarray(hm), weight.astype(np.float32)

    def __call__(self, position, index):
        position, index = int(position), int(index)
        image = self.source(self.paths[index])
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            raise DataError("read_image returned no (H, W, 3) image", path=self.paths[index],
                            annotation_id=self.ann_ids[index])
        rng = np.random.default_rng([self.seed, position, index])
        extra = None if self.teacher_kps is None else self.teacher_kps[index]
        out = augmented_crop(
            image, self.kps[index], self.viss[index], self.boxes[index], self.input_size, self.keypoint_set,
            self.augment, rng, extra_keypoints=extra, return_transform=self.teacher_hms is not None,
        )
        heatmaps, weight = self.codec.encode(out[1], out[2])
        if not self.has_teacher:
            return out[0].astype(np.float32), heatmaps, weight
        return (out[0].astype(np.float32), heatmaps, weight, *self._teacher_targets(index, out))

    def targets(self, outs):
        """`(images, {"heatmaps", "target_weight"[, "teacher_heatmaps", "teacher_weight"]})` from a call's
        outputs (or the same outputs batched)."""
        targets = {"heatmaps": outs[1], "target_weight": outs[2]}
        if self.has_teacher:
            targets.update(teacher_heatmaps=outs[3], teacher_weight=outs[4])
        return outs[0], targets


def _example_args(keypoint_set, batch_size, training, augment, seed):
    """Checked arguments shared by both data paths: (keypoint_set, augment, seed)."""
    keypoint_set = get_keypoint_set(keypoint_set)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
    if augment is None:
        augment = AugmentConfig() if training else AugmentConfig.none()
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
    return keypoint_set, augment, int(seed)


def make_dataset(
    samples,
    codec,
    keypoint_set,
    batch_size=32,
    training=True,
    augment=None,
    shuffle=True,
    seed=None,
    num_parallel_calls=None,
    repeat=False,
    drop_remainder=False,
    cache_images=False,
):
    """Build the training / validation `tf.data.Dataset` (needs TensorFlow; see `PoseBatches` otherwise).

    Args:
        samples: list of `PoseSample`.
        codec: `HeatmapCodec` (input size, heatmap size, σ).
        keypoint_set: `KeypointSet` or its name; must match the samples' joint count.
        batch_size: batch size. Default 32.
        training: augment (and shuffle) when True. Default True.
        augment: `AugmentConfig`; default None = `AugmentConfig()` when training, else `AugmentConfig.none()`.
        shuffle: shuffle samples every epoch (only when training). Default True.
        seed: int seed for shuffling and augmentation; None = a random one.
        num_parallel_calls: parallelism of the map. Default None = AUTOTUNE.
        repeat: repeat forever. Default False.
        drop_remainder: drop the last partial batch. Default False.
        cache_images: keep decoded images in memory after first use. Default False.

    Returns:
        Dataset of `(images, {"heatmaps", "target_weight"})` with static shapes. When the samples
        carry a keypoint teacher's joints (`extra["teacher_keypoints"]`, see
        `kdpose_tf.distillation.keypoint_teacher`), they get the same warp and flip and the
        targets also hold `"teacher_heatmaps"` (h, w, K) and `"teacher_weight"` (K,) (0 where
        the teacher gave no joint).

    Raises:
        DataError: naming the file, for a missing image (at construction) or an unreadable one
            (while iterating; tf.data re-raises it as a tf error whose message holds the DataError's).
    """
    import tensorflow as tf  # the tf.data path only; PoseBatches needs no TensorFlow

    keypoint_set, augment, seed = _example_args(keypoint_set, batch_size, training, augment, seed)
    examples = PoseExamples(samples, codec, keypoint_set, augment, seed, cache_images)
    in_h, in_w = examples.input_size
    hm_h, hm_w = examples.heatmap_size
    k = examples.num_keypoints

    def map_fn(position, index):
        outs = tf.numpy_function(examples, [position, index], [tf.float32] * examples.num_outputs, stateful=False)
        outs[0].set_shape((in_h, in_w, 3))
        for hm in outs[1::2]:
            hm.set_shape((hm_h, hm_w, k))
        for w in outs[2::2]:
            w.set_shape((k,))
        return examples.targets(outs)

    n = len(examples)
    ds = tf.data.Dataset.range(n)
    if training and shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate()
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = ds.map(map_fn, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


class PoseBatches(keras.utils.PyDataset):
    """The batches of `make_dataset` as a `keras.utils.PyDataset`: the same `PoseExamples` worker,
    no TensorFlow (Keras on JAX or PyTorch trains from it with `fit`).

    Batch i holds the samples at stream positions i·B .. i·B + B − 1, so without shuffling it
    equals `make_dataset`'s batch i (same seed, same augmentation). With `training` and
    `shuffle`, the order is a permutation drawn from (seed, epoch), redrawn at each epoch's end.
    The elements of a batch are made on a thread pool (OpenCV releases the GIL); Keras' own
    `workers` stays 1, so `fit(steps_per_epoch=...)` can read one long stream across epochs.

    Args:
        samples, codec, keypoint_set, batch_size, training, augment, shuffle, seed,
        drop_remainder, cache_images: as in `make_dataset`.
        num_threads: threads making one batch. Default None = min(batch_size, CPU count).
    """

    def __init__(self, samples, codec, keypoint_set, batch_size=32, training=True, augment=None, shuffle=True,
                 seed=None, drop_remainder=False, cache_images=False, num_threads=None):
        super().__init__()
        keypoint_set, augment, seed = _example_args(keypoint_set, batch_size, training, augment, seed)
        self.examples = PoseExamples(samples, codec, keypoint_set, augment, seed, cache_images)
        self.batch_size, self.drop_remainder = int(batch_size), bool(drop_remainder)
        self.shuffle = bool(training and shuffle)
        self.seed, self.epoch = seed, 0
        self.num_threads = num_threads or max(1, min(self.batch_size, os.cpu_count() or 1))
        self._pool = None
        self._draw_order()

    def _draw_order(self):
        n = len(self.examples)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self):
        n = len(self.examples)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        positions = range(i * self.batch_size, min((i + 1) * self.batch_size, len(self.examples)))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="pose_batches")
        outs = list(self._pool.map(lambda p: self.examples(p, self.order[p]), positions))
        batch = [np.stack(column).astype(np.float32, copy=False) for column in zip(*outs)]
        return self.examples.targets(batch)

    def on_epoch_end(self):
        if self.shuffle:
            self.epoch += 1
            self._draw_order()

    def __getstate__(self):  # the thread pool stays with its process
        state = dict(self.__dict__)
        state["_pool"] = None
        return state


def make_training_data(samples, codec, keypoint_set, **kwargs):
    """`make_dataset` (tf.data) on the TensorFlow backend, `PoseBatches` on the others; same arguments
    (those of `make_dataset` that `PoseBatches` takes)."""
    if keras.backend.backend() == "tensorflow":
        return make_dataset(samples, codec, keypoint_set, **kwargs)
    return PoseBatches(samples, codec, keypoint_set, **kwargs)


def _carried_by_all(samples, key, what):
    """True when every sample's `extra` holds `key`, False when none does; DataError naming the first
    sample without it when only some do."""
    has = [key in s.extra for s in samples]
    if not any(has):
        return False
    if not all(has):
        s = samples[has.index(False)]
        raise DataError(f"{sum(has)} of {len(samples)} samples carry {what} (extra['{key}']) but this one does not; "
                        "attach them to all samples or to none", path=s.image_path, annotation_id=s.annotation_id)
    return True


def _teacher_keypoints(samples, k):
    """(N, K, 2) keypoint-teacher joints when every sample carries them, None when none does."""
    if not _carried_by_all(samples, TEACHER_KEYPOINTS, "teacher keypoints"):
        return None
    out = np.full((len(samples), k, 2), np.nan)
    for i, s in enumerate(samples):
        t = np.asarray(s.extra[TEACHER_KEYPOINTS], np.float64)
        if t.shape != (k, 2):
            raise DataError(
                f"extra['teacher_keypoints'] has shape {t.shape}; expected ({k}, 2)",
                path=s.image_path, annotation_id=s.annotation_id,
            )
        out[i] = t
    return out


def _teacher_heatmaps(samples, k):
    """((N, h, w, K) float16, (N, 2, 3), (N, K)) heatmap-teacher data when every sample carries it, else None."""
    if not _carried_by_all(samples, TEACHER_HEATMAPS, "teacher heatmaps"):
        return None
    shape = np.shape(samples[0].extra[TEACHER_HEATMAPS])
    for s in samples:
        hm = s.extra[TEACHER_HEATMAPS]
        if np.ndim(hm) != 3 or np.shape(hm)[2] != k or np.shape(hm) != shape:
            raise DataError(f"extra['teacher_heatmaps'] has shape {np.shape(hm)}; expected {shape[:2] + (k,)} "
                            "(one grid for all samples, one channel per joint)",
                            path=s.image_path, annotation_id=s.annotation_id)
        if np.shape(s.extra.get(TEACHER_HEATMAP_MATRIX)) != (2, 3) or \
                np.shape(s.extra.get(TEACHER_HEATMAP_WEIGHT)) != (k,):
            raise DataError(f"teacher heatmaps need extra['teacher_heatmap_matrix'] (2, 3) and "
                            f"extra['teacher_heatmap_weight'] ({k},)", path=s.image_path,
                            annotation_id=s.annotation_id)
    return (np.stack([s.extra[TEACHER_HEATMAPS] for s in samples]).astype(np.float16),
            np.stack([s.extra[TEACHER_HEATMAP_MATRIX] for s in samples]).astype(np.float64),
            np.stack([s.extra[TEACHER_HEATMAP_WEIGHT] for s in samples]).astype(np.float32))


def make_inference_inputs(samples, input_size, padding=1.25):
    """Un-augmented crops for evaluation / prediction.

    Args:
        samples: list of `PoseSample` (their boxes are used).
        input_size: (H, W) of the model input.
        padding: box padding. Default 1.25.

    Returns:
        images float32 (N, H, W, 3) in [0, 255], centers float64 (N, 2), scales float64 (N, 2) [w, h].
    """
    in_h, in_w = (int(v) for v in input_size)
    samples = list(samples)
    images = np.zeros((len(samples), in_h, in_w, 3), np.float32)
    centers = np.zeros((len(samples), 2), np.float64)
    scales = np.zeros((len(samples), 2), np.float64)
    last_path, last_image = None, None
    for i, s in enumerate(samples):
        if s.image_path != last_path:
            if not os.path.isfile(s.image_path):
                raise DataError("image file not found", path=s.image_path, annotation_id=s.annotation_id)
            last_path, last_image = s.image_path, _read_image(s.image_path)
        centers[i], scales[i] = box_to_center_scale(s.bbox, in_w / in_h, padding)
        images[i] = crop_person(last_image, centers[i], scales[i], 0.0, (in_h, in_w))
    return images, centers, scales


def keypoints_to_image(keypoints_crop, centers, scales, input_size):
    """Map keypoints (N, K, 2) from input-crop pixels back to image pixels (inverse affine, no rotation)."""
    kp = np.asarray(keypoints_crop, np.float64)
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    scales = np.asarray(scales, np.float64).reshape(-1, 2)
    if kp.ndim != 3 or kp.shape[-1] != 2 or not (kp.shape[0] == centers.shape[0] == scales.shape[0]):
        raise ValueError(
            f"keypoints_to_image expects keypoints (N, K, 2), centers (N, 2), scales (N, 2); got "
            f"{kp.shape}, {centers.shape}, {scales.shape}"
        )
    out = np.empty_like(kp)
    for i in range(kp.shape[0]):
        M = get_affine_transform(centers[i], scales[i], 0.0, input_size, inverse=True)
        out[i] = affine_points(kp[i], M)
    return out
