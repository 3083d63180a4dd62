"""`PoseSample`: one annotated person, the unit every reader produces and every pipeline consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# `PoseSample.extra` keys of a keypoint teacher's joints (kdpose_tf.distillation.keypoint_teacher),
# read by the data pipeline.
TEACHER_KEYPOINTS = "teacher_keypoints"
TEACHER_SCORES = "teacher_scores"
# ... and of a heatmap teacher's heatmaps (kdpose_tf.distillation.heatmap_teacher): (h, w, K) float16
# heatmaps on the un-augmented teacher crop, the (2, 3) affine map image pixels -> their grid, and
# the (K,) weight (1 where a teacher has the joint).
TEACHER_HEATMAPS = "teacher_heatmaps"
TEACHER_HEATMAP_MATRIX = "teacher_heatmap_matrix"
TEACHER_HEATMAP_WEIGHT = "teacher_heatmap_weight"
TEACHER_KEYS = (TEACHER_KEYPOINTS, TEACHER_SCORES, TEACHER_HEATMAPS, TEACHER_HEATMAP_MATRIX, TEACHER_HEATMAP_WEIGHT)


@dataclass
class PoseSample:
    """One top-down sample: a person box and its joints in one image.

    Attributes:
        image_path: absolute path of the image file.
        bbox: (4,) float32 person box [x, y, w, h] in image pixels (COCO convention).
        keypoints: (K, 2) float32 joint coordinates [x, y] in image pixels.
        visibility: (K,) float32; 0 = not labelled (target weight 0), 1 = labelled but occluded,
            2 = labelled and visible (COCO convention). Readers of sets without an occlusion flag use 2.
        keypoint_set: name of the `KeypointSet` (e.g. "coco17").
        image_id: id of the image in its dataset (int or str).
        annotation_id: id of the annotation (int or str), unique within a dataset.
        image_size: (width, height) of the image when known, else None.
        area: segmentation area for OKS (COCO), else None (box area is used then).
        head_size: head-segment length in pixels for PCKh (MPII), else None.
        extra: reader-specific fields (e.g. dataset name, split).
    """

    image_path: str
    bbox: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray
    keypoint_set: str
    image_id: object = None
    annotation_id: object = None
    image_size: tuple | None = None
    area: float | None = None
    head_size: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.bbox = np.asarray(self.bbox, dtype=np.float32).reshape(4)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        self.visibility = np.asarray(self.visibility, dtype=np.float32).reshape(-1)
        if self.keypoints.shape[0] != self.visibility.shape[0]:
            raise ValueError(
                f"PoseSample {self.annotation_id}: {self.keypoints.shape[0]} keypoints but "
                f"{self.visibility.shape[0]} visibility flags"
            )

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def target_weight(self) -> np.ndarray:
        """(K,) float32: 1 for labelled joints, 0 otherwise."""
        return (self.visibility > 0).astype(np.float32)
