"""PoseBatches (keras.utils.PyDataset) against the tf.data pipeline, and training with no TensorFlow.

Both data paths run the same per-element worker (`PoseExamples`), so without shuffling they yield
the same batches: same augmentation, same heatmaps, same teacher heatmaps warped and flipped like
the labels. The last test trains a Distiller with Keras on JAX in a process where TensorFlow
cannot be imported at all (a meta-path finder refuses it): `import kdpose_tf` and `fit_resumable`
then go through PoseBatches.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.parse import read_parse
from kdpose_tf.data.pipeline import PoseBatches, make_dataset, make_inference_inputs, make_training_data
from kdpose_tf.data.sample import TEACHER_HEATMAP_MATRIX, TEACHER_HEATMAP_WEIGHT, TEACHER_HEATMAPS
from kdpose_tf.data.transforms import AugmentConfig, affine_points, get_affine_transform
from kdpose_tf.keypoints import LSP14

CODEC = HeatmapCodec((64, 48), (16, 12))


@pytest.fixture(scope="module")
def samples(data_dir):
    return list(read_parse(data_dir / "parse", split="train", on_bad_sample="skip"))[:10]


def _with_teacher_heatmaps(samples):
    """Attach heatmaps of the labels rendered on each person's un-augmented crop, as a heatmap teacher's
    would be (grid = crop / stride; the matrix maps image pixels onto that grid)."""
    _, centers, scales = make_inference_inputs(samples, CODEC.input_size)
    to_grid = np.diag([1.0 / CODEC.stride[0], 1.0 / CODEC.stride[1], 1.0])
    out = []
    for s, c, sc in zip(samples, centers, scales):
        crop = get_affine_transform(c, sc, 0.0, CODEC.input_size)
        hm, weight = CODEC.encode(affine_points(s.keypoints, crop), s.visibility)
        matrix = (to_grid @ np.vstack([crop, [0.0, 0.0, 1.0]]))[:2]
        extra = dict(s.extra, **{TEACHER_HEATMAPS: hm.astype(np.float16), TEACHER_HEATMAP_MATRIX: matrix,
                                 TEACHER_HEATMAP_WEIGHT: weight})
        out.append(dataclasses.replace(s, extra=extra))
    return out


@pytest.mark.parametrize("teacher", [False, True])
def test_same_batches_as_tf_data(samples, teacher):
    data = _with_teacher_heatmaps(samples) if teacher else samples
    kwargs = dict(batch_size=4, training=True, augment=AugmentConfig(), shuffle=False, seed=7)
    tf_batches = list(make_dataset(data, CODEC, LSP14, **kwargs))
    py_batches = PoseBatches(data, CODEC, LSP14, **kwargs)
    assert len(py_batches) == len(tf_batches) == 3  # 10 people: 4 + 4 + 2
    keys = {"heatmaps", "target_weight"} | ({"teacher_heatmaps", "teacher_weight"} if teacher else set())
    for (tx, ty), (px, py) in zip(tf_batches, py_batches):
        assert set(py) == set(ty) == keys
        np.testing.assert_allclose(px, np.asarray(tx), atol=1e-4)
        for key in keys:
            assert py[key].dtype == np.float32
            np.testing.assert_allclose(py[key], np.asarray(ty[key]), atol=1e-6, err_msg=key)
        if teacher:  # the teacher's maps follow the augmentation onto the labels' heatmaps
            both = (py["target_weight"] > 0) & (py["teacher_weight"] > 0)
            peak_t = py["teacher_heatmaps"].reshape(len(px), -1, LSP14.num_keypoints).argmax(1)
            peak_g = py["heatmaps"].reshape(len(px), -1, LSP14.num_keypoints).argmax(1)
            w = CODEC.heatmap_size[1]
            dist = np.hypot(peak_t % w - peak_g % w, peak_t // w - peak_g // w)
            assert np.median(dist[both]) <= 1.0
    with pytest.raises(IndexError):
        py_batches[3]


def test_shuffle_is_a_permutation_redrawn_each_epoch(samples):
    batches = PoseBatches(samples, CODEC, LSP14, batch_size=5, training=True, augment=AugmentConfig.none(),
                          shuffle=True, seed=1)
    plain = make_inference_inputs(samples, CODEC.input_size)[0]
    fingerprints = {round(float(im.mean()), 3): i for i, im in enumerate(plain)}

    def order():
        return [fingerprints[round(float(im.mean()), 3)] for i in range(len(batches)) for im in batches[i][0]]

    first = order()
    batches.on_epoch_end()
    second = order()
    assert sorted(first) == sorted(second) == list(range(len(samples)))
    assert first != second


def test_make_training_data_follows_the_backend(samples):
    import keras

    data = make_training_data(samples, CODEC, LSP14, batch_size=4, training=False, shuffle=False)
    assert (keras.backend.backend() == "tensorflow") == (not isinstance(data, PoseBatches))


SCRIPT = textwrap.dedent(
    """
    import no_tensorflow  # noqa: F401  (first: TensorFlow cannot be imported in this process)
    import json, sys
    from pathlib import Path
    import keras
    import kdpose_tf
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.parse import read_parse
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.schedules import LSHMLinearSchedule
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.training import fit_resumable, make_strategy

    data_dir, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
    samples = list(read_parse(data_dir / "parse", split="train", on_bad_sample="skip"))[:16]

    def tiny(name, width):
        x = keras.Input((64, 48, 3))
        h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(h)
        return keras.Model(x, keras.layers.Conv2D(LSP14.num_keypoints, 1)(h), name=name)

    def run(epochs):
        with make_strategy("none").scope():
            d = Distiller(tiny("teacher", 16), tiny("student", 8), alpha=LSHMLinearSchedule(total_steps=6))
            d.compile(optimizer=keras.optimizers.Adam(1e-3))
        return fit_resumable(d, samples, HeatmapCodec((64, 48), (16, 12)), LSP14, run_dir, epochs=epochs,
                             batch_size=8, verbose=0)

    first = run(2)
    resumed = run(3)  # a new process would do the same: resumes at epoch 3, optimizer step included
    print("RESULT" + json.dumps({"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules,
                                 "first": first, "resumed": resumed}))
    """
)


def test_distill_with_jax_and_no_tensorflow(data_dir, tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (it is in the dev extra)")
    script = tmp_path / "distill_on_jax.py"  # not no_tensorflow.py: the script would import itself
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(root), str(root / "tests")]))  # tests/: no_tensorflow
    proc = subprocess.run([sys.executable, str(script), str(data_dir), str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])
    assert res["backend"] == "jax" and res["tensorflow"] is False
    assert len(res["first"]["loss"]) == 2 and all(np.isfinite(res["first"]["loss"]))
    assert res["resumed"]["loss"][:2] == res["first"]["loss"]
    # LSHM 0.6 - 0.2 step / 6, logged at each epoch's last step (1, 3, 5): the resumed epoch continues the schedule
    np.testing.assert_allclose(res["resumed"]["kd_weight"], [0.6 - 0.2 * s / 6 for s in (1, 3, 5)], rtol=1e-6)
    assert (tmp_path / "run" / "checkpoint.weights.h5").is_file()
