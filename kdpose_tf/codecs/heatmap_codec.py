"""`HeatmapCodec`: joints <-> Gaussian heatmaps for top-down pose estimation.

Encoding follows MMPose's MSRAHeatmap (Xiao et al., "Simple Baselines for Human Pose
Estimation and Tracking", ECCV 2018; Sun et al., "Deep High-Resolution Representation
Learning for Human Pose Estimation", CVPR 2019): one unnormalised 2-D Gaussian per joint,
σ = 2 px at a 64×48 heatmap (scaled with the heatmap width). Decoding is argmax plus the
HRNet quarter-pixel shift toward the higher neighbour, or optionally DARK (Zhang et al.,
"Distribution-Aware Coordinate Representation for Human Pose Estimation", CVPR 2020).

Pixel-centre convention (used by encode, decode and the affine transforms alike): integer
coordinates are pixel centres, in the input crop and in the heatmap. A point at input-crop
pixel x lies at heatmap coordinate u = x / stride_x with stride_x = input_w / heatmap_w (same
for y), and decode maps back with x = u · stride_x. The Gaussian is centred on the exact,
unrounded u ("unbiased" encoding), so the peak value is 1 only when u falls on a pixel centre
and sub-pixel positions survive an encode/decode round trip.

Example:
>>> import numpy as np
>>> codec = HeatmapCodec(input_size=(256, 192))
>>> hm, w = codec.encode(np.array([[96.0, 128.0]]), np.array([2.0]))
>>> hm.shape, w.tolist()
((64, 48, 1), [1.0])
>>> codec.decode(hm)[0].round(1).tolist()
[[[96.0, 128.0]]]
"""

from __future__ import annotations

import numpy as np


def _as_size(value, name):
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (height, width) pair of positive ints, got {value!r}") from None
    if h <= 0 or w <= 0 or (h, w) != tuple(float(v) for v in value):
        raise ValueError(f"{name} must be a (height, width) pair of positive ints, got {value!r}")
    return h, w


class HeatmapCodec:
    """Gaussian heatmap encoder / argmax (+quarter shift or DARK) decoder.

    Args:
        input_size: (height, width) of the network input crop. Default (256, 192).
        heatmap_size: (height, width) of the heatmaps. Default None = input_size / 4.
        sigma: Gaussian standard deviation in heatmap pixels. Default None =
            2.0 * heatmap_w / 48 (σ = 2 at 64×48, 1.33 at 32×32).

    Example:
    >>> codec = HeatmapCodec(input_size=(128, 128))
    >>> codec.heatmap_size, round(codec.sigma, 3)
    ((32, 32), 1.333)
    """

    def __init__(self, input_size=(256, 192), heatmap_size=None, sigma=None):
        self.input_size = _as_size(input_size, "input_size")
        if heatmap_size is None:
            h, w = self.input_size
            if h % 4 or w % 4:
                raise ValueError(
                    f"input_size {self.input_size} is not divisible by 4; pass heatmap_size explicitly"
                )
            heatmap_size = (h // 4, w // 4)
        self.heatmap_size = _as_size(heatmap_size, "heatmap_size")
        if sigma is None:
            sigma = 2.0 * self.heatmap_size[1] / 48.0
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}") from None
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        self.sigma = sigma

    # ------------------------------------------------------------------ helpers
    @property
    def stride(self) -> np.ndarray:
        """(2,) float64 [sx, sy]: input pixels per heatmap pixel."""
        return np.array(
            [self.input_size[1] / self.heatmap_size[1], self.input_size[0] / self.heatmap_size[0]], np.float64
        )

    def get_config(self) -> dict:
        return {"input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size), "sigma": self.sigma}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma:.4g})"

    # ------------------------------------------------------------------ encode
    def encode(self, keypoints, visibility):
        """Encode one person's joints.

        Args:
            keypoints: (K, 2) [x, y] in input-crop pixels.
            visibility: (K,); joints with visibility <= 0 are not labelled.

        Returns:
            heatmaps float32 (h, w, K) and target_weight float32 (K,). A joint gets weight 0
            (and an all-zero heatmap) when it is unlabelled, not finite, or its 3σ window lies
            fully outside the heatmap (MMPose rule).
        """
        kp = np.asarray(keypoints, np.float64)
        vis = np.asarray(visibility, np.float64).reshape(-1)
        if kp.ndim != 2 or kp.shape[1] != 2 or kp.shape[0] != vis.shape[0]:
            raise ValueError(
                f"encode expects keypoints (K, 2) and visibility (K,), got {kp.shape} and {vis.shape}"
            )
        h, w = self.heatmap_size
        mu = kp / self.stride  # heatmap coordinates
        weight = (vis > 0) & np.all(np.isfinite(mu), axis=1)
        mu = np.where(np.isfinite(mu), mu, 0.0)
        radius = 3.0 * self.sigma
        ul = mu - radius
        br = mu + radius + 1.0
        outside = (ul[:, 0] >= w) | (ul[:, 1] >= h) | (br[:, 0] < 0) | (br[:, 1] < 0)
        weight &= ~outside
        xs = np.arange(w, dtype=np.float64)
        ys = np.arange(h, dtype=np.float64)
        inv = 1.0 / (2.0 * self.sigma**2)
        gx = np.exp(-((xs[None, :] - mu[:, :1]) ** 2) * inv)  # (K, w)
        gy = np.exp(-((ys[None, :] - mu[:, 1:]) ** 2) * inv)  # (K, h)
        gx *= weight[:, None]
        hm = np.einsum("kh,kw->hwk", gy, gx).astype(np.float32)
        return hm, weight.astype(np.float32)

    def encode_tf(self, keypoints, visibility):
        """`encode` for tf tensors (inside tf.data), via tf.numpy_function; static output shapes."""
        import tensorflow as tf

        k = keypoints.shape[0]
        hm, w = tf.numpy_function(
            lambda a, b: self.encode(a, b), [keypoints, visibility], [tf.float32, tf.float32], stateful=False
        )
        hm.set_shape((*self.heatmap_size, k))
        w.set_shape((k,))
        return hm, w

    # ------------------------------------------------------------------ decode
    def _check_heatmaps(self, heatmaps):
        hm = np.asarray(heatmaps, np.float32)
        single = hm.ndim == 3
        if single:
            hm = hm[None]
        if hm.ndim != 4:
            raise ValueError(f"heatmaps must be (N, h, w, K) or (h, w, K), got shape {np.shape(heatmaps)}")
        if tuple(hm.shape[1:3]) != self.heatmap_size:
            raise ValueError(f"heatmaps are {hm.shape[1:3]} but the codec's heatmap_size is {self.heatmap_size}")
        return hm, single

    def decode(self, heatmaps, dark=False):
        """Decode heatmaps to joint positions.

        Args:
            heatmaps: (N, h, w, K) or (h, w, K).
            dark: use DARK (Taylor expansion on the blurred log-heatmap) instead of the quarter shift
                (where the maximum is at least 2 px from the border; the quarter shift elsewhere).

        Returns:
            keypoints float32 (N, K, 2) in input-crop pixels and scores float32 (N, K) (the heatmap
            maxima). A single (h, w, K) input returns N = 1.
        """
        hm, _ = self._check_heatmaps(heatmaps)
        n, h, w, k = hm.shape
        flat = hm.transpose(0, 3, 1, 2).reshape(n, k, h * w)
        idx = np.argmax(flat, axis=2)
        scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
        py, px = np.divmod(idx, w)
        coords = np.stack([px, py], axis=-1).astype(np.float64)
        maps = hm.transpose(0, 3, 1, 2)  # (N, K, h, w)
        ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        inner_x = (px > 0) & (px < w - 1)
        inner_y = (py > 0) & (py < h - 1)
        xr, xl = np.clip(px + 1, 0, w - 1), np.clip(px - 1, 0, w - 1)
        yd, yu = np.clip(py + 1, 0, h - 1), np.clip(py - 1, 0, h - 1)
        dx = np.sign(maps[ni, ki, py, xr] - maps[ni, ki, py, xl]) * inner_x
        dy = np.sign(maps[ni, ki, yd, px] - maps[ni, ki, yu, px]) * inner_y
        coords[..., 0] += 0.25 * dx
        coords[..., 1] += 0.25 * dy
        if dark:
            coords = self._dark_refine(hm, px, py, coords)
        keypoints = coords * self.stride
        return keypoints.astype(np.float32), scores.astype(np.float32)

    def _dark_refine(self, hm, px, py, coords):
        import cv2

        n, h, w, k = hm.shape
        ksize = int(2 * round(3 * self.sigma) + 1)
        maps = hm.transpose(0, 3, 1, 2).reshape(n * k, h, w).copy()
        for i in range(n * k):
            orig_max = maps[i].max()
            if orig_max <= 0:
                continue
            blurred = cv2.GaussianBlur(maps[i], (ksize, ksize), 0, borderType=cv2.BORDER_CONSTANT)
            maps[i] = blurred * (orig_max / max(float(blurred.max()), 1e-12))
        logm = np.log(np.maximum(maps, 1e-10)).reshape(n, k, h, w)
        logm = np.pad(logm, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
        ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        x, y = px + 2, py + 2

        def at(dy, dx):
            return logm[ni, ki, y + dy, x + dx]

        gx = 0.5 * (at(0, 1) - at(0, -1))
        gy = 0.5 * (at(1, 0) - at(-1, 0))
        dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
        dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
        dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
        det = dxx * dyy - dxy**2
        # the Taylor step needs the 5x5 neighbourhood inside the map; elsewhere keep the quarter shift
        interior = (px >= 2) & (px <= w - 3) & (py >= 2) & (py <= h - 3)
        ok = (np.abs(det) > 1e-12) & (hm.max(axis=(1, 2)) > 0) & interior
        safe = np.where(ok, det, 1.0)
        ox = -(dyy * gx - dxy * gy) / safe
        oy = -(-dxy * gx + dxx * gy) / safe
        ok &= (np.abs(ox) < 1.0) & (np.abs(oy) < 1.0)
        out = coords.copy()
        out[..., 0] = np.where(ok, px + ox, coords[..., 0])
        out[..., 1] = np.where(ok, py + oy, coords[..., 1])
        return out

    # ------------------------------------------------------------------ flip test
    @staticmethod
    def flip_back(flipped_heatmaps, flip_index, shift=True):
        """Map heatmaps predicted on a horizontally mirrored crop back to the original crop.

        Mirrors the width axis, swaps left/right channels with `flip_index` (KeypointSet.flip_index)
        and, with `shift` (HRNet), moves the result one heatmap pixel to the right, which
        compensates the 0.75-px offset of the mirror under the pixel-centre convention.

        Args:
            flipped_heatmaps: (N, h, w, K) or (h, w, K).
            flip_index: length-K permutation.
            shift: apply the 1-px shift. Default True.
        """
        hm = np.asarray(flipped_heatmaps)
        if hm.ndim not in (3, 4):
            raise ValueError(f"flipped_heatmaps must be (N, h, w, K) or (h, w, K), got shape {hm.shape}")
        flip_index = np.asarray(flip_index, dtype=np.int64)
        if flip_index.shape != (hm.shape[-1],):
            raise ValueError(
                f"flip_index has {flip_index.shape[0] if flip_index.ndim else 0} entries but heatmaps have "
                f"{hm.shape[-1]} channels"
            )
        out = hm[..., ::-1, :][..., flip_index].copy()
        if shift:
            out[..., 1:, :] = out[..., :-1, :]
        return out

    @classmethod
    def flip_test_average(cls, heatmaps, flipped_heatmaps, flip_index, shift=True):
        """Average of `heatmaps` and `flip_back(flipped_heatmaps, flip_index, shift)`."""
        hm = np.asarray(heatmaps)
        back = cls.flip_back(flipped_heatmaps, flip_index, shift=shift)
        if back.shape != hm.shape:
            raise ValueError(f"heatmaps {hm.shape} and flipped_heatmaps {back.shape} differ in shape")
        return (0.5 * (hm.astype(np.float32) + back.astype(np.float32))).astype(np.float32)
