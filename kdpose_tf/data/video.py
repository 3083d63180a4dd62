"""Video files through OpenCV, with clear errors: frames in (RGB uint8), an MP4 out (written atomically).

`read_video` opens a file and checks that its first frame decodes, so a missing, empty, truncated or
non-video file is one `DataError` naming it, before any model loads. `VideoWriter` writes MP4 (``mp4v``,
the codec OpenCV's bundled FFmpeg always has) under a temporary name moved into place when closed
without an error, like every file kdpose_tf writes (`kdpose_tf.utils.io.atomic_path`).

Example:
>>> video = read_video("walk.mp4")                                  # doctest: +SKIP
>>> with VideoWriter("walk_pose.mp4", video.fps, video.size) as out:  # doctest: +SKIP
...     for frame in video:
...         out.write(frame)
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import cv2
import numpy as np

from kdpose_tf.errors import DataError
from kdpose_tf.utils.io import atomic_path

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_FPS = 30.0  # when a file does not state its frame rate


class Video:
    """An opened video: iterate for RGB uint8 frames (H, W, 3); `fps`, `size` (width, height), `frame_count`
    (the container's count, 0 when unknown)."""

    def __init__(self, path, capture, first):
        self.path = Path(path)
        self._capture, self._first = capture, first
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.size = (int(first.shape[1]), int(first.shape[0]))
        self.frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))

    def __iter__(self):
        if self._capture is None:
            raise ValueError(f"{self.path}: a Video is read once; open it again with read_video")
        capture, frame = self._capture, self._first
        self._capture = self._first = None
        try:
            while frame is not None:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = capture.read()
                if not ok:
                    frame = None
        finally:
            capture.release()

    def close(self):
        if self._capture is not None:
            self._capture.release()
            self._capture = self._first = None


def read_video(path) -> Video:
    """Open a video file and decode its first frame; DataError (field "video") naming the file when it is
    missing, empty or not a video OpenCV can decode."""
    path = Path(path)
    if not path.is_file():
        raise DataError("video file not found" if not path.exists() else "not a file", path=path, field="video")
    if path.stat().st_size == 0:
        raise DataError("empty video file (0 bytes)", path=path, field="video")
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok or first is None or first.size == 0:
        capture.release()
        raise DataError("not a video OpenCV can decode (no frame could be read; expected e.g. MP4 / H.264, AVI, "
                        "MOV, MKV)", path=path, field="video")
    return Video(path, capture, first)


class VideoWriter:
    """An MP4 file written frame by frame (RGB uint8, all of `size` (width, height)), moved into place on a
    clean exit of the ``with`` block; after an error no partial file is left."""

    def __init__(self, path, fps, size):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"{self.path}: VideoWriter writes MP4; give a .mp4 path")
        self.fps, self.size = float(fps), (int(size[0]), int(size[1]))
        self.frames = 0
        self._stack = None

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self._writer.isOpened():
            self._stack.close()
            raise OSError(f"OpenCV cannot write an MP4 (mp4v) video at {self.path}")
        return self

    def write(self, frame_rgb):
        frame = np.asarray(frame_rgb)
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"frame of shape {frame.shape}; this video's frames are "
                             f"{(self.size[1], self.size[0], 3)}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame, np.uint8), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def __exit__(self, exc_type, exc, tb):
        self._writer.release()
        return self._stack.__exit__(exc_type, exc, tb)


def moving_photo(image, shifts, border=114):
    """Frames of a photo moved by `shifts` (N, 2) pixels (x, y; sub-pixel, bilinear), each the photo's size,
    uncovered area filled with `border`: a video whose true motion is known (a joint at p in the photo is at
    p + shifts[i] in frame i), for tests and benchmarks of tracking and smoothing."""
    image = np.ascontiguousarray(np.asarray(image, np.uint8))
    h, w = image.shape[:2]
    for dx, dy in np.asarray(shifts, np.float64).reshape(-1, 2):
        M = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
        yield cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(border, border, border))
