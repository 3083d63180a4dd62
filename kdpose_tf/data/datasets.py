"""Dataset specs (the one way every command reads data), keypoint-set remapping and the small real
benchmark split.

Spec strings, dispatched through `READERS` (prefix -> reader; add a prefix there to add a format):
- ``coco:JSON[:IMAGES]``   -> `read_coco` (joint set from ``categories[0].keypoints``)
- ``mpii:JSON[:IMAGES]``   -> `read_mpii_json`
- ``parse:DIR[:SPLIT]``    -> `read_parse` (SPLIT: all, train, test)
- ``buffy:DIR``            -> `read_buffy`
- ``lspet:DIR``            -> `read_lspet` (LSP Extended; unlabelled joints masked)
- ``lsp:DIR[:SPLIT]``      -> `read_lsp` (Leeds Sports Pose; SPLIT: all, train = 1-1000, test = 1001-2000;
  scored with the literature's protocol, `kdpose_tf.metrics.pck.LSP_PROTOCOL`)
- ``pack:DIR``             -> `read_pack` (a training pack: people's regions with their teacher targets,
  `kdpose_tf.data.pack`; its pack.json in `LoadedData.info`)
- ``SPEC+SPEC+...``        -> several sets read one after the other and combined, every one mapped by
  joint name onto the first one's keypoint set (e.g. ``lsp:DIR:train+lspet:DIR+parse:DIR:train``)
- a bare COCO JSON path, or a folder holding ``annotations/*.json`` (COCO layout)

`on_bad_sample` reaches every reader; after reading, every image file is checked (present,
not empty, JPEG/PNG not truncated, decodable) under the same policy, so "skip" never fails later when a
crop is read. What was skipped is in `samples.report` (a `LoadReport`).

Example:
>>> data = load_dataset("parse:/work/shared/data/parse:test")  # doctest: +SKIP
>>> len(data.samples), data.keypoint_set.name, data.samples.report.kept  # doctest: +SKIP
(205, 'lsp14', 205)
>>> train, test = real_benchmark_split("../shared")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdpose_tf.data.buffy import read_buffy
from kdpose_tf.data.coco import read_coco, resolve_keypoint_set, unlabelled_people
from kdpose_tf.data.images import check_image_file
from kdpose_tf.data.lsp import SPLITS as LSP_SPLITS
from kdpose_tf.data.lsp import read_lsp
from kdpose_tf.data.lspet import read_lspet
from kdpose_tf.data.mpii import read_mpii_json
from kdpose_tf.data.pack import read_pack, read_pack_meta
from kdpose_tf.data.parse import SPLITS, read_parse
from kdpose_tf.data.pipeline import make_inference_inputs
from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.validation import LoadReport, SampleList, check_policy, merge_reports
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import COCO17, KEYPOINT_SETS, LSP14, MPII16, get_keypoint_set, joint_mapping


@dataclass
class LoadedData:
    """What `load_dataset` returns.

    Attributes:
        samples: `SampleList` of `PoseSample` (its `.report` says what was kept and skipped).
        keypoint_set: the `KeypointSet` of the samples.
        coco_gt: COCO ground truth for OKS AP (the JSON path, or a dict restricted to the kept
            images when whole images were skipped); None for other formats.
        info: what the source says about itself beyond its people (a pack: its pack.json), else None.
    """

    samples: SampleList
    keypoint_set: object
    coco_gt: object = None
    info: dict | None = None


def _read_coco_spec(rest, on_bad_sample):
    path, _, images = rest.partition(":")
    return _read_coco_file(Path(path), images or None, on_bad_sample)


def _read_mpii_spec(rest, on_bad_sample):
    path, _, images = rest.partition(":")
    return LoadedData(read_mpii_json(path, images or None, on_bad_sample=on_bad_sample), MPII16)


def _path_and_split(rest, splits):
    """'DIR[:SPLIT]' -> (DIR, SPLIT), SPLIT "all" when the last part is not one of `splits`."""
    head, sep, tail = rest.rpartition(":")
    return (head, tail) if sep and tail in splits else (rest, "all")


def _read_parse_spec(rest, on_bad_sample):
    path, split = _path_and_split(rest, SPLITS)
    return LoadedData(read_parse(path, split=split, on_bad_sample=on_bad_sample), LSP14)


def _read_buffy_spec(rest, on_bad_sample):
    return LoadedData(read_buffy(rest, on_bad_sample=on_bad_sample), LSP14)


def _read_lspet_spec(rest, on_bad_sample):
    return LoadedData(read_lspet(rest, on_bad_sample=on_bad_sample), LSP14)


def _read_lsp_spec(rest, on_bad_sample):
    path, split = _path_and_split(rest, LSP_SPLITS)
    return LoadedData(read_lsp(path, split=split, on_bad_sample=on_bad_sample), LSP14)


def _read_pack_spec(rest, on_bad_sample):
    meta = read_pack_meta(rest)
    samples = read_pack(rest, on_bad_sample=on_bad_sample)
    return LoadedData(samples, get_keypoint_set(meta["keypoint_set"]), info=meta)


# prefix -> fn(rest_of_spec, on_bad_sample) -> LoadedData
READERS = {
    "coco": _read_coco_spec,
    "mpii": _read_mpii_spec,
    "parse": _read_parse_spec,
    "buffy": _read_buffy_spec,
    "lspet": _read_lspet_spec,
    "lsp": _read_lsp_spec,
    "pack": _read_pack_spec,
}
SPEC_KINDS = tuple(READERS)


def coco_keypoint_set(path):
    """The keypoint set a COCO JSON declares in ``categories[0].keypoints`` (COCO-17 when absent)."""
    try:
        with open(path) as f:
            cats = json.load(f).get("categories") or []
        names = tuple(cats[0].get("keypoints", ())) if cats else ()
    except (OSError, json.JSONDecodeError, AttributeError, IndexError) as e:
        raise DataError(f"not a readable COCO JSON ({e})", path=path) from e
    for ks in KEYPOINT_SETS.values():
        if names == tuple(ks.names):
            return ks
    if names and len(names) != 17:
        raise DataError(
            f"categories[0].keypoints has {len(names)} joints {names[:4]}...; known sets: "
            f"{sorted(KEYPOINT_SETS)}", path=path, field="categories.keypoints",
        )
    return COCO17


def _read_coco_file(path, image_dir, on_bad_sample):
    if path.is_dir():
        candidates = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
        if not candidates:
            raise DataError("expected a COCO keypoints JSON file or a folder with annotations/*.json", path=path)
        path = candidates[0]
    if not path.is_file():
        raise DataError("no such file", path=path)
    ks = coco_keypoint_set(path)
    samples = read_coco(path, image_dir, keypoint_set=ks.name, on_bad_sample=on_bad_sample)
    return LoadedData(samples, ks, str(path))


def load_dataset(spec, on_bad_sample="skip"):
    """Read a dataset spec (see the module docstring) into a `LoadedData`.

    Args:
        spec: ``KIND:PATH[:EXTRA]`` with KIND in `READERS`, or a COCO JSON file / folder.
        on_bad_sample: "skip" (default: leave out malformed samples and unreadable images, and
            say so in `samples.report`) or "raise" (DataError naming file and field).
    """
    check_policy(on_bad_sample)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset spec must be a string 'KIND:PATH[:EXTRA]' or a COCO path, got {spec!r}")
    if "+" in spec and not Path(spec).exists():
        return _combine([load_dataset(part, on_bad_sample) for part in spec.split("+")], spec)
    kind, sep, rest = spec.partition(":")
    if sep and kind in READERS:
        data = READERS[kind](rest, on_bad_sample)
    elif Path(spec).exists():
        data = _read_coco_file(Path(spec), None, on_bad_sample)
    elif sep and kind.isidentifier() and len(kind) > 1:
        raise ValueError(f"unknown dataset kind {kind!r} in spec {spec!r}; expected one of {SPEC_KINDS}")
    else:
        raise DataError(
            f"no such file or folder; a dataset is a COCO JSON file or folder, or 'KIND:PATH[:EXTRA]' with "
            f"KIND in {SPEC_KINDS}", path=spec)
    data.samples = _drop_unreadable_images(data.samples, on_bad_sample)
    if isinstance(data.coco_gt, str) and data.samples.report.skipped:  # skipped people are no misses in AP
        data.coco_gt = _restrict_coco_gt(data.coco_gt, {s.image_id for s in data.samples})
    return data


def _combine(parts, spec):
    """One `LoadedData` of several: samples concatenated, each mapped onto the first part's keypoint set."""
    if any(not part for part in spec.split("+")):
        raise ValueError(f"empty part in the combined dataset spec {spec!r}; expected SPEC+SPEC+...")
    keypoint_set = parts[0].keypoint_set
    samples = [s for part in parts for s in to_keypoint_set(part.samples, keypoint_set)]
    reports = [part.samples.report for part in parts if getattr(part.samples, "report", None) is not None]
    report = merge_reports(spec, reports)
    report.kept = len(samples)
    return LoadedData(SampleList(samples, report), keypoint_set)


def load_samples(spec, on_bad_sample="skip"):
    """The samples of `load_dataset(spec, on_bad_sample)` (a `SampleList` with `.report`)."""
    return load_dataset(spec, on_bad_sample).samples


UNREADABLE = "image file missing, empty, truncated or not decodable"


def _unreadable_images(paths):
    """{path: DataError} for the files `check_image_file` refuses, in `paths` order; checked on a few
    threads (OpenCV decodes without holding the GIL)."""
    def check(path):
        try:
            check_image_file(path)
        except DataError as e:
            return e
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return {p: e for p, e in zip(paths, pool.map(check, paths)) if e is not None}


def _drop_unreadable_images(samples, on_bad_sample):
    """Check every image file once (decoded, `check_image_file`); under "skip" leave out the samples of
    unreadable ones, under "raise" raise the first one's DataError."""
    report = getattr(samples, "report", None) or LoadReport("dataset", kept=len(samples))
    bad = _unreadable_images(list(dict.fromkeys(str(s.image_path) for s in samples)))
    if bad and on_bad_sample == "raise":
        raise next(iter(bad.values()))
    if not bad:
        return samples if isinstance(samples, SampleList) else SampleList(samples, report)
    kept = [s for s in samples if str(s.image_path) not in bad]
    for s in samples:
        if str(s.image_path) in bad:
            report.skip(UNREADABLE, example=f"{Path(str(s.image_path)).name}: {bad[str(s.image_path)].message}")
    report.kept = len(kept)
    if not kept:
        raise DataError(f"no usable samples, every image is unreadable: {report.skipped_summary()}",
                        path=report.source)
    print(report)
    return SampleList(kept, report)


def _restrict_coco_gt(path, image_ids):
    """The COCO ground truth of `path` restricted to `image_ids` (skipped images leave AP unharmed)."""
    with open(path) as f:
        gt = json.load(f)
    gt["images"] = [im for im in gt["images"] if im["id"] in image_ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in image_ids]
    return gt


def calibration_crops(samples, input_size, count, seed=0):
    """Up to `count` un-augmented person crops (N, H, W, 3) float32 in [0, 255], drawn at random
    (seeded) from `samples`: the representative data of int8 post-training quantization."""
    rng = np.random.default_rng(seed)
    chosen = [samples[i] for i in rng.permutation(len(samples))[:count]]
    images, _, _ = make_inference_inputs(chosen, input_size)
    return np.asarray(images, np.float32)


def without_labels(samples):
    """`samples` with image and box kept and every joint label set aside (visibility 0, keypoints 0,
    ``extra["labels_hidden"]``): people a teacher alone supervises (`hide_labels`, `load_unlabelled`)."""
    return [PoseSample(
        image_path=s.image_path, bbox=s.bbox.copy(), keypoints=np.zeros_like(s.keypoints),
        visibility=np.zeros_like(s.visibility), keypoint_set=s.keypoint_set, image_id=s.image_id,
        annotation_id=s.annotation_id, image_size=s.image_size, area=s.area, head_size=s.head_size,
        extra={**s.extra, "labels_hidden": True},
    ) for s in samples]


def hide_labels(samples, keep_fraction, seed=0):
    """Keep the joint labels of a seeded random `keep_fraction` of `samples`; the others keep image
    and box but no labelled joint (`without_labels`): the semi-supervised setting where a teacher
    labels what people did not.

    Returns:
        (all samples, partly unlabelled; the labelled ones alone), both in the input order.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction!r}")
    n_keep = max(1, int(round(keep_fraction * len(samples))))
    keep = set(np.random.default_rng(seed).permutation(len(samples))[:n_keep].tolist())
    hidden = iter(without_labels([s for i, s in enumerate(samples) if i not in keep]))
    out = [s if i in keep else next(hidden) for i, s in enumerate(samples)]
    return out, [s for i, s in enumerate(samples) if i in keep]


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


def load_unlabelled(spec, keypoint_set, on_bad_sample="skip"):
    """People who train on a pretrained teacher alone, in `keypoint_set` (every joint visibility 0).

    Two kinds of spec:
    - ``coco:JSON[:IMAGES]`` (or a bare COCO JSON path): the set's person boxes *without* keypoint
      labels (`unlabelled_people`);
    - any other `load_dataset` spec (``lspet:DIR``, ``lsp:DIR:train``, ``SPEC+SPEC``): its people with
      their labels set aside (`without_labels`), for labels that follow other conventions than the
      benchmark's (LSPET's crowd-sourced neck, hips and ankles against LSP's) or that are too noisy
      to trust; the box the reader made from them stays.
    """
    spec = str(spec)
    rest = spec[len("coco:"):] if spec.startswith("coco:") else spec
    if spec.startswith("coco:") or Path(spec).is_file():
        path, _, images = rest.partition(":") if not Path(rest).is_file() else (rest, "", "")
        if not Path(path).is_file():
            raise DataError("unlabelled people come from a COCO keypoints JSON (coco:JSON[:IMAGES]); file not "
                            "found", path=path)
        people = unlabelled_people(path, images or None, coco_keypoint_set(path), on_bad_sample=on_bad_sample)
        return to_keypoint_set(people, keypoint_set)
    people = load_samples(spec, on_bad_sample)
    return SampleList(without_labels(to_keypoint_set(people, keypoint_set)), people.report)
