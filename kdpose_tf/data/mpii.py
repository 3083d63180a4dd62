"""MPII reader for the MMPose MPII JSON layout: one `PoseSample` per entry, MPII-16 joints.

The file is a JSON list of ``{"image", "joints" (16x2), "joints_vis" (16), "center", "scale"}``
(the layout of MMPose's ``mpii_train.json`` / ``mpii_val.json``).

Conventions (stated, because they differ from other toolkits):
- box: a square of side ``scale * 200`` px (MPII's ``scale`` is person height / 200) centred on
  ``center``. MMPose's extra ``center_y += 15 * scale`` and ``scale *= 1.25`` are NOT applied:
  the pipeline pads boxes by 1.25 itself.
- visibility: ``joints_vis`` 1 -> 2 (labelled; MPII's occlusion flag is not in this JSON), 0 -> 0.
- head_size: distance upper_neck (8) - head_top (9). The official MPII PCKh uses 0.6 x the
  diagonal of the annotated head box, which this JSON does not carry, so values differ from it.

Example:
>>> samples = read_mpii_json("mpii/annotations/mpii_val.json", image_dir="mpii/images")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpose_tf.data.images import image_size
from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleChecker, load_json
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import MPII16

PIXEL_STD = 200.0  # MPII `scale` unit: person height in units of 200 px


def read_mpii_json(json_file, image_dir=None, on_bad_sample="raise"):
    """Read an MMPose-style MPII JSON file.

    Args:
        json_file: path of the JSON list.
        image_dir: folder of the images; default the JSON file's folder.
        on_bad_sample: "raise" (default) or "skip" malformed entries (see `validation`).

    Returns:
        `SampleList` of PoseSample (`.report`: the `LoadReport`), keypoint_set "mpii16";
        annotation_id = index of the entry in the list,
        `head_size` set when joints 8 and 9 are labelled.
    """
    path = Path(json_file)
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of person entries, got {type(data).__name__}", path=path)
    image_dir = Path(image_dir) if image_dir else path.parent
    k = MPII16.num_keypoints
    checker = SampleChecker(path, k, on_bad_sample)
    sizes = {}
    samples = []
    for idx, entry in enumerate(data):
        if not isinstance(entry, dict):
            checker.fail(f"entry is not an object: {entry!r:.80}", "entry", idx)
            continue
        name = entry.get("image")
        if not isinstance(name, str) or not name:
            checker.fail(f"expected an image file name, got {name!r:.80}", "image", idx)
            continue
        parsed = checker.keypoints(idx, entry.get("joints"), "joints", stride=2)
        if parsed is None:
            continue
        keypoints, _ = parsed
        raw_vis = entry.get("joints_vis")
        try:
            vis = np.asarray(raw_vis if raw_vis is not None else [1] * k, np.float64).reshape(-1)
        except (TypeError, ValueError):
            checker.fail(f"not a list of numbers (got {type(raw_vis).__name__})", "joints_vis", idx)
            continue
        if vis.size != k or not np.all(np.isfinite(vis)):
            checker.fail(f"expected {k} finite flags, got {vis.size} values", "joints_vis", idx)
            continue
        visibility = np.where(vis > 0, 2.0, 0.0)
        try:
            center = np.asarray(entry.get("center"), np.float64).reshape(2)
            scale = float(entry.get("scale"))
        except (TypeError, ValueError):
            checker.fail(f"expected center [x, y] and a number scale, got center={entry.get('center')!r:.60} "
                         f"scale={entry.get('scale')!r:.30}", "center/scale", idx)
            continue
        side = scale * PIXEL_STD
        bbox = [center[0] - side / 2, center[1] - side / 2, side, side]
        image_path = image_dir / name
        if image_path not in sizes:
            try:
                sizes[image_path] = image_size(image_path)
            except DataError:
                sizes[image_path] = None
        size = sizes[image_path]
        if size is None:
            checker.fail(f"image file {image_path} not found or unreadable", "image", idx,
                         reason="image file not found or unreadable", example=Path(name).name)
            continue
        checked = checker.check(idx, keypoints, visibility, bbox, size, box_field="center/scale")
        if checked is None:
            continue
        keypoints, visibility, bbox = checked
        head_size = None
        if visibility[8] > 0 and visibility[9] > 0:
            head_size = float(np.linalg.norm(keypoints[8] - keypoints[9]))
        samples.append(PoseSample(
            image_path=str(image_path), bbox=bbox, keypoints=keypoints, visibility=visibility,
            keypoint_set=MPII16.name, image_id=name, annotation_id=idx, image_size=size,
            head_size=head_size, extra={"dataset": "mpii", "center": center.tolist(), "scale": scale},
        ))
    return checker.finish(samples)
