"""Corrupt and odd inputs, made from real files in tmp_path: clear DataErrors or counted skips."""

import json
import shutil
from collections import Counter

import cv2
import numpy as np
import pytest

from kdpose_tf.data.coco import read_coco
from kdpose_tf.data.images import read_image
from kdpose_tf.data.mpii import read_mpii_json
from kdpose_tf.data.parse import read_parse
from kdpose_tf.errors import DataError


@pytest.fixture(scope="module")
def coco_src(data_dir):
    root = data_dir / "coco_mini"
    d = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    anns = [a for a in d["annotations"] if a["num_keypoints"] >= 3 and not a["iscrowd"]][:3]
    ids = {a["image_id"] for a in anns}
    return root / "train2017", {"images": [i for i in d["images"] if i["id"] in ids], "annotations": anns,
                                "categories": d["categories"]}


def _write(tmp_path, coco_src, mutate=None):
    image_dir, d = coco_src
    d = json.loads(json.dumps(d))
    if mutate:
        mutate(d)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(d))
    return path, image_dir, d


def _raises(path, image_dir, match, field, ann_id):
    with pytest.raises(DataError, match=match) as e:
        read_coco(path, image_dir, on_bad_sample="raise")
    msg = str(e.value)
    assert str(path) in msg and f"field '{field}'" in msg
    if ann_id is not None:
        assert f"annotation {ann_id}" in msg and e.value.annotation_id == ann_id
    return e.value


def _skip(path, image_dir, capsys, reason, n_expected):
    samples = read_coco(path, image_dir, on_bad_sample="skip")
    out = capsys.readouterr().out
    assert len(samples) == n_expected and reason in out
    return samples, out


def test_corrupt_images(tmp_path, data_dir):
    src = data_dir / "parse" / "im0001.jpg"
    data = src.read_bytes()
    cut = tmp_path / "half.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated JPEG") as e:
        read_image(cut)
    assert str(cut) in str(e.value)
    png = tmp_path / "bad.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(DataError) as e:
        read_image(png)
    assert str(png) in str(e.value)
    txt = tmp_path / "notes.jpg"
    txt.write_text("this is not an image\n" * 20)
    with pytest.raises(DataError, match="not a decodable image|truncated") as e:
        read_image(txt)
    assert str(txt) in str(e.value)


def test_odd_png_formats_load_as_rgb(tmp_path, data_dir):
    bgr = cv2.imread(str(data_dir / "parse" / "im0002.jpg"))
    rgb = bgr[:, :, ::-1]
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, 2))
    rgba = np.dstack([bgr, np.full(gray.shape, 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)
    cv2.imwrite(str(tmp_path / "d.png"), bgr.astype(np.uint16) * 257)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 1


def test_missing_image_file(tmp_path, coco_src, capsys):
    image_dir, d = coco_src
    missing = d["images"][0]
    ann_id = next(a["id"] for a in d["annotations"] if a["image_id"] == missing["id"])
    n_missing = sum(a["image_id"] == missing["id"] for a in d["annotations"])
    path, _, _ = _write(tmp_path, coco_src, lambda d: d["images"][0].update(file_name="gone.jpg"))
    err = _raises(path, image_dir, "gone.jpg", "file_name", ann_id)
    assert "not found" in str(err)
    _skip(path, image_dir, capsys, "file_name: image file", 3 - n_missing)


@pytest.mark.parametrize("value, match, reason", [
    (None, "missing", "keypoints: missing"),
    ([1, 2, 2] * 16, "expected 51 values", "keypoints: expected 51"),
    ("nan", "NaN or inf", "keypoints: contains NaN"),
    ("inf", "NaN or inf", "keypoints: contains NaN"),
])
def test_bad_keypoints(tmp_path, coco_src, capsys, value, match, reason):
    image_dir, d = coco_src
    bad_id = d["annotations"][1]["id"]

    def mutate(d):
        a = d["annotations"][1]
        if value is None:
            del a["keypoints"]
        elif isinstance(value, str):
            a["keypoints"][0] = float(value)
        else:
            a["keypoints"] = value
    path, _, _ = _write(tmp_path, coco_src, mutate)
    _raises(path, image_dir, match, "keypoints", bad_id)
    samples, _ = _skip(path, image_dir, capsys, reason, 2)
    assert bad_id not in [s.annotation_id for s in samples]


@pytest.mark.parametrize("w, h", [(0, 50), (40, -3)])
def test_empty_boxes(tmp_path, coco_src, capsys, w, h):
    image_dir, d = coco_src
    bad_id = d["annotations"][0]["id"]
    path, _, _ = _write(tmp_path, coco_src, lambda d: d["annotations"][0].update(bbox=[10, 10, w, h]))
    _raises(path, image_dir, "empty box", "bbox", bad_id)
    _skip(path, image_dir, capsys, "bbox: empty box", 2)


def test_joint_outside_image(tmp_path, coco_src, capsys):
    image_dir, d = coco_src
    a0 = d["annotations"][0]
    j = next(i for i in range(17) if a0["keypoints"][3 * i + 2] > 0)
    img = next(i for i in d["images"] if i["id"] == a0["image_id"])

    def mutate(d):
        d["annotations"][0]["keypoints"][3 * j] = img["width"] + 25.0
    path, _, _ = _write(tmp_path, coco_src, mutate)
    _raises(path, image_dir, f"joint {j} .* outside", "keypoints", a0["id"])
    samples, out = _skip(path, image_dir, capsys, "repaired    1  joints outside the image", 3)
    s = next(s for s in samples if s.annotation_id == a0["id"])
    assert s.visibility[j] == 0
    assert int((s.visibility > 0).sum()) == sum(v > 0 for v in a0["keypoints"][2::3]) - 1


def test_all_joints_invisible(tmp_path, coco_src, capsys):
    image_dir, d = coco_src

    def hide(a):
        a["keypoints"] = [0] * 51
        a["num_keypoints"] = 0
    path, _, _ = _write(tmp_path, coco_src, lambda d: hide(d["annotations"][2]))
    samples = read_coco(path, image_dir, on_bad_sample="raise")  # left out, not an error
    assert len(samples) == 2 and d["annotations"][2]["id"] not in [s.annotation_id for s in samples]
    path, _, _ = _write(tmp_path, coco_src, lambda d: [hide(a) for a in d["annotations"]])
    with pytest.raises(DataError, match="no usable samples") as e:
        read_coco(path, image_dir, on_bad_sample="skip")
    assert str(path) in str(e.value)


def test_empty_dataset_and_unknown_keypoint_set(tmp_path, coco_src):
    image_dir, _ = coco_src
    path, _, _ = _write(tmp_path, coco_src, lambda d: d.update(annotations=[]))
    with pytest.raises(DataError, match="no usable samples") as e:
        read_coco(path, image_dir)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match=r"Unknown keypoint set 'coco18'.*coco17.*lsp14.*mpii16"):
        read_coco(path, image_dir, keypoint_set="coco18")


def test_duplicated_ids(tmp_path, coco_src, capsys):
    image_dir, d = coco_src
    first = d["annotations"][0]["id"]
    path, _, _ = _write(tmp_path, coco_src, lambda d: d["annotations"][1].update(id=first))
    _raises(path, image_dir, "duplicated annotation id", "id", first)
    samples, _ = _skip(path, image_dir, capsys, "id: duplicated annotation id", 2)
    kept = next(s for s in samples if s.annotation_id == first)
    np.testing.assert_allclose(kept.bbox, d["annotations"][0]["bbox"], rtol=1e-5)  # the first one


def test_invalid_json(tmp_path, coco_src):
    image_dir, _ = coco_src
    path = tmp_path / "broken.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(DataError, match="not valid JSON .* at line 3") as e:
        read_coco(path, image_dir)
    assert str(path) in str(e.value)


def test_mpii_wrong_length_joints(tmp_path, data_dir, capsys):
    src = data_dir / "format_samples" / "mpii"
    raw = json.loads((src / "test_mpii.json").read_text())
    raw[1]["joints"] = raw[1]["joints"][:15]
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="expected 32 values") as e:
        read_mpii_json(path, image_dir=src)
    msg = str(e.value)
    assert str(path) in msg and "annotation 1" in msg and "field 'joints'" in msg
    samples = read_mpii_json(path, image_dir=src, on_bad_sample="skip")
    assert len(samples) == len(raw) - 1 and 1 not in [s.annotation_id for s in samples]
    assert "joints: expected 32 values" in capsys.readouterr().out


def test_parse_missing_labels(tmp_path, data_dir):
    for name in ("im0001.jpg", "im0002.jpg"):
        shutil.copy(data_dir / "parse" / name, tmp_path / name)
    with pytest.raises(DataError, match="labels file not found") as e:
        read_parse(tmp_path)
    assert str(tmp_path / "labels.mat") in str(e.value)


def test_unknown_keypoint_set_names_file(tmp_path, coco_src):
    path, image_dir, _ = _write(tmp_path, coco_src)
    with pytest.raises(DataError) as e:
        read_coco(path, image_dir, keypoint_set="coco18")
    assert e.value.field == "keypoint_set" and str(path) in str(e.value) and "crowdpose14" in str(e.value)


def test_skip_report_counts_each_reason(tmp_path, data_dir):
    """One file with five different faults: "skip" keeps exactly the good people and counts each reason."""
    root = data_dir / "coco_mini"
    d = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    good = [a for a in d["annotations"] if a["num_keypoints"] >= 3 and not a["iscrowd"]][:8]
    d["annotations"] = good
    d["images"] = [i for i in d["images"] if i["id"] in {a["image_id"] for a in good}]
    del good[0]["keypoints"]
    good[1]["keypoints"][4] = float("nan")
    good[2]["bbox"][3] = 0.0
    good[3]["id"] = good[4]["id"]            # the later one is the duplicate
    good[5]["image_id"] = 999_999_999         # not in "images"
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(d))
    samples = read_coco(path, root / "train2017", on_bad_sample="skip")
    rep = samples.report
    assert len(samples) == 3 and rep.kept == 3
    assert {s.annotation_id for s in samples} == {good[3]["id"], good[6]["id"], good[7]["id"]}
    by_field = Counter()
    for reason, n in rep.skipped.items():
        by_field[reason.split(":")[0]] += n
    assert by_field == {"keypoints": 2, "bbox": 1, "id": 1, "image_id": 1}
    assert good[4]["id"] in rep.examples["id: duplicated annotation id"]
    with pytest.raises(DataError) as e:  # "raise" stops at the first fault, naming it
        read_coco(path, root / "train2017")
    assert e.value.annotation_id == good[0]["id"] and e.value.field == "keypoints"


def test_zero_size_png_header(tmp_path, data_dir):
    from kdpose_tf.data.images import image_size

    src = tmp_path / "ok.png"
    cv2.imwrite(str(src), cv2.imread(str(data_dir / "parse" / "im0003.jpg")))
    data = bytearray(src.read_bytes())
    data[16:20] = (0).to_bytes(4, "big")  # IHDR width = 0
    bad = tmp_path / "zero.png"
    bad.write_bytes(bytes(data))
    h, w = cv2.imread(str(src)).shape[:2]
    assert image_size(src) == (w, h) == read_image(src).shape[1::-1]
    for fn in (image_size, read_image):
        with pytest.raises(DataError, match="zero size|not a decodable") as e:
            fn(bad)
        assert str(bad) in str(e.value) and e.value.field == "image"


def _parse_copy(tmp_path, data_dir, n=4):
    import scipy.io

    root = tmp_path / "parse"
    root.mkdir()
    for i in range(1, n + 1):
        shutil.copy(data_dir / "parse" / f"im{i:04d}.jpg", root / f"im{i:04d}.jpg")
    pts = scipy.io.loadmat(str(data_dir / "parse" / "labels.mat"))["ptsAll"][:, :, :n]
    return root, pts


def test_parse_bad_image_and_nan_joints(tmp_path, data_dir, capsys):
    import scipy.io

    root, pts = _parse_copy(tmp_path, data_dir)
    (root / "im0002.jpg").write_text("not a jpeg\n" * 30)
    pts = pts.copy()
    pts[3, 0, 2] = np.nan  # image 3, left hip x
    scipy.io.savemat(str(root / "labels.mat"), {"ptsAll": pts})
    with pytest.raises(DataError) as e:
        read_parse(root)
    assert e.value.annotation_id == 2 and e.value.field == "image" and "im0002.jpg" in str(e.value)
    samples = read_parse(root, on_bad_sample="skip")
    assert [s.image_id for s in samples] == [1, 4]
    by_field = {reason.split(":")[0]: n for reason, n in samples.report.skipped.items()}
    assert by_field == {"image": 1, "ptsAll": 1}
    assert "ptsAll: contains NaN" in capsys.readouterr().out


def test_buffy_malformed_sticks(tmp_path, data_dir, capsys):
    from kdpose_tf.data.buffy import read_buffy

    root = tmp_path / "buffy"
    (root / "data").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images" / "buffy_s5e2_original").symlink_to(data_dir / "buffy" / "images" / "buffy_s5e2_original")
    lines = (data_dir / "buffy" / "data" / "buffy_s5e2_sticks.txt").read_text().splitlines()
    n_frames = len([ln for ln in lines if ln.strip()]) // 7
    lines[1] = " nan 263.2 213.2 370.7"       # frame 63: NaN
    lines[9] = " 140.3 261.1 157.6"           # frame 71: 3 numbers on a stick line
    (root / "data" / "buffy_s5e2_sticks.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        read_buffy(root)
    assert e.value.annotation_id == "s5e2/63" and e.value.field == "sticks"
    samples = read_buffy(root, on_bad_sample="skip")
    assert len(samples) == n_frames - 2 and samples[0].annotation_id == "s5e2/80"
    assert sum(samples.report.skipped.values()) == 2 and samples.report.kept == n_frames - 2
    assert "s5e2/71" in str(samples.report)


@pytest.mark.parametrize("change, field, match", [
    ({"scale": 0.0}, "center/scale", "empty box"),
    ({"scale": -1.5}, "center/scale", "empty box"),
    ({"center": [float("nan"), 3.0]}, "center/scale", "NaN or inf"),
    ({"joints_vis": [0] * 16}, "keypoints", "no labelled joint"),
])
def test_mpii_bad_entries(tmp_path, data_dir, change, field, match):
    src = data_dir / "format_samples" / "mpii"
    raw = json.loads((src / "test_mpii.json").read_text())
    raw[2].update(change)
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=match) as e:
        read_mpii_json(path, image_dir=src)
    assert e.value.annotation_id == 2 and e.value.field == field and str(path) in str(e.value)
    samples = read_mpii_json(path, image_dir=src, on_bad_sample="skip")
    assert [s.annotation_id for s in samples] == [0, 1, 3, 4]
    assert sum(samples.report.skipped.values()) == 1
