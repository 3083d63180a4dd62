"""Readers on the real shared data: counts, raw values, joint-order sanity, benchmark split."""

import json

import numpy as np
import pytest
import scipy.io

from kdpose_tf.data.buffy import read_buffy
from kdpose_tf.data.datasets import load_samples, real_benchmark_split, to_keypoint_set
from kdpose_tf.data.mpii import read_mpii_json
from kdpose_tf.data.parse import read_parse
from kdpose_tf.keypoints import COCO17, LSP14, MPII16

J = {n: i for i, n in enumerate(LSP14.names)}


@pytest.fixture(scope="module")
def parse_all(data_dir):
    return read_parse(data_dir / "parse", on_bad_sample="skip")


@pytest.fixture(scope="module")
def buffy(data_dir):
    return read_buffy(data_dir / "buffy", on_bad_sample="skip")


def _buffy_raw(data_dir):
    """Independent parse: {(episode, frame): (6, 4) sticks} from the text files."""
    raw = {}
    for path in sorted((data_dir / "buffy" / "data").glob("*_sticks.txt")):
        tag = path.name.split("_")[1]
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
        for i in range(0, len(lines), 7):
            raw[(tag, int(lines[i][0]))] = np.array(lines[i + 1:i + 7], dtype=float)
    return raw


def _close(a, b):
    return bool(np.allclose(a, b, atol=1e-3))


def _is_end(point, stick):
    return _close(point, stick[:2]) or _close(point, stick[2:])


def test_parse_counts_and_raw_values(data_dir, parse_all):
    pts = scipy.io.loadmat(str(data_dir / "parse" / "labels.mat"))["ptsAll"]
    n_images = len(list((data_dir / "parse").glob("im*.jpg")))
    assert len(parse_all) == pts.shape[2] == n_images == 305
    train = read_parse(data_dir / "parse", "train", on_bad_sample="skip")
    test = read_parse(data_dir / "parse", "test", on_bad_sample="skip")
    assert (len(train), len(test)) == (100, 205)
    assert [s.image_id for s in train] == list(range(1, 101))
    assert test[0].image_id == 101 and test[0].image_path.endswith("im0101.jpg")
    s = test[0]
    np.testing.assert_allclose(s.keypoints, pts[:, :, 100], rtol=1e-6)
    assert s.keypoint_set == "lsp14" and s.keypoints.shape == (14, 2)
    # every joint labelled unless it lies outside the image
    for s in parse_all:
        w, h = s.image_size
        inside = (s.keypoints[:, 0] >= 0) & (s.keypoints[:, 0] < w) & (s.keypoints[:, 1] >= 0) & (s.keypoints[:, 1] < h)
        np.testing.assert_array_equal(s.visibility, np.where(inside, 2, 0))
        lab = s.keypoints[s.visibility > 0]
        np.testing.assert_allclose(s.bbox[:2], lab.min(0), atol=1e-4)
        np.testing.assert_allclose(s.bbox[:2] + s.bbox[2:], lab.max(0), atol=1e-3)


def test_parse_order_matches_lsp14(parse_all):
    kp = np.stack([s.keypoints for s in parse_all])
    y, x = kp[..., 1], kp[..., 0]
    assert (y[:, J["head_top"]] < y[:, J["neck"]]).mean() >= 0.9
    hips_y = (y[:, J["right_hip"]] + y[:, J["left_hip"]]) / 2
    assert (y[:, J["neck"]] < hips_y).mean() >= 0.9
    assert (y[:, J["right_ankle"]] > y[:, J["right_knee"]]).mean() >= 0.75
    assert (y[:, J["left_ankle"]] > y[:, J["left_knee"]]).mean() >= 0.75
    # person-centric sides: people mostly face the camera, so their right shoulder is on the image left
    assert (x[:, J["right_shoulder"]] < x[:, J["left_shoulder"]]).mean() >= 0.8


def test_buffy_counts_and_mapping(data_dir, buffy):
    raw = _buffy_raw(data_dir)
    assert len(buffy) == len(raw) == 748
    n_images = len(list((data_dir / "buffy" / "images").rglob("*.jpg")))
    assert n_images == len(raw)
    for s in buffy:
        tag, frame = s.annotation_id.split("/")
        sticks = raw[(tag, int(frame))]
        ends = sticks.reshape(12, 2)
        np.testing.assert_allclose(s.extra["sticks"], sticks, rtol=1e-6)
        assert np.all(s.visibility[:6] == 0)  # legs, hips
        lab = s.visibility > 0
        # every labelled joint is one of the annotated stick ends
        for j in np.flatnonzero(lab):
            assert np.min(np.abs(ends - s.keypoints[j]).sum(1)) < 1e-3, (s.annotation_id, LSP14.names[j])
        v = s.visibility
        if v[J["right_shoulder"]] and v[J["right_elbow"]]:  # image-left upper arm -> person's right
            a, b = s.keypoints[J["right_shoulder"]], s.keypoints[J["right_elbow"]]
            assert (_close(a, sticks[1, :2]) and _close(b, sticks[1, 2:])) or \
                (_close(a, sticks[1, 2:]) and _close(b, sticks[1, :2])), s.annotation_id
        if v[J["left_wrist"]]:  # image-right lower arm -> person's left
            assert _is_end(s.keypoints[J["left_wrist"]], sticks[4]), s.annotation_id
        if v[J["left_elbow"]]:
            assert _is_end(s.keypoints[J["left_elbow"]], sticks[2]), s.annotation_id
        if v[J["neck"]]:
            assert _is_end(s.keypoints[J["neck"]], sticks[0]), s.annotation_id
        if v[J["head_top"]]:
            assert _is_end(s.keypoints[J["head_top"]], sticks[5]), s.annotation_id
    kp = np.stack([s.keypoints for s in buffy])
    vis = np.stack([s.visibility for s in buffy]) > 0
    both = vis[:, J["head_top"]] & vis[:, J["neck"]]
    assert (kp[both, J["head_top"], 1] < kp[both, J["neck"], 1]).mean() >= 0.95
    # elbows are shared by the upper and lower arm sticks: the elbow is an end of the upper arm
    # stick and lies near an end of the lower arm stick
    first = buffy[0]
    assert first.annotation_id == "s5e2/63"
    np.testing.assert_allclose(first.keypoints[J["right_elbow"]], [167.6, 331.4], rtol=1e-6)
    np.testing.assert_allclose(first.keypoints[J["right_wrist"]], [233.6, 355.7], rtol=1e-6)
    np.testing.assert_allclose(first.keypoints[J["left_elbow"]], [270.9, 309.9], rtol=1e-6)
    np.testing.assert_allclose(first.keypoints[J["left_wrist"]], [271.2, 356.1], rtol=1e-6)
    np.testing.assert_allclose(first.keypoints[J["head_top"]], [184.1, 173.2], rtol=1e-6)


def test_mpii_json(data_dir):
    path = data_dir / "format_samples" / "mpii" / "test_mpii.json"
    raw = json.loads(path.read_text())
    samples = read_mpii_json(path)
    assert len(samples) == len(raw)
    for s, r in zip(samples, raw):
        assert s.keypoint_set == "mpii16" and s.keypoints.shape == (MPII16.num_keypoints, 2)
        assert s.image_path == str(path.parent / r["image"])
        np.testing.assert_allclose(s.keypoints, np.array(r["joints"]), rtol=1e-6)
        np.testing.assert_array_equal(s.visibility, np.where(np.array(r["joints_vis"]) > 0, 2, 0))
        side = r["scale"] * 200
        np.testing.assert_allclose(s.bbox, [r["center"][0] - side / 2, r["center"][1] - side / 2, side, side],
                                   rtol=1e-5)
        j = np.array(r["joints"])
        assert s.head_size == pytest.approx(np.linalg.norm(j[8] - j[9]), rel=1e-5)


def test_to_keypoint_set_and_benchmark_split(shared_dir, data_dir, parse_all):
    ann = json.loads((data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json").read_text())
    n_coco = sum(1 for a in ann["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0)
    assert n_coco == 86
    coco = load_samples(f"coco:{data_dir}/coco_mini/annotations/person_keypoints_train2017.json")
    assert len(coco) == n_coco
    mapped = to_keypoint_set(coco, LSP14)
    src = coco[0]
    for name in ("left_wrist", "right_ankle", "left_shoulder"):
        np.testing.assert_array_equal(mapped[0].keypoints[LSP14.index(name)], src.keypoints[COCO17.index(name)])
        assert mapped[0].visibility[LSP14.index(name)] == src.visibility[COCO17.index(name)]
    assert all(m.visibility[J["neck"]] == 0 and m.visibility[J["head_top"]] == 0 for m in mapped)
    # COCO persons with >= 4 joints among the 12 LSP-named limb joints (expected independently from the JSON)
    limb = [COCO17.index(n) for n in LSP14.names if n in COCO17.names]
    expected_coco = sum(1 for s in coco if (s.visibility[limb] > 0).sum() >= 4)

    train, test = real_benchmark_split(shared_dir)
    assert len(test) == 205 and all(s.extra["dataset"] == "parse" and s.image_id > 100 for s in test)
    counts = {d: sum(s.extra["dataset"] == d for s in train) for d in ("parse", "buffy", "coco")}
    assert counts == {"parse": 100, "buffy": 748, "coco": expected_coco}
    assert len(train) == 100 + 748 + expected_coco
    assert all(s.keypoint_set == "lsp14" and s.keypoints.shape == (14, 2) for s in train + test)
    assert all((s.visibility > 0).sum() >= 4 for s in train if s.extra["dataset"] == "coco")


def test_load_samples_dispatch(data_dir):
    assert len(load_samples(f"parse:{data_dir}/parse:train")) == 100
    assert len(load_samples(f"parse:{data_dir}/parse")) == 305
    mp = data_dir / "format_samples" / "mpii"
    s = load_samples(f"mpii:{mp}/test_mpii.json:{mp}")
    assert len(s) == len(json.loads((mp / "test_mpii.json").read_text())) and s[0].keypoint_set == "mpii16"
    assert load_samples(f"buffy:{data_dir}/buffy")[0].extra["dataset"] == "buffy"
    with pytest.raises(ValueError, match="unknown dataset kind 'lspx'"):
        load_samples(f"lspx:{data_dir}")
    with pytest.raises(ValueError, match="KIND:PATH"):
        load_samples("no-colon")


def _count_people(ann, min_joints=1):
    """Independent count: non-crowd annotations with >= min_joints labelled joints (v > 0)."""
    return sum(1 for a in ann["annotations"]
               if not a.get("iscrowd", 0) and sum(v > 0 for v in a["keypoints"][2::3]) >= min_joints)


def test_coco_reader_fields_and_report(data_dir):
    from kdpose_tf.data.coco import read_coco

    path = data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json"
    ann = json.loads(path.read_text())
    samples = read_coco(path)  # default image dir: <root>/train2017 from the file name
    assert len(samples) == _count_people(ann) == 86
    # the report is attached and counts what was left out, computed independently from the JSON
    rep = samples.report
    n_crowd = sum(1 for a in ann["annotations"] if a.get("iscrowd", 0))
    assert rep.kept == 86 and not rep.skipped
    assert rep.filtered["crowd region (iscrowd=1)"] == n_crowd == 5
    assert rep.filtered["fewer than 1 labelled joints"] == len(ann["annotations"]) - n_crowd - 86
    images = {i["id"]: i for i in ann["images"]}
    by_id = {a["id"]: a for a in ann["annotations"]}
    for s in samples:
        a, img = by_id[s.annotation_id], images[s.image_id]
        raw = np.array(a["keypoints"], float).reshape(17, 3)
        np.testing.assert_allclose(s.keypoints, raw[:, :2], rtol=1e-6)
        np.testing.assert_array_equal(s.visibility, raw[:, 2])
        np.testing.assert_allclose(s.bbox, a["bbox"], rtol=1e-5)
        assert s.area == pytest.approx(a["area"]) and s.image_size == (img["width"], img["height"])
        assert s.image_path.endswith("train2017/" + img["file_name"])
    # fewer people with a higher joint threshold, again matching an independent count
    assert len(read_coco(path, min_keypoints=10)) == _count_people(ann, 10)


def test_coco_format_samples_and_crowdpose(data_dir):
    from kdpose_tf.data.coco import CROWDPOSE14, read_coco

    path = data_dir / "format_samples" / "coco" / "test_coco.json"
    assert len(read_coco(path)) == _count_people(json.loads(path.read_text()))
    cp = data_dir / "format_samples" / "crowdpose" / "test_crowdpose.json"
    ann = json.loads(cp.read_text())
    with pytest.raises(ValueError, match="lists 14 joints but keypoint set 'coco17' has 17"):
        read_coco(cp)
    samples = read_coco(cp, keypoint_set="crowdpose14")
    assert len(samples) == _count_people(ann) and samples[0].keypoints.shape == (14, 2)
    # the file's "head" / "neck" are CROWDPOSE14's head_top / neck; mapped to LSP14 by name
    names = ann["categories"][0]["keypoints"]
    assert [n.replace("head", "head_top") if n == "head" else n for n in names] == list(CROWDPOSE14.names)
    mapped = to_keypoint_set(samples, LSP14)
    for s, m in zip(samples, mapped):
        for name in ("head_top", "neck", "right_wrist", "left_ankle"):
            np.testing.assert_array_equal(m.keypoints[J[name]], s.keypoints[CROWDPOSE14.index(name)])
            assert m.visibility[J[name]] == s.visibility[CROWDPOSE14.index(name)]


def test_reports_on_clean_real_sets(parse_all, buffy):
    assert parse_all.report.kept == 305 and buffy.report.kept == 748
    assert not buffy.report.skipped and "kept 748" in str(buffy.report)
    # PARSE has a few labelled joints just outside the image: dropped (visibility 0), counted
    n_out = sum(int((s.visibility == 0).sum()) for s in parse_all)
    assert sum(parse_all.report.repaired.values()) == n_out
