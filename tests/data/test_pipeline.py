"""tf.data pipeline on real coco_mini samples: shapes, determinism, weights, inverse map, errors."""

import importlib
import json
import sys
import types

import cv2
import numpy as np
import pytest
import tensorflow as tf

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.pipeline import keypoints_to_image, make_dataset, make_inference_inputs
from kdpose_tf.data.sample import PoseSample
from kdpose_tf.data.transforms import affine_points, get_affine_transform
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import COCO17


@pytest.fixture(autouse=True)
def _image_reader(monkeypatch):
    """Use kdpose_tf.data.images.read_image; a minimal cv2 stand-in only while that module is absent."""
    try:
        importlib.import_module("kdpose_tf.data.images")
    except ModuleNotFoundError:
        def read_image(path):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError("cannot decode image", path=path)
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

        monkeypatch.setitem(sys.modules, "kdpose_tf.data.images", types.SimpleNamespace(read_image=read_image))


@pytest.fixture(scope="module")
def samples(data_dir):
    """coco_mini people with >= 5 labelled joints, built from the JSON with the PoseSample constructor."""
    root = data_dir / "coco_mini"
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    out = []
    for a in ann["annotations"]:
        if a.get("num_keypoints", 0) < 5 or a.get("iscrowd", 0):
            continue
        kp = np.asarray(a["keypoints"], np.float32).reshape(-1, 3)
        out.append(PoseSample(str(root / "train2017" / files[a["image_id"]]), a["bbox"], kp[:, :2], kp[:, 2],
                              "coco17", image_id=a["image_id"], annotation_id=a["id"]))
    assert len(out) >= 12
    return out[:12]


def test_shapes_dtypes_and_training_batches(samples):
    codec = HeatmapCodec((64, 64))
    ds = make_dataset(samples[:6], codec, COCO17, batch_size=4, seed=0)
    spec_images, spec_targets = ds.element_spec
    assert spec_images.shape.as_list() == [None, 64, 64, 3] and spec_images.dtype == tf.float32
    assert spec_targets["heatmaps"].shape.as_list() == [None, 16, 16, 17]
    assert spec_targets["target_weight"].shape.as_list() == [None, 17]
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [4, 2]
    images, targets = batches[0]
    assert images.dtype == tf.float32 and targets["heatmaps"].dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert float(tf.math.reduce_std(images)) > 10.0  # real photo content, not blank
    assert float(tf.reduce_max(targets["heatmaps"])) > 0.5
    ds2 = make_dataset(samples[:6], codec, COCO17, batch_size=4, drop_remainder=True, repeat=True, seed=0)
    assert ds2.element_spec[0].shape.as_list() == [4, 64, 64, 3]
    assert len(list(ds2.take(3))) == 3


def test_deterministic_for_a_fixed_seed(samples):
    codec = HeatmapCodec((64, 64))

    def first(seed):
        images, t = next(iter(make_dataset(samples, codec, COCO17, batch_size=6, seed=seed)))
        return images.numpy(), t["heatmaps"].numpy(), t["target_weight"].numpy()

    a, b, c = first(7), first(7), first(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_eval_targets_weights_and_inverse_map(samples):
    codec = HeatmapCodec((128, 96))
    ds = make_dataset(samples, codec, "coco17", batch_size=12, training=False)
    images, targets = next(iter(ds))
    weights = targets["target_weight"].numpy()
    heatmaps = targets["heatmaps"].numpy()
    vis = np.stack([s.visibility for s in samples])
    assert (vis == 0).any()
    np.testing.assert_array_equal(weights[vis == 0], 0.0)  # unlabelled joints carry no weight
    assert np.all(heatmaps.transpose(0, 3, 1, 2)[vis == 0] == 0)
    # evaluation crops equal make_inference_inputs', and decoded targets map back onto the annotations
    inf_images, centers, scales = make_inference_inputs(samples, (128, 96))
    np.testing.assert_array_equal(images.numpy(), inf_images)
    # expected weights, computed independently from the annotations and the crop geometry
    truth = np.stack([s.keypoints for s in samples]).astype(np.float64)
    in_crop = np.stack([
        affine_points(truth[i], get_affine_transform(centers[i], scales[i], 0.0, (128, 96)))
        for i in range(len(samples))
    ])
    inside = (in_crop[..., 0] >= 0) & (in_crop[..., 0] <= 95) & (in_crop[..., 1] >= 0) & (in_crop[..., 1] <= 127)
    margin = (3 * codec.sigma + 1) * 4  # 3-sigma window plus one heatmap pixel, in input pixels
    far = (in_crop[..., 0] < -margin) | (in_crop[..., 0] > 95 + margin + 4) | (in_crop[..., 1] < -margin) | (
        in_crop[..., 1] > 127 + margin + 4)
    lab = (vis > 0) & inside
    assert lab.sum() > 50
    np.testing.assert_array_equal(weights[lab], 1.0)
    np.testing.assert_array_equal(weights[(vis > 0) & far], 0.0)
    decoded, _ = codec.decode(heatmaps)
    back = keypoints_to_image(decoded, centers, scales, (128, 96))
    px_per_hm = scales[:, 0] / 24.0  # image pixels per heatmap pixel
    err = np.abs(back - truth).max(-1) / px_per_hm[:, None]
    assert err[lab].max() <= 0.25 + 1e-3  # the quarter-shift bound, in heatmap pixels


def test_missing_image_raises_data_error_naming_file(samples, tmp_path):
    bad = PoseSample(str(tmp_path / "no_such_image.jpg"), samples[0].bbox, samples[0].keypoints,
                     samples[0].visibility, "coco17", annotation_id=1)
    with pytest.raises(DataError, match="no_such_image.jpg"):
        make_dataset([samples[0], bad], HeatmapCodec((64, 64)), COCO17, batch_size=2)
    with pytest.raises(DataError, match="no_such_image.jpg"):
        make_inference_inputs([bad], (64, 64))


def test_corrupt_image_fails_loudly_naming_file(samples, tmp_path):
    junk = tmp_path / "corrupt_image.jpg"
    junk.write_bytes(b"this is not a jpeg")
    bad = PoseSample(str(junk), samples[0].bbox, samples[0].keypoints, samples[0].visibility, "coco17")
    ds = make_dataset([samples[0], bad], HeatmapCodec((64, 64)), COCO17, batch_size=2, training=False)
    with pytest.raises((DataError, tf.errors.OpError), match="corrupt_image.jpg"):
        list(ds)


def test_argument_validation(samples):
    codec = HeatmapCodec((64, 64))
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(samples, codec, COCO17, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        make_dataset([], codec, COCO17)
    with pytest.raises(DataError, match="keypoint set 'mpii16'"):
        make_dataset(samples, codec, "mpii16")
    with pytest.raises(ValueError, match="keypoints"):
        keypoints_to_image(np.zeros((2, 17, 2)), np.zeros((3, 2)), np.ones((3, 2)), (64, 64))
