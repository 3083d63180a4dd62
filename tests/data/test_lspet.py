"""LSPET reader on the real joints.mat: order, 1-based -> 0-based, unlabelled joints, boxes, errors."""

import numpy as np
import pytest
import scipy.io

from kdpose_tf.data.lspet import read_lspet
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import LSP14


@pytest.fixture(scope="module")
def lspet(data_dir):
    return read_lspet(data_dir / "lspet", on_bad_sample="skip", limit=60)


def test_reads_real_lspet_with_unlabelled_joints_masked(lspet, data_dir):
    assert len(lspet) == 60 and lspet[0].keypoint_set == LSP14.name
    raw = scipy.io.loadmat(str(data_dir / "lspet" / "joints.mat"))["joints"][:, :, :60]
    first = lspet[0]
    assert first.image_path.endswith("images/im00001.jpg")
    # image 1: right ankle is unlabelled in the file (x = 0, y = -26.1, visible = 0)
    assert raw[0, 2, 0] == 0 and first.visibility[0] == 0 and first.keypoints[0].tolist() == [0.0, 0.0]
    # right knee is labelled at (26.03, 86.41) in 1-based MATLAB pixels -> 0-based
    np.testing.assert_allclose(first.keypoints[1], raw[1, :2, 0] - 1.0, atol=1e-4)
    assert first.visibility[1] == 2
    # the share of unlabelled joints matches the file's visible flags (up to joints outside the image)
    vis = np.stack([s.visibility for s in lspet])
    assert abs((vis == 0).mean() - (raw[:, 2] == 0).mean()) < 0.01
    # head top above the neck on most of these (mostly upright) sports photos: LSP order
    above = [s.keypoints[13, 1] < s.keypoints[12, 1] for s in lspet if s.visibility[12] and s.visibility[13]]
    assert np.mean(above) > 0.7


def test_box_is_the_labelled_joints_box_with_padding(data_dir):
    plain = read_lspet(data_dir / "lspet", limit=3, on_bad_sample="skip")
    padded = read_lspet(data_dir / "lspet", limit=3, on_bad_sample="skip", box_padding=1.2)
    s = plain[0]
    pts = s.keypoints[s.visibility > 0]
    np.testing.assert_allclose(s.bbox, [*pts.min(0), *(pts.max(0) - pts.min(0))], atol=1e-4)
    np.testing.assert_allclose(padded[0].bbox[2:], 1.2 * s.bbox[2:], rtol=1e-5)
    np.testing.assert_allclose(padded[0].bbox[:2] + padded[0].bbox[2:] / 2, s.bbox[:2] + s.bbox[2:] / 2, atol=1e-3)


def test_bad_lspet_files_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="joints.mat.*LSPET labels file not found"):
        read_lspet(tmp_path)
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": np.zeros((14, 2, 3))})
    with pytest.raises(DataError, match=r"expected shape 14x3xN = \(joint, xyv, image\), got \(14, 2, 3\)"):
        read_lspet(tmp_path)
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": np.ones((14, 3, 2)) * 5})
    with pytest.raises(DataError, match="im00001.jpg"):
        read_lspet(tmp_path)  # images missing, on_bad_sample="raise"
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no usable samples"):
        read_lspet(tmp_path, on_bad_sample="skip")
