"""The Distiller trains on the TensorFlow, JAX and PyTorch backends, with the same loss on each.

Keras fixes its backend at import, so each backend runs in its own subprocess (KERAS_BACKEND set).
Every run gets the same batch (8 real PARSE crops with their heatmaps, made here by the package's
data pipeline) and the same initial weights (NumPy draws from one seed, in the models' weight
order; Keras' own initializers draw differently on each backend), trains a few steps and reports
its per-step losses. Two distillers cover the paths that hold state: a BatchNorm student with two
stacks under the LSHM schedule (the schedule step and moving statistics are carried by the train
step), and DWPose's decay with a feature term (a trainable adapter, one student forward for both
the heatmaps and the feature) and a bilinearly resized teacher. PyTorch runs where it is installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

STEPS = 6

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.feature import FeatureDistillation
    from kdpose_tf.distillation.schedules import DWPoseDecay, LSHMLinearSchedule

    data = np.load(sys.argv[1])
    steps = int(sys.argv[2])
    x, y = data["images"], {"heatmaps": data["heatmaps"], "target_weight": data["target_weight"]}
    K = y["heatmaps"].shape[-1]

    def model(name, width, stacks=1, stride=4):
        inp = keras.Input(x.shape[1:])
        h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"{name}_c1")(h)
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
        h = keras.layers.ReLU()(h)
        if stride == 4:
            h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"{name}_c2")(h)
        outs = []
        for s in range(stacks):
            h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_s{s}")(h)
            outs.append(keras.layers.Conv2D(K, 1, name=f"{name}_hm{s}")(h))
        return keras.Model(inp, outs if stacks > 1 else outs[0], name=name)

    rng = np.random.default_rng(0)

    def draw_weights(layer):
        for v in layer.weights:
            shape = tuple(v.shape)
            if len(shape) == 1:  # biases, BatchNorm gamma/beta/mean/variance: near 1
                v.assign((1.0 + 0.1 * rng.standard_normal(shape)).astype("float32"))
            else:  # He-scaled kernels
                scale = np.sqrt(2.0 / np.prod(shape[:-1]))
                v.assign((scale * rng.standard_normal(shape)).astype("float32"))

    def lshm():
        t, s = model("t", 16, 2), model("s", 8, 2)
        return Distiller(t, s, alpha=LSHMLinearSchedule(total_steps=steps)), [t, s]

    def dwpose_feature():
        t, s = model("t", 16), model("s", 8, stride=2)
        fd = FeatureDistillation("t_c2", "s_bn", weight=0.5)
        d = Distiller(t, s, alpha=DWPoseDecay(max_epochs=3, steps_per_epoch=2, kd_scale=0.5),
                      resize_teacher="bilinear", feature_distillations=[fd])
        return d, [t, s, fd]

    out = {"backend": keras.backend.backend()}
    for name, make in (("lshm", lshm), ("dwpose_feature", dwpose_feature)):
        d, layers = make()
        for layer in layers:
            draw_weights(layer)
        yy = y if name == "lshm" else dict(y, heatmaps=data["heatmaps_x2"])
        d.compile(optimizer=keras.optimizers.Adam(3e-3))
        first = d.compute_distillation_losses(x, yy, training=False, step=0)
        hist = d.fit(x, yy, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
        out[name] = {"eval0": {k: float(v) for k, v in first.items()},
                     "history": hist.history,
                     "iterations": int(keras.ops.convert_to_numpy(d.optimizer.iterations))}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def batch_file(data_dir, tmp_path_factory):
    """One batch of real PARSE crops and their targets (64x48 crops; 16x12 and 32x24 heatmaps), as .npz."""
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.parse import read_parse
    from kdpose_tf.data.pipeline import make_dataset

    samples = read_parse(data_dir / "parse", split="train", on_bad_sample="skip")[:8]

    def batch(heatmap_size):
        codec = HeatmapCodec((64, 48), heatmap_size)
        return next(iter(make_dataset(samples, codec, "lsp14", batch_size=8, training=False, shuffle=False)))

    (images, targets), (_, targets_x2) = batch((16, 12)), batch((32, 24))
    path = tmp_path_factory.mktemp("backends") / "batch.npz"
    np.savez(path, images=np.asarray(images), heatmaps=np.asarray(targets["heatmaps"]),
             target_weight=np.asarray(targets["target_weight"]), heatmaps_x2=np.asarray(targets_x2["heatmaps"]))
    return path


def _run(backend, batch_file, tmp_path):
    script = tmp_path / "train_on_backend.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), str(batch_file), str(STEPS)],
                          capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    assert result["backend"] == backend
    return result


@pytest.fixture(scope="module")
def tensorflow_run(batch_file, tmp_path_factory):
    return _run("tensorflow", batch_file, tmp_path_factory.mktemp("tensorflow"))


def _check_trains(result):
    for name in ("lshm", "dwpose_feature"):
        hist = result[name]["history"]
        assert result[name]["iterations"] == STEPS
        assert hist["loss"][-1] < 0.7 * hist["loss"][0], (name, hist["loss"])
        assert all(np.isfinite(hist[k]).all() for k in hist)
    # the schedules follow the step: LSHM 0.6 - 0.2 i / I; DWPose 0.5 (1 - (epoch - 1) / 3), 2 steps per epoch
    np.testing.assert_allclose(result["lshm"]["history"]["kd_weight"], [0.6 - 0.2 * i / STEPS for i in range(STEPS)],
                               rtol=1e-6)
    np.testing.assert_allclose(result["dwpose_feature"]["history"]["kd_weight"],
                               [0.5, 0.5, 0.5 * 2 / 3, 0.5 * 2 / 3, 0.5 / 3, 0.5 / 3], rtol=1e-6)
    assert result["dwpose_feature"]["history"]["feat_loss"][0] > 0


def test_tensorflow_trains(tensorflow_run):
    _check_trains(tensorflow_run)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_trains_and_matches_tensorflow(backend, batch_file, tensorflow_run, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (JAX is in the dev extra; PyTorch is optional)")
    result = _run(backend, batch_file, tmp_path)
    _check_trains(result)
    for name in ("lshm", "dwpose_feature"):
        ref, got = tensorflow_run[name], result[name]
        for key in ("loss", "gt_loss", "kd_loss", "feat_loss"):  # same batch, same weights, before any step
            np.testing.assert_allclose(got["eval0"][key], ref["eval0"][key], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name} {key}")
        for key, values in ref["history"].items():  # a few Adam steps stay on the same path
            np.testing.assert_allclose(got["history"][key], values, rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name} {key}")
