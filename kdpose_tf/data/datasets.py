"""Dataset specs, keypoint-set remapping and the small real benchmark split.

Spec strings (an explicit if-chain, no registry):
- ``coco:JSON[:IMAGES]``   -> `read_coco`
- ``mpii:JSON[:IMAGES]``   -> `read_mpii_json`
- ``parse:DIR[:SPLIT]``    -> `read_parse` (SPLIT: all, train, test)
- ``buffy:DIR``            -> `read_buffy`

Example:
>>> train, test = real_benchmark_split("../shared")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpose_tf.data.buffy import read_buffy
from kdpose_tf.data.coco import read_coco, resolve_keypoint_set
from kdpose_tf.data.mpii import read_mpii_json
from kdpose_tf.data.parse import SPLITS, read_parse
from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import SampleList
from kdpose_tf.keypoints import LSP14, joint_mapping

SPEC_KINDS = ("coco", "mpii", "parse", "buffy")


def load_samples(spec, on_bad_sample="skip"):
    """Load samples from a spec string such as ``"parse:/data/parse:test"`` (see module docstring)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"dataset spec must look like 'KIND:PATH[:EXTRA]' with KIND in {SPEC_KINDS}, got {spec!r}")
    kind, rest = spec.split(":", 1)
    if kind == "coco" or kind == "mpii":
        path, _, images = rest.partition(":")
        reader = read_coco if kind == "coco" else read_mpii_json
        return reader(path, images or None, on_bad_sample=on_bad_sample)
    if kind == "parse":
        path, split = rest, "all"
        head, sep, tail = rest.rpartition(":")
        if sep and tail in SPLITS:
            path, split = head, tail
        return read_parse(path, split=split, on_bad_sample=on_bad_sample)
    if kind == "buffy":
        return read_buffy(rest, on_bad_sample=on_bad_sample)
    raise ValueError(f"unknown dataset kind {kind!r} in spec {spec!r}; expected one of {SPEC_KINDS}")


def to_keypoint_set(samples, target_set):
    """Remap samples onto `target_set` by joint name; joints the source lacks get visibility 0.

    Sets are resolved by name (coco17, mpii16, lsp14, crowdpose14) or given as KeypointSet. A
    `SampleList`'s `.report` is carried over.
    """
    target = resolve_keypoint_set(target_set)
    out = []
    for s in samples:
        source = resolve_keypoint_set(s.keypoint_set, s.image_path)
        if source.name == target.name:
            out.append(s)
            continue
        kp = np.zeros((target.num_keypoints, 2), np.float32)
        vis = np.zeros(target.num_keypoints, np.float32)
        for src, dst in joint_mapping(source, target).items():
            kp[dst], vis[dst] = s.keypoints[src], s.visibility[src]
        out.append(PoseSample(
            image_path=s.image_path, bbox=s.bbox.copy(), keypoints=kp, visibility=vis, keypoint_set=target.name,
            image_id=s.image_id, annotation_id=s.annotation_id, image_size=s.image_size, area=s.area,
            head_size=s.head_size, extra={**s.extra, "source_keypoint_set": source.name},
        ))
    return SampleList(out, getattr(samples, "report", None))


def real_benchmark_split(shared_root, keypoint_set=LSP14, min_joints=4, on_bad_sample="skip"):
    """The small real benchmark: (train, test) lists of PoseSample in `keypoint_set` (default LSP14).

    train = PARSE 1-100 + Buffy (upper body) + COCO-mini (COCO-17 mapped by joint name; neck and
    head_top unlabelled; persons with fewer than `min_joints` labelled joints after mapping left out);
    test = PARSE 101-305. `shared_root` is the shared folder (or its ``data`` folder).
    """
    root = Path(shared_root)
    data = root / "data" if (root / "data").is_dir() else root
    ks = resolve_keypoint_set(keypoint_set)
    coco = read_coco(data / "coco_mini" / "annotations" / "person_keypoints_train2017.json",
                     data / "coco_mini" / "train2017", on_bad_sample=on_bad_sample)
    coco = [s for s in to_keypoint_set(coco, ks) if int((s.visibility > 0).sum()) >= min_joints]
    train = (to_keypoint_set(read_parse(data / "parse", "train", on_bad_sample), ks)
             + to_keypoint_set(read_buffy(data / "buffy", on_bad_sample), ks) + coco)
    test = to_keypoint_set(read_parse(data / "parse", "test", on_bad_sample), ks)
    return train, test
