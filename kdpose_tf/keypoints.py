"""Keypoint sets as data: joint names, left/right flip pairs, skeleton edges, OKS sigmas.

A `KeypointSet` is everything the data pipeline, the codec (flip test), the metrics
(OKS sigmas, PCK normalisers) and the exporters (sidecar JSON) need to know about a
layout of joints. The sets shipped here are COCO-17, MPII-16 and LSP-14.

Example:
>>> from kdpose_tf.keypoints import COCO17
>>> COCO17.num_keypoints, COCO17.flip_index[:3]
(17, [0, 2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdpose_tf.errors import DataError


@dataclass(frozen=True)
class KeypointSet:
    """A named layout of K joints.

    Args:
        name: short identifier stored in samples, presets and sidecars (e.g. "coco17").
        names: the K joint names, in order.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        skeleton: (a, b) index pairs drawn as limbs.
        sigmas: per-joint OKS sigmas (COCO definition), or None where undefined.
        torso: (shoulder_a, hip_b) index pair whose distance normalises PCK@0.2, or None.
        head: (a, b) index pair whose distance is the head-segment size for PCKh, or None.
    """

    name: str
    names: tuple
    flip_pairs: tuple
    skeleton: tuple
    sigmas: tuple | None = None
    torso: tuple | None = None
    head: tuple | None = None
    _flip_index: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        k = len(self.names)
        if len(set(self.names)) != k:
            raise ValueError(f"KeypointSet {self.name!r}: joint names must be unique, got {self.names}")
        index = list(range(k))
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"KeypointSet {self.name!r}: flip pair {(a, b)} out of range for {k} joints")
            index[a], index[b] = b, a
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"KeypointSet {self.name!r}: skeleton edge {(a, b)} out of range for {k} joints")
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"KeypointSet {self.name!r}: expected {k} sigmas, got {len(self.sigmas)}")
        object.__setattr__(self, "_flip_index", tuple(index))

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def flip_index(self) -> list:
        """Permutation p such that flipped_joints = joints[p]."""
        return list(self._flip_index)

    def index(self, joint_name: str) -> int:
        return self.names.index(joint_name)

    def sigmas_array(self) -> np.ndarray:
        if self.sigmas is None:
            raise ValueError(f"KeypointSet {self.name!r} has no OKS sigmas defined")
        return np.asarray(self.sigmas, dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "names": list(self.names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(e) for e in self.skeleton],
            "sigmas": None if self.sigmas is None else list(self.sigmas),
        }


COCO17 = KeypointSet(
    name="coco17",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    # pycocotools' COCOeval.kpt_oks_sigmas
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    torso=(6, 11),  # right shoulder to left hip
    head=None,
)

MPII16 = KeypointSet(
    name="mpii16",
    names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    sigmas=None,
    torso=(12, 3),
    head=(8, 9),
)

LSP14 = KeypointSet(
    name="lsp14",
    names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
        "neck", "head_top",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    skeleton=(
        (0, 1), (1, 2), (3, 4), (4, 5), (2, 3), (2, 8), (3, 9), (8, 9),
        (6, 7), (7, 8), (9, 10), (10, 11), (8, 12), (9, 12), (12, 13),
    ),
    sigmas=None,
    torso=(8, 3),  # right shoulder to left hip (PCK@0.2 torso rule)
    head=(12, 13),
)

# CrowdPose (Li et al., CVPR 2019): 14 joints. The file's names "head" / "neck" are the top of the
# head and the neck, so they are named like LSP14's to map by name (`joint_mapping`).
# Sigmas: CrowdPose's evaluation (COCO's limb sigmas, 0.079 for head and neck).
CROWDPOSE14 = KeypointSet(
    name="crowdpose14",
    names=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head_top", "neck",
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    skeleton=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7),
        (6, 8), (8, 10), (7, 9), (9, 11),
    ),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079),
    torso=(1, 6),
    head=(12, 13),
)
KEYPOINT_SETS = {ks.name: ks for ks in (COCO17, MPII16, LSP14, CROWDPOSE14)}


def get_keypoint_set(name_or_set, path=None) -> KeypointSet:
    """Return a KeypointSet given itself or its name; clear error for an unknown name.

    Args:
        name_or_set: a `KeypointSet` or one of the names in `KEYPOINT_SETS`.
        path: the file that named the set, if any: the error (a `DataError`, which is a
            `ValueError`) then names it and the field "keypoint_set".

    >>> get_keypoint_set("mpii16").num_keypoints
    16
    """
    if isinstance(name_or_set, KeypointSet):
        return name_or_set
    try:
        return KEYPOINT_SETS[name_or_set]
    except (KeyError, TypeError):
        raise DataError(
            f"Unknown keypoint set {name_or_set!r}; expected one of {sorted(KEYPOINT_SETS)} "
            "or a kdpose_tf.keypoints.KeypointSet",
            path=path, field=None if path is None else "keypoint_set",
        ) from None


def joint_mapping(source: KeypointSet, target: KeypointSet) -> dict:
    """Map joint indices of `source` onto `target` by joint name: {source_index: target_index}."""
    return {i: target.names.index(n) for i, n in enumerate(source.names) if n in target.names}
