"""Checks every reader applies to an annotation, and the `on_bad_sample` policy.

`SampleChecker` validates one person annotation and either raises a `DataError` naming the
file, the annotation id and the field (`on_bad_sample="raise"`), or records the reason in a
`LoadReport` and tells the reader to skip the sample (`"skip"`). Joints outside the image are
dropped (visibility 0) under "skip" and raise under "raise".

Example:
>>> checker = SampleChecker("ann.json", num_keypoints=17, on_bad_sample="skip")
>>> # in a reader: sample = checker.check(ann_id, keypoints, visibility, bbox, image_size)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdpose_tf.data.images import image_size
from kdpose_tf.errors import DataError

POLICIES = ("raise", "skip")
VISIBILITY_FLAGS = (0, 1, 2)  # COCO: not labelled, labelled but hidden, labelled and visible


def load_json(path):
    """Parse an annotation file; DataError naming the file (and the line) when it cannot."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("annotation file not found", path=path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at line {e.lineno})", path=path) from None


def check_policy(on_bad_sample):
    if on_bad_sample not in POLICIES:
        raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
    return on_bad_sample


@dataclass
class LoadReport:
    """What a reader kept, skipped and repaired, with up to 3 examples per reason."""

    source: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def skip(self, reason, example=None):
        self.skipped[reason] += 1
        if example is not None:
            examples = self.examples.setdefault(reason, [])
            if len(examples) < 3 and example not in examples:  # one image with several people is one example
                examples.append(example)

    def repair(self, reason, count=1):
        self.repaired[reason] += count

    def filter(self, reason, count=1):
        """Count annotations left out by design (crowd regions, too few joints): never an error."""
        self.filtered[reason] += count

    def skipped_summary(self) -> str:
        """The skips on one line, grouped by reason with their count and first examples."""
        def examples(reason):
            names = ", ".join(str(e) for e in self.examples.get(reason, []))
            return f" (e.g. {names})" if names else ""

        return "; ".join(f"{n} {reason}{examples(reason)}" for reason, n in self.skipped.most_common())

    def __str__(self):
        lines = [f"{self.source}: kept {self.kept} samples, skipped {sum(self.skipped.values())}"]
        for reason, n in self.skipped.most_common():
            ex = ", ".join(str(e) for e in self.examples.get(reason, []))
            lines.append(f"  skipped {n:5d}  {reason}" + (f"  (e.g. {ex})" if ex else ""))
        for reason, n in self.repaired.most_common():
            lines.append(f"  repaired {n:4d}  {reason}")
        for reason, n in self.filtered.most_common():
            lines.append(f"  left out {n:4d}  {reason}")
        return "\n".join(lines)


class SampleList(list):
    """A plain list of `PoseSample` that also carries the reader's `LoadReport` as `.report`.

    Readers return it so callers that only want samples use it as a list, and callers that want
    to know what was skipped read `samples.report` (counts per reason, examples, repaired joints).
    """

    def __init__(self, samples=(), report=None):
        super().__init__(samples)
        self.report = report


def merge_reports(source, reports):
    """One `LoadReport` summing several (e.g. one per Buffy episode file)."""
    merged = LoadReport(str(source))
    for r in reports:
        merged.kept += r.kept
        merged.skipped.update(r.skipped)
        merged.repaired.update(r.repaired)
        merged.filtered.update(r.filtered)
        for reason, examples in r.examples.items():
            room = 3 - len(merged.examples.setdefault(reason, []))
            merged.examples[reason].extend(examples[:max(room, 0)])
    return merged


class SampleChecker:
    """Validates annotations of one file under a policy; collects a `LoadReport`.

    Args:
        path: the annotation file (named in errors).
        num_keypoints: K expected per annotation.
        on_bad_sample: "raise" (default) or "skip".
    """

    def __init__(self, path, num_keypoints, on_bad_sample="raise"):
        self.path = str(path)
        self.num_keypoints = int(num_keypoints)
        self.policy = check_policy(on_bad_sample)
        self.report = LoadReport(self.path)
        self._seen_ids = set()

    def fail(self, message, field_name, annotation_id, reason=None, example=None):
        """Raise under "raise"; under "skip" count the reason and return None.

        The report groups skips by `reason` (default: the field and the message up to its first
        parenthesis), so a reason must not name the item: that goes in `example` (default the
        annotation id), of which the report keeps the first few.
        """
        if self.policy == "raise":
            raise DataError(message, path=self.path, field=field_name, annotation_id=annotation_id)
        reason = reason or message.split(' (')[0]
        self.report.skip(f"{field_name}: {reason}", annotation_id if example is None else example)
        return None

    def image_size(self, image_path, annotation_id):
        """(width, height) of the image file, or None (under "skip") when it is missing or unreadable."""
        try:
            return image_size(image_path)
        except DataError as e:
            return self.fail(f"image file {image_path}: {e}", "image", annotation_id,
                             reason=e.message.split(" (")[0], example=Path(str(image_path)).name)

    def keypoints(self, annotation_id, raw, field_name="keypoints", stride=3):
        """Parse a flat [x, y, v]*K (stride 3) or [x, y]*K (stride 2) list into (K,2), (K,)."""
        if raw is None:
            return self.fail("missing", field_name, annotation_id)
        try:
            arr = np.asarray(raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return self.fail(f"not a list of numbers (got {type(raw).__name__})", field_name, annotation_id)
        if arr.size != stride * self.num_keypoints:
            return self.fail(f"expected {stride * self.num_keypoints} values ({self.num_keypoints} joints x "
                             f"{stride}), got {arr.size}", field_name, annotation_id)
        arr = arr.reshape(self.num_keypoints, stride)
        vis = arr[:, 2] if stride == 3 else np.full(self.num_keypoints, 2.0)
        if not np.all(np.isfinite(arr)):
            return self.fail("contains NaN or inf", field_name, annotation_id)
        odd = ~np.isin(vis, VISIBILITY_FLAGS)
        if odd.any():
            j = int(np.flatnonzero(odd)[0])
            return self.fail(f"visibility flags must be 0, 1 or 2 (joint {j} has {vis[j]:g})", field_name,
                             annotation_id)
        return arr[:, :2], vis

    def check(self, annotation_id, keypoints, visibility, bbox, image_size=None, box_field="bbox",
              allow_unlabelled=False):
        """Validate one person; returns (keypoints, visibility, bbox) or None to skip it.

        Drops (under "skip") or rejects (under "raise") joints outside the image; derives the box
        from the labelled joints when `bbox` is None; rejects empty boxes and persons with no
        labelled joint (unless `allow_unlabelled` and a box is given: a person a teacher alone
        supervises); rejects duplicated annotation ids.
        """
        if annotation_id is not None:
            if annotation_id in self._seen_ids:
                return self.fail("duplicated annotation id", "id", annotation_id)
            self._seen_ids.add(annotation_id)
        keypoints = np.asarray(keypoints, np.float32)
        visibility = np.asarray(visibility, np.float32).copy()
        labelled = visibility > 0
        if image_size is not None and labelled.any():
            w, h = image_size
            inside = (keypoints[:, 0] >= 0) & (keypoints[:, 0] < w) & (keypoints[:, 1] >= 0) & (keypoints[:, 1] < h)
            outside = labelled & ~inside
            if outside.any():
                if self.policy == "raise":
                    j = int(np.flatnonzero(outside)[0])
                    raise DataError(
                        f"joint {j} at ({keypoints[j, 0]:.1f}, {keypoints[j, 1]:.1f}) lies outside the "
                        f"{w}x{h} image", path=self.path, field="keypoints", annotation_id=annotation_id)
                visibility[outside] = 0
                labelled = visibility > 0
                self.report.repair("joints outside the image set to unlabelled", int(outside.sum()))
        if not labelled.any() and not (allow_unlabelled and bbox is not None):
            return self.fail("no labelled joint (all visibility flags are 0)", "keypoints", annotation_id)
        if bbox is None:
            pts = keypoints[labelled]
            lo, hi = pts.min(0), pts.max(0)
            bbox = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
        try:
            bbox = np.asarray(bbox, np.float32).reshape(4)
        except (TypeError, ValueError):
            return self.fail(f"expected [x, y, w, h], got {bbox!r}", box_field, annotation_id)
        if not np.all(np.isfinite(bbox)):
            return self.fail("contains NaN or inf", box_field, annotation_id)
        if bbox[2] <= 0 or bbox[3] <= 0:
            return self.fail(f"empty box (width {bbox[2]:g}, height {bbox[3]:g}); expected both > 0",
                             box_field, annotation_id)
        return keypoints, visibility, bbox

    def finish(self, samples, raise_if_empty=True, verbose=True):
        """Final checks on the kept samples: a `SampleList` with `.report`.

        Raises DataError "no usable samples" (always, whatever the policy) when nothing is left and
        `raise_if_empty`; prints the report table when something was skipped or repaired and `verbose`.
        """
        self.report.kept = len(samples)
        if not samples and raise_if_empty:
            detail = (self.report.skipped_summary()
                      or "; ".join(f"{n} left out: {reason}" for reason, n in self.report.filtered.most_common())
                      or "no person in the file")
            raise DataError(f"no usable samples, {sum(self.report.skipped.values())} skipped: {detail}",
                            path=self.path)
        if verbose and (self.report.skipped or self.report.repaired):
            print(self.report)
        return SampleList(samples, self.report)
