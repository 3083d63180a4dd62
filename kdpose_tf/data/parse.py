"""PARSE (Ramanan) reader: 305 images ``im0001.jpg`` .. ``im0305.jpg`` and ``labels.mat``.

``labels.mat`` holds ``ptsAll`` (14, 2, 305): 14 joints x (x, y) x image. The joint order is
LSP-14 with person-centric left/right (right ankle, right knee, right hip, left hip, left knee,
left ankle, right wrist, right elbow, right shoulder, left shoulder, left elbow, left wrist, neck,
head top). Checked against the images: on frontal people the "right" joints lie on the image's
left (95% of images have x(right shoulder) < x(left shoulder)); head top is above the neck in
>99% of images. People seen from the back keep person-centric sides (im0083, a tennis player
from behind, has her right shoulder and racket hand on the image right). (The file's own ``segmentTypes`` labels say 'lank', 'lkne', ... for the first
joints: those names are observer-centric; the coordinates match LSP14's person-centric order.)

Every joint is labelled (visibility 2). The box is the joints' bounding box (the pipeline pads
it). Splits: "train" = images 1-100, "test" = 101-305, "all" = 1-305.

Example:
>>> test = read_parse("shared/data/parse", split="test")  # doctest: +SKIP
>>> len(test)                                              # doctest: +SKIP
205
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleChecker
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import LSP14

NUM_TRAIN = 100
SPLITS = ("all", "train", "test")


def _load_pts(label_file):
    import scipy.io

    if not label_file.is_file():
        raise DataError("PARSE labels file not found (expected labels.mat with 'ptsAll')", path=label_file)
    try:
        mat = scipy.io.loadmat(str(label_file))
    except Exception as e:  # scipy raises several types for corrupt .mat files
        raise DataError(f"not a readable MATLAB file ({e})", path=label_file) from None
    pts = mat.get("ptsAll")
    if pts is None:
        raise DataError("no variable 'ptsAll' in the file", path=label_file, field="ptsAll")
    pts = np.asarray(pts)
    if pts.ndim != 3 or pts.shape[:2] != (LSP14.num_keypoints, 2):
        raise DataError(f"expected shape (14, 2, N), got {pts.shape}", path=label_file, field="ptsAll")
    return pts.astype(np.float64)


def read_parse(root, split="all", on_bad_sample="raise"):
    """Read PARSE from `root` (holding labels.mat and imNNNN.jpg).

    Args:
        root: the PARSE folder.
        split: "all" (default), "train" (images 1-100) or "test" (images 101-305).
        on_bad_sample: "raise" (default) or "skip" malformed samples (see `validation`).

    Returns:
        `SampleList` of PoseSample (`.report`: the `LoadReport`), keypoint_set "lsp14";
        annotation_id = image_id = 1-based image number.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    label_file = root / "labels.mat"
    pts = _load_pts(label_file)
    n = pts.shape[2]
    numbers = {"all": range(1, n + 1), "train": range(1, min(NUM_TRAIN, n) + 1),
               "test": range(NUM_TRAIN + 1, n + 1)}[split]
    checker = SampleChecker(label_file, LSP14.num_keypoints, on_bad_sample)
    samples = []
    for number in numbers:
        image_path = root / f"im{number:04d}.jpg"
        size = checker.image_size(image_path, number)
        if size is None:
            continue
        flat = pts[:, :, number - 1].reshape(-1)
        parsed = checker.keypoints(number, flat, "ptsAll", stride=2)
        if parsed is None:
            continue
        keypoints, visibility = parsed
        checked = checker.check(number, keypoints, visibility, None, size)
        if checked is None:
            continue
        keypoints, visibility, bbox = checked
        samples.append(PoseSample(
            image_path=str(image_path), bbox=bbox, keypoints=keypoints, visibility=visibility,
            keypoint_set=LSP14.name, image_id=number, annotation_id=number, image_size=size,
            extra={"dataset": "parse", "split": "train" if number <= NUM_TRAIN else "test"},
        ))
    return checker.finish(samples)
