"""COCO keypoints JSON reader: one `PoseSample` per annotated, non-crowd person.

Reads the official layout (`images`, `annotations` with `keypoints` = [x, y, v] * K, `bbox`,
`area`, `iscrowd`, `num_keypoints`, `categories[0].keypoints`). Works for COCO-17 and any file
whose category lists the joint names of a known `KeypointSet`.

Example:
>>> samples = read_coco("annotations/person_keypoints_train2017.json", image_dir="train2017")  # doctest: +SKIP
>>> samples[0].keypoints.shape                                                                 # doctest: +SKIP
(17, 2)
"""

from __future__ import annotations

import os
from pathlib import Path

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleList, SampleChecker, load_json
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import CROWDPOSE14, get_keypoint_set  # noqa: F401  (CROWDPOSE14 re-exported)
from kdpose_tf.utils.args import check_int, check_number


def _default_image_dir(path: Path) -> Path:
    # <root>/annotations/person_keypoints_train2017.json -> <root>/train2017
    split = path.stem.split("_")[-1]
    for candidate in (path.parent.parent / split, path.parent / split, path.parent / "images", path.parent):
        if candidate.is_dir():
            return candidate
    return path.parent


DUPLICATED_IMAGE_ID = "image id appears more than once in 'images'"


def inside_folder(folder, name):
    """`folder / name` when `name` is a relative path that stays inside `folder` (read lexically, so an
    image linked from elsewhere is fine); None for an absolute name or one climbing out with '..'."""
    if not isinstance(name, str) or not name or os.path.isabs(name):
        return None
    if os.path.normpath(name).split(os.sep)[0] in ("..", "."):
        return None
    return Path(folder) / name


def read_coco(annotation_file, image_dir=None, keypoint_set="coco17", on_bad_sample="raise", min_keypoints=1,
              check_images=True):
    """Read a COCO keypoints file.

    Args:
        annotation_file: path of the JSON file.
        image_dir: folder of the images; default `<root>/<split>` guessed from the file name.
        keypoint_set: name or KeypointSet of the joints (default "coco17"; "crowdpose14" for
            CrowdPose files); must match the K of the file's category. Unknown name: DataError.
        on_bad_sample: "raise" (default) or "skip" malformed annotations (see `validation`).
        min_keypoints: persons with fewer labelled joints are left out (not an error: COCO stores
            people without keypoint labels with all v = 0). Default 1. 0 keeps every person box,
            labelled or not (unlabelled people train on a teacher alone, `unlabelled_people`).
            Crowd regions are left out; both are counted under "left out" in the report.
        check_images: check that every referenced image file exists (default True).

    Returns:
        `SampleList` of PoseSample (`.report`: the `LoadReport`); `.extra["coco_gt"]` of each
        holds the annotation file path.
    """
    path = Path(annotation_file)
    check_int("min_keypoints", min_keypoints, minimum=0, owner="read_coco")
    ks = get_keypoint_set(keypoint_set, path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object at the top level, got {type(data).__name__}", path=path)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"expected a list under '{key}'", path=path, field=key)
    cats = data.get("categories") or []
    names = cats[0].get("keypoints") if cats and isinstance(cats[0], dict) else None
    if names and len(names) != ks.num_keypoints:
        raise DataError(f"categories[0].keypoints lists {len(names)} joints but keypoint set {ks.name!r} has "
                        f"{ks.num_keypoints}", path=path, field="categories.keypoints")
    image_dir = Path(image_dir) if image_dir else _default_image_dir(path)
    checker = SampleChecker(path, ks.num_keypoints, on_bad_sample)

    images, duplicated = {}, set()
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise DataError(f"image entry needs 'id' and 'file_name', got {img!r:.120}", path=path, field="images")
        if img["id"] in images:  # which file its annotations belong to is unknowable
            if on_bad_sample == "raise":
                raise DataError(f"image id {img['id']!r} appears more than once ({images[img['id']]['file_name']!r} "
                                f"and {img['file_name']!r}); expected unique ids", path=path, field="images")
            duplicated.add(img["id"])
        images[img["id"]] = img

    samples, missing_files = [], {}
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            checker.fail(f"annotation is not an object: {ann!r:.80}", "annotations", None)
            continue
        ann_id = ann.get("id")
        if ann.get("iscrowd", 0):
            checker.report.filter("crowd region (iscrowd=1)")
            continue
        img = images.get(ann.get("image_id"))
        if img is None:
            checker.fail(f"image_id {ann.get('image_id')!r} is not in 'images'", "image_id", ann_id)
            continue
        if img["id"] in duplicated:
            checker.fail(f"image id {img['id']!r} appears more than once in 'images'", "image_id", ann_id,
                         reason=DUPLICATED_IMAGE_ID)
            continue
        parsed = checker.keypoints(ann_id, ann.get("keypoints"))
        if parsed is None:
            continue
        keypoints, visibility = parsed
        if int((visibility > 0).sum()) < min_keypoints:
            checker.report.filter(f"fewer than {min_keypoints} labelled joints")
            continue
        image_path = inside_folder(image_dir, img["file_name"])
        if image_path is None:
            checker.fail(f"{img['file_name']!r} lies outside the image folder {image_dir}; expected a relative path inside it", "file_name",
                         ann_id, reason="outside the image folder", example=img["file_name"])
            continue
        if check_images:
            exists = missing_files.get(image_path)
            if exists is None:
                exists = missing_files[image_path] = image_path.exists()
            if not exists:
                checker.fail(f"image file {image_path} not found", "file_name", ann_id,
                             reason="image file not found", example=image_path.name)
                continue
        size = (img["width"], img["height"]) if "width" in img and "height" in img else None
        checked = checker.check(ann_id, keypoints, visibility, ann.get("bbox"), size,
                                allow_unlabelled=min_keypoints == 0)
        if checked is None:
            continue
        keypoints, visibility, bbox = checked
        samples.append(PoseSample(
            image_path=str(image_path), bbox=bbox, keypoints=keypoints, visibility=visibility,
            keypoint_set=ks.name, image_id=img["id"], annotation_id=ann_id, image_size=size,
            area=float(ann["area"]) if ann.get("area") else None,
            extra={"dataset": "coco", "coco_gt": str(path)},
        ))
    return checker.finish(samples)


def unlabelled_people(annotation_file, image_dir=None, keypoint_set="coco17", on_bad_sample="raise", min_height=48):
    """The person boxes of a COCO file that carry no keypoint label (for teacher-only training).

    COCO keeps many people without keypoints (small, blurred or half hidden). With a pretrained
    teacher (`kdpose_tf.distillation.heatmap_teacher`) they are extra training people: their
    ground-truth weight is 0 everywhere, so only the teacher's heatmaps supervise them.

    Args:
        annotation_file, image_dir, keypoint_set, on_bad_sample: as `read_coco`.
        min_height: boxes shorter than this (pixels) are left out: too small to teach a pose.
            Default 48.

    Returns:
        `SampleList` of PoseSample with all visibility 0.
    """
    check_number("min_height", min_height, low=0, owner="unlabelled_people")
    people = read_coco(annotation_file, image_dir, keypoint_set, on_bad_sample, min_keypoints=0)
    keep = [s for s in people if not (s.visibility > 0).any() and s.bbox[3] >= min_height]
    if people.report is not None:
        people.report.filter("labelled people or boxes under min_height (unlabelled_people)", len(people) - len(keep))
        people.report.kept = len(keep)
    return SampleList(keep, people.report)


resolve_keypoint_set = get_keypoint_set  # the name data/datasets.py imports
