"""Drawing on a real COCO photo, PNG round trip, history plot, Markdown table."""

import json

import cv2
import numpy as np
import pytest

from kdpose_tf.keypoints import COCO17
from kdpose_tf.visualization import LEFT_COLOR, RIGHT_COLOR, draw_keypoints, markdown_table, plot_history, save_png


@pytest.fixture(scope="module")
def person(data_dir):
    root = data_dir / "coco_mini"
    d = json.loads((root / "annotations/person_keypoints_train2017.json").read_text())
    ann = max((a for a in d["annotations"] if not a["iscrowd"]), key=lambda a: a["num_keypoints"])
    img = next(i for i in d["images"] if i["id"] == ann["image_id"])
    image = cv2.cvtColor(cv2.imread(str(root / "train2017" / img["file_name"])), cv2.COLOR_BGR2RGB)
    kp = np.array(ann["keypoints"], np.float64).reshape(17, 3)
    return image, kp


def test_draw_changes_pixels_at_joints(person):
    image, kp = person
    before = image.copy()
    out = draw_keypoints(image, kp[:, :2], kp[:, 2], COCO17, threshold=0.5)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert out.shape == image.shape and out.dtype == np.uint8
    exact, sided = 0, 0
    for j in range(17):
        x, y = int(round(kp[j, 0])), int(round(kp[j, 1]))
        if kp[j, 2] > 0.5:
            assert (out[y, x] != before[y, x]).any(), COCO17.names[j]
            side = COCO17.names[j].split("_")[0]
            if side in ("left", "right"):
                sided += 1
                # the joint's own colour at its centre (unless a neighbour's outline overlaps it)
                exact += bool((out[y, x] == (LEFT_COLOR if side == "left" else RIGHT_COLOR)).all())
        elif 0 <= y < image.shape[0] and 0 <= x < image.shape[1]:
            # unlabelled joint sits at (0, 0): nothing drawn there
            np.testing.assert_array_equal(out[y, x], before[y, x])
    assert sided >= 10 and exact >= sided - 2
    changed = (out != before).any(-1)
    assert 0.0005 < changed.mean() < 0.2  # a skeleton, not a flood


def test_low_scores_not_drawn(person):
    image, kp = person
    out = draw_keypoints(image, kp[:, :2], np.zeros(17), COCO17)
    np.testing.assert_array_equal(out, image)
    with pytest.raises(ValueError, match=r"\(17, 2\)"):
        draw_keypoints(image, kp[:5, :2], None, COCO17)


def test_save_png_round_trip(person, tmp_path):
    image, kp = person
    out = draw_keypoints(image, kp[:, :2], kp[:, 2], "coco17")
    path = save_png(tmp_path / "sub" / "pose.png", out)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, out)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["pose.png"]  # no temp left


def test_plot_history_and_table(tmp_path):
    class FakeHistory:  # what keras.callbacks.History exposes
        history = {"loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.7, 0.4]}

    path = plot_history({"student": FakeHistory(), "kd": {"loss": [0.9, 0.3]}}, tmp_path / "h.png")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 100 and img.std() > 5
    with pytest.raises(ValueError, match="none of the metrics"):
        plot_history({"a": {"loss": [1.0]}}, tmp_path / "x.png", metrics=("pck",))
    text = markdown_table(
        [{"model": "teacher", "PCK": 0.91234, "params": 26_000_000}, {"model": "a|b", "PCK": float("nan")}],
        ["model", ("PCK", "PCK@0.2"), "params"], path=tmp_path / "t.md",
    )
    assert text.splitlines() == [
        "| model | PCK@0.2 | params |",
        "|---|---|---|",
        "| teacher | 0.912 | 26000000 |",
        "| a\\|b | – | – |",
    ]
    assert (tmp_path / "t.md").read_text() == text + "\n"
