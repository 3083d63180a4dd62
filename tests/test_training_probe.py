"""The linear probe of an imported model's new joints (kdpose_tf.training_probe) on real people.

PP-TinyPose 128x96 imported with LSP-14 joints keeps its 12 COCO limb channels and gets random ones for LSP's
neck and head top. Fitted on PARSE train 1-100 by the probe, those two joints must score on PARSE test like
trained joints (they are near 0 before), the limbs must not move, and the closed form must equal a direct
least-squares solve on the same crops.
"""

import numpy as np
import pytest

from kdpose_tf.data.parse import read_parse
from kdpose_tf.evaluation import evaluate, keras_predict_fn
from kdpose_tf.training_probe import probe_new_joints

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def parse(data_dir):
    return (list(read_parse(data_dir / "parse", split="train", on_bad_sample="skip")),
            list(read_parse(data_dir / "parse", split="test", on_bad_sample="skip")))


def _pck(model, samples):
    report = evaluate(keras_predict_fn(model), samples, model.input_size, model.codec, "lsp14", metrics=("pck",),
                      progress=False)
    return report["pck"]["per_joint"]


def test_probe_makes_the_new_joints_score_and_leaves_the_limbs(shared_dir, parse):
    from kdpose_tf.models.imported.openvino_import import import_pose_model

    train, test = parse
    model = import_pose_model("pp_tinypose_128x96", keypoint_set="lsp14")
    assert model.new_joints == ("neck", "head_top")
    before = _pck(model, test)
    limbs = model.head.final_conv.get_weights()[0][..., :12].copy()
    seen = probe_new_joints(model, train, model.new_joints, progress=False)
    after = _pck(model, test)
    assert seen == {"neck": 100, "head_top": 100}
    assert before["neck"] < 0.3 and before["head_top"] < 0.3, before
    assert after["neck"] > 0.6 and after["head_top"] > 0.7, after
    np.testing.assert_array_equal(model.head.final_conv.get_weights()[0][..., :12], limbs)
    assert after["left_shoulder"] == before["left_shoulder"]


def test_probe_is_the_least_squares_solution(shared_dir, parse):
    """With a tiny ridge the fitted channel is numpy's lstsq on the same features and targets."""
    from kdpose_tf.data.pipeline import PoseBatches
    from kdpose_tf.models.imported.openvino_import import import_pose_model
    from kdpose_tf.training_probe import _feature_model

    train = parse[0][:12]
    model = import_pose_model("pp_tinypose_128x96", keypoint_set="lsp14")
    probe_new_joints(model, train, ("neck",), ridge=1e-9, progress=False)
    images, targets = PoseBatches(train, model.codec, "lsp14", batch_size=12, training=False, shuffle=False)[0]
    f = np.asarray(_feature_model(model)(np.asarray(images, np.float32)), np.float64)
    keep = np.asarray(targets["target_weight"])[:, 12] > 0
    x = np.concatenate([f[keep].reshape(-1, f.shape[-1]), np.ones((int(keep.sum()) * f.shape[1] * f.shape[2], 1))], 1)
    y = np.asarray(targets["heatmaps"])[keep][..., 12].reshape(-1)
    expected = np.linalg.lstsq(x, y, rcond=None)[0]
    kernel, bias = model.head.final_conv.get_weights()
    fitted = np.concatenate([kernel[0, 0, :, 12], [bias[12]]])
    np.testing.assert_allclose(x @ fitted, x @ expected, atol=2e-3 * np.abs(y).max())


def test_bad_arguments_say_what_was_received(shared_dir, parse):
    from kdpose_tf.models.imported.openvino_import import import_pose_model

    model = import_pose_model("pp_tinypose_128x96", keypoint_set="lsp14")
    with pytest.raises(ValueError, match=r"joints must be names of lsp14.*received \['nose'\]"):
        probe_new_joints(model, parse[0], ("nose",))
    with pytest.raises(ValueError, match="count must be a positive int and ridge > 0; received count=0"):
        probe_new_joints(model, parse[0], ("neck",), count=0)
