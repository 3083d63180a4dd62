"""The tracker's numpy logic: the One Euro filter against hand-computed values, MoveNet's crop, and the
tracker following a real photo moved across a video (RTMDet-nano + PP-TinyPose 128x96 through OpenVINO)."""

import json

import numpy as np
import pytest

from kdpose_tf.tracking import OneEuroFilter, PersonTracker, crop_box, torso_indices


def test_one_euro_matches_hand_computed_values():
    # min_cutoff 1 Hz, beta 0.5, d_cutoff 1 Hz, samples every 0.1 s: a(fc) = r / (1 + r), r = 2 pi fc 0.1
    #   a(1)   = 0.628319 / 1.628319                              = 0.385870
    #   t=0.1, x=1: dx = (1 - 0) / 0.1 = 10, dx^ = 0.385870 * 10   = 3.858695
    #     cutoff = 1 + 0.5 * 3.858695 = 2.929348, a = 1.840543 / 2.840543 = 0.647957, x^ = 0.647957
    #   t=0.2, x=1: dx = (1 - 0.647957) / 0.1 = 3.520430
    #     dx^ = 0.385870 * 3.520430 + 0.614130 * 3.858695 = 3.728168
    #     cutoff = 2.864084, a = 0.642801, x^ = 0.647957 + 0.642801 * 0.352043 = 0.874251
    #   t=0.3, x=3: dx = 21.257490, dx^ = 10.492202, cutoff = 6.246101, a = 0.796935
    #     x^ = 0.874251 + 0.796935 * 2.125749 = 2.568336
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    out = [float(f(x, t)) for x, t in [(0.0, 0.0), (1.0, 0.1), (1.0, 0.2), (3.0, 0.3)]]
    np.testing.assert_allclose(out, [0.0, 0.647957, 0.874251, 2.568336], atol=2e-6)

    # element-wise on joints; value_scale scales the speed in the cutoff (0.5 * 10 * 2 -> cutoff 1 + 0.5 * 7.7)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    f(np.zeros((17, 2)), 0.0)
    joints = f(np.ones((17, 2)), 0.1, value_scale=2.0)
    r = 2 * np.pi * (1 + 0.5 * 3.858695 * 2) * 0.1
    np.testing.assert_allclose(joints, np.full((17, 2), r / (1 + r)), atol=2e-6)

    # reset: the next sample passes through; bad settings and time going backwards are errors
    f.reset()
    assert float(f(5.0, 1.0)) == 5.0
    with pytest.raises(ValueError, match="timestamps must increase"):
        f(5.0, 1.0)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0)


def test_one_euro_cuts_jitter_and_follows_motion():
    """Still + noise: the output varies far less than the input; a steady ramp: the output keeps up."""
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 100 + rng.normal(0, 2.0, 300)
    out = np.array([f(x, i / 30) for i, x in enumerate(noisy)])
    assert np.std(np.diff(out[30:])) < 0.25 * np.std(np.diff(noisy[30:]))
    fast = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    ramp = 10.0 * np.arange(60)  # 300 px/s
    lag = ramp[-1] - [fast(x, i / 30) for i, x in enumerate(ramp)][-1]
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    lag_still = ramp[-1] - [slow(x, i / 30) for i, x in enumerate(ramp)][-1]
    assert lag < 0.2 * lag_still  # the speed-raised cutoff removes most of a fixed low-pass's lag


def test_crop_box_sizes_on_the_torso_and_gives_up_with_few_joints():
    names = ["nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    torso = torso_indices(names)
    assert torso == [1, 2, 3, 4]
    kp = np.array([[100, 40], [90, 60], [110, 60], [92, 100], [108, 100]], np.float64)
    box = crop_box(kp, np.full(5, 0.9), (640, 480), torso)
    # centre (100, 70); body half-range (10, 30) * 1.2 = (12, 36); torso half-range (10, 30) * 1.9 = (19, 57)
    np.testing.assert_allclose(box, [81, 13, 38, 114])
    assert crop_box(kp, [0.9, 0.9, 0.1, 0.1, 0.1], (640, 480), torso) is None  # 2 confident joints < 3
    clipped = crop_box(kp - [95, 0], np.full(5, 0.9), (640, 480), torso)
    assert clipped[0] == 0 and clipped[2] == pytest.approx(38 - 14)  # clipped at the left edge


@pytest.fixture(scope="module")
def moving_video(data_dir, tmp_path_factory):
    """A real photo (coco_mini 000000535506: one person) moved 8 px right and 2 px down per frame, through MP4."""
    from kdpose_tf.data.images import read_image
    from kdpose_tf.data.video import VideoWriter, moving_photo

    root = data_dir / "coco_mini"
    photo = read_image(root / "train2017" / "000000535506.jpg")
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    person = next(a for a in ann["annotations"] if a["image_id"] == 535506 and a["num_keypoints"] > 0)
    shifts = np.stack([8.0 * np.arange(12), 2.0 * np.arange(12)], axis=1)
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    with VideoWriter(path, 30, (photo.shape[1], photo.shape[0])) as out:
        for frame in moving_photo(photo, shifts):
            out.write(frame)
    return path, shifts, person["bbox"]


def test_tracker_crop_follows_a_moving_person(moving_video):
    from kdpose_tf.cli.evaluate import load_predictor
    from kdpose_tf.data.video import read_video
    from kdpose_tf.keypoints import COCO17
    from kdpose_tf.pipeline import person_detector, top_down

    path, shifts, gt_box = moving_video
    pose = top_down((*load_predictor("pp_tinypose_128x96", COCO17)[:3], COCO17))  # OpenVINO: no Keras trace
    detect = person_detector()
    calls = []

    def counting_detect(frame):
        calls.append(1)
        return detect(frame)

    tracker = PersonTracker(counting_detect, lambda f, b: tuple(a[0] for a in pose([f], [b])), COCO17.names)
    steps = [tracker.update(frame, i / 30) for i, frame in enumerate(read_video(path))]
    assert len(steps) == len(shifts) and all(s is not None for s in steps)
    assert len(calls) == 1 and steps[0]["detector"] and not any(s["detector"] for s in steps[1:])
    x, y, w, h = steps[0]["box"]  # the detector found the annotated person
    assert abs(x + w / 2 - (gt_box[0] + gt_box[2] / 2)) < 0.1 * gt_box[3]
    centres = np.array([s["box"][:2] + s["box"][2:] / 2 for s in steps[1:]])
    # every crop is centred where the person has moved (the box of frame i comes from frame i-1's joints)
    drift = (centres - centres[0]) - (shifts[:-1] - shifts[0])
    assert np.abs(drift).max() < 0.06 * gt_box[3], drift
    assert np.ptp(centres[:, 0]) > 60  # it moved 80 px: a box that stayed put fails the line above
    # the smoothed joints moved with the person too
    moved = np.median(steps[-1]["keypoints"] - steps[1]["keypoints"], axis=0)
    np.testing.assert_allclose(moved, shifts[-1] - shifts[1], atol=0.06 * gt_box[3])


def test_the_sidecar_carries_the_tracker_settings(shared_dir):
    """An app reads the crop margins, the lost threshold and the filter's values from the model's sidecar."""
    from kdpose_tf.export.sidecar import make_sidecar
    from kdpose_tf.tracking import TRACKING

    info = make_sidecar(shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite", runtime_check=False)
    assert info["tracking"] == TRACKING and info["tracking"] is not TRACKING
    assert {"lost_score", "torso_margin", "body_margin", "box_padding", "one_euro"} <= set(info["tracking"])
