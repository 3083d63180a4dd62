"""Following one person through a video with a top-down model: MoveNet's cropping and the One Euro filter.

Written once in plain numpy so that the desktop pipeline (`kdpose_tf.pipeline.track_video`) runs it and
the unit tests check it; an app (tflite/README.md) ports these few functions line for line.

- `crop_box`: the next frame's person box from this frame's joints (MoveNet's cropping, as in TensorFlow's
  MoveNet tutorial ``determine_crop_region``): centred on the confident joints, half-extents
  ``max(torso_margin * torso half-range, body_margin * body half-range)`` per axis, so that the person fits
  with room to move. The box then goes through the same crop as a detector's box (widened to the model's
  aspect ratio, padded by 1.25: `kdpose_tf.data.transforms.box_to_center_scale`).
- `OneEuroFilter`: Casiez, Roussel and Vogel, "1 € Filter", CHI 2012. A low-pass filter whose cutoff
  rises with the signal's speed: smooth when still (little jitter), little lag when moving.
- `PersonTracker`: per frame, crop around the previous frame's joints; run the detector only when there
  is no previous person or the person is lost (mean joint score below ``lost_score``); smooth the joints.

`TRACKING` holds the defaults; the exporter writes them into the sidecar (``tracking``), so an app uses the
values the desktop pipeline was measured with.

Example:
>>> f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
>>> [round(float(f(x, t)), 4) for x, t in [(0.0, 0.0), (1.0, 0.1), (1.0, 0.2)]]
[0.0, 0.3859, 0.6228]
"""

from __future__ import annotations

import math

import numpy as np

# The tracker's defaults (also the sidecar's "tracking" block). Scores are the model's heatmap maxima.
TRACKING = {
    "min_joint_score": 0.3,  # joints above it place the next crop
    "min_joints": 3,  # fewer confident joints than this: the person is lost
    "lost_score": 0.3,  # mean joint score below it: the person is lost, the detector runs on this frame
    "torso_margin": 1.9,  # MoveNet's factors on the torso / body half-ranges
    "body_margin": 1.2,
    "box_padding": 1.25,  # the crop around any person box (detector or tracker): box_to_center_scale
    "one_euro": {"min_cutoff": 0.3, "beta": 4.0, "d_cutoff": 1.0,
                 "value_scale": "1 / person box height (speeds in person heights per second)"},
}


def smoothing_factor(dt, cutoff):
    """The exponential smoothing factor alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff) (1 € filter)."""
    r = 2.0 * math.pi * np.asarray(cutoff, np.float64) * dt
    return r / (r + 1.0)


class OneEuroFilter:
    """The 1 € filter (Casiez et al. 2012) on an array of values (e.g. (K, 2) joints), element by element.

    For each sample x at time t (seconds): dx = (x - x̂_prev) / dt, its low-passed speed
    dx̂ = a(d_cutoff) dx + (1 - a) dx̂_prev, cutoff = min_cutoff + beta |dx̂| value_scale, and
    x̂ = a(cutoff) x + (1 - a) x̂_prev, with a(fc) = `smoothing_factor`(dt, fc). The first sample passes
    through unchanged with speed 0 (the paper's algorithm).

    Args:
        min_cutoff: cutoff frequency (Hz) when still: lower = smoother, more lag at low speed. Must be > 0.
        beta: how fast the cutoff rises with speed: higher = less lag when moving. Must be >= 0.
        d_cutoff: cutoff (Hz) of the speed's own low-pass. Must be > 0. Default 1 (the paper's).
    """

    def __init__(self, min_cutoff=1.0, beta=0.0, d_cutoff=1.0):
        for name, value, low in (("min_cutoff", min_cutoff, 0), ("d_cutoff", d_cutoff, 0)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > low):
                raise ValueError(f"{name} must be a finite number > 0 (Hz), got {value!r}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self):
        """Forget the past: the next sample passes through (a new person, a cut in the video)."""
        self._x = self._dx = self._t = None

    def __call__(self, x, t, value_scale=1.0):
        """The filtered value for sample `x` at time `t` (seconds, increasing). `value_scale` multiplies
        the speed in the cutoff (e.g. 1 / person height: `beta` then means the same for a near and a far
        person)."""
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"sample shape {x.shape} differs from the filter's {self._x.shape}; reset() first")
        dt = float(t) - self._t
        if not dt > 0:
            raise ValueError(f"timestamps must increase: {t} after {self._t}")
        a_d = smoothing_factor(dt, self.d_cutoff)
        self._dx = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        a = smoothing_factor(dt, self.min_cutoff + self.beta * np.abs(self._dx) * float(value_scale))
        self._x = a * x + (1.0 - a) * self._x
        self._t = float(t)
        return self._x.copy()


def torso_indices(names):
    """Indices of the shoulder and hip joints among joint `names` (the torso MoveNet's crop is sized on)."""
    return [i for i, n in enumerate(names) if "shoulder" in n or "hip" in n]


def crop_box(keypoints, scores, image_size, torso=(), min_joint_score=TRACKING["min_joint_score"],
             min_joints=TRACKING["min_joints"], torso_margin=TRACKING["torso_margin"],
             body_margin=TRACKING["body_margin"]):
    """The box (x, y, w, h) around a person for the next frame, from this frame's joints; None when fewer
    than `min_joints` joints score above `min_joint_score` (the person is lost).

    Centre: the middle of the confident joints' extent. Half-extents per axis: the larger of
    `torso_margin` x the torso joints' largest distance from the centre and `body_margin` x all confident
    joints' (MoveNet's 1.9 and 1.2). The box is clipped to the image (`image_size` = (width, height)); a
    box left with no area is None.

    Example:
    >>> crop_box([[40, 20], [60, 20], [50, 80]], [0.9, 0.9, 0.9], (200, 200)).round(1).tolist()
    [38.0, 14.0, 24.0, 72.0]
    """
    kp = np.asarray(keypoints, np.float64).reshape(-1, 2)
    sc = np.asarray(scores, np.float64).reshape(-1)
    if len(sc) != len(kp):
        raise ValueError(f"{len(kp)} joints but {len(sc)} scores")
    good = (sc > min_joint_score) & np.isfinite(kp).all(1)
    if good.sum() < max(1, min_joints):
        return None
    pts = kp[good]
    lo, hi = pts.min(0), pts.max(0)
    center = (lo + hi) / 2.0
    half = body_margin * (hi - lo) / 2.0
    torso = [i for i in torso if good[i]]
    if torso:
        half = np.maximum(half, torso_margin * np.abs(kp[torso] - center).max(0))
    w, h = image_size
    x1, y1 = np.clip(center - half, 0, [w, h])
    x2, y2 = np.clip(center + half, 0, [w, h])
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1], np.float64)


def box_iou(a, b):
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class PersonTracker:
    """One person through a video: crop around the previous frame's joints, detector when lost, 1 € smoothing.

    Args:
        detect: frame -> (boxes (N, 4) x, y, w, h, scores (N,)), best first (a `PersonDetector`).
        estimate: (frame, box) -> (keypoints (K, 2), scores (K,)) in frame pixels (the top-down model).
        names: the K joint names (the torso joints size the crop).
        smoothing: apply the 1 € filter (default True); the raw joints are returned too.
        box: the first frame's person box (x, y, w, h) instead of the detector's. Default None.
        **settings: overrides of `TRACKING` (min_joint_score, min_joints, lost_score, torso_margin,
            body_margin) and of its "one_euro" values (min_cutoff, beta, d_cutoff).
    """

    def __init__(self, detect, estimate, names, smoothing=True, box=None, **settings):
        euro = dict(TRACKING["one_euro"])
        crop = {k: TRACKING[k] for k in ("min_joint_score", "min_joints", "torso_margin", "body_margin")}
        self.lost_score = TRACKING["lost_score"]
        for key, value in settings.items():
            if key in ("min_cutoff", "beta", "d_cutoff"):
                euro[key] = value
            elif key in crop:
                crop[key] = value
            elif key == "lost_score":
                self.lost_score = value
            else:
                raise ValueError(f"unknown tracker setting {key!r}; expected one of {sorted([*crop, *euro])}")
        self._crop = crop
        self.detect, self.estimate = detect, estimate
        self.torso = torso_indices(names)
        self.filter = OneEuroFilter(euro["min_cutoff"], euro["beta"], euro["d_cutoff"]) if smoothing else None
        self.box = None if box is None else np.asarray(box, np.float64).reshape(4)  # None = run the detector
        self.detector_runs = 0

    def _lost(self, scores):
        return float(np.mean(scores)) < self.lost_score

    def update(self, frame, t):
        """Track on one RGB frame at time `t` (seconds). Returns None when nobody is found, else a dict:
        box (the crop's person box), keypoints (smoothed when smoothing), raw_keypoints, keypoint_scores,
        score (the detector's on detector frames, else 1), detector (whether the detector ran)."""
        h, w = np.asarray(frame).shape[:2]
        result = None
        if self.box is not None:
            kp, sc = self.estimate(frame, self.box)
            if not self._lost(sc):
                result = {"box": self.box, "raw_keypoints": kp, "keypoint_scores": sc, "score": 1.0,
                          "detector": False}
        if result is None:
            self.detector_runs += 1
            boxes, scores = self.detect(frame)
            if len(boxes):
                pick = 0  # the best box, or the one that overlaps the person just lost
                if self.box is not None:
                    ious = [box_iou(self.box, b) for b in boxes]
                    pick = int(np.argmax(ious)) if max(ious) > 0.1 else 0
                kp, sc = self.estimate(frame, boxes[pick])
                if self.filter is not None and (self.box is None or box_iou(self.box, boxes[pick]) <= 0.1):
                    self.filter.reset()  # another person, or the first sighting: no history to smooth with
                result = {"box": np.asarray(boxes[pick], np.float64), "raw_keypoints": kp, "keypoint_scores": sc,
                          "score": float(scores[pick]), "detector": True}
        if result is None:
            self.box = None
            if self.filter is not None:
                self.filter.reset()
            return None
        kp = np.asarray(result["raw_keypoints"], np.float64)
        result["keypoints"] = kp
        if self.filter is not None:
            result["keypoints"] = self.filter(kp, t, value_scale=1.0 / max(result["box"][3], 1.0))
        self.box = crop_box(kp, result["keypoint_scores"], (w, h), self.torso, **self._crop)
        return result
