"""Synthetic stick-figure dataset: valid COCO JSON, joints on the figure, deterministic."""

import hashlib
import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from kdpose_tf.data.synthetic import generate_synthetic_dataset, render_scene
from kdpose_tf.keypoints import COCO17


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    ann, image_dir = generate_synthetic_dataset(out / "ds", num_images=24, image_size=(96, 128), seed=3,
                                                people_per_image=2, progress=False)
    return ann, image_dir


def test_json_loads_with_pycocotools(dataset):
    ann, image_dir = dataset
    coco = COCO(str(ann))
    assert len(coco.getImgIds()) == 24
    cat = coco.loadCats(1)[0]
    assert cat["keypoints"] == list(COCO17.names) and len(cat["skeleton"]) == len(COCO17.skeleton)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 30  # two people per image, a few may be dropped
    vis_counts = np.zeros(3, int)
    for a in anns:
        img = coco.loadImgs(a["image_id"])[0]
        w, h = img["width"], img["height"]
        assert (w, h) == (128, 96)
        kp = np.array(a["keypoints"], np.float64).reshape(17, 3)
        v = kp[:, 2]
        assert set(np.unique(v)) <= {0, 1, 2} and a["num_keypoints"] == int((v > 0).sum())
        lab = kp[v > 0]
        assert (lab[:, 0] >= 0).all() and (lab[:, 0] <= w - 1).all()
        assert (lab[:, 1] >= 0).all() and (lab[:, 1] <= h - 1).all()
        assert (kp[v == 0, :2] == 0).all()
        x, y, bw, bh = a["bbox"]
        assert bw > 4 and bh > 8 and 0 < a["area"] <= bw * bh + 1e-6
        vis_counts += np.bincount(v.astype(int), minlength=3)
        image = cv2.imread(str(image_dir / img["file_name"]))
        assert image is not None and image.shape == (h, w, 3)
    assert vis_counts[2] > vis_counts[1] > 0  # mostly visible, some occluded


def test_joints_lie_on_the_figure():
    rng = np.random.default_rng(7)
    on, total = 0, 0
    for _ in range(10):
        image, background, people = render_scene(rng, (128, 128), people_per_image=1, occluder_prob=0.0)
        assert image.shape == background.shape == (128, 128, 3)
        for p in people:
            for (x, y), v in zip(p["keypoints"], p["visibility"]):
                if v == 2:
                    xi, yi = int(round(x)), int(round(y))
                    diff = np.abs(image[yi, xi].astype(int) - background[yi, xi].astype(int)).sum()
                    total += 1
                    on += diff > 12  # figure pixels differ from the background there
    assert total > 100 and on / total > 0.95


def test_deterministic_for_a_seed(tmp_path):
    def digest(seed, name):
        ann, image_dir = generate_synthetic_dataset(tmp_path / name, num_images=4, image_size=(64, 64),
                                                    seed=seed, progress=False)
        h = hashlib.sha1(ann.read_bytes())
        for f in sorted(image_dir.iterdir()):
            h.update(f.read_bytes())
        return h.hexdigest(), json.loads(ann.read_text())

    a, data = digest(11, "a")
    b, _ = digest(11, "b")
    c, _ = digest(12, "c")
    assert a == b and a != c
    assert [im["file_name"] for im in data["images"]] == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_images must be a positive int, got 0"):
        generate_synthetic_dataset(tmp_path, num_images=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_dataset(tmp_path, num_images=1, image_size=(16, 16))
    with pytest.raises(ValueError, match="people_per_image"):
        generate_synthetic_dataset(tmp_path, num_images=1, people_per_image=0)
