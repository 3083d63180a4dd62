"""Leeds Sports Pose (LSP) reader: ``images/im0001.jpg`` .. ``im2000.jpg`` and ``joints.mat``.

LSP (Johnson & Everingham, "Clustered pose and nonlinear appearance models for human pose
estimation", BMVC 2010) is the public single-person benchmark behind the literature's PCK@0.2
tables: 2000 Flickr sports photos, each already cropped around one person scaled to about 150 px,
split 1-1000 train and 1001-2000 test. ``joints.mat`` holds ``joints`` (3, 14, 2000) = (x/y/flag,
joint, image) in 1-based MATLAB pixels, LSP-14 joints in person-centric order (`LSP14`).

The flag is the opposite of LSPET's: **1 = occluded**, 0 = visible, and every joint is labelled
(occluded ones at their estimated place). Here a visible joint gets visibility 2 and an occluded
one 1 (COCO's convention: labelled, not seen); both count in training and in the benchmark.
Joints a little outside the image (a few heads and feet) are kept as they are: the benchmark counts
them.

The person box comes from the whole image (the dataset's own crop; no label is used to place it), as
in the literature's protocol (`kdpose_tf.metrics.pck.LSP_PROTOCOL`): it is the image's central
`LSP_BOX_FRACTION` in each dimension, so that a top-down crop (box padded 1.25 and widened to the
model's aspect ratio) covers about the image itself rather than a frame of black around it. The
fraction was chosen on LSP val (901-1000) and holds for every model tried: at 0.7 instead of 1.0 the
shipped LSP-14 student gains 4.9 body-12 points on val (its best) and MoveNet Lightning 5.4 (level
with its best, 0.6), `benchmarks/results/lsp_box.md`. `PoseSample.extra["protocol"]` names the protocol so the evaluator
scores this set the published way by default.

Example:
>>> test = read_lsp("shared/data/lsp", split="test")   # doctest: +SKIP
>>> len(test), test[0].image_id, test[0].extra["protocol"]  # doctest: +SKIP
(1000, 1001, 'lsp')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from kdpose_tf.data.lspet import load_joints_mat
from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleChecker
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import LSP14

NUM_TRAIN = 1000
NUM_VAL = 100  # the last 100 training images: the package's validation split (choices are made there, never on test)
SPLITS = ("all", "train", "test", "fit", "val")


LSP_BOX_FRACTION = 0.7


def image_box(size, fraction=LSP_BOX_FRACTION):
    """[x, y, w, h] of the central `fraction` of a (width, height) image: LSP's person box.

    >>> image_box((100, 200))
    [15.0, 30.0, 70.0, 140.0]
    """
    w, h = float(size[0]), float(size[1])
    bw, bh = w * fraction, h * fraction
    return [(w - bw) / 2, (h - bh) / 2, bw, bh]


def read_lsp(root, split="all", on_bad_sample="raise", limit=None):
    """Read LSP from `root` (holding ``joints.mat`` and ``images/imNNNN.jpg``).

    Args:
        root: the LSP folder.
        split: "all" (default), "train" (images 1-1000), "test" (1001-2000, the benchmark), or the
            training images split for model selection: "fit" (1-900) and "val" (901-1000).
        on_bad_sample: "raise" (default) or "skip" samples whose image is missing or unreadable.
        limit: read only the first `limit` images of the split (None = all). Default None.

    Returns:
        `SampleList` of PoseSample (`.report`: the `LoadReport`), keypoint_set "lsp14",
        annotation_id = image_id = the 1-based image number, 0-based pixel coordinates, the box the
        image's central `LSP_BOX_FRACTION`, ``extra`` = {"dataset": "lsp", "split", "protocol": "lsp"}.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and not (isinstance(limit, int) and limit > 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    root = Path(root)
    label_file = root / "joints.mat"
    joints = load_joints_mat(label_file, layout="xyv,joint,image", dataset="LSP")
    n = joints.shape[2]
    first_val = NUM_TRAIN - NUM_VAL + 1
    numbers = {"all": range(1, n + 1), "train": range(1, min(NUM_TRAIN, n) + 1),
               "test": range(NUM_TRAIN + 1, n + 1), "fit": range(1, min(first_val, n + 1)),
               "val": range(first_val, min(NUM_TRAIN, n) + 1)}[split]
    if limit is not None:
        numbers = numbers[:limit]
    checker = SampleChecker(label_file, LSP14.num_keypoints, on_bad_sample)
    samples = []
    for number in numbers:
        image_path = root / "images" / f"im{number:04d}.jpg"
        size = checker.image_size(image_path, number)
        if size is None:
            continue
        flat = joints[:, :, number - 1].reshape(-1)
        parsed = checker.keypoints(number, flat, "joints", stride=3)
        if parsed is None:
            continue
        keypoints, occluded = parsed
        if not np.isin(occluded, (0, 1)).all():
            bad = occluded[~np.isin(occluded, (0, 1))][0]
            checker.fail(f"flag must be 0 (visible) or 1 (occluded), got {bad:g}", "joints", number)
            continue
        visibility = np.where(occluded > 0, 1.0, 2.0)
        checked = checker.check(number, keypoints - 1.0, visibility, image_box(size))  # 1-based -> 0-based
        if checked is None:
            continue
        keypoints, visibility, bbox = checked
        samples.append(PoseSample(
            image_path=str(image_path), bbox=bbox, keypoints=keypoints, visibility=visibility,
            keypoint_set=LSP14.name, image_id=number, annotation_id=number, image_size=size,
            extra={"dataset": "lsp", "split": split if split != "all" else ("train" if number <= NUM_TRAIN else "test"),
                   "protocol": "lsp"},
        ))
    return checker.finish(samples)


def load_lsp_predictions(path, num_images=None):
    """Predictions in the LSP benchmark's ``.mat`` form (``pred`` 2x14xN, 1-based pixels) as (N, 14, 2)
    0-based pixels: the published methods' files in ``data/lsp/published_predictions``.

    Raises:
        DataError naming the file and the expected shape.
    """
    path = Path(path)
    try:
        pred = scipy.io.loadmat(str(path)).get("pred")
    except Exception as e:  # scipy raises several exception types for corrupt .mat files
        raise DataError(f"not a readable MATLAB file ({e})", path=path) from None
    if pred is None or np.ndim(pred) != 3 or np.shape(pred)[:2] != (2, LSP14.num_keypoints):
        raise DataError(f"expected 'pred' of shape 2x14xN, got {None if pred is None else np.shape(pred)}",
                        path=path, field="pred")
    if num_images is not None and pred.shape[2] != num_images:
        raise DataError(f"expected predictions for {num_images} images, got {pred.shape[2]}", path=path, field="pred")
    return np.asarray(pred, np.float64).transpose(2, 1, 0) - 1.0
