"""Proposal student/teacher builders: heatmap size parity, PSA placement, full-int8 TFLite."""

import numpy as np
import pytest

from kdpose_tf.models.students import build_proposal_student, build_proposal_teacher

TINY = dict(input_shape=(64, 64, 3), widths=(16, 32, 64, 128), stage_modules=(1, 1, 1), blocks_per_module=1)


def _heatmap_shape(model):
    return tuple(model.outputs[-1].shape[1:])


@pytest.mark.parametrize("use_neck, num_deconv_layers", [(True, 0), (True, 1), (True, 2), (False, 1)])
def test_student_heatmaps_are_quarter_resolution(use_neck, num_deconv_layers):
    model = build_proposal_student(use_neck=use_neck, num_deconv_layers=num_deconv_layers, **TINY)
    assert _heatmap_shape(model) == (16, 16, 17)
    if use_neck:
        assert model.neck.in_levels[0] == f"P{2 + num_deconv_layers}"
    assert model.head.num_deconv_layers == num_deconv_layers


def test_student_matches_teacher_heatmap_size_on_photo(data_dir):
    import cv2

    student = build_proposal_student(num_keypoints=14, keypoint_set="lsp14", **TINY)
    teacher = build_proposal_teacher(num_keypoints=14, keypoint_set="lsp14", input_shape=(64, 64, 3), width=8,
                                     stage_modules=(1, 1, 1, 1), stage_blocks=(1, 1, 1, 1))
    assert _heatmap_shape(student) == _heatmap_shape(teacher) == (16, 16, 14)
    path = sorted((data_dir / "parse").rglob("*.jpg"))[0]
    photo = cv2.resize(cv2.imread(str(path))[:, :, ::-1], (64, 64)).astype("float32")[None]
    for model in (student, teacher):
        out = model(photo)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        assert out.shape == (1, 16, 16, 14) and np.all(np.isfinite(np.asarray(out)))


def test_psa_placement_flags():
    with_psa = build_proposal_student(psa_in_blocks=True, psa_in_head=True, **TINY)
    without = build_proposal_student(psa_in_blocks=False, psa_in_head=False, **TINY)
    assert sum("psa" in layer.name for layer in with_psa.backbone.layers) == 2 + 3 + 4  # one per branch of each stage's single block
    assert not any("psa" in layer.name for layer in without.backbone.layers)
    assert with_psa.backbone.get_layer("stage4_module0_block0_b3_psa") is not None
    assert with_psa.head.psa and not without.head.psa


@pytest.mark.parametrize("kwargs", [{"num_deconv_layers": 3}, {"num_deconv_layers": -1}, {"use_neck": 1},
                                    {"psa_in_head": "yes"}])
def test_student_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="build_proposal_student"):
        build_proposal_student(**TINY, **kwargs)


def test_default_student_size():
    from kdpose_tf.models.summary import count_params

    model = build_proposal_student(input_shape=(64, 64, 3))  # parameters do not depend on the input size
    n = count_params(model)
    assert 0.8e6 < n < 1.6e6, n  # a Dite-HRNet-18-sized student (1.19 M measured)


def test_student_full_int8_tflite_builtin_ops(tmp_path):
    """Student -> SavedModel -> full-int8 TFLite (builtin int8 ops only) -> runs in LiteRT."""
    import tensorflow as tf
    from kdpose_tf.export.delegates import make_interpreter

    model = build_proposal_student(psa_in_head=True, **TINY)
    inference = model.inference_model()
    saved = tmp_path / "saved"
    inference.export(str(saved), format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec((1, 64, 64, 3), tf.float32)])
    rng = np.random.RandomState(0)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")] for _ in range(3))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    path = tmp_path / "student_int8.tflite"
    path.write_bytes(conv.convert())
    # LiteRT's XNNPACK delegate aborts the process on some int8 students: "auto" checks that in a
    # child process and falls back to the builtin kernels (kdpose_tf/export/delegates.py).
    interp, _ = make_interpreter(path)
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    assert {"DEPTHWISE_CONV_2D", "SOFTMAX", "RESIZE_NEAREST_NEIGHBOR"} <= ops and "TRANSPOSE_CONV" not in ops
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.uint8)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    scale, zero = out["quantization"]
    y = (interp.get_tensor(out["index"]).astype("float32") - zero) * scale
    ref = np.asarray(inference(x.astype("float32")))
    assert y.shape == ref.shape == (1, 16, 16, 17)
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.9
