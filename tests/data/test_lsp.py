"""LSP reader and the literature's protocol on the real benchmark files.

The oracle: the six published methods' own test predictions in ``data/lsp/published_predictions``
must score their published means under the protocol (Tompson 72.3, Yang 73.6, DeepCut 87.1,
DeeperCut 90.1, CPM 90.5, Bulat & Tzimiropoulos 90.7).
"""

import numpy as np
import pytest
import scipy.io

from kdpose_tf.data.datasets import load_dataset, load_unlabelled
from kdpose_tf.data.lsp import load_lsp_predictions, read_lsp
from kdpose_tf.errors import DataError
from kdpose_tf.evaluation import score_predictions
from kdpose_tf.keypoints import LSP14
from kdpose_tf.metrics.pck import LSP_PROTOCOL, pck, protocol_pck, torso_normalizer

PUBLISHED = {  # paper -> published LSP PC mean PCK@0.2, percent
    "TompsonNIPS14": 72.3, "YangCVPR16": 73.6, "PishchulinCVPR16": 87.1,
    "InsafutdinovECCV16": 90.1, "WeiCVPR16": 90.5, "BulatTzimiropoulosECCV16": 90.7,
}


@pytest.fixture(scope="module")
def lsp_test(data_dir):
    return read_lsp(data_dir / "lsp", split="test")


def test_reads_the_real_file_with_lsp_flag_convention(data_dir, lsp_test):
    raw = scipy.io.loadmat(str(data_dir / "lsp" / "joints.mat"))["joints"]  # (3, 14, 2000), row 3: 1 = occluded
    assert len(lsp_test) == 1000 and lsp_test[0].image_id == 1001 and lsp_test[-1].image_id == 2000
    first = lsp_test[0]
    assert first.image_path.endswith("images/im1001.jpg") and first.keypoint_set == LSP14.name
    np.testing.assert_allclose(first.keypoints, raw[:2, :, 1000].T - 1.0, atol=1e-4)  # 1-based -> 0-based
    vis = np.stack([s.visibility for s in lsp_test])
    occluded = raw[2, :, 1000:].T > 0
    assert np.all(vis[occluded] == 1) and np.all(vis[~occluded] == 2)  # every joint labelled, none masked
    assert 0.03 < occluded.mean() < 0.12
    w, h = first.image_size
    # the box comes from the image alone: its central 70 % (hand-computed for this image's size)
    np.testing.assert_allclose(first.bbox, [0.15 * w, 0.15 * h, 0.7 * w, 0.7 * h], rtol=1e-6)
    assert first.extra["protocol"] == "lsp"


def test_splits_and_validation_split_do_not_overlap(data_dir):
    ids = {split: {s.image_id for s in read_lsp(data_dir / "lsp", split=split)} for split in ("train", "fit", "val")}
    assert len(ids["train"]) == 1000 and ids["fit"] | ids["val"] == ids["train"] and not ids["fit"] & ids["val"]
    assert min(ids["val"]) == 901
    with pytest.raises(ValueError, match="split must be one of"):
        read_lsp(data_dir / "lsp", split="valid")


@pytest.mark.parametrize("paper", sorted(PUBLISHED))
def test_published_predictions_reproduce_the_published_means(data_dir, lsp_test, paper):
    pred = load_lsp_predictions(data_dir / "lsp" / "published_predictions" / f"{paper}_pc.mat", num_images=1000)
    gt = np.stack([s.keypoints for s in lsp_test])
    vis = np.stack([s.visibility for s in lsp_test])
    r = protocol_pck(pred, gt, vis, LSP14, LSP_PROTOCOL)
    assert r["count"] == 14000
    assert abs(100 * r["mean"] - PUBLISHED[paper]) <= 0.1
    # the evaluator picks the protocol from the samples and names it
    report = score_predictions(pred, np.ones(pred.shape[:2]), list(lsp_test), LSP14)
    assert report["pck"]["protocol"] == "lsp" and report["pck"]["mean"] == pytest.approx(r["mean"])
    assert "left_shoulder to right_hip" in report["pck"]["normalizer"]


def test_protocol_none_scores_with_the_package_pck_and_torso(data_dir, lsp_test):
    """protocol=None: labelled joints and the keypoint set's own torso (right shoulder to left hip)."""
    pred = load_lsp_predictions(data_dir / "lsp" / "published_predictions" / "TompsonNIPS14_pc.mat")
    gt = np.stack([s.keypoints for s in lsp_test])
    own = pck(pred, gt, np.ones(gt.shape[:2]), torso_normalizer(gt, LSP14), 0.2)["mean"]
    report = score_predictions(pred, np.ones(pred.shape[:2]), list(lsp_test), LSP14, protocol=None)
    assert report["pck"]["protocol"] is None and report["pck"]["mean"] == pytest.approx(own)
    assert "right_shoulder to left_hip" in report["pck"]["normalizer"]
    # the two torso diagonals differ person by person (the published figures use the literature's)
    lit = np.linalg.norm(gt[:, 9] - gt[:, 2], axis=-1)
    assert np.median(np.abs(lit - torso_normalizer(gt, LSP14)) / lit) > 0.02


def test_combined_spec_maps_every_part_onto_the_first_keypoint_set(data_dir):
    coco = f"coco:{data_dir}/coco_mini/annotations/person_keypoints_train2017.json:{data_dir}/coco_mini/train2017"
    data = load_dataset(f"lsp:{data_dir}/lsp:val+{coco}")
    assert data.keypoint_set.name == "lsp14" and len(data.samples) == 100 + 86
    assert {s.keypoint_set for s in data.samples} == {"lsp14"}
    coco_people = [s for s in data.samples if s.extra.get("source_keypoint_set") == "coco17"]
    assert len(coco_people) == 86 and all(s.visibility[12] == 0 for s in coco_people)  # COCO has no neck


def test_unlabelled_spec_sets_the_labels_aside_and_keeps_the_people(data_dir):
    """`--unlabeled lsp:...`: LSP people trained on the teacher alone keep image and box, lose every joint."""
    spec = f"lsp:{data_dir / 'lsp'}:val"
    labelled = load_dataset(spec).samples
    people = load_unlabelled(spec, "coco17")
    assert len(people) == len(labelled) == 100 and people.report.kept == 100
    assert all(p.keypoint_set == "coco17" and p.extra["labels_hidden"] for p in people)
    assert all(not p.visibility.any() and not p.keypoints.any() for p in people)
    np.testing.assert_array_equal([p.bbox for p in people], [s.bbox for s in labelled])
    assert [p.image_path for p in people] == [s.image_path for s in labelled]
    assert labelled[0].visibility.all()  # the labelled samples themselves are untouched


def test_bad_files_name_the_file_and_field(tmp_path):
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": np.zeros((14, 3, 4))})  # LSPET's layout
    with pytest.raises(DataError, match=r"joints\.mat.*'joints'.*3x14xN"):
        read_lsp(tmp_path)
    scipy.io.savemat(str(tmp_path / "p.mat"), {"pred": np.zeros((2, 14, 5))})
    with pytest.raises(DataError, match=r"p\.mat.*'pred'.*1000"):
        load_lsp_predictions(tmp_path / "p.mat", num_images=1000)
