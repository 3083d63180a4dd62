"""Black-box keypoint teachers: a pretrained TFLite pose model (MoveNet) teaching a heatmap student.

A keypoint model gives coordinates and scores, not heatmaps, and it is not a Keras model, so it
cannot run inside `Distiller.train_step`. It is run once over the training samples instead:
`attach_teacher_keypoints` crops every sample's box (un-augmented, like evaluation), runs the
teacher, maps its joints to the student's keypoint set by name and stores them in image pixels
in `sample.extra` (`"teacher_keypoints"` (K, 2), `"teacher_scores"` (K,)). The data pipeline
then warps them with the same augmentation as the ground truth and encodes them with the same
`HeatmapCodec` as `"teacher_heatmaps"` plus `"teacher_weight"` (1 where the teacher's score
reaches `min_score`), and `Distiller(teacher=None, student)` distils from them. Unlike cached
teacher heatmaps this keeps random augmentation, and the teacher supervises joints that have
no ground truth (the legs of upper-body sets such as BUFFY) whenever it sees them.

This is the keypoint form of FPD-style heatmap distillation (Zhang, Zhu, Ye, "Fast Human Pose
Estimation", CVPR 2019), with the teacher's
heatmaps rendered from its keypoints (as DWPose renders SimCC/heatmap targets from a teacher).

Supported teacher outputs: MoveNet single-pose, (1, 1, K, 3) rows of (y, x, score) normalised
to the input, in COCO-17 order (`../shared/models/movenet_singlepose_lightning_int8.tflite`).

Example:
    >>> teacher = KeypointTeacher("movenet_singlepose_lightning_int8.tflite")      # doctest: +SKIP
    >>> train = attach_teacher_keypoints(train, teacher, LSP14)                     # doctest: +SKIP
    >>> distiller = Distiller(None, student, alpha=0.5)                             # doctest: +SKIP
    >>> fit_resumable(distiller, train, codec, LSP14, "runs/kd", epochs=10)         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kdpose_tf.data.pipeline import keypoints_to_image, make_inference_inputs
from kdpose_tf.data.sample import TEACHER_KEYPOINTS, TEACHER_KEYS, TEACHER_SCORES
from kdpose_tf.keypoints import COCO17, get_keypoint_set, joint_mapping
from kdpose_tf.runtimes.litert import TFLiteRunner


class KeypointTeacher:
    """A TFLite keypoint model used as a teacher (MoveNet single-pose output layout).

    Args:
        path: the .tflite file. Input (1, H, W, 3) RGB, uint8 0-255 or float; output
            (1, 1, K, 3) of (y, x, score) normalised to [0, 1] of the input.
        keypoint_set: the teacher's joint order. Defaults to COCO-17 (MoveNet).
        num_threads: interpreter threads. Defaults to 1.
        padding: box padding of the crops it sees. Defaults to 1.25 (as evaluation).

    Example:
        >>> t = KeypointTeacher(f"{shared}/models/movenet_singlepose_lightning_int8.tflite")  # doctest: +SKIP
        >>> kp, score = t.predict_crops(crops)   # (N, 17, 2) crop pixels, (N, 17)       # doctest: +SKIP
    """

    def __init__(self, path, keypoint_set=COCO17, num_threads=1, padding=1.25):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Keypoint teacher model not found: {path} (expected a .tflite file)")
        if not (isinstance(padding, (int, float)) and padding > 0):
            raise ValueError(f"padding must be a positive number, got {padding!r}")
        self.keypoint_set = get_keypoint_set(keypoint_set)
        self.runner = TFLiteRunner(path, num_threads=num_threads)
        self.path = path
        self.padding = float(padding)
        out = tuple(int(d) for d in self.runner.output_details["shape"])
        k = self.keypoint_set.num_keypoints
        if out != (1, 1, k, 3):
            raise ValueError(
                f"{path.name}: output shape {out}; a keypoint teacher needs (1, 1, {k}, 3) rows of (y, x, score) "
                f"for the {self.keypoint_set.name} set (MoveNet single-pose layout)"
            )

    @property
    def input_size(self):
        """(height, width) of the teacher's input."""
        return self.runner.input_size

    def predict_crops(self, crops):
        """Keypoints and scores for crops of the teacher's input size.

        Args:
            crops: float32 (N, H, W, 3) RGB in [0, 255], H, W = `input_size`.

        Returns:
            keypoints float64 (N, K, 2) [x, y] in crop pixels, scores float32 (N, K).
        """
        out = np.asarray(self.runner(np.asarray(crops, np.float32)), np.float64).reshape(len(crops), -1, 3)
        h, w = self.input_size
        kp = np.stack([out[..., 1] * w, out[..., 0] * h], axis=-1)
        return kp, out[..., 2].astype(np.float32)

    def predict_samples(self, samples, batch_size=64, progress=True):
        """Keypoints (N, K, 2) in image pixels and scores (N, K) for the samples' boxes (teacher's order)."""
        samples = list(samples)
        kps, scores = [], []
        chunks = range(0, len(samples), batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc=f"teacher {self.path.stem}", unit="batch")
        for start in chunks:
            part = samples[start : start + batch_size]
            crops, centers, scales = make_inference_inputs(part, self.input_size, self.padding)
            kp, sc = self.predict_crops(crops)
            kps.append(keypoints_to_image(kp, centers, scales, self.input_size))
            scores.append(sc)
        if not samples:
            k = self.keypoint_set.num_keypoints
            return np.zeros((0, k, 2)), np.zeros((0, k), np.float32)
        return np.concatenate(kps), np.concatenate(scores)


def map_keypoints(keypoints, scores, source, target):
    """Map teacher joints onto `target` by joint name; joints the teacher lacks get score 0.

    Args:
        keypoints: (N, Ks, 2); scores: (N, Ks) in the `source` order.
        source, target: `KeypointSet`s or names.

    Returns:
        keypoints float64 (N, Kt, 2) (NaN where unknown), scores float32 (N, Kt).
    """
    source, target = get_keypoint_set(source), get_keypoint_set(target)
    keypoints = np.asarray(keypoints, np.float64)
    scores = np.asarray(scores, np.float32)
    if keypoints.shape[:2] != scores.shape or keypoints.shape[1:] != (source.num_keypoints, 2):
        raise ValueError(
            f"map_keypoints expects keypoints (N, {source.num_keypoints}, 2) and scores (N, {source.num_keypoints}) "
            f"for {source.name}; got {keypoints.shape} and {scores.shape}"
        )
    n, kt = keypoints.shape[0], target.num_keypoints
    out_kp = np.full((n, kt, 2), np.nan)
    out_sc = np.zeros((n, kt), np.float32)
    mapping = joint_mapping(source, target)
    if not mapping:
        raise ValueError(f"Keypoint sets {source.name} and {target.name} share no joint names")
    for i, j in mapping.items():
        out_kp[:, j], out_sc[:, j] = keypoints[:, i], scores[:, i]
    return out_kp, out_sc


def attach_teacher_keypoints(samples, teacher, keypoint_set, min_score=0.3, fill_from_ground_truth=False,
                             batch_size=64, progress=True):
    """Samples with the teacher's joints in `extra` (new `PoseSample` objects; inputs untouched).

    Args:
        samples: `PoseSample`s in `keypoint_set`.
        teacher: a `KeypointTeacher`.
        keypoint_set: the students' keypoint set; teacher joints are mapped to it by name.
        min_score: joints the teacher scores lower are dropped (NaN: no KD there). Defaults
            to 0.3 (MoveNet's usual display threshold).
        fill_from_ground_truth: where the teacher gives no joint but the sample is labelled, use
            the label as the teacher's joint (score 0 kept). With FPD's α·KD + (1−α)·GT, joints the
            teacher lacks (MoveNet: neck, head_top) otherwise learn from (1−α) of the ground-truth
            weight only. Defaults to False.
        batch_size: crops per teacher batch. Defaults to 64.
        progress: tqdm progress bar. Defaults to True.

    Returns:
        list of `PoseSample` with `extra["teacher_keypoints"]` (K, 2) image pixels (NaN where the
        teacher has no such joint or scores it under `min_score`) and `extra["teacher_scores"]`
        (K,) in [0, 1].
    """
    if not (isinstance(min_score, (int, float)) and 0.0 <= min_score <= 1.0):
        raise ValueError(f"min_score must be a number in [0, 1], got {min_score!r}")
    keypoint_set = get_keypoint_set(keypoint_set)
    samples = list(samples)
    for s in samples:
        if s.num_keypoints != keypoint_set.num_keypoints:
            raise ValueError(
                f"Sample {s.annotation_id} ({s.image_path}) has {s.num_keypoints} joints; "
                f"keypoint_set {keypoint_set.name} has {keypoint_set.num_keypoints}"
            )
    kp, sc = teacher.predict_samples(samples, batch_size=batch_size, progress=progress)
    kp, sc = map_keypoints(kp, sc, teacher.keypoint_set, keypoint_set)
    kp[sc < min_score] = np.nan
    out = [
        dataclasses.replace(s, extra={**s.extra, TEACHER_KEYPOINTS: kp[i].astype(np.float32), TEACHER_SCORES: sc[i]})
        for i, s in enumerate(samples)
    ]
    return fill_from_labels(out) if fill_from_ground_truth else out


def fill_from_labels(samples):
    """Samples whose missing teacher joints are replaced by their labelled joints (new objects)."""
    out = []
    for s in samples:
        if TEACHER_KEYPOINTS not in s.extra:
            raise ValueError(f"Sample {s.annotation_id} ({s.image_path}) has no teacher keypoints to fill")
        t = np.array(s.extra[TEACHER_KEYPOINTS], np.float32)
        fill = ~np.isfinite(t).all(axis=1) & (s.visibility > 0)
        t[fill] = s.keypoints[fill]
        out.append(dataclasses.replace(s, extra={**s.extra, TEACHER_KEYPOINTS: t}))
    return out


def strip_teacher_keypoints(samples):
    """Samples without any attached teacher targets, joints or heatmaps (e.g. for DWPose stage 2,
    whose teacher is the student itself)."""
    return [dataclasses.replace(s, extra={k: v for k, v in s.extra.items() if k not in TEACHER_KEYS}) for s in samples]


def teacher_predict_fn(teacher, codec, keypoint_set, min_score=0.0):
    """A `predict_fn` for `kdpose_tf.evaluation.evaluate`: the teacher's joints rendered as heatmaps.

    Crops of the codec's input size (the student's) are resized to the teacher's input, its
    joints are scaled back, mapped to `keypoint_set` by name and encoded by `codec` (joints the
    teacher lacks, or scores under `min_score`, give empty heatmaps), so the teacher is scored
    exactly as the student sees it.
    """
    import cv2

    th, tw = teacher.input_size
    ih, iw = codec.input_size

    def predict_fn(images):
        images = np.asarray(images, np.float32)
        crops = np.stack([cv2.resize(im, (tw, th), interpolation=cv2.INTER_LINEAR) for im in images])
        kp, sc = teacher.predict_crops(crops)
        kp, sc = map_keypoints(kp * np.array([iw / tw, ih / th]), sc, teacher.keypoint_set, keypoint_set)
        vis = np.where(sc >= min_score, 2.0, 0.0) * np.all(np.isfinite(kp), axis=-1)
        return np.stack([codec.encode(kp[i], vis[i])[0] for i in range(len(images))])

    return predict_fn
