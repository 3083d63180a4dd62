"""PoseEstimator: outputs per stack, loss = hand formula, training step, keypoints on real photos."""

import cv2
import keras
import numpy as np
import pytest
from harness import run_model_checks

from kdpose_tf.models.backbone import Backbone, normalize_images
from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.losses import JointsMSELoss, joints_mse
from kdpose_tf.models.pose_estimator import PoseEstimator


def _tiny(num_stacks=2, k=16, size=64):
    bb = HourglassBackbone(num_stacks=num_stacks, filters=8, order=2, num_keypoints=k, input_shape=(size, size, 3))
    return PoseEstimator(bb, keypoint_set="mpii16" if k == 16 else None, num_keypoints=k)


def test_outputs_one_per_stack_final_last():
    model = _tiny(num_stacks=3)
    assert len(model.outputs) == 3
    x = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    outs = model(x)
    feats = model.backbone(x)
    np.testing.assert_allclose(outs[0], feats["heatmaps_stack0"], atol=1e-6)
    np.testing.assert_allclose(outs[1], feats["heatmaps_stack1"], atol=1e-6)
    np.testing.assert_allclose(outs[2], model.head(feats["P2"]), atol=1e-5)
    single = model.inference_model()
    np.testing.assert_allclose(single(x), outs[2], atol=1e-6)
    assert len(_tiny(num_stacks=1).outputs) == 1


def test_export_models_take_one_array_without_a_structure_warning():
    """`inference_model()` and export's `single_output_model` are called on one image array; their
    input is that tensor, not a list of one, so Keras warns nothing (it did on every export)."""
    import warnings

    from kdpose_tf.export.tflite import single_output_model

    model = _tiny(num_stacks=2)
    x = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(model.inference_model()(x), model(x)[-1], atol=1e-6)
        np.testing.assert_allclose(single_output_model(model)(x), model(x)[-1], atol=1e-6)
        listed = keras.Model([model.input], model.outputs[-1])  # a user's model built with a list of one
        np.testing.assert_allclose(single_output_model(listed)(x), model(x)[-1], atol=1e-6)


def test_joints_mse_hand_computed():
    # B=2, heatmaps 1x2 pixels, K=2; squared errors per pixel -> per-joint pixel means:
    # sample 0: joint0 errors (1, 1) -> 1,   joint1 errors (0, 4) -> 2
    # sample 1: joint0 errors (0, 0) -> 0,   joint1 errors (4, 1) -> 2.5
    y_true = np.zeros((2, 1, 2, 2), "float32")
    y_pred = np.zeros((2, 1, 2, 2), "float32")
    y_pred[0, 0, :, 0] = [1, -1]
    y_pred[0, 0, 1, 1] = 2
    y_pred[1, 0, :, 1] = [2, 1]
    w = np.array([[1, 0], [1, 1]], "float32")
    # weighted: sample 0 (1*1 + 0*2)/2 = 0.5 ; sample 1 (0 + 2.5)/2 = 1.25 ; batch mean 0.875
    assert float(joints_mse(y_true, y_pred, w)) == pytest.approx(0.875)
    # unweighted: (1 + 2)/2 = 1.5 ; (0 + 2.5)/2 = 1.25 ; mean 1.375
    assert float(joints_mse(y_true, y_pred)) == pytest.approx(1.375)
    # per-sample weights (B,) scale each sample before the batch mean: (0.5*2 + 1.25*0)/2
    assert float(joints_mse(y_true, y_pred, w, sample_weight=np.array([2.0, 0.0]))) == pytest.approx(0.5)
    assert float(JointsMSELoss()(y_true, y_pred, sample_weight=w)) == pytest.approx(0.875)


def test_compute_loss_sums_every_stack_against_hand_formula():
    model = _tiny(num_stacks=2)
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    y = {"heatmaps": rng.uniform(0, 1, (3, 16, 16, 16)).astype("float32"),
         "target_weight": (rng.uniform(size=(3, 16)) > 0.3).astype("float32")}
    preds = [keras.ops.convert_to_numpy(p) for p in model(x)]
    expected = 0.0
    for p in preds:  # the formula in ARCHITECTURE.md, with numpy
        per_joint = ((p - y["heatmaps"]) ** 2).mean(axis=(1, 2))
        expected += (per_joint * y["target_weight"]).mean(axis=1).mean()
    got = float(model.compute_loss(x, y, model(x)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_fit_reduces_loss_without_compile_loss():
    keras.utils.set_random_seed(0)
    model = _tiny(num_stacks=2, size=32)
    rng = np.random.RandomState(1)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = {"heatmaps": rng.uniform(0, 1, (4, 8, 8, 16)).astype("float32"), "target_weight": np.ones((4, 16), "float32")}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)  # eager: no slow graph build
    hist = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


@keras.saving.register_keras_serializable(package="kdpose_tf_tests")
class GreenBackbone(Backbone):
    """Stride-4 'greenness' map G - (R + B) / 2: its maximum is where a pure green dot is."""

    def __init__(self, input_shape=(64, 48, 3), **kwargs):
        images = keras.Input(shape=input_shape)
        x = normalize_images(images)
        x = keras.layers.AveragePooling2D(4, name="pool")(x)
        x = keras.layers.Conv2D(1, 1, use_bias=False, name="green", trainable=False)(x)
        super().__init__(inputs=images, outputs={"P2": x}, **kwargs)
        self.get_layer("green").kernel.assign(np.array([-0.5, 1.0, -0.5], "float32").reshape(1, 1, 3, 1))
        self.image_shape = tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "input_shape": list(self.image_shape)}


def test_predict_keypoints_recovers_a_dot_on_a_real_photo(data_dir, tmp_path):
    pytest.importorskip("kdpose_tf.codecs.heatmap_codec")
    pytest.importorskip("kdpose_tf.data.transforms")
    path = sorted((data_dir / "coco_mini" / "train2017").glob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    dot = (int(w * 0.4), int(h * 0.55))
    image[dot[1] - 6 : dot[1] + 6, dot[0] - 6 : dot[0] + 6] = (0, 255, 0)
    head = HeatmapHead(1, name="head")
    model = PoseEstimator(GreenBackbone(input_shape=(64, 48, 3)), num_keypoints=1, keypoint_set=None, head=head)
    head.final_conv.kernel.assign(np.ones((1, 1, 1, 1), "float32"))
    head.final_conv.bias.assign(np.zeros((1,), "float32"))
    box = [dot[0] - 60, dot[1] - 100, 150, 180]  # dot off-centre in the box
    kp, scores = model.predict_keypoints([image], [box])
    assert kp.shape == (1, 1, 2) and scores.shape == (1, 1)
    # crop scale: box padded 1.25 to 4:3 -> 225 px high over 64 px => 3.5 px per crop px, 14 per heatmap px
    assert np.abs(kp[0, 0] - np.array(dot)).max() < 14, (kp, dot)
    # file paths work the same
    out_path = tmp_path / "dot.png"
    cv2.imwrite(str(out_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    kp2, _ = model.predict_keypoints([str(out_path)], [box])
    np.testing.assert_allclose(kp2, kp, atol=1e-3)


def test_predict_keypoints_inside_image_with_flip(data_dir):
    pytest.importorskip("kdpose_tf.codecs.heatmap_codec")
    import json

    ann = json.loads((data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json").read_text())
    a = next(a for a in ann["annotations"] if a["num_keypoints"] > 5)
    img = next(i for i in ann["images"] if i["id"] == a["image_id"])
    path = data_dir / "coco_mini" / "train2017" / img["file_name"]
    bb = HourglassBackbone(num_stacks=1, filters=8, order=2, num_keypoints=17, input_shape=(64, 64, 3))
    model = PoseEstimator(bb, keypoint_set="coco17")
    kp, scores = model.predict_keypoints([str(path)] * 2, [a["bbox"]] * 2, flip_test=True, batch_size=1)
    assert kp.shape == (2, 17, 2) and np.isfinite(kp).all()
    from kdpose_tf.data.transforms import box_to_center_scale

    # every keypoint lies inside the padded crop window (+ one heatmap pixel) the model saw
    center, scale = box_to_center_scale(a["bbox"], 1.0, 1.25)
    lo, hi = center - scale / 2 - scale / 16, center + scale / 2 + scale / 16
    assert ((kp >= lo) & (kp <= hi)).all(), (kp, lo, hi)
    np.testing.assert_allclose(kp[0], kp[1], atol=1e-4)


def test_constructor_errors():
    bb = HourglassBackbone(num_stacks=1, filters=8, order=2, num_keypoints=16, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="does not match keypoint set 'coco17'"):
        PoseEstimator(bb, num_keypoints=16)
    with pytest.raises(ValueError, match="feature_level='P3'.*available"):
        PoseEstimator(bb, keypoint_set="mpii16", feature_level="P3")
    with pytest.raises(ValueError, match="input_size=\\(128, 128\\)"):
        PoseEstimator(bb, keypoint_set="mpii16", input_size=(128, 128))


def test_pose_estimator_harness(tmp_path):
    bb = HourglassBackbone(num_stacks=2, filters=8, order=2, num_keypoints=16, input_shape=(32, 32, 3))
    figures = run_model_checks(PoseEstimator, {"backbone": bb, "keypoint_set": "mpii16"}, (2, 32, 32, 3),
                               tmp_path=tmp_path, require_float32=True)
    assert figures["tflite_max_diff"] < 1e-4
