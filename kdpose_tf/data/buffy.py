"""Buffy Stickmen v3 reader: upper-body stick annotations mapped onto LSP-14 joints.

``<root>/data/buffy_s5e<N>_sticks.txt`` lists, per annotated frame, the frame number and six
sticks ``x1 y1 x2 y2`` in the order torso, left upper arm, right upper arm, left lower arm,
right lower arm, head. The README states that 'left' and 'right' are **as they appear in the
image**; LSP14 uses the person's left. Buffy people face the camera, so the image-left arm is the
person's right arm (checked visually on frame s5e2/63): image-left sticks -> LSP14 right_* joints.

The end-point order inside a stick is not consistent in the files, so ends are matched by
distance: elbow = the upper-arm end nearest the lower-arm stick, shoulder = the other upper-arm
end, wrist = the lower-arm end farthest from the elbow, neck = the torso end nearest the head
stick, head_top = the head end farthest from the torso. All are stick end points as annotated.
Hips, knees and ankles get visibility 0; the box is the labelled joints' bounding box.
Images: ``<root>/images/buffy_s5e<N>_original/<frame:06d>.jpg``.

Example:
>>> samples = read_buffy("shared/data/buffy")  # doctest: +SKIP
>>> len(samples)                               # doctest: +SKIP
748
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleChecker, SampleList, merge_reports
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import LSP14

STICKS = ("torso", "left_upper_arm", "right_upper_arm", "left_lower_arm", "right_lower_arm", "head")
_FILE_RE = re.compile(r"buffy_s(\d+)e(\d+)_sticks\.txt$")
_J = {n: i for i, n in enumerate(LSP14.names)}


def parse_sticks_file(path):
    """Parse one sticks file into a list of (frame_number, (6, 4) array or error message, line number)."""
    entries = []
    lines = Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        tokens = lines[i].split()
        if not tokens:
            i += 1
            continue
        start = i + 1
        if len(tokens) != 1 or not tokens[0].isdigit():
            entries.append((None, f"line {start}: expected a frame number, got {lines[i].strip()!r:.60}", start))
            i += 1
            continue
        frame = int(tokens[0])
        rows, problem = [], None
        for j in range(i + 1, i + 1 + len(STICKS)):
            values = lines[j].split() if j < len(lines) else []
            try:
                row = [float(v) for v in values]
            except ValueError:
                row = []
            if len(row) != 4:
                problem = f"line {j + 1}: expected 4 numbers for stick {STICKS[j - i - 1]}, got {values}"
                break
            rows.append(row)
        if problem is not None:
            entries.append((frame, problem, start))
            # resynchronise on the next frame-number line
            i += 1
            while i < len(lines) and len(lines[i].split()) != 1:
                i += 1
            continue
        entries.append((frame, np.asarray(rows, np.float64), start))
        i += 1 + len(STICKS)
    return entries


def _near_far(stick, point):
    """(end nearest `point`, other end) of a stick [x1, y1, x2, y2]."""
    a, b = stick[:2], stick[2:]
    return (a, b) if np.linalg.norm(a - point) <= np.linalg.norm(b - point) else (b, a)


def sticks_to_lsp14(sticks):
    """(6, 4) sticks -> (14, 2) keypoints, (14,) visibility in LSP14 order (see module docstring)."""
    sticks = np.asarray(sticks, np.float64).reshape(6, 4)
    torso, head = sticks[0], sticks[5]
    kp = np.zeros((LSP14.num_keypoints, 2), np.float64)
    vis = np.zeros(LSP14.num_keypoints, np.float64)
    head_mid = (head[:2] + head[2:]) / 2
    neck, _ = _near_far(torso, head_mid)
    _, head_top = _near_far(head, (torso[:2] + torso[2:]) / 2)
    kp[_J["neck"]], kp[_J["head_top"]] = neck, head_top
    # image-left arm = person's right arm (frontal people)
    for side, upper, lower in (("right", sticks[1], sticks[3]), ("left", sticks[2], sticks[4])):
        # elbow: the upper-arm end closest to either lower-arm end
        d = [min(np.linalg.norm(e - lower[:2]), np.linalg.norm(e - lower[2:])) for e in (upper[:2], upper[2:])]
        elbow, shoulder = (upper[:2], upper[2:]) if d[0] <= d[1] else (upper[2:], upper[:2])
        _, wrist = _near_far(lower, elbow)
        kp[_J[f"{side}_shoulder"]], kp[_J[f"{side}_elbow"]], kp[_J[f"{side}_wrist"]] = shoulder, elbow, wrist
    for name in ("neck", "head_top", "right_shoulder", "right_elbow", "right_wrist",
                 "left_shoulder", "left_elbow", "left_wrist"):
        vis[_J[name]] = 2
    return kp, vis


def read_buffy(root, on_bad_sample="raise"):
    """Read Buffy Stickmen v3 from `root` (holding data/*_sticks.txt and images/).

    Args:
        root: the Buffy folder.
        on_bad_sample: "raise" (default) or "skip" malformed frames (see `validation`).

    Returns:
        `SampleList` of PoseSample (keypoint_set "lsp14", upper body only); annotation_id = "s5e2/63"
        style, `extra["sticks"]` = the (6, 4) raw sticks; `.report` sums the per-episode reports.
    """
    root = Path(root)
    files = sorted((root / "data").glob("buffy_s*e*_sticks.txt"))
    if not files:
        raise DataError("no Buffy annotation files (expected data/buffy_s5e<N>_sticks.txt)", path=root / "data")
    all_samples, checkers = [], []
    for path in files:
        season, episode = _FILE_RE.search(path.name).groups()
        tag = f"s{season}e{episode}"
        image_dir = root / "images" / f"buffy_{tag}_original"
        checker = SampleChecker(path, LSP14.num_keypoints, on_bad_sample)
        samples = []
        for frame, sticks, line in parse_sticks_file(path):
            ann_id = f"{tag}/{frame}" if frame is not None else f"{tag}/line{line}"
            if isinstance(sticks, str):
                checker.fail(sticks, "sticks", ann_id, reason=sticks.split(": ", 1)[-1].split(", got")[0])
                continue
            if not np.all(np.isfinite(sticks)):
                checker.fail("contains NaN or inf", "sticks", ann_id)
                continue
            image_path = image_dir / f"{frame:06d}.jpg"
            size = checker.image_size(image_path, ann_id)
            if size is None:
                continue
            keypoints, visibility = sticks_to_lsp14(sticks)
            checked = checker.check(ann_id, keypoints, visibility, None, size)
            if checked is None:
                continue
            keypoints, visibility, bbox = checked
            samples.append(PoseSample(
                image_path=str(image_path), bbox=bbox, keypoints=keypoints, visibility=visibility,
                keypoint_set=LSP14.name, image_id=f"{tag}/{frame:06d}", annotation_id=ann_id,
                image_size=size, extra={"dataset": "buffy", "episode": tag, "sticks": sticks.astype(np.float32)},
            ))
        checkers.append((checker, samples))
        all_samples.extend(samples)
    if not all_samples:
        skipped = sum(sum(c.report.skipped.values()) for c, _ in checkers)
        raise DataError(f"no usable samples ({skipped} skipped)\n" + "\n".join(str(c.report) for c, _ in checkers),
                        path=root / "data")
    for checker, samples in checkers:
        checker.finish(samples, raise_if_empty=False)
    return SampleList(all_samples, merge_reports(root / "data", [c.report for c, _ in checkers]))
