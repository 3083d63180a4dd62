"""HeatmapCodec: Gaussian values, weights, sub-pixel round trip, quarter shift, DARK, flip test."""

import numpy as np
import pytest

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.keypoints import COCO17


def test_defaults_and_config_round_trip():
    codec = HeatmapCodec()
    assert codec.input_size == (256, 192) and codec.heatmap_size == (64, 48)
    assert codec.sigma == pytest.approx(2.0)
    small = HeatmapCodec((128, 128))
    assert small.heatmap_size == (32, 32) and small.sigma == pytest.approx(2.0 * 32 / 48)
    again = HeatmapCodec.from_config(small.get_config())
    assert (again.input_size, again.heatmap_size, again.sigma) == (small.input_size, small.heatmap_size, small.sigma)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"input_size": (256,)}, "input_size"),
        ({"input_size": (255, 192)}, "divisible by 4"),
        ({"heatmap_size": (0, 48)}, "heatmap_size"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": "big"}, "sigma"),
    ],
)
def test_invalid_args_say_what_was_received(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        HeatmapCodec(**kwargs)


def test_encode_values_match_hand_computed_gaussian():
    codec = HeatmapCodec((64, 64))  # heatmap 16x16, stride 4, sigma 2/3
    kp = np.array([[20.0, 36.0], [22.0, 10.0]])  # heatmap (5, 9) and (5.5, 2.5)
    hm, w = codec.encode(kp, np.array([2.0, 1.0]))
    assert hm.shape == (16, 16, 2) and hm.dtype == np.float32 and w.tolist() == [1.0, 1.0]
    s = codec.sigma
    assert hm[9, 5, 0] == pytest.approx(1.0)
    assert hm[9, 6, 0] == pytest.approx(np.exp(-1 / (2 * s * s)), rel=1e-5)
    assert hm[11, 4, 0] == pytest.approx(np.exp(-(1 + 4) / (2 * s * s)), rel=1e-5)
    # sub-pixel centre: four equal maxima around (5.5, 2.5), each exp(-0.5 / (2 s^2))
    quad = hm[2:4, 5:7, 1]
    np.testing.assert_allclose(quad, np.exp(-0.5 / (2 * s * s)), rtol=1e-5)


def test_target_weight_rules():
    codec = HeatmapCodec((64, 48))  # heatmap 16x12, sigma 0.5 -> 3 sigma = 1.5 heatmap px
    kp = np.array(
        [
            [24.0, 32.0],  # inside, labelled
            [24.0, 32.0],  # inside, unlabelled
            [-14.0, 32.0],  # u = -3.5: br = u + 1.5 + 1 = -1 < 0: outside
            [-4.0, 32.0],  # u = -1: br = 1.5 >= 0: overlaps, kept
            [24.0, 70.0],  # v = 17.5 >= 16 + 1.5: ul = 16 >= h: outside
            [np.nan, 3.0],  # not finite
        ]
    )
    hm, w = codec.encode(kp, np.array([2, 0, 2, 2, 2, 2]))
    assert w.tolist() == [1, 0, 0, 1, 0, 0]
    assert np.all(hm[..., w == 0] == 0)
    assert hm[..., 3].max() > 0


def test_round_trip_subpixel_quarter_shift_and_dark():
    rng = np.random.default_rng(0)
    codec = HeatmapCodec((256, 192))
    kp = np.stack([rng.uniform(12, 180, 500), rng.uniform(12, 244, 500)], axis=1)
    hms = np.stack([codec.encode(kp[i : i + 17], np.ones(17))[0] for i in range(0, 493, 17)])
    truth = np.stack([kp[i : i + 17] for i in range(0, 493, 17)])
    dec, scores = codec.decode(hms)
    err_hm = np.abs(dec - truth) / 4.0  # in heatmap pixels
    # argmax error <= 0.5, the quarter shift toward the higher neighbour makes it <= 0.25
    assert err_hm.max() <= 0.25 + 1e-4
    assert 0.08 < err_hm.mean() < 0.17  # ~0.125 for uniform sub-pixel offsets
    assert np.all(scores > np.exp(-0.5 / (2 * 4.0)) - 1e-6)  # peak >= value at half-pixel diagonal
    dark, _ = codec.decode(hms, dark=True)
    err_dark = np.abs(dark - truth) / 4.0
    u = truth / 4.0
    margin = np.minimum(u, np.array([47.0, 63.0]) - u).min(axis=-1)  # heatmap px to the nearest border
    interior = margin >= 4
    assert interior.sum() > 300
    # measured: max 0.012 / mean 0.001 at >= 4 px from the border, 2e-4 at >= 8 px
    assert err_dark[interior].max() < 0.02 and err_dark[interior].mean() < 0.005
    assert err_dark.max() <= 0.25 + 1e-4  # near the border DARK falls back to the quarter shift


def test_decode_quarter_shift_hand_built_heatmap():
    codec = HeatmapCodec((32, 32))  # heatmap 8x8
    hm = np.zeros((8, 8, 3), np.float32)
    hm[3, 4, 0], hm[3, 5, 0], hm[3, 3, 0], hm[2, 4, 0] = 1.0, 0.5, 0.2, 0.1  # right & up
    hm[0, 0, 1] = 0.7  # at the corner: no shift
    hm[5, 2, 2], hm[5, 1, 2], hm[5, 3, 2] = 0.9, 0.3, 0.3  # equal neighbours: no shift
    kp, sc = codec.decode(hm)
    np.testing.assert_allclose(kp[0], [[4.25 * 4, 2.75 * 4], [0, 0], [2 * 4, 5 * 4]])
    np.testing.assert_allclose(sc[0], [1.0, 0.7, 0.9])
    with pytest.raises(ValueError, match="heatmap_size"):
        codec.decode(np.zeros((1, 16, 16, 3)))


def test_flip_back_exact_on_symmetric_set():
    rng = np.random.default_rng(1)
    hm = rng.random((2, 16, 12, 17)).astype(np.float32)
    fi = COCO17.flip_index
    # what a perfectly equivariant network predicts on the mirrored crop
    flipped = hm[:, :, ::-1, :][..., fi]
    np.testing.assert_array_equal(HeatmapCodec.flip_test_average(hm, flipped, fi, shift=False), hm)
    # with the 1-px shift: the average of hm and hm moved one column right (column 0 repeated)
    moved = np.concatenate([hm[:, :, :1], hm[:, :, :-1]], axis=2)
    np.testing.assert_allclose(HeatmapCodec.flip_test_average(hm, flipped, fi), 0.5 * (hm + moved), rtol=1e-6)
    # a set that is its own mirror (left/right swapped) averages to itself
    sym = 0.5 * (hm + flipped)
    np.testing.assert_allclose(HeatmapCodec.flip_test_average(sym, sym, fi, shift=False), sym, rtol=1e-6)
    with pytest.raises(ValueError, match="flip_index"):
        HeatmapCodec.flip_back(hm, fi[:5])


def test_flip_test_through_encode_of_mirrored_joints():
    """Encode joints and their mirror (x -> W-1-x, pairs swapped); flip averaging decodes back."""
    codec = HeatmapCodec((256, 192))
    rng = np.random.default_rng(2)
    kp = np.stack([rng.uniform(20, 170, 17), rng.uniform(20, 236, 17)], axis=1)
    hm, _ = codec.encode(kp, np.ones(17))
    mirrored = kp.copy()
    mirrored[:, 0] = 191 - mirrored[:, 0]
    fhm, _ = codec.encode(mirrored[COCO17.flip_index], np.ones(17))
    avg = codec.flip_test_average(hm[None], fhm[None], COCO17.flip_index)
    dec, _ = codec.decode(avg)
    # the 1-px HRNet shift over-compensates the 0.75-px mirror offset by 0.25 heatmap px (1 input px)
    assert np.abs(dec[0] - kp).max() <= 0.25 * 4 + 1.0 + 1e-3
    unshifted = codec.decode(codec.flip_back(fhm[None], COCO17.flip_index, shift=False))[0][0]
    assert np.abs(unshifted[:, 0] - (kp[:, 0] - 3.0)).max() <= 1.0 + 1e-3  # 0.75 heatmap px left


def test_encode_tf_matches_numpy():
    import tensorflow as tf

    codec = HeatmapCodec((64, 48))
    kp = np.array([[10.3, 20.7], [30.0, 50.5]], np.float32)
    vis = np.array([2.0, 0.0], np.float32)
    hm_tf, w_tf = codec.encode_tf(tf.constant(kp), tf.constant(vis))
    hm_np, w_np = codec.encode(kp, vis)
    assert hm_tf.shape == (16, 12, 2)
    np.testing.assert_allclose(hm_tf.numpy(), hm_np)
    np.testing.assert_array_equal(w_tf.numpy(), w_np)
