"""Percentage of Correct Keypoints: PCK (torso-normalised, LSP / PARSE) and PCKh (head-normalised, MPII).

A joint counts as correct when its distance to the ground truth is at most
`threshold × normalizer` of its sample (inclusive, `d <= t·n`). Only labelled joints
(`visible` true) of samples with a positive, finite normalizer are counted; samples whose
normalizer is missing (e.g. an unlabelled torso joint) are excluded and reported in `excluded`.

- PCK@0.2 (Johnson & Everingham, LSP): normalizer = torso size, the distance between the
  keypoint set's `torso` pair (right shoulder to left hip for LSP-14 and COCO-17).
- PCKh@0.5 (Andriluka et al., MPII): normalizer = head size. `head_normalizer` uses
  `PoseSample.head_size` when a reader stored it (MPII: 0.6 × head-box diagonal, the official
  rule) and otherwise the length of the set's `head` segment (upper neck to head top for MPII-16,
  neck to head top for LSP-14). The two differ a little; results state which was used.

Example:
>>> import numpy as np
>>> gt = np.zeros((1, 2, 2)); pred = np.array([[[3.0, 4.0], [0.0, 20.0]]])
>>> r = pck(pred, gt, np.ones((1, 2), bool), normalizer=np.array([50.0]), threshold=0.2)
>>> r["per_joint"].tolist(), r["mean"]
([1.0, 0.0], 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdpose_tf.keypoints import get_keypoint_set


def _as_points(name, array, n=None, k=None):
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (N, K, 2), got {array.shape}")
    if (n is not None and array.shape[0] != n) or (k is not None and array.shape[1] != k):
        raise ValueError(f"{name} must have shape ({n}, {k}, 2) to match the other inputs, got {array.shape}")
    return array


def pck(pred, gt, visible, normalizer, threshold=0.2, joints=None) -> dict:
    """Percentage of correct keypoints.

    Args:
        pred: (N, K, 2) predicted joints (x, y), image pixels.
        gt: (N, K, 2) ground-truth joints, same frame.
        visible: (N, K) bool (or 0/1/2 visibility): which ground-truth joints are labelled.
        normalizer: (N,) per-sample length (torso size, head size, ...). Samples with a
            normalizer that is not positive and finite are excluded.
        threshold: fraction of the normalizer within which a joint is correct. Defaults to 0.2.
        joints: optional indices of the joints that enter `mean` (e.g. MPII's total leaves out
            pelvis and thorax). Defaults to all joints. `per_joint` always covers all K joints.

    Returns:
        dict with `per_joint` (K,) float array (NaN where a joint was never counted), `mean`
        (correct / counted over the selected joints, NaN when nothing was counted), `count`
        (number of counted joints), `per_joint_count` (K,), `excluded` (number of samples left
        out for lack of a normalizer), `threshold`, and the (N, K) bool matrices `correct` and
        `counted` behind them (for paired comparisons of two models on the same samples).
    """
    gt = _as_points("gt", gt)
    n, k = gt.shape[:2]
    pred = _as_points("pred", pred, n, k)
    visible = np.asarray(visible)
    if visible.shape != (n, k):
        raise ValueError(f"visible must have shape ({n}, {k}), got {visible.shape}")
    normalizer = np.asarray(normalizer, dtype=np.float64).reshape(-1)
    if normalizer.shape != (n,):
        raise ValueError(f"normalizer must have shape ({n},), got {normalizer.shape}")
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")

    valid_sample = np.isfinite(normalizer) & (normalizer > 0)
    counted = (visible > 0) & valid_sample[:, None] & np.isfinite(gt).all(-1)
    dist = np.linalg.norm(pred - gt, axis=-1)
    dist = np.where(np.isfinite(dist), dist, np.inf)  # a NaN prediction is wrong, not skipped
    limit = threshold * np.where(valid_sample, normalizer, 0.0)
    correct = counted & (dist <= limit[:, None])

    per_joint_count = counted.sum(0)
    per_joint_correct = correct.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(per_joint_count > 0, per_joint_correct / np.maximum(per_joint_count, 1), np.nan)
    selected = np.arange(k) if joints is None else np.asarray(list(joints), dtype=int)
    if selected.size and (selected.min() < 0 or selected.max() >= k):
        raise ValueError(f"joints must be indices in [0, {k}), got {list(selected)}")
    total = int(per_joint_count[selected].sum())
    mean = float(per_joint_correct[selected].sum() / total) if total else float("nan")
    return {
        "per_joint": per_joint.astype(np.float64),
        "mean": mean,
        "count": total,
        "per_joint_count": per_joint_count.astype(np.int64),
        "excluded": int((~valid_sample).sum()),
        "threshold": float(threshold),
        "correct": correct,
        "counted": counted,
    }


def _pair_length(gt, visible, pair, what, keypoint_set):
    if pair is None:
        raise ValueError(f"keypoint set {keypoint_set.name!r} defines no {what} pair; expected KeypointSet.{what}")
    a, b = pair
    gt = np.asarray(gt, dtype=np.float64)
    length = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    if visible is not None:
        visible = np.asarray(visible)
        labelled = (visible[:, a] > 0) & (visible[:, b] > 0)
        length = np.where(labelled, length, 0.0)
    return np.where(np.isfinite(length), length, 0.0)


def torso_normalizer(gt, keypoint_set, visible=None) -> np.ndarray:
    """Torso size per sample: distance between the set's `torso` pair (PCK@0.2 rule).

    Args:
        gt: (N, K, 2) ground-truth joints.
        keypoint_set: KeypointSet or its name; `keypoint_set.torso` gives the pair
            (right shoulder, left hip for LSP-14 and COCO-17).
        visible: optional (N, K) labelled flags; samples with an unlabelled torso joint get 0
            and are then excluded (and counted) by `pck`.

    Returns:
        (N,) float64 torso sizes, 0 where undefined.
    """
    ks = get_keypoint_set(keypoint_set)
    gt = _as_points("gt", gt, k=ks.num_keypoints)
    return _pair_length(gt, visible, ks.torso, "torso", ks)


def head_normalizer(samples_or_sizes, keypoint_set=None) -> np.ndarray:
    """Head size per sample for PCKh.

    Args:
        samples_or_sizes: a list of `PoseSample` or an (N,) array of head sizes (returned as is).
            For a sample, `sample.head_size` is used when set (MPII official: 0.6 × head-box
            diagonal); otherwise the length of the set's `head` segment from its labelled
            keypoints (0 when either end is unlabelled, so `pck` excludes the sample).
        keypoint_set: KeypointSet or name, needed only for samples without `head_size`
            (defaults to each sample's own `keypoint_set`).

    Returns:
        (N,) float64 head sizes.
    """
    items = list(samples_or_sizes) if not isinstance(samples_or_sizes, np.ndarray) else samples_or_sizes
    if isinstance(items, np.ndarray) or (len(items) and not hasattr(items[0], "keypoints")):
        return np.asarray(items, dtype=np.float64).reshape(-1)
    sizes = np.zeros(len(items), dtype=np.float64)
    for i, s in enumerate(items):
        if s.head_size is not None and np.isfinite(s.head_size) and s.head_size > 0:
            sizes[i] = float(s.head_size)
            continue
        ks = get_keypoint_set(keypoint_set if keypoint_set is not None else s.keypoint_set)
        sizes[i] = _pair_length(s.keypoints[None], s.visibility[None], ks.head, "head", ks)[0]
    return sizes


def pckh(pred, gt, visible, head_sizes, threshold=0.5, joints=None) -> dict:
    """PCKh: `pck` with the head size as normalizer (PCKh@0.5 by default).

    Args:
        pred, gt, visible: as in `pck`.
        head_sizes: (N,) head sizes, e.g. from `head_normalizer(samples)`.
        threshold: fraction of the head size. Defaults to 0.5.
        joints: joints that enter the mean (MPII's total leaves out pelvis 6 and thorax 7).
    """
    return pck(pred, gt, visible, head_sizes, threshold=threshold, joints=joints)


@dataclass(frozen=True)
class PCKProtocol:
    """How a benchmark computes PCK, when it differs from `pck`'s defaults.

    Attributes:
        name: short name, stored in reports ("lsp").
        torso: (joint name, joint name) whose ground-truth distance normalises the threshold.
        count_all: count every joint of every sample, whatever its visibility flag.
        description: one line for reports and the CLI.
    """

    name: str
    torso: tuple
    count_all: bool
    description: str


# The literature's LSP protocol (the one that reproduces the published means of Tompson, Yang, DeepCut,
# DeeperCut, CPM and Bulat & Tzimiropoulos on the person-centric labels): test images 1001-2000, the
# box comes from the whole image (never from the labels), torso = left shoulder to right hip, all 14
# joints of all images counted.
LSP_PROTOCOL = PCKProtocol(
    name="lsp", torso=("left_shoulder", "right_hip"), count_all=True,
    description="LSP protocol: torso = left shoulder to right hip, all joints counted, box = the image's central 70 %",
)
PROTOCOLS = {LSP_PROTOCOL.name: LSP_PROTOCOL}


def protocol_pck(pred, gt, visible, keypoint_set, protocol, threshold=0.2, joints=None) -> dict:
    """`pck` under a benchmark's `PCKProtocol` (its torso pair and counting rule).

    Example (the hand-computed case: torso 10 px, threshold 2 px; an occluded joint still counts):
    >>> from kdpose_tf.keypoints import LSP14
    >>> gt = np.zeros((1, 14, 2)); gt[0, 9] = (0, 0); gt[0, 2] = (6, 8)   # left shoulder, right hip
    >>> pred = gt.copy(); pred[0, 0] += (2, 0); pred[0, 1] += (2.1, 0)
    >>> visible = np.ones((1, 14)); visible[0, 0] = 0
    >>> r = protocol_pck(pred, gt, visible, LSP14, LSP_PROTOCOL)
    >>> r["per_joint"][:2].tolist(), r["count"]
    ([1.0, 0.0], 14)
    """
    ks = get_keypoint_set(keypoint_set)
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown PCK protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[protocol]
    missing = [name for name in protocol.torso if name not in ks.names]
    if missing:
        raise ValueError(f"protocol {protocol.name!r} needs joints {missing}, which {ks.name} lacks")
    gt = _as_points("gt", gt, k=ks.num_keypoints)
    visible = np.ones(gt.shape[:2], bool) if protocol.count_all else np.asarray(visible) > 0
    a, b = (ks.names.index(name) for name in protocol.torso)
    torso = _pair_length(gt, None if protocol.count_all else visible, (a, b), "torso", ks)
    return pck(pred, gt, visible, torso, threshold=threshold, joints=joints)
