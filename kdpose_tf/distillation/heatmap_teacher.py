"""Pretrained heatmap teachers from other runtimes (OpenVINO IR / ONNX, LiteRT), for full heatmap KD.

A top-down heatmap model trained elsewhere (PP-TinyPose, SimpleBaseline, an exported student)
teaches a Keras student through the data, like `keypoint_teacher` but with its whole heatmaps
(the "logits" of Fast Pose Distillation: Zhang, Zhu, Ye, "Fast Human Pose Estimation", CVPR 2019),
not only its joints:

1. `HeatmapTeacher` runs the model with the preprocessing stated in a `TeacherConfig` (input
   size, RGB/BGR, pixel scale, mean/std, NCHW/NHWC in and out, which output, keypoint set) through
   `kdpose_tf.runtimes.heatmap_model.HeatmapModel` (the runtime by file suffix), adding the flip test.
   `HeatmapTeacher.from_preset("pp_tinypose_256x192")` reads the models in ``shared/models``.
2. `attach_teacher_heatmaps` runs it (or an ensemble, `keypoint_teacher.KeypointTeacher`s
   included) once per sample on the un-augmented crop, maps its channels to the student's
   keypoint set by joint name, and stores the heatmaps with the affine map image -> heatmap grid.
3. The data pipeline (`data.pipeline.make_dataset`) resamples them onto the student's heatmap
   grid through the *augmented* crop's affine map (scale, rotation, half-body, flip with the
   left/right channels swapped), exactly as the ground truth is warped, so random augmentation
   stays on and the teacher costs nothing per training step. `Distiller(None, student)` then
   distils from ``"teacher_heatmaps"`` / ``"teacher_weight"`` (1 for joints the teacher has).

Joints the teacher lacks (LSP's neck and head_top for a COCO teacher) get teacher weight 0 and
keep the ground truth only; joints the labels lack (LSPET's unlabelled 12 %, BUFFY's legs) are
taught by the teacher.

Example:
    >>> teacher = HeatmapTeacher.from_preset("pp_tinypose_256x192")                # doctest: +SKIP
    >>> train = attach_teacher_heatmaps(train, teacher, "lsp14")                    # doctest: +SKIP
    >>> distiller = Distiller(None, student, alpha=0.5)                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
from tqdm import tqdm

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.pipeline import make_inference_inputs
from kdpose_tf.data.sample import TEACHER_HEATMAP_MATRIX, TEACHER_HEATMAP_WEIGHT, TEACHER_HEATMAPS
from kdpose_tf.data.transforms import (
    box_to_center_scale,
    compose_affine,
    get_affine_transform,
    invert_affine,
    warp_heatmaps,
)
from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, map_keypoints
from kdpose_tf.keypoints import get_keypoint_set, joint_mapping
from kdpose_tf.runtimes.heatmap_model import HeatmapModel
from kdpose_tf.runtimes.model_config import TeacherConfig
from kdpose_tf.runtimes.pretrained_models import resolve_teacher_config


class HeatmapTeacher:
    """A pretrained top-down heatmap model run through OpenVINO (.xml/.onnx) or LiteRT (.tflite).

    Args:
        config: a `TeacherConfig`.
        num_threads: CPU threads of the runtime. Defaults to None (the runtime's choice).
        batch_size: crops per call (OpenVINO reshapes the model's batch; LiteRT runs one by one).
            Defaults to 16.
        flip_test: average each crop's heatmaps with its mirror image's, flipped back with the
            left/right joints swapped (HRNet's flip test). The teacher runs once per person when its
            targets are cached, so this doubles a one-off cost and none of the student's. Default False.
        scales: multi-scale test: the crop is also zoomed about its centre by each factor (> 1 shows
            the person larger, a tighter box), run, and its heatmaps zoomed back onto the crop's grid
            and averaged with the others (each with the flip test when it is on). Default (1.0,): none.

    Example:
        >>> t = HeatmapTeacher.from_preset("pp_tinypose_128x96")                       # doctest: +SKIP
        >>> hm = t.predict_crops(crops)   # (N, 32, 24, 17) for (N, 128, 96, 3) RGB 0-255 crops  # doctest: +SKIP
    """

    def __init__(self, config, num_threads=None, batch_size=16, flip_test=False, scales=(1.0,)):
        if not isinstance(config, TeacherConfig):
            raise TypeError(f"config must be a TeacherConfig, got {type(config).__name__}")
        if not isinstance(flip_test, bool):
            raise ValueError(f"flip_test must be True or False, got {flip_test!r}")
        self.scales = check_scales(scales)
        self.model = HeatmapModel(config, num_threads=num_threads, batch_size=batch_size)  # the runtime side
        self.config = self.model.config
        self.keypoint_set = get_keypoint_set(config.keypoint_set)
        self.batch_size = batch_size
        self.flip_test = flip_test
        self.heatmap_size = self.model.heatmap_size

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A teacher from a pretrained model's name (`kdpose_tf.runtimes.pretrained_models.PRETRAINED_MODELS`),
        a folder holding ``teacher.json`` (a `TeacherConfig`, its path relative to the folder) or an
        ``.xml`` / ``.onnx`` file."""
        return cls(resolve_teacher_config(preset), **kwargs)

    @property
    def input_size(self):
        """(height, width) of the model input."""
        return self.config.input_size

    @property
    def name(self):
        return self.config.name or os.path.basename(self.config.path)

    def predict_crops(self, crops):
        """Heatmaps (N, h, w, K) float32, teacher's joint order, for RGB crops (N, H, W, 3) in [0, 255]."""
        crops = np.asarray(crops, np.float32)
        h, w = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3):
            raise ValueError(f"{self.name}: crops must be (N, {h}, {w}, 3) RGB, got {crops.shape}")
        total = None
        for s in self.scales:
            hm = self._flip_tested(zoom_crops(crops, s) if s != 1.0 else crops)
            if s != 1.0:
                hm = zoom_heatmaps(hm, 1.0 / s, self.input_size)
            total = hm if total is None else total + hm
        return total / len(self.scales)

    def _flip_tested(self, crops):
        hm = self.model(crops)
        if self.flip_test:
            flipped = self.model(np.ascontiguousarray(crops[:, :, ::-1]))
            hm = HeatmapCodec.flip_test_average(hm, flipped, self.keypoint_set.flip_index)
        return hm

    def predict_fn(self, codec, keypoint_set):
        """A `predict_fn` for `kdpose_tf.evaluation.evaluate`: crops of `codec.input_size` in,
        heatmaps on `codec`'s grid in `keypoint_set`'s order out (joints the teacher lacks: zeros),
        so the teacher is scored by the same evaluator and decoding as any student."""
        return _predict_fn([self], codec, keypoint_set)


def check_scales(scales):
    """`scales` as a tuple of floats, or one ValueError saying what was received."""
    try:
        values = tuple(float(v) for v in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be a sequence of positive numbers, got {scales!r}") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    return values


def _zoom_matrix(centre, factor):
    """2x3 map of a zoom by `factor` about the point `centre` (x, y)."""
    cx, cy = centre
    return np.array([[factor, 0.0, cx * (1 - factor)], [0.0, factor, cy * (1 - factor)]])


def _crop_centre(input_size):
    h, w = input_size
    return (w - 1) / 2.0, (h - 1) / 2.0  # pixel centres at integer coordinates


def zoom_crops(crops, factor):
    """RGB crops (N, H, W, 3) zoomed by `factor` about their centre (bilinear, black outside)."""
    h, w = crops.shape[1:3]
    M = _zoom_matrix(_crop_centre((h, w)), factor)
    return np.stack([cv2.warpAffine(c, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                     for c in np.asarray(crops, np.float32)])


def zoom_heatmaps(heatmaps, factor, input_size):
    """Heatmaps (N, h, w, K) of (H, W) = `input_size` crops zoomed by `factor` about the crop centre, on
    the heatmap grid (heatmap pixel u stands for crop pixel stride * u, the codec's convention):
    `zoom_heatmaps(hm, 1 / s, input_size)` puts the heatmaps of `zoom_crops(crops, s)` back on the crops'
    grid."""
    hm = np.asarray(heatmaps, np.float32)
    h, w = hm.shape[1:3]
    cx, cy = _crop_centre(input_size)
    M = _zoom_matrix((cx * w / input_size[1], cy * h / input_size[0]), factor)
    return np.stack([warp_heatmaps(m, M, m.shape[:2]) for m in hm]) if len(hm) else hm


def map_heatmaps(heatmaps, source, target):
    """Heatmap channels (N, h, w, Ks) mapped by joint name onto `target`: ((N, h, w, Kt), has (Kt,) bool)."""
    source, target = get_keypoint_set(source), get_keypoint_set(target)
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim != 4 or hm.shape[-1] != source.num_keypoints:
        raise ValueError(f"map_heatmaps expects (N, h, w, {source.num_keypoints}) {source.name} heatmaps, "
                         f"got {hm.shape}")
    mapping = joint_mapping(source, target)
    if not mapping:
        raise ValueError(f"Keypoint sets {source.name} and {target.name} share no joint names")
    out = np.zeros((*hm.shape[:3], target.num_keypoints), np.float32)
    has = np.zeros(target.num_keypoints, bool)
    for i, j in mapping.items():
        out[..., j], has[j] = hm[..., i], True
    return out, has


def _teacher_grid(teacher):
    """(input_size, heatmap_size) of a heatmap or keypoint teacher (keypoint teachers: stride 4)."""
    if isinstance(teacher, HeatmapTeacher):
        return teacher.input_size, teacher.heatmap_size
    h, w = teacher.input_size
    return (h, w), (h // 4, w // 4)


def _teacher_heatmaps(teacher, crops, keypoint_set, min_score):
    """One teacher's heatmaps on its own grid, mapped to `keypoint_set`: ((N, h, w, K), weight (N, K))."""
    if isinstance(teacher, HeatmapTeacher):
        hm, has = map_heatmaps(teacher.predict_crops(crops), teacher.keypoint_set, keypoint_set)
        return hm, np.broadcast_to(has.astype(np.float32), (len(crops), keypoint_set.num_keypoints))
    if isinstance(teacher, KeypointTeacher):
        in_size, hm_size = _teacher_grid(teacher)
        codec = HeatmapCodec(in_size, hm_size)
        kp, sc = teacher.predict_crops(crops)
        kp, sc = map_keypoints(kp, sc, teacher.keypoint_set, keypoint_set)
        vis = (sc >= min_score) & np.isfinite(kp).all(axis=-1)
        out = [codec.encode(kp[i], vis[i].astype(np.float64)) for i in range(len(crops))]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
    raise TypeError(f"a teacher must be a HeatmapTeacher or a KeypointTeacher, got {type(teacher).__name__}")


def _region_matrix(center, scale, input_size, heatmap_size):
    """2x3 affine map image pixels -> heatmap pixels of a crop (HRNet convention: hm = crop / stride)."""
    M = get_affine_transform(center, scale, 0.0, input_size)
    stride = np.array([input_size[1] / heatmap_size[1], input_size[0] / heatmap_size[0]], np.float64)
    return M / stride[:, None]


def _ensemble(teachers, crops_by_teacher, matrices_by_teacher, grid_matrices, grid_size, keypoint_set, min_score):
    """Average of the teachers' heatmaps on the common grid (per joint, over teachers that have it).

    `matrices_by_teacher[t]` and `grid_matrices` are (N, 2, 3) affine maps image pixels -> the teacher's
    heatmap grid and -> the common grid; each teacher's heatmaps are resampled by the map between them.
    """
    total = count = None
    for t, crops, matrices in zip(teachers, crops_by_teacher, matrices_by_teacher):
        hm, weight = _teacher_heatmaps(t, crops, keypoint_set, min_score)
        if hm.shape[1:3] != tuple(grid_size) or not np.allclose(matrices, grid_matrices):
            hm = np.stack([warp_heatmaps(hm[i], compose_affine(grid_matrices[i], invert_affine(matrices[i])), grid_size)
                           for i in range(len(crops))]) if len(crops) else hm
        total = hm * weight[:, None, None] if total is None else total + hm * weight[:, None, None]
        count = weight.copy() if count is None else count + weight
    return total / np.maximum(count, 1.0)[:, None, None], (count > 0).astype(np.float32)


def attach_teacher_heatmaps(samples, teachers, keypoint_set, padding=1.25, min_score=0.3, batch_size=64,
                            progress=True):
    """Samples with their teacher heatmaps in `extra` (new `PoseSample` objects; inputs untouched).

    Args:
        samples: `PoseSample`s in `keypoint_set` (unlabelled people, all visibility 0, are fine:
            they train on the teacher alone).
        teachers: a `HeatmapTeacher` or `KeypointTeacher`, or a list of them: an ensemble whose
            heatmaps are averaged per joint over the teachers that have the joint (keypoint
            teachers' joints are rendered as Gaussians where their score reaches `min_score`).
        keypoint_set: the student's keypoint set; channels are mapped by joint name.
        padding: box padding of the teacher crops. Defaults to 1.25 (as evaluation).
        min_score: keypoint teachers' joints under this score are dropped. Defaults to 0.3.
        batch_size: samples per teacher batch. Defaults to 64.
        progress: tqdm progress bar. Defaults to True.

    Returns:
        list of `PoseSample` with `extra["teacher_heatmaps"]` (h, w, K) float16 on the first
        teacher's grid, `extra["teacher_heatmap_matrix"]` (2, 3) image pixels -> that grid, and
        `extra["teacher_heatmap_weight"]` (K,) (1 where some teacher has the joint).
    """
    teachers = list(teachers) if isinstance(teachers, (list, tuple)) else [teachers]
    if not teachers:
        raise ValueError("attach_teacher_heatmaps needs at least one teacher, got an empty list")
    for t in teachers:
        if not isinstance(t, (HeatmapTeacher, KeypointTeacher)):
            raise TypeError(f"a teacher must be a HeatmapTeacher or a KeypointTeacher, got {type(t).__name__}")
    keypoint_set = get_keypoint_set(keypoint_set)
    samples = list(samples)
    for s in samples:
        if s.num_keypoints != keypoint_set.num_keypoints:
            raise ValueError(f"Sample {s.annotation_id} ({s.image_path}) has {s.num_keypoints} joints; "
                             f"keypoint_set {keypoint_set.name} has {keypoint_set.num_keypoints}")
    out = []
    chunks = range(0, len(samples), batch_size)
    names = "+".join(getattr(t, "name", None) or t.path.stem for t in teachers)
    for start in tqdm(chunks, desc=f"teacher {names}", unit="batch", disable=not progress):
        part = samples[start:start + batch_size]
        crops, matrices = [], []
        for t in teachers:
            t_in, t_hm = _teacher_grid(t)
            c, centers, scales = make_inference_inputs(part, t_in, padding)
            crops.append(c)
            matrices.append(np.stack([_region_matrix(centers[i], scales[i], t_in, t_hm) for i in range(len(part))]))
        # the common grid is the first teacher's: its maps are the ones stored with the samples
        hm, weight = _ensemble(teachers, crops, matrices, matrices[0], _teacher_grid(teachers[0])[1], keypoint_set,
                               min_score)
        for i, s in enumerate(part):
            out.append(dataclasses.replace(s, extra={
                **s.extra, TEACHER_HEATMAPS: hm[i].astype(np.float16), TEACHER_HEATMAP_MATRIX: matrices[0][i],
                TEACHER_HEATMAP_WEIGHT: weight[i]}))
    return out


def _predict_fn(teachers, codec, keypoint_set, min_score=0.3):
    keypoint_set = get_keypoint_set(keypoint_set)
    in_h, in_w = codec.input_size

    # The evaluator's crop is the "image" here: the common grid covers the whole crop, and each teacher
    # sees the crop widened to its own aspect ratio. These maps are the same for every batch.
    grid_matrix = _region_matrix((in_w / 2, in_h / 2), (in_w, in_h), codec.input_size, codec.heatmap_size)
    views = []
    for t in teachers:
        t_in, t_hm = _teacher_grid(t)
        c, s = box_to_center_scale([0, 0, in_w, in_h], t_in[1] / t_in[0], 1.0)
        views.append((t_in, get_affine_transform(c, s, 0.0, t_in), _region_matrix(c, s, t_in, t_hm)))

    def predict_fn(images):
        images = np.asarray(images, np.float32)
        n = len(images)
        crops = [np.stack([cv2.warpAffine(im, M, (t_in[1], t_in[0]), flags=cv2.INTER_LINEAR) for im in images])
                 if n else np.zeros((0, *t_in, 3), np.float32) for t_in, M, _ in views]
        matrices = [np.broadcast_to(m, (n, 2, 3)) for _, _, m in views]
        return _ensemble(teachers, crops, matrices, np.broadcast_to(grid_matrix, (n, 2, 3)), codec.heatmap_size,
                         keypoint_set, min_score)[0]

    return predict_fn


def ensemble_predict_fn(teachers, codec, keypoint_set, min_score=0.3):
    """`HeatmapTeacher.predict_fn` for an ensemble (heatmap and keypoint teachers averaged per joint)."""
    return _predict_fn(list(teachers), codec, keypoint_set, min_score)
