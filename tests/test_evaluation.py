"""The shared evaluator on real coco_mini / PARSE crops with a fake model that renders ground truth."""

import hashlib

import numpy as np
import pytest

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.coco import read_coco
from kdpose_tf.data.parse import read_parse
from kdpose_tf.data.pipeline import make_inference_inputs
from kdpose_tf.data.transforms import affine_points, get_affine_transform
from kdpose_tf.evaluation import evaluate, keras_predict_fn, predict_samples
from kdpose_tf.keypoints import COCO17, LSP14


def _key(image):
    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


def oracle_predict_fn(samples, input_size, codec, keypoint_set):
    """A 'model' that looks each crop up and returns the ground-truth heatmaps (codec.encode)."""
    images, centers, scales = make_inference_inputs(samples, input_size)
    h, w = input_size
    table = {}
    for img, c, s, sample in zip(images, centers, scales, samples):
        kp = affine_points(sample.keypoints, get_affine_transform(c, s, 0.0, input_size))
        table[_key(img)] = codec.encode(kp, sample.visibility)[0]
        # mirrored crop: pixel x -> w - 1 - x, left/right joints swapped
        flipped = kp[keypoint_set.flip_index].copy()
        flipped[:, 0] = (w - 1) - flipped[:, 0]
        table[_key(img[:, ::-1])] = codec.encode(flipped, sample.visibility[keypoint_set.flip_index])[0]
    calls = []

    def predict_fn(batch):
        calls.append(len(batch))
        return np.stack([table[_key(im)] for im in batch])

    predict_fn.calls = calls
    return predict_fn


@pytest.fixture(scope="module")
def coco_samples(data_dir):
    root = data_dir / "coco_mini"
    return read_coco(root / "annotations/person_keypoints_train2017.json", root / "train2017")


def test_oracle_on_coco_mini_gives_perfect_scores(coco_samples, data_dir):
    size = (128, 96)
    codec = HeatmapCodec(input_size=size)
    fn = oracle_predict_fn(coco_samples, size, codec, COCO17)
    gt_file = data_dir / "coco_mini/annotations/person_keypoints_train2017.json"
    report = evaluate(fn, coco_samples, size, codec, COCO17, metrics=("pck", "coco"), coco_gt=gt_file,
                      batch_size=16, progress=False)
    assert fn.calls[0] == 16 and sum(fn.calls) == len(coco_samples)
    assert report["num_samples"] == len(coco_samples)
    assert report["pck"]["mean"] == pytest.approx(1.0)
    assert report["pck"]["excluded"] > 0  # real file: some people lack a shoulder or hip label
    assert report["coco"]["AP"] > 0.9 and report["coco"]["AP50"] == pytest.approx(1.0)
    assert [r["joint"] for r in report["rows"]] == list(COCO17.names)
    # OKS against the samples' own gt dict (no file) agrees closely
    own = evaluate(fn, coco_samples, size, codec, COCO17, metrics="coco", batch_size=32, progress=False)
    assert own["coco"]["AP"] > 0.9

    zeros = evaluate(lambda x: np.zeros((len(x), 32, 24, 17), np.float32), coco_samples, size, codec, COCO17,
                     metrics=("pck", "coco"), coco_gt=gt_file, batch_size=32, progress=False)
    assert zeros["pck"]["mean"] < 0.1 and zeros["coco"]["AP"] < 0.05


def test_parse_pck_pckh_and_flip_test(data_dir):
    samples = read_parse(data_dir / "parse", split="test", on_bad_sample="skip")[:24]
    size = (64, 64)
    codec = HeatmapCodec(input_size=size)
    fn = oracle_predict_fn(samples, size, codec, LSP14)
    kp, scores = predict_samples(fn, samples, size, codec, LSP14, batch_size=8, progress=False)
    gt = np.stack([s.keypoints for s in samples])
    torso = np.linalg.norm(gt[:, 8] - gt[:, 3], axis=-1)
    err = np.linalg.norm(kp - gt, axis=-1) / torso[:, None]
    assert kp.shape == (24, 14, 2) and scores.shape == (24, 14)
    assert np.median(err) < 0.05 and scores.min() > 0.5
    report = evaluate(fn, samples, size, codec, LSP14, metrics=("pck", "pckh"), flip_test=True, batch_size=8,
                      progress=False)
    assert report["flip_test"] and sum(fn.calls) == 24 + 2 * 24  # predict_samples + normal & mirrored
    assert report["pck"]["mean"] > 0.97 and report["pckh"]["mean"] > 0.9
    assert set(report["rows"][0]) == {"joint", "PCK@0.2", "PCKh@0.5"}

    # a model that puts every joint at the crop centre is far worse
    centre = codec.encode(np.full((14, 2), 31.5), np.ones(14))[0]
    bad = evaluate(lambda x: np.repeat(centre[None], len(x), 0), samples, size, codec, LSP14, progress=False)
    assert bad["pck"]["mean"] < 0.4


def test_keras_predict_fn_takes_final_output_and_errors():
    import keras

    inp = keras.Input((32, 32, 3))
    a = keras.layers.Conv2D(3, 4, strides=4, name="first")(inp)
    b = keras.layers.Lambda(lambda t: t * 0 + 7.0, name="final")(a)
    model = keras.Model(inp, [a, b])
    out = keras_predict_fn(model)(np.zeros((2, 32, 32, 3), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (2, 8, 8, 3) and np.all(out == 7.0)
    codec = HeatmapCodec(input_size=(32, 32))
    with pytest.raises(ValueError, match="samples is empty"):
        evaluate(keras_predict_fn(model), [], (32, 32), codec, "lsp14")
    with pytest.raises(ValueError, match="metrics must be a non-empty subset"):
        evaluate(keras_predict_fn(model), [object()], (32, 32), codec, "lsp14", metrics=("ap",))
    with pytest.raises(ValueError, match="differs from input_size"):
        predict_samples(keras_predict_fn(model), [object()], (64, 64), codec, "lsp14")
