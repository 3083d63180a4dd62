"""Affine transforms and augmentation on real coco_mini photos and annotations."""

import json

import cv2
import numpy as np
import pytest

from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.transforms import (
    AugmentConfig,
    affine_points,
    augmented_crop,
    box_to_center_scale,
    crop_person,
    flip_crop,
    get_affine_transform,
    half_body_center_scale,
    random_scale_rotation,
    upper_lower_body_indices,
)
from kdpose_tf.keypoints import COCO17, LSP14, MPII16


@pytest.fixture(scope="module")
def coco_people(data_dir):
    """PoseSamples (built from the JSON directly) of coco_mini people with >= 15 labelled joints."""
    root = data_dir / "coco_mini"
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    out = []
    for a in ann["annotations"]:
        if a.get("num_keypoints", 0) < 15:
            continue
        kp = np.asarray(a["keypoints"], np.float32).reshape(-1, 3)
        out.append(
            PoseSample(str(root / "train2017" / files[a["image_id"]]), a["bbox"], kp[:, :2], kp[:, 2], "coco17",
                       image_id=a["image_id"], annotation_id=a["id"])
        )
    assert len(out) >= 3
    return out


def _rgb(path):
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_box_to_center_scale_hand_computed():
    c, s = box_to_center_scale([10, 20, 30, 80], aspect_ratio=0.75)  # tall box: widen w to 60
    np.testing.assert_allclose(c, [25, 60])
    np.testing.assert_allclose(s, [60 * 1.25, 80 * 1.25])
    c, s = box_to_center_scale([0, 0, 100, 40], aspect_ratio=1.0, padding=1.0)  # wide box: h -> 100
    np.testing.assert_allclose(s, [100, 100])
    with pytest.raises(ValueError, match="bbox_xywh"):
        box_to_center_scale([1, 2, 3], 0.75)


@pytest.mark.parametrize("rotation", [0.0, 30.0, -45.0, 170.0])
def test_affine_round_trip_and_geometry(rotation):
    rng = np.random.default_rng(0)
    center, scale = np.array([312.4, 201.7]), np.array([150.0, 200.0])
    M = get_affine_transform(center, scale, rotation, (256, 192))
    Minv = get_affine_transform(center, scale, rotation, (256, 192), inverse=True)
    pts = rng.uniform(-100, 600, (50, 2))
    back = affine_points(affine_points(pts, M), Minv)
    assert np.abs(back - pts).max() < 1e-3
    np.testing.assert_allclose(affine_points(center, M), [96.0, 128.0], atol=1e-9)
    # same transform from three point correspondences, built independently with cv2
    r = np.deg2rad(rotation)
    up = np.array([np.sin(r), -np.cos(r)]) * scale[1] / 2  # the region's "up" half-axis, rotated
    right = np.array([np.cos(r), np.sin(r)]) * scale[0] / 2
    src = np.float32([center, center + up, center + right])
    dst = np.float32([[96, 128], [96, 0], [192, 128]])
    np.testing.assert_allclose(M, cv2.getAffineTransform(src, dst), atol=1e-3)


def test_crop_places_marked_joint_where_predicted(coco_people):
    s = coco_people[0]
    image = _rgb(s.image_path)
    j = COCO17.index("left_wrist") if s.visibility[9] > 0 else int(np.argmax(s.visibility))
    marked = image.copy()
    x, y = (int(round(v)) for v in s.keypoints[j])
    cv2.circle(marked, (x, y), 3, (255, 0, 255), -1)
    center, scale = box_to_center_scale(s.bbox, 192 / 256)
    for rot in (0.0, 35.0):
        plain = crop_person(image, center, scale, rot, (256, 192))
        dotted = crop_person(marked, center, scale, rot, (256, 192))
        assert plain.shape == (256, 192, 3) and plain.dtype == np.uint8
        diff = np.abs(dotted.astype(np.int32) - plain.astype(np.int32)).sum(-1)
        ys, xs = np.nonzero(diff > 30)
        assert len(xs) > 5
        found = np.array([xs.mean(), ys.mean()])
        expected = affine_points(np.array([x, y], np.float64), get_affine_transform(center, scale, rot, (256, 192)))
        assert np.abs(found - expected).max() < 1.0, (found, expected)


def test_flip_swaps_left_and_right(coco_people):
    ls, rs = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    s = next(p for p in coco_people if p.visibility[ls] > 0 and p.visibility[rs] > 0)
    center, scale = box_to_center_scale(s.bbox, 0.75)
    M = get_affine_transform(center, scale, 0.0, (256, 192))
    crop = crop_person(_rgb(s.image_path), center, scale, 0.0, (256, 192))
    kp = affine_points(s.keypoints, M)
    fcrop, fkp, fvis = flip_crop(crop, kp, s.visibility, COCO17.flip_index)
    np.testing.assert_array_equal(fcrop, crop[:, ::-1])
    # the new left shoulder is the mirrored old right shoulder, and vice versa
    np.testing.assert_allclose(fkp[ls], [191 - kp[rs, 0], kp[rs, 1]])
    np.testing.assert_allclose(fkp[rs], [191 - kp[ls, 0], kp[ls, 1]])
    # anatomy stays consistent: left-of-right ordering of the shoulders is the same as before
    assert np.sign(fkp[ls, 0] - fkp[rs, 0]) == np.sign(kp[ls, 0] - kp[rs, 0])
    assert fvis[ls] == s.visibility[rs] and fvis[0] == s.visibility[0]
    # the crop pixel under the old right shoulder is now under the new left shoulder
    xr, yr = int(round(kp[rs, 0])), int(round(kp[rs, 1]))
    xl, yl = int(round(fkp[ls, 0])), int(round(fkp[ls, 1]))
    np.testing.assert_array_equal(fcrop[yl, xl], crop[yr, xr])


def test_upper_lower_body_from_names():
    up, low = upper_lower_body_indices(COCO17)
    assert up == list(range(11)) and low == list(range(11, 17))
    up, low = upper_lower_body_indices(MPII16)
    assert sorted(low) == [0, 1, 2, 3, 4, 5, 6] and sorted(up) == [7, 8, 9, 10, 11, 12, 13, 14, 15]
    up, low = upper_lower_body_indices(LSP14)
    assert len(up) == 8 and len(low) == 6


def test_half_body_crop_keeps_the_chosen_half(coco_people):
    up, low = upper_lower_body_indices(COCO17)
    seen = set()
    for seed in range(8):
        s = coco_people[seed % len(coco_people)]
        rng = np.random.default_rng(seed)
        hb = half_body_center_scale(s.keypoints, s.visibility, up, low, 0.75, rng)
        assert hb is not None
        center, scale, chosen = hb
        other = low if set(chosen) <= set(up) else up
        seen.add(tuple(other) == tuple(low))
        pts = affine_points(s.keypoints, get_affine_transform(center, scale, 0.0, (256, 192)))
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < 192) & (pts[:, 1] >= 0) & (pts[:, 1] < 256)
        assert inside[chosen].all()
        labelled_other = [i for i in other if s.visibility[i] > 0]
        assert not inside[labelled_other].all()  # the other half is (at least partly) cut away
    assert seen == {True, False}  # both halves were chosen at some point
    few = np.zeros(17)
    few[:5] = 2
    assert half_body_center_scale(coco_people[0].keypoints, few, up, low, 0.75, np.random.default_rng(0)) is None


def test_augmented_crop_statistics_and_consistency(coco_people):
    cfg = AugmentConfig()
    rng = np.random.default_rng(0)
    draws = np.array([random_scale_rotation(cfg, rng) for _ in range(3000)])
    assert draws[:, 0].min() >= 0.65 and draws[:, 0].max() <= 1.35
    assert np.abs(draws[:, 1]).max() <= 45.0
    assert 0.56 < np.mean(draws[:, 1] != 0) < 0.64
    s = coco_people[1]
    image = _rgb(s.image_path)
    crop, kp, vis = augmented_crop(image, s.keypoints, s.visibility, s.bbox, (128, 96), COCO17, cfg,
                                   np.random.default_rng(5))
    assert crop.shape == (128, 96, 3) and kp.shape == (17, 2) and vis.shape == (17,)
    # no augmentation = plain crop
    crop0, kp0, _ = augmented_crop(image, s.keypoints, s.visibility, s.bbox, (128, 96), COCO17,
                                   AugmentConfig.none(), np.random.default_rng(5))
    c, sc = box_to_center_scale(s.bbox, 0.75)
    np.testing.assert_array_equal(crop0, crop_person(image, c, sc, 0.0, (128, 96)))
    np.testing.assert_allclose(kp0, affine_points(s.keypoints, get_affine_transform(c, sc, 0, (128, 96))))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"rotation_prob": 1.5}, "rotation_prob"), ({"scale": (1.2, 0.8)}, "scale"), ({"rotation": -1}, "rotation"),
     ({"color_jitter": 1.0}, "color_jitter")],
)
def test_augment_config_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        AugmentConfig(**kwargs)
    none = AugmentConfig.none()
    assert not none.flip and none.rotation_prob == 0 and none.scale == (1.0, 1.0) and none.half_body_prob == 0
