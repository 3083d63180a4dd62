"""Drawing and reporting helpers: skeleton overlays, PNGs, training curves, Markdown tables.

Left joints / limbs are drawn in orange, right ones in blue, centre ones in green (MMPose's
convention of colouring by side), so a left/right swap is visible at a glance.

Example:
>>> from kdpose_tf.keypoints import COCO17
>>> canvas = draw_keypoints(image, keypoints, scores, COCO17)      # doctest: +SKIP
>>> save_png("out/pose.png", canvas)                                # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.utils.io import atomic_path, write_bytes, write_text

LEFT_COLOR = (255, 128, 0)  # RGB
RIGHT_COLOR = (0, 128, 255)
CENTER_COLOR = (0, 200, 0)


def _side(name: str) -> str:
    if name.startswith("left") or name.startswith("l_"):
        return "left"
    if name.startswith("right") or name.startswith("r_"):
        return "right"
    return "center"


def _color(side):
    return {"left": LEFT_COLOR, "right": RIGHT_COLOR}.get(side, CENTER_COLOR)


def draw_keypoints(image, keypoints, scores=None, keypoint_set="coco17", threshold=0.3, radius=None,
                   thickness=None):
    """Draw a skeleton on a copy of `image`.

    Args:
        image: uint8 RGB (H, W, 3) (float images in [0, 255] are clipped and converted).
        keypoints: (K, 2) joints (x, y) in image pixels.
        scores: (K,) confidences or visibilities; joints at or below `threshold` (and limbs touching
            them) are not drawn. Default None = draw every finite joint.
        keypoint_set: KeypointSet or name (names decide the side colours, skeleton the limbs).
        threshold: Default 0.3.
        radius, thickness: joint radius / limb width in pixels; default scales with the image size.

    Returns:
        uint8 RGB (H, W, 3), a new array.
    """
    import cv2

    ks = get_keypoint_set(keypoint_set)
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
    canvas = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    kp = np.asarray(keypoints, np.float64)
    if kp.shape != (ks.num_keypoints, 2):
        raise ValueError(f"keypoints must have shape ({ks.num_keypoints}, 2) for {ks.name!r}, got {kp.shape}")
    sc = np.ones(ks.num_keypoints) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if sc.shape != (ks.num_keypoints,):
        raise ValueError(f"scores must have shape ({ks.num_keypoints},), got {sc.shape}")
    size = max(canvas.shape[:2])
    radius = int(radius) if radius is not None else max(2, round(size / 150))
    thickness = int(thickness) if thickness is not None else max(1, round(size / 200))
    ok = np.isfinite(kp).all(1) & (sc > threshold)
    pts = [tuple(int(round(v)) for v in p) if good else None for p, good in zip(kp, ok)]
    for a, b in ks.skeleton:
        if pts[a] is None or pts[b] is None:
            continue
        sa, sb = _side(ks.names[a]), _side(ks.names[b])
        side = sa if sa == sb else "center"
        cv2.line(canvas, pts[a], pts[b], _color(side), thickness, cv2.LINE_AA)
    for name, p in zip(ks.names, pts):
        if p is not None:
            cv2.circle(canvas, p, radius, _color(_side(name)), -1, cv2.LINE_AA)
            cv2.circle(canvas, p, radius, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def save_image(path, image):
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image, atomically, in the format its suffix names
    (`IMAGE_SUFFIXES`; JPEG at quality 95). Another suffix is a ValueError. Returns the path."""
    import cv2

    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unknown image extension {suffix or '(none)'!r}; expected one of {IMAGE_SUFFIXES}")
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    elif img.ndim == 2:
        img = np.clip(img, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grey, got shape {img.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, img, params)
    if not ok:
        raise ValueError(f"could not encode an image of shape {img.shape} as {suffix}")
    return write_bytes(path, buf.tobytes())


def save_png(path, image):
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image as PNG, atomically (`save_image`). Returns the path."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path}: save_png writes PNG; give a .png path (save_image writes other formats)")
    return save_image(path, image)


def _history_dict(history):
    if hasattr(history, "history"):
        history = history.history
    if not isinstance(history, dict):
        raise ValueError(f"expected a keras History or a dict of metric lists, got {type(history).__name__}")
    return history


def plot_history(histories, path, metrics=("loss",), title=None):
    """Plot training curves of several runs into one PNG (one panel per metric), atomically.

    Args:
        histories: {run name: keras `History` or dict {metric: [values per epoch]}}. A metric's
            "val_" curve is drawn dashed when present.
        path: PNG file to write.
        metrics: metric names to plot. Default ("loss",).
        title: optional figure title.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not isinstance(histories, dict) or not histories:
        raise ValueError(f"histories must be a non-empty dict {{name: History or dict}}, got {histories!r}")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    runs = {name: _history_dict(h) for name, h in histories.items()}
    if not any(m in h or f"val_{m}" in h for h in runs.values() for m in metrics):
        raise ValueError(f"none of the metrics {metrics} is in the histories (found {sorted(set().union(*runs.values()))})")
    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    try:
        for ax, metric in zip(axes.ravel(), metrics):
            for i, (name, h) in enumerate(runs.items()):
                color = f"C{i % 10}"
                for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                    if key in h and len(h[key]):
                        values = np.asarray(h[key], np.float64)
                        ax.plot(np.arange(1, len(values) + 1), values, style, color=color,
                                label=name if key == metric else f"{name} (val)")
            ax.set_title(metric)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in axes.ravel()[len(metrics):]:
            ax.axis("off")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def _fmt(value, digits):
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows, columns=None, digits=3, path=None) -> str:
    """A GitHub Markdown table of `rows` (list of dicts); missing / NaN values show as "–".

    Args:
        rows: list of dicts.
        columns: keys to show, in order; default: the keys of all rows in first-seen order.
            An item may be a (key, header) pair to rename a column.
        digits: decimals for floats. Default 3.
        path: optional file to write the table to (atomically).

    Example:
    >>> print(markdown_table([{"model": "a", "AP": 0.5}], ["model", "AP"]))
    | model | AP |
    |---|---|
    | a | 0.500 |
    """
    rows = list(rows)
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    if not cols:
        raise ValueError("markdown_table needs at least one column")
    lines = ["| " + " | ".join(str(h) for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), digits) for k, _ in cols) + " |")
    text = "\n".join(lines)
    if path is not None:
        write_text(path, text + "\n")
    return text
