"""OKS AP through pycocotools on the real coco_mini annotations; OKS checked by hand."""

import json

import numpy as np
import pytest

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.keypoints import COCO17, LSP14
from kdpose_tf.metrics.coco import (
    coco_keypoint_eval,
    coco_results,
    load_coco_gt,
    make_coco_eval,
    oks,
    samples_to_coco,
)


@pytest.fixture(scope="module")
def coco_gt(data_dir):
    path = data_dir / "coco_mini/annotations/person_keypoints_train2017.json"
    return path, json.loads(path.read_text())


def _samples(gt_dict, data_dir):
    out = []
    for a in gt_dict["annotations"]:
        if a["iscrowd"] or a["num_keypoints"] == 0:
            continue
        kp = np.array(a["keypoints"], np.float32).reshape(17, 3)
        out.append(
            PoseSample(
                str(data_dir / "coco_mini/train2017" / f"{a['image_id']:012d}.jpg"),
                a["bbox"], kp[:, :2], kp[:, 2], "coco17",
                image_id=a["image_id"], annotation_id=a["id"], area=a["area"],
            )
        )
    return out


def test_ground_truth_against_itself_is_perfect(coco_gt, data_dir):
    path, d = coco_gt
    samples = _samples(d, data_dir)
    assert len(samples) == 86
    kps = np.stack([s.keypoints for s in samples])
    res = coco_results(samples, kps, np.ones(kps.shape[:2]))
    assert len(res) == 86 and res[0]["category_id"] == 1 and len(res[0]["keypoints"]) == 51
    stats = coco_keypoint_eval(path, res)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0)
    # same through the in-memory dict built from the samples themselves
    stats2 = coco_keypoint_eval(samples_to_coco(samples, COCO17), res)
    assert stats2["AP"] == pytest.approx(1.0)


def test_perturbed_predictions_and_hand_computed_oks(coco_gt, data_dir):
    path, d = coco_gt
    samples = _samples(d, data_dir)
    rng = np.random.default_rng(0)
    gt = np.stack([s.keypoints for s in samples]).astype(np.float64)
    scale = np.sqrt([s.area for s in samples])[:, None, None]
    pred = gt + rng.normal(0, 0.05, gt.shape) * scale
    res = coco_results(samples, pred, np.full(gt.shape[:2], 0.9))
    stats = coco_keypoint_eval(path, res)
    assert 0.0 < stats["AP"] < 0.99

    # OKS of one pair by hand: exp(-d^2 / (2 s^2 k^2)), k = 2 sigma, s^2 = area, mean over v > 0
    i = 0
    s = samples[i]
    vis = s.visibility > 0
    d2 = ((pred[i] - gt[i]) ** 2).sum(-1)
    k = 2 * np.array(COCO17.sigmas)
    by_hand = np.mean(np.exp(-d2 / (2 * s.area * k**2))[vis])

    ev = make_coco_eval(path, res, COCO17)
    ev.params.imgIds = [s.image_id]
    ev._prepare()
    ious = ev.computeOks(s.image_id, 1)  # (num detections, num gt) for that image
    gts = ev._gts[s.image_id, 1]
    dts = sorted(ev._dts[s.image_id, 1], key=lambda x: -x["score"])
    row = [j for j, dt in enumerate(dts) if np.allclose(dt["keypoints"][:2], pred[i, 0])][0]
    col = [j for j, g in enumerate(gts) if g["id"] == s.annotation_id][0]
    assert ious[row, col] == pytest.approx(by_hand, rel=1e-6)
    assert oks(pred[i : i + 1], gt[i : i + 1], vis[None], [s.area], COCO17.sigmas)[0] == pytest.approx(by_hand)
    assert 0.3 < by_hand < 0.99


def test_instance_score_rule(data_dir):
    s = PoseSample("x.jpg", [0, 0, 10, 10], np.zeros((17, 2)), np.full(17, 2.0), "coco17", image_id="img_a")
    scores = np.zeros((1, 17))
    scores[0, :4] = [0.9, 0.5, 0.1, 0.2]  # above 0.2: 0.9, 0.5 -> mean 0.7
    res = coco_results([s], np.zeros((1, 17, 2)), scores, box_scores=[0.5])
    assert res[0]["score"] == pytest.approx(0.35)
    assert res[0]["image_id"] == 1  # string ids numbered consistently with samples_to_coco
    assert samples_to_coco([s])["images"][0]["id"] == 1
    assert coco_results([s], np.zeros((1, 17, 2)), np.zeros((1, 17)))[0]["score"] == 0.0


def test_errors_and_sigmas():
    s = PoseSample("x.jpg", [0, 0, 10, 10], np.zeros((14, 2)), np.full(14, 2.0), "lsp14", image_id=3)
    gt = samples_to_coco([s], LSP14)
    res = coco_results([s], np.zeros((1, 14, 2)), np.ones((1, 14)))
    with pytest.raises(ValueError, match="no OKS sigmas"):
        coco_keypoint_eval(gt, res, LSP14)
    assert coco_keypoint_eval(gt, res, LSP14, sigmas=[0.08] * 14)["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"keypoints must have shape \(1, K, 2\)"):
        coco_results([s], np.zeros((2, 14, 2)), np.ones((2, 14)))
    with pytest.raises(ValueError, match="expects 17"):
        samples_to_coco([s], COCO17)
    with pytest.raises(FileNotFoundError):
        load_coco_gt("/nonexistent/file.json")
