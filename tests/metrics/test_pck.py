"""PCK / PCKh on hand-computed cases and on real PARSE / COCO annotations."""

import json

import numpy as np
import pytest
import scipy.io

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.keypoints import COCO17, LSP14, MPII16
from kdpose_tf.metrics.pck import head_normalizer, pck, pckh, torso_normalizer


def test_pck_hand_computed_distances():
    # Two samples, three joints; distances chosen as 3-4-5 triangles.
    gt = np.zeros((2, 3, 2))
    pred = np.array(
        [
            [[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]],  # d = 5, 10, 0
            [[0.0, 9.0], [12.0, 16.0], [30.0, 40.0]],  # d = 9, 20, 50
        ]
    )
    visible = np.ones((2, 3), bool)
    norm = np.array([40.0, 100.0])  # limits at t=0.2: 8 and 20
    r = pck(pred, gt, visible, norm, threshold=0.2)
    # sample 0: 5<=8 yes, 10<=8 no, 0 yes; sample 1: 9<=20 yes, 20<=20 yes (inclusive), 50 no
    np.testing.assert_allclose(r["per_joint"], [1.0, 0.5, 0.5])
    assert r["mean"] == pytest.approx(4 / 6)
    assert r["count"] == 6 and r["excluded"] == 0
    np.testing.assert_array_equal(r["per_joint_count"], [2, 2, 2])


def test_pck_threshold_edges():
    gt = np.zeros((1, 1, 2))
    pred = np.array([[[6.0, 8.0]]])  # d = 10
    vis = np.ones((1, 1), bool)
    assert pck(pred, gt, vis, np.array([50.0]), threshold=0.2)["mean"] == 1.0  # limit exactly 10
    assert pck(pred, gt, vis, np.array([49.99]), threshold=0.2)["mean"] == 0.0  # just under 10
    assert pck(pred, gt, vis, np.array([100.0]), threshold=0.1)["mean"] == 1.0
    assert pck(pred, gt, vis, np.array([100.0]), threshold=0.099)["mean"] == 0.0
    # A perfect prediction is correct at any threshold.
    assert pck(gt, gt, vis, np.array([1.0]), threshold=1e-6)["mean"] == 1.0
    # A NaN prediction is wrong, not skipped.
    r = pck(np.full((1, 1, 2), np.nan), gt, vis, np.array([50.0]))
    assert r["mean"] == 0.0 and r["count"] == 1
    with pytest.raises(ValueError, match="threshold"):
        pck(pred, gt, vis, np.array([50.0]), threshold=0)


def test_pck_invisible_joints_and_bad_normalizers_excluded():
    gt = np.zeros((3, 2, 2))
    pred = np.array([[[1.0, 0], [100.0, 0]], [[100.0, 0], [100.0, 0]], [[1.0, 0], [1.0, 0]]])
    visible = np.array([[1, 0], [2, 2], [1, 1]])
    norm = np.array([10.0, 0.0, np.nan])  # samples 1 and 2 have no normalizer
    r = pck(pred, gt, visible, norm, threshold=0.5)
    # Only sample 0 joint 0 counts (d=1 <= 5): its wrong joint 1 is unlabelled.
    assert r["count"] == 1 and r["mean"] == 1.0 and r["excluded"] == 2
    assert r["per_joint"][0] == 1.0 and np.isnan(r["per_joint"][1])
    # joints= restricts the mean (MPII total without pelvis/thorax), not per_joint.
    r2 = pck(pred, gt, np.ones((3, 2)), np.array([10.0, 10.0, 10.0]), threshold=0.5, joints=[1])
    assert r2["count"] == 3 and r2["mean"] == pytest.approx(1 / 3)
    assert r2["per_joint"][0] == pytest.approx(2 / 3)


def test_pck_shape_errors():
    with pytest.raises(ValueError, match=r"pred must have shape \(2, 3, 2\)"):
        pck(np.zeros((2, 4, 2)), np.zeros((2, 3, 2)), np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="visible"):
        pck(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((3, 2)), np.ones(2))
    with pytest.raises(ValueError, match="normalizer"):
        pck(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((2, 3)), np.ones(3))


def _parse_gt(data_dir):
    pts = scipy.io.loadmat(str(data_dir / "parse" / "labels.mat"))["ptsAll"]  # (14, 2, 305)
    return np.transpose(pts, (2, 0, 1)).astype(np.float64)


def test_torso_normalizer_on_parse(data_dir):
    gt = _parse_gt(data_dir)
    torso = torso_normalizer(gt, "lsp14")
    # independent: right shoulder (index 8) to left hip (index 3)
    expected = np.hypot(gt[:, 8, 0] - gt[:, 3, 0], gt[:, 8, 1] - gt[:, 3, 1])
    np.testing.assert_allclose(torso, expected)
    assert (torso > 20).all()  # real people, torso tens of pixels long
    # Perfect predictions: PCK 1; a shift of 0.3 torso to the right: PCK 0 at t = 0.2.
    vis = np.ones(gt.shape[:2], bool)
    assert pck(gt, gt, vis, torso)["mean"] == 1.0
    shifted = gt.copy()
    shifted[..., 0] += 0.3 * torso[:, None]
    assert pck(shifted, gt, vis, torso, 0.2)["mean"] == 0.0
    assert pck(shifted, gt, vis, torso, 0.31)["mean"] == 1.0


def test_torso_normalizer_excludes_unlabelled_torso(data_dir):
    d = json.loads((data_dir / "coco_mini/annotations/person_keypoints_train2017.json").read_text())
    anns = [a for a in d["annotations"] if a["num_keypoints"] > 0]
    kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
    torso = torso_normalizer(kp[..., :2], COCO17, visible=kp[..., 2])
    rs, lh = COCO17.index("right_shoulder"), COCO17.index("left_hip")
    missing = (kp[:, rs, 2] == 0) | (kp[:, lh, 2] == 0)
    assert missing.any() and (~missing).any()  # the real file has both kinds
    assert (torso[missing] == 0).all() and (torso[~missing] > 0).all()
    r = pck(kp[..., :2], kp[..., :2], kp[..., 2], torso)
    assert r["excluded"] == int(missing.sum())
    assert r["count"] == int((kp[~missing, :, 2] > 0).sum()) and r["mean"] == 1.0


def test_head_normalizer_and_pckh():
    kp = np.zeros((16, 2), np.float32)
    kp[MPII16.index("upper_neck")] = (50, 50)
    kp[MPII16.index("head_top")] = (50, 20)  # segment 30 px
    vis = np.full(16, 2.0)
    with_size = PoseSample("a.jpg", [0, 0, 10, 10], kp, vis, "mpii16", head_size=40.0)
    without = PoseSample("b.jpg", [0, 0, 10, 10], kp, vis, "mpii16")
    vis_no_head = vis.copy()
    vis_no_head[MPII16.index("head_top")] = 0
    unlabelled = PoseSample("c.jpg", [0, 0, 10, 10], kp, vis_no_head, "mpii16")
    sizes = head_normalizer([with_size, without, unlabelled])
    np.testing.assert_allclose(sizes, [40.0, 30.0, 0.0])
    np.testing.assert_allclose(head_normalizer(np.array([1.0, 2.0])), [1.0, 2.0])
    # LSP-14: neck to head top
    lsp_kp = np.zeros((14, 2))
    lsp_kp[LSP14.index("head_top")] = (3, 4)
    lsp = PoseSample("d.jpg", [0, 0, 1, 1], lsp_kp, np.ones(14), "lsp14")
    assert head_normalizer([lsp])[0] == pytest.approx(5.0)

    gt = np.stack([kp, kp, kp]).astype(np.float64)
    pred = gt.copy()
    pred[:, 0, 0] += 16.0  # right ankle off by 16 px: within 0.5*40=20, not within 0.5*30=15
    r = pckh(pred, gt, np.stack([vis, vis, vis_no_head]), sizes)
    assert r["excluded"] == 1 and r["count"] == 32
    assert r["per_joint"][0] == 0.5 and r["mean"] == pytest.approx(31 / 32)
