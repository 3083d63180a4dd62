"""Proposal student/teacher builders: heatmap size parity, PSA placement, full-int8 TFLite."""

import numpy as np
import pytest

from kdpose_tf.models.proposal import build_proposal_student, build_proposal_teacher

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
    assert 0.8e6 < n < 1.6e6, n  # a Dite-HRNet-18-sized student (1.16 M measured)


def test_student_full_int8_tflite_builtin_ops(tmp_path):
    """Student -> SavedModel -> full-int8 TFLite (builtin int8 ops only) -> runs in LiteRT."""
    from harness import check_int8

    model = build_proposal_student(psa_in_head=True, **TINY)
    rng = np.random.RandomState(0)
    calibration = rng.uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.uint8).astype("float32")
    # Upsampling lowers to RESHAPE + MUL (XNNPACK runs no int8 RESIZE_NEAREST_NEIGHBOR); export_tflite's
    # XNNPACK pass keeps every quantized op under the requantization limit (kdpose_tf/export/xnnpack_compat.py).
    r = check_int8(model, calibration, tmp_path, x=x, ops_present={"DEPTHWISE_CONV_2D", "SOFTMAX", "RESHAPE", "MUL"},
                   ops_absent={"TRANSPOSE_CONV", "RESIZE_NEAREST_NEIGHBOR"}, io_dtype="uint8")
    assert r["runner"].input_details["dtype"] == np.uint8 and r["runner"].output_details["dtype"] == np.uint8
    y, ref = r["output"], r["reference"]
    assert y.shape == ref.shape == (1, 16, 16, 17)
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.9
