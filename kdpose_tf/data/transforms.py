"""Top-down affine transforms and training augmentation (HRNet / MMPose semantics).

A person box is widened to the input aspect ratio and padded (`box_to_center_scale`), then the
region (center, scale [w, h] in pixels, rotation) is warped to the input crop by one affine map
(`get_affine_transform`, `crop_person`). Augmentation (Sun et al., HRNet, CVPR 2019; MMPose
RandomFlip / RandomHalfBody / RandomBBoxTransform) perturbs that region: half-body crops,
random scale and rotation, then a horizontal flip of the crop with left/right joints swapped.

Pixel-centre convention: integer coordinates are pixel centres, as in cv2.warpAffine, so a
point p maps to `M @ [x, y, 1]` and a horizontal flip of a W-wide crop maps x to W - 1 - x.

Example:
>>> import numpy as np
>>> c, s = box_to_center_scale([10, 20, 30, 80], aspect_ratio=0.75)
>>> c.tolist(), s.tolist()
([25.0, 60.0], [75.0, 100.0])
>>> M = get_affine_transform(c, s, 0.0, (256, 192))
>>> affine_points(np.array([25.0, 60.0]), M).tolist()
[96.0, 128.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_UPPER_WORDS = ("shoulder", "elbow", "wrist", "eye", "ear", "nose", "neck", "head", "thorax")
_LOWER_WORDS = ("hip", "knee", "ankle", "pelvis")


def box_to_center_scale(bbox_xywh, aspect_ratio, padding=1.25):
    """Center and [w, h] size (pixels) of a box widened to `aspect_ratio` = width / height and padded.

    Args:
        bbox_xywh: (4,) [x, y, w, h] box in image pixels (COCO convention).
        aspect_ratio: target width / height, i.e. input_w / input_h (0.75 for 256×192).
        padding: multiplier on the widened box. Default 1.25.

    Returns:
        center (2,) float64 [cx, cy] and scale (2,) float64 [w, h].
    """
    box = np.asarray(bbox_xywh, np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"bbox_xywh must be 4 finite numbers [x, y, w, h], got {bbox_xywh!r}")
    if not (aspect_ratio > 0 and padding > 0):
        raise ValueError(f"aspect_ratio and padding must be > 0, got {aspect_ratio!r} and {padding!r}")
    x, y, w, h = box
    w, h = max(w, 1.0), max(h, 1.0)
    center = np.array([x + 0.5 * w, y + 0.5 * h])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h]) * padding


def get_affine_transform(center, scale, rotation_deg, output_size, inverse=False):
    """(2, 3) float64 affine map from the image region to the output crop (or back with `inverse`).

    The region centred at `center`, `scale` = [w, h] pixels wide/high and rotated by
    `rotation_deg` (positive = the region is rotated clockwise on screen, y pointing down; HRNet's
    sign) maps onto an `output_size` = (H, W) crop with `center` landing at (W / 2, H / 2).

    Args:
        center: (2,) [cx, cy] image pixels.
        scale: (2,) [w, h] region size in image pixels.
        rotation_deg: rotation in degrees.
        output_size: (H, W) of the crop.
        inverse: return the crop -> image map instead.
    """
    c = np.asarray(center, np.float64).reshape(2)
    s = np.asarray(scale, np.float64).reshape(2)
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"scale must be two positive numbers [w, h], got {scale!r}")
    out_h, out_w = (float(v) for v in output_size)
    sx, sy = out_w / s[0], out_h / s[1]
    r = math.radians(float(rotation_deg))
    cos, sin = math.cos(r), math.sin(r)
    # forward: p_out = D + S @ R(-r) @ (p - c)
    A = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]])
    d = np.array([out_w * 0.5, out_h * 0.5])
    if inverse:
        A_inv = np.array([[cos / sx, -sin / sy], [sin / sx, cos / sy]])
        return np.concatenate([A_inv, (c - A_inv @ d)[:, None]], axis=1)
    return np.concatenate([A, (d - A @ c)[:, None]], axis=1)


def invert_affine(M):
    """Inverse of a (2, 3) affine map, as (2, 3) float64."""
    M = np.asarray(M, np.float64).reshape(2, 3)
    A_inv = np.linalg.inv(M[:, :2])
    return np.concatenate([A_inv, (-A_inv @ M[:, 2])[:, None]], axis=1)


def compose_affine(outer, inner):
    """The (2, 3) affine map `outer` ∘ `inner` (apply `inner` first)."""
    outer = np.asarray(outer, np.float64).reshape(2, 3)
    inner = np.asarray(inner, np.float64).reshape(2, 3)
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def warp_heatmaps(heatmaps, M, output_size):
    """Resample heatmaps (h, w, K) through the affine map M (source pixels -> output pixels).

    Bilinear, zero outside the source (a joint warped out of view gets an empty heatmap). Pixel
    centres at integer coordinates, as everywhere here, so heatmap pixel u of a crop with stride
    s stands for crop pixel s·u (the codec's convention).

    Returns:
        float32 (H, W, K) with (H, W) = `output_size`.
    """
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim != 3:
        raise ValueError(f"warp_heatmaps expects (h, w, K) heatmaps, got shape {hm.shape}")
    out_h, out_w = (int(v) for v in output_size)
    out = cv2.warpAffine(hm, np.asarray(M, np.float64).reshape(2, 3), (out_w, out_h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(out_h, out_w, hm.shape[2])


def affine_points(points, M):
    """Apply a (2, 3) affine map to points (..., 2); returns float64 (..., 2)."""
    p = np.asarray(points, np.float64)
    M = np.asarray(M, np.float64)
    if p.shape[-1] != 2 or M.shape != (2, 3):
        raise ValueError(f"affine_points expects points (..., 2) and M (2, 3), got {p.shape} and {M.shape}")
    return p @ M[:, :2].T + M[:, 2]


def crop_person(image, center, scale, rotation_deg, output_size):
    """Warp the region (center, scale, rotation) of `image` to an (H, W, C) crop (bilinear, zero border)."""
    M = get_affine_transform(center, scale, rotation_deg, output_size)
    h, w = (int(v) for v in output_size)
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------------------- augmentation
@dataclass
class AugmentConfig:
    """Training augmentation settings (HRNet / MMPose defaults).

    Args:
        flip: random horizontal flip with p = 0.5 (left/right joints swapped). Default True.
        rotation: maximum |rotation| in degrees (truncated normal, σ = rotation / 2). Default 45.
        rotation_prob: probability of rotating at all. Default 0.6.
        scale: (low, high) multiplier on the region size (truncated normal around the middle). Default (0.65, 1.35).
        half_body_prob: probability of a half-body crop when enough joints are labelled. Default 0.3.
        half_body_min_joints: more than this many labelled joints are needed for half-body. Default 8.
        half_body_padding: padding of the half-body box. Default 1.5.
        color_jitter: brightness/contrast/saturation jitter strength in [0, 1); 0 = off. Default 0.

    Example:
    >>> AugmentConfig.none().flip
    False
    """

    flip: bool = True
    rotation: float = 45.0
    rotation_prob: float = 0.6
    scale: tuple = (0.65, 1.35)
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    half_body_padding: float = 1.5
    color_jitter: float = 0.0

    def __post_init__(self):
        for name in ("rotation_prob", "half_body_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {v!r}")
        if self.rotation < 0:
            raise ValueError(f"AugmentConfig.rotation must be >= 0 degrees, got {self.rotation!r}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"AugmentConfig.scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        self.scale = (float(lo), float(hi))
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"AugmentConfig.color_jitter must be in [0, 1), got {self.color_jitter!r}")

    @classmethod
    def none(cls):
        """No augmentation (evaluation)."""
        return cls(flip=False, rotation=0.0, rotation_prob=0.0, scale=(1.0, 1.0), half_body_prob=0.0, color_jitter=0.0)


def upper_lower_body_indices(keypoint_set):
    """(upper, lower) joint index lists of a KeypointSet, derived from joint names."""
    upper, lower = [], []
    for i, name in enumerate(keypoint_set.names):
        n = name.lower()
        if any(word in n for word in _LOWER_WORDS):
            lower.append(i)
        elif any(word in n for word in _UPPER_WORDS):
            upper.append(i)
    return upper, lower


def half_body_center_scale(keypoints, visibility, upper, lower, aspect_ratio, rng, min_joints=8, padding=1.5):
    """Region around the upper or lower body (MMPose RandomHalfBody), or None when not applicable.

    Needs more than `min_joints` labelled joints; picks the upper body with p = 0.5 when it has
    more than 2 labelled joints (else the lower body, else the upper), and needs at least 2 chosen joints.

    Returns:
        (center (2,), scale (2,), chosen_indices) or None.
    """
    vis = np.asarray(visibility).reshape(-1) > 0
    if vis.sum() <= min_joints:
        return None
    up = [i for i in upper if vis[i]]
    low = [i for i in lower if vis[i]]
    if rng.random() < 0.5 and len(up) > 2:
        chosen = up
    else:
        chosen = low if len(low) > 2 else up
    if len(chosen) < 2:
        return None
    pts = np.asarray(keypoints, np.float64)[chosen]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = 0.5 * (lo + hi)
    w, h = hi - lo
    w, h = max(w, 1.0), max(h, 1.0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h]) * padding, chosen


def _truncnorm(rng, low=-1.0, high=1.0):
    while True:
        v = rng.normal()
        if low <= v <= high:
            return v


def random_scale_rotation(config, rng):
    """Sample (scale_multiplier, rotation_deg) from `config` (truncated normals, HRNet-style)."""
    lo, hi = config.scale
    s = 0.5 * (lo + hi) + 0.5 * (hi - lo) * _truncnorm(rng)
    r = 0.0
    if config.rotation > 0 and rng.random() < config.rotation_prob:
        r = config.rotation * _truncnorm(rng)
    return float(s), float(r)


def flip_crop(image, keypoints, visibility, flip_index):
    """Mirror a crop horizontally: x -> W - 1 - x, and swap left/right joints via `flip_index`."""
    image = np.asarray(image)
    kp = np.asarray(keypoints, np.float64).copy()
    kp[:, 0] = image.shape[1] - 1 - kp[:, 0]
    idx = np.asarray(flip_index, np.int64)
    return np.ascontiguousarray(image[:, ::-1]), kp[idx], np.asarray(visibility)[idx]


def random_flip(image, keypoints, visibility, flip_index, rng, prob=0.5):
    """`flip_crop` with probability `prob`; returns (image, keypoints, visibility, flipped)."""
    if rng.random() < prob:
        return (*flip_crop(image, keypoints, visibility, flip_index), True)
    return image, np.asarray(keypoints, np.float64), np.asarray(visibility), False


def color_jitter(image, strength, rng):
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength]; uint8 out."""
    if strength <= 0:
        return image
    img = image.astype(np.float32)
    b, c, s = (rng.uniform(1 - strength, 1 + strength) for _ in range(3))
    img = img * b
    img = (img - img.mean()) * c + img.mean()
    gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = (img - gray[..., None]) * s + gray[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def augmented_crop(image, keypoints, visibility, bbox_xywh, output_size, keypoint_set, config, rng, padding=1.25,
                   extra_keypoints=None, return_transform=False):
    """One training example: region (half-body, scale, rotation), warp, flip, colour.

    Args:
        image: (H, W, 3) uint8 image.
        keypoints, visibility: (K, 2) image pixels and (K,).
        bbox_xywh: person box.
        output_size: (H, W) of the crop.
        keypoint_set: KeypointSet (flip pairs, upper/lower body).
        config: AugmentConfig.
        rng: numpy Generator.
        padding: box padding. Default 1.25.
        extra_keypoints: optional (K, 2) image-pixel joints in the same order (a teacher's), moved
            by the same warp and flip; they do not steer the half-body choice. Default None.
        return_transform: also return the (2, 3) affine map image pixels -> output crop pixels,
            flip included, and whether the crop was flipped (so image-aligned data such as a
            teacher's heatmaps can follow the same augmentation). Default False.

    Returns:
        crop (H, W, 3) uint8, keypoints (K, 2) float64 in crop pixels, visibility (K,); with
        `extra_keypoints`, a 4th item: those joints (K, 2) in crop pixels; with
        `return_transform`, two last items: the (2, 3) map and the flipped flag.
    """
    out_h, out_w = output_size
    aspect = out_w / out_h
    center, scale = box_to_center_scale(bbox_xywh, aspect, padding)
    if config.half_body_prob > 0 and rng.random() < config.half_body_prob:
        upper, lower = upper_lower_body_indices(keypoint_set)
        hb = half_body_center_scale(
            keypoints, visibility, upper, lower, aspect, rng, config.half_body_min_joints, config.half_body_padding
        )
        if hb is not None:
            center, scale = hb[0], hb[1]
    s, r = random_scale_rotation(config, rng)
    M = get_affine_transform(center, scale * s, r, output_size)
    crop = cv2.warpAffine(image, M, (int(out_w), int(out_h)), flags=cv2.INTER_LINEAR, borderValue=0)
    kp = affine_points(keypoints, M)
    vis = np.asarray(visibility)
    extra = None if extra_keypoints is None else affine_points(np.asarray(extra_keypoints, np.float64), M)
    flipped = False
    if config.flip:
        crop, kp, vis, flipped = random_flip(crop, kp, vis, keypoint_set.flip_index, rng)
        if flipped and extra is not None:
            extra = np.stack([out_w - 1 - extra[:, 0], extra[:, 1]], axis=1)[np.asarray(keypoint_set.flip_index)]
    crop = color_jitter(crop, config.color_jitter, rng)
    out = (crop, kp, vis) if extra is None else (crop, kp, vis, extra)
    if return_transform:
        if flipped:  # x -> W - 1 - x after the warp, as flip_crop does
            M = compose_affine(np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0]]), M)
        out = (*out, M, flipped)
    return out
