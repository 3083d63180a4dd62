"""`kdpose predict` without a box: the person detector on real photos, a skeleton and a COCO result per person,
a video tracked to an MP4 and a JSON per frame, and one clear line for each bad input."""

import json

import cv2
import numpy as np
import pytest

from kdpose_tf.cli.main import main

from kdpose_tf.models.preset_utils import shipped_presets

# a shipped COCO-17 preset when the package carries one, else the imported PP-TinyPose it starts from
MODEL = "coco17_student_128x96" if "coco17_student_128x96" in shipped_presets() else "pp_tinypose_128x96"
CROWD = "000000227000.jpg"  # coco_mini: 9 people with labelled joints, 3 of them with 10 or more
NOBODY = "000000163497.jpg"  # coco_mini: a giraffe, no person box


def _predict(capsys, *args):
    """`kdpose predict ARGS` run in-process: (exit code, stdout, the non-empty stderr lines)."""
    try:
        code = main(["predict", *map(str, args)])
    except SystemExit as e:  # argparse's refusals
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def _error(capsys, *args):
    """The one stderr line of a `kdpose predict` that must exit 2."""
    code, _, err = _predict(capsys, *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("kdpose predict: error: "), (code, err)
    return err[0]


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


@pytest.fixture(scope="module")
def coco_mini(data_dir):
    root = data_dir / "coco_mini"
    return root / "train2017", json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())


@pytest.fixture(scope="module")
def movenet(shared_dir):
    return shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite"


def test_predict_photo_draws_every_detected_person_and_writes_coco_json(coco_mini, tmp_path, capsys):
    images, ann = coco_mini
    out = tmp_path / "crowd_pose.png"
    rc, stdout, _ = _predict(capsys, images / CROWD, "--model", MODEL, "--output", out)
    assert rc == 0, stdout
    results = json.loads(out.with_suffix(".json").read_text())
    assert len(results) >= 4 and f"{len(results)} people in 1 image(s)" in stdout
    for r in results:
        assert r["image_id"] == 227000 and r["category_id"] == 1 and len(r["bbox"]) == 4
        assert len(r["keypoints"]) == 17 * 3 and 0 < r["score"] <= 1
    # the three people labelled with 10 joints or more are among the detections
    truth = [a["bbox"] for a in ann["annotations"] if a["image_id"] == 227000 and a["num_keypoints"] >= 10]
    assert len(truth) == 3
    assert all(max(_iou(t, r["bbox"]) for r in results) > 0.5 for t in truth)
    # a skeleton on each person: every confident joint lies near its own box; each well-labelled person has
    # joints, and the PNG has a joint disc drawn at each of them
    photo = cv2.imread(str(images / CROWD))
    drawn = cv2.imread(str(out))
    assert drawn.shape == photo.shape
    for r in results:
        x, y, w, h = r["bbox"]
        kp = np.asarray(r["keypoints"]).reshape(17, 3)
        good = kp[kp[:, 2] > 0.5, :2]
        assert np.all((good >= [x - 0.3 * w, y - 0.3 * h]) & (good <= [x + 1.3 * w, y + 1.3 * h]))
    for t in truth:
        r = max(results, key=lambda r: _iou(t, r["bbox"]))
        kp = np.asarray(r["keypoints"]).reshape(17, 3)
        good = kp[kp[:, 2] > 0.3, :2]
        inside = (good >= 0).all(1) & (good < [photo.shape[1], photo.shape[0]]).all(1)
        assert inside.sum() >= 8
        for px, py in good[inside].astype(int):
            patch = np.s_[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
            assert np.abs(drawn[patch].astype(int) - photo[patch]).max() > 40


def test_predict_photo_with_nobody_and_a_video(coco_mini, movenet, tmp_path, capsys):
    """Nobody: an empty result, a message, exit 0. A video: one person tracked, an MP4 and a JSON per frame."""
    from kdpose_tf.data.images import read_image
    from kdpose_tf.data.video import VideoWriter, moving_photo, read_video

    images, _ = coco_mini
    out = tmp_path / "giraffe.png"
    rc, stdout, _ = _predict(capsys, images / NOBODY, "--model", movenet, "--output", out)
    assert rc == 0 and "nobody found" in stdout
    assert json.loads(out.with_suffix(".json").read_text()) == [] and out.exists()

    photo = read_image(images / "000000535506.jpg")
    clip = tmp_path / "walk.mp4"
    with VideoWriter(clip, 30, (photo.shape[1], photo.shape[0])) as writer:
        for frame in moving_photo(photo, [(6.0 * i, 0.0) for i in range(6)]):
            writer.write(frame)
    rc, stdout, _ = _predict(capsys, clip, "--model", movenet)
    assert rc == 0 and "FPS" in stdout, stdout
    frames = json.loads((tmp_path / "walk_pose.json").read_text())
    assert [f["frame"] for f in frames] == list(range(6)) and frames[0]["detector"]
    assert all(len(f["people"]) == 1 and len(f["people"][0]["keypoints"]) == 51 for f in frames)
    written = read_video(tmp_path / "walk_pose.mp4")
    assert written.size == (photo.shape[1], photo.shape[0]) and len(list(written)) == 6


def test_bad_inputs_are_one_line_each(coco_mini, shared_dir, movenet, tmp_path, capsys):
    images, _ = coco_mini
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((images / CROWD).read_bytes()[:5000])  # a truncated JPEG
    assert "truncated JPEG" in _error(capsys, broken, "--model", movenet)
    not_video = tmp_path / "clip.mp4"
    not_video.write_bytes(b"this is not a video" * 100)
    line = _error(capsys, not_video, "--model", movenet)
    assert "clip.mp4" in line and "not a video" in line
    assert "video file not found" in _error(capsys, tmp_path / "none.mp4", "--model", movenet)
    # a detector without its pipeline.json beside it (the ONNX linked, not copied), and one that is missing
    lonely = tmp_path / "detector" / "end2end.onnx"
    lonely.parent.mkdir()
    lonely.symlink_to(shared_dir / "models" / "rtmdet_nano_person" / "end2end.onnx")
    line = _error(capsys, images / CROWD, "--model", movenet, "--detector", lonely)
    assert "pipeline.json" in line and "preprocessing config is missing" in line
    line = _error(capsys, images / CROWD, "--model", movenet, "--detector", tmp_path / "no.onnx")
    assert "no.onnx does not exist" in line
    assert "give the image once" in _error(capsys, images / CROWD, "--image", images / CROWD, "--model", movenet)
    code, _, err = _predict(capsys, images / CROWD, "--model", movenet, "--box-threshold", "2")
    assert code == 2 and "between 0 and 1" in err[-1]
