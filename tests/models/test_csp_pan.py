"""DepthwiseCSPPAN: shapes, hand-computed parameter count, behaviour, serialization."""

import keras
import numpy as np
import pytest

from kdpose_tf.models.necks.csp_pan import DepthwiseCSPPAN


def _feats(rng, levels=("P3", "P4", "P5"), size=16, channels=(24, 48, 96)):
    return {k: rng.normal(size=(2, size // 2**i, size // 2**i, c)).astype("float32")
            for i, (k, c) in enumerate(zip(levels, channels))}


def test_shapes_default_channels_and_extra_level():
    rng = np.random.RandomState(0)
    neck = DepthwiseCSPPAN(in_levels=("P3", "P4", "P5"), use_extra_level=True, name="neck")
    out = neck(_feats(rng))
    assert sorted(out) == ["P3", "P4", "P5", "P6"]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "P3": (2, 16, 16, 24), "P4": (2, 8, 8, 24), "P5": (2, 4, 4, 24), "P6": (2, 2, 2, 24)}
    shapes = neck.compute_output_shape({k: v.shape for k, v in _feats(rng).items()})
    assert {k: tuple(v) for k, v in shapes.items()} == {k: tuple(v.shape) for k, v in out.items()}


def test_param_count_hand_computed():
    """2 levels (8 and 16 channels), out 8, kernel 5, one CSP bottleneck, no extra level."""
    from kdpose_tf.models.summary import count_params

    c, mid, k = 8, 4, 5
    bn = lambda n: 2 * n  # noqa: E731  (gamma, beta; moving stats are not parameters)
    reduce = (8 * c + bn(c)) + (16 * c + bn(c))
    csp = (2 * c * mid + bn(mid)) * 2 + (mid * mid + bn(mid)) + (k * k * mid + bn(mid)) + (mid * mid + bn(mid)) \
        + (2 * mid * c + bn(c))
    down = (k * k * c + bn(c)) + (c * c + bn(c))
    expected = reduce + 2 * csp + down  # one top-down CSP, one bottom-up CSP
    neck = DepthwiseCSPPAN(in_levels=("P2", "P3"), name="neck")
    neck({"P2": np.zeros((1, 8, 8, 8), "float32"), "P3": np.zeros((1, 4, 4, 16), "float32")})
    assert count_params(neck) == expected


def test_top_down_path_carries_low_resolution_information():
    """Perturbing only P5 changes the P3 output (top-down); perturbing P3 changes P5 (bottom-up)."""
    rng = np.random.RandomState(1)
    neck = DepthwiseCSPPAN(in_levels=("P3", "P4", "P5"), out_channels=16, name="neck")
    base = _feats(rng)
    y0 = neck(base)
    for src, dst in (("P5", "P3"), ("P3", "P5")):
        moved = dict(base, **{src: base[src] + 3.0 * rng.normal(size=base[src].shape).astype("float32")})
        assert np.abs(np.asarray(neck(moved)[dst]) - np.asarray(y0[dst])).max() > 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [{"kernel_size": 4}, {"out_channels": 1}, {"num_csp_blocks": 0}, {"in_levels": ("P3",)},
     {"in_levels": ("P3", "P5")}, {"activation": "gelu"}, {"use_extra_level": 1}],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="DepthwiseCSPPAN"):
        DepthwiseCSPPAN(**kwargs)


def test_rejects_missing_or_mismatched_levels():
    neck = DepthwiseCSPPAN(in_levels=("P3", "P4"), name="neck")
    with pytest.raises(ValueError, match="missing"):
        neck({"P3": np.zeros((1, 8, 8, 8), "float32")})
    with pytest.raises(ValueError, match="half the size"):
        DepthwiseCSPPAN(in_levels=("P3", "P4"), name="n2")(
            {"P3": np.zeros((1, 8, 8, 8), "float32"), "P4": np.zeros((1, 8, 8, 8), "float32")})


def test_in_pose_estimator_with_lite_backbone_round_trip(tmp_path, data_dir):
    import cv2
    from harness import run_model_checks

    from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    bb = LiteHRNetBackbone(widths=(8, 16, 32, 64), stem_width=8, stage_modules=(1, 1, 1), blocks_per_module=1,
                           iterative_head=False, input_shape=(64, 64, 3))
    model = PoseEstimator(bb, neck=DepthwiseCSPPAN(use_extra_level=True, name="neck"))
    path = sorted((data_dir / "coco_mini" / "train2017").glob("*.jpg"))[0]
    photo = cv2.resize(cv2.imread(str(path))[:, :, ::-1], (64, 64)).astype("float32")[None]
    out = model(photo)
    heatmaps = out[-1] if isinstance(out, (list, tuple)) else out
    assert tuple(heatmaps.shape) == (1, 16, 16, 17) and np.all(np.isfinite(np.asarray(heatmaps)))
    run_model_checks(PoseEstimator, {"backbone": bb, "neck": model.neck}, (1, 64, 64, 3), tmp_path=tmp_path,
                     tflite=False, require_float32=True)
    loaded = keras.saving.load_model(next(tmp_path.glob("*.keras")))
    assert isinstance(loaded.neck, DepthwiseCSPPAN) and loaded.neck.use_extra_level
