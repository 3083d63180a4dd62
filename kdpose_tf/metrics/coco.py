"""COCO keypoint metrics: OKS AP / AR through pycocotools (`COCOeval(iouType="keypoints")`).

Object Keypoint Similarity (Lin et al., COCO 2014/2017) between a prediction and a ground truth:
OKS = mean over labelled joints of exp(−d² / (2 s² k²)), with s² the object's area and k = 2σ the
joint's constant. AP averages precision over OKS thresholds 0.50:0.05:0.95.

- `coco_results` turns predictions into COCO result dicts (instance score = mean of the joint
  scores above `score_threshold` × box score, as MMPose's top-down evaluation; category 1).
- `samples_to_coco` builds a COCO-style ground-truth dict from `PoseSample`s, so OKS AP can be
  computed for any keypoint set with sigmas (synthetic data, re-read COCO subsets).
- `coco_keypoint_eval` runs pycocotools entirely in memory (no temporary files).

Example:
>>> gt = samples_to_coco(samples, "coco17")                            # doctest: +SKIP
>>> stats = coco_keypoint_eval(gt, coco_results(samples, keypoints, scores))  # doctest: +SKIP
>>> stats["AP"]                                                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np

from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import COCO17, get_keypoint_set

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def _image_id_map(samples) -> dict:
    """Sample image ids -> int ids: kept when all are ints, else numbered 1.. in order of appearance."""
    ids = [s.image_id for s in samples]
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return {i: int(i) for i in ids}
    if any(i is None for i in ids):
        raise ValueError("every PoseSample needs an image_id to be evaluated with COCO metrics")
    mapping = {}
    for i in ids:
        if i not in mapping:
            mapping[i] = len(mapping) + 1
    return mapping


def coco_results(samples, keypoints, scores, score_threshold=0.2, box_scores=None) -> list:
    """COCO keypoint result dicts, one per sample.

    Args:
        samples: list of N `PoseSample` (for the image ids).
        keypoints: (N, K, 2) predicted joints in image pixels.
        scores: (N, K) joint confidences (heatmap maxima).
        score_threshold: joints with a score above it enter the instance score. Defaults to 0.2.
        box_scores: optional (N,) detector scores; 1 (ground-truth boxes) by default.

    Returns:
        list of {"image_id", "category_id": 1, "keypoints": [x, y, score] * K, "score"}.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(samples)
    if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 2:
        raise ValueError(f"keypoints must have shape ({n}, K, 2) for {n} samples, got {keypoints.shape}")
    if scores.shape != keypoints.shape[:2]:
        raise ValueError(f"scores must have shape {keypoints.shape[:2]}, got {scores.shape}")
    box_scores = np.ones(n) if box_scores is None else np.asarray(box_scores, dtype=np.float64).reshape(n)
    id_map = _image_id_map(samples)
    results = []
    for i, s in enumerate(samples):
        good = scores[i] > score_threshold
        instance = float(scores[i][good].mean()) if good.any() else 0.0
        triplets = np.concatenate([keypoints[i], scores[i][:, None]], axis=1)
        results.append(
            {
                "image_id": id_map[s.image_id],
                "category_id": 1,
                "keypoints": [float(v) for v in triplets.reshape(-1)],
                "score": instance * float(box_scores[i]),
            }
        )
    return results


def samples_to_coco(samples, keypoint_set=COCO17) -> dict:
    """A COCO keypoints ground-truth dict from `PoseSample`s.

    Args:
        samples: list of `PoseSample` of one keypoint set.
        keypoint_set: KeypointSet or name. Defaults to COCO-17.

    Area (the OKS scale s²) is `sample.area` when set, else the box area. Visibility is kept
    (0 unlabelled, 1 occluded, 2 visible); annotation ids are 1..N in sample order.
    """
    ks = get_keypoint_set(keypoint_set)
    id_map = _image_id_map(samples)
    images, annotations = {}, []
    for n, s in enumerate(samples, start=1):
        if s.num_keypoints != ks.num_keypoints:
            raise ValueError(
                f"sample {s.annotation_id!r} has {s.num_keypoints} keypoints; keypoint set {ks.name!r} "
                f"expects {ks.num_keypoints}"
            )
        image_id = id_map[s.image_id]
        if image_id not in images:
            entry = {"id": image_id, "file_name": Path(str(s.image_path)).name}
            if s.image_size is not None:
                entry["width"], entry["height"] = int(s.image_size[0]), int(s.image_size[1])
            images[image_id] = entry
        vis = np.where(s.visibility > 0, np.clip(np.round(s.visibility), 1, 2), 0).astype(int)
        kps = np.where(vis[:, None] > 0, s.keypoints, 0.0)
        triplets = np.concatenate([kps, vis[:, None]], axis=1).reshape(-1)
        bbox = [float(v) for v in s.bbox]
        area = float(s.area) if s.area is not None else bbox[2] * bbox[3]
        annotations.append(
            {
                "id": n,
                "image_id": image_id,
                "category_id": 1,
                "bbox": bbox,
                "area": area,
                "iscrowd": 0,
                "num_keypoints": int((vis > 0).sum()),
                "keypoints": [float(v) if j % 3 != 2 else int(v) for j, v in enumerate(triplets)],
            }
        )
    return {
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": list(ks.names),
                "skeleton": [[a + 1, b + 1] for a, b in ks.skeleton],
            }
        ],
    }


def load_coco_gt(gt):
    """A pycocotools `COCO` object from a path, a dict or a `COCO` (returned as is), quietly."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    path = None
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(f"COCO ground-truth file not found: {path}")
        with open(path, encoding="utf-8") as f:
            gt = json.load(f)
    if not isinstance(gt, dict) or "annotations" not in gt or "images" not in gt:
        raise ValueError(
            "ground truth must be a COCO keypoints JSON path, a dict with 'images' and 'annotations', "
            f"or a pycocotools COCO; got {type(gt).__name__}"
        )
    if not isinstance(gt.get("categories"), list) or not gt["categories"]:
        raise DataError("no 'categories' list: OKS AP needs the person category its annotations name; add it "
                        "or score with PCK only (--metrics pck)", path=path, field="categories")
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _sigmas(keypoint_set, sigmas):
    if sigmas is not None:
        sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    else:
        ks = get_keypoint_set(keypoint_set)
        if ks.sigmas is None:
            raise ValueError(
                f"keypoint set {ks.name!r} has no OKS sigmas; pass sigmas=(K values) to compute OKS AP"
            )
        sig = ks.sigmas_array()
    return sig


def make_coco_eval(gt, results, keypoint_set=COCO17, sigmas=None, image_ids=None):
    """A prepared-but-not-run `COCOeval(iouType="keypoints")` with the set's sigmas (for inspection)."""
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_coco_gt(gt)
    sig = _sigmas(keypoint_set, sigmas)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
    ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
    ev.params.kpt_oks_sigmas = sig
    if image_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in image_ids)
    return ev


def coco_keypoint_eval(gt, results, keypoint_set=COCO17, sigmas=None, image_ids=None, verbose=False) -> dict:
    """OKS AP / AR of keypoint results against COCO ground truth, through pycocotools.

    Args:
        gt: path of a COCO keypoints JSON, a COCO-style dict (e.g. from `samples_to_coco`) or a
            pycocotools `COCO`.
        results: list of result dicts (see `coco_results`).
        keypoint_set: KeypointSet or name whose `sigmas` define OKS. Defaults to COCO-17.
        sigmas: optional (K,) sigmas overriding the set's (needed for sets without sigmas).
        image_ids: images to evaluate. Defaults to the images that have results (so a subset of
            a large annotation file can be evaluated); pass all gt image ids to count images
            without predictions as misses.
        verbose: print pycocotools' summary table.

    Returns:
        dict with AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl (fractions in [0, 1];
        -1 where pycocotools has nothing to evaluate, e.g. no medium objects).
    """
    results = list(results)
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    if image_ids is None:
        image_ids = {r["image_id"] for r in results}
    ev = make_coco_eval(gt, results, keypoint_set, sigmas, image_ids)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(out.getvalue())
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


def oks(pred, gt, visible, area, sigmas) -> np.ndarray:
    """Object keypoint similarity of N prediction / ground-truth pairs (numpy, no pycocotools).

    Args:
        pred, gt: (N, K, 2) joints. visible: (N, K) labelled flags. area: (N,) object areas (s²).
        sigmas: (K,) per-joint sigmas (k = 2σ).

    Returns:
        (N,) OKS, the mean of exp(−d² / (2 s² k²)) over labelled joints (0 where none is labelled).
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    k2 = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    d2 = ((pred - gt) ** 2).sum(-1)
    area = np.asarray(area, np.float64).reshape(-1, 1)
    e = np.exp(-d2 / (2.0 * (area + np.spacing(1)) * k2))
    vis = np.asarray(visible) > 0
    cnt = vis.sum(-1)
    return np.where(cnt > 0, (e * vis).sum(-1) / np.maximum(cnt, 1), 0.0)
