"""LSP Extended (LSPET) reader: ``images/im00001.jpg`` .. and ``joints.mat``.

LSPET (Johnson & Everingham, "Learning effective human pose estimation from inaccurate
annotation", CVPR 2011) holds 10,000 Flickr sports photos (8,000 here), one person each, labelled
on Mechanical Turk with the LSP-14 joints in person-centric left/right order (the same order as
PARSE, `kdpose_tf.keypoints.LSP14`). ``joints.mat`` holds ``joints`` (14, 3, N): joint x
(x, y, visible) x image, in 1-based MATLAB pixel coordinates. ``visible = 0`` means *not
labelled*: those joints carry garbage coordinates (often x <= 0 or y <= 0) and get visibility 0
here, so they are masked out of the loss (about 12 % of the joints); a pretrained teacher can
still supervise them (`kdpose_tf.distillation.heatmap_teacher`). Labelled joints get visibility 2.

There are no person boxes: the box is the labelled joints' bounding box, widened by
`box_padding` around its centre (default 1.0, the same convention as PARSE, whose test split is
the benchmark; the data pipeline pads every box by a further 1.25).

Example:
>>> train = read_lspet("shared/data/lspet", on_bad_sample="skip")  # doctest: +SKIP
>>> len(train), train[0].keypoint_set                                # doctest: +SKIP
(8000, 'lsp14')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleChecker
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import LSP14


def load_joints_mat(label_file, layout="joint,xyv,image", dataset="LSPET"):
    """The ``joints`` array of an LSP-family ``joints.mat`` as float64 (14, 3, N) = (joint, x/y/flag, image).

    Args:
        label_file: the ``joints.mat`` file.
        layout: the file's axis order: "joint,xyv,image" (LSPET: 14x3xN) or "xyv,joint,image"
            (LSP: 3x14xN); the result is always (14, 3, N).
        dataset: the name used in error messages.

    Raises:
        DataError naming the file, the field and the expected shape.
    """
    label_file = Path(label_file)
    expected = {"joint,xyv,image": (LSP14.num_keypoints, 3), "xyv,joint,image": (3, LSP14.num_keypoints)}
    if layout not in expected:
        raise ValueError(f"layout must be one of {sorted(expected)}, got {layout!r}")
    shape_text = "x".join(map(str, expected[layout])) + "xN"
    if not label_file.is_file():
        raise DataError(f"{dataset} labels file not found (expected joints.mat with 'joints' {shape_text})",
                        path=label_file)
    try:
        mat = scipy.io.loadmat(str(label_file))
    except Exception as e:  # scipy raises several exception types for corrupt .mat files
        raise DataError(f"not a readable MATLAB file ({e})", path=label_file) from None
    joints = mat.get("joints")
    if joints is None:
        raise DataError(f"no variable 'joints' in the file (found {sorted(k for k in mat if not k.startswith('__'))})",
                        path=label_file, field="joints")
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[:2] != expected[layout]:
        raise DataError(f"expected shape {shape_text} = ({layout.replace(',', ', ')}), got {joints.shape}",
                        path=label_file, field="joints")
    if layout == "xyv,joint,image":
        joints = joints.transpose(1, 0, 2)
    return joints.astype(np.float64)


def read_lspet(root, on_bad_sample="raise", box_padding=1.0, limit=None):
    """Read LSPET from `root` (holding ``joints.mat`` and ``images/imNNNNN.jpg``).

    Args:
        root: the LSPET folder.
        on_bad_sample: "raise" (default) or "skip" malformed samples (see `validation`): a
            missing or unreadable image, a person with no labelled joint, joints outside the image.
        box_padding: factor on the labelled joints' bounding box (about its centre). Default 1.0.
        limit: read only the first `limit` images (None = all). Default None.

    Returns:
        `SampleList` of PoseSample (`.report`: the `LoadReport`), keypoint_set "lsp14";
        annotation_id = image_id = the 1-based image number; 0-based pixel coordinates.
    """
    if not (isinstance(box_padding, (int, float)) and box_padding >= 1.0):
        raise ValueError(f"box_padding must be a number >= 1, got {box_padding!r}")
    if limit is not None and not (isinstance(limit, int) and limit > 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    root = Path(root)
    label_file = root / "joints.mat"
    joints = load_joints_mat(label_file)
    n = joints.shape[2] if limit is None else min(limit, joints.shape[2])
    checker = SampleChecker(label_file, LSP14.num_keypoints, on_bad_sample)
    samples = []
    for number in range(1, n + 1):
        image_path = root / "images" / f"im{number:05d}.jpg"
        size = checker.image_size(image_path, number)
        if size is None:
            continue
        flat = joints[:, :, number - 1].reshape(-1)
        parsed = checker.keypoints(number, flat, "joints", stride=3)
        if parsed is None:
            continue
        keypoints, visible = parsed
        labelled = visible > 0
        keypoints = np.where(labelled[:, None], keypoints - 1.0, 0.0)  # 1-based MATLAB -> 0-based pixels
        visibility = np.where(labelled, 2.0, 0.0)
        checked = checker.check(number, keypoints, visibility, None, size)
        if checked is None:
            continue
        keypoints, visibility, bbox = checked
        if box_padding != 1.0:
            cx, cy = bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2
            w, h = bbox[2] * box_padding, bbox[3] * box_padding
            bbox = np.array([cx - w / 2, cy - h / 2, w, h], np.float32)
        samples.append(PoseSample(
            image_path=str(image_path), bbox=bbox, keypoints=keypoints, visibility=visibility,
            keypoint_set=LSP14.name, image_id=number, annotation_id=number, image_size=size,
            extra={"dataset": "lspet"},
        ))
    return checker.finish(samples)
