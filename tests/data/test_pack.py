"""Training packs (`kdpose_tf.data.pack`): real PARSE people with a real teacher's heatmaps (PP-TinyPose
128x96 through OpenVINO), written here on TensorFlow, read back through `load_dataset("pack:DIR")`.

A pack must give the pipeline the batches it would make from the photos: the same labels, the same
pixels up to JPEG, the teacher's heatmaps up to uint8 rounding, with and without augmentation. Then a
process with Keras on JAX, where TensorFlow cannot be imported, trains a student from the pack, both
through the library and through `kdpose distill --data pack:DIR` (the GPU machine's command), and its
losses on the first batch equal TensorFlow's on the same batch and weights.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.datasets import load_dataset
from kdpose_tf.data.pack import read_pack_meta, write_pack
from kdpose_tf.data.pipeline import PoseBatches
from kdpose_tf.data.sample import TEACHER_KEYPOINTS, TEACHER_SCORES
from kdpose_tf.data.transforms import AugmentConfig
from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher, attach_teacher_heatmaps
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import LSP14

CODEC = HeatmapCodec((64, 48), (16, 12))  # the student's; the teacher's grid is 32x24 on a 128x96 crop
PLAIN = dict(batch_size=6, training=False, shuffle=False, seed=0)
AUGMENTED = dict(batch_size=6, training=True, shuffle=False, seed=5,
                 augment=AugmentConfig(rotation=30.0, rotation_prob=1.0, scale=(0.9, 1.1), half_body_prob=0.0))


@pytest.fixture(scope="module")
def taught(data_dir):
    """12 PARSE test people with PP-TinyPose 128x96's heatmaps attached."""
    samples = list(load_dataset(f"parse:{data_dir / 'parse'}:test").samples)[:12]
    teacher = HeatmapTeacher.from_preset("pp_tinypose_128x96", num_threads=1)
    return attach_teacher_heatmaps(samples, teacher, LSP14, progress=False)


@pytest.fixture(scope="module")
def pack(taught, tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "parse_pack"
    # margin 2: the region holds every crop AUGMENTED can draw (the crop's half-diagonal x 1.1, turned 30 deg)
    write_pack(taught, path, CODEC, margin=2.0, progress=False, info={"teacher": "pp_tinypose_128x96"})
    return path


def _batches(samples, **kwargs):
    return [PoseBatches(samples, CODEC, LSP14, **kwargs)[i] for i in range(2)]


@pytest.mark.parametrize("kwargs", [PLAIN, AUGMENTED], ids=["plain", "augmented"])
def test_pack_gives_the_photos_batches(taught, pack, kwargs):
    data = load_dataset(f"pack:{pack}")
    assert data.info["teacher"] == "heatmaps" and data.info["input_size"] == [64, 48]
    assert data.keypoint_set is LSP14 and len(data.samples) == len(taught)
    for (x, y), (px, py) in zip(_batches(taught, **kwargs), _batches(list(data.samples), **kwargs)):
        assert set(py) == {"heatmaps", "target_weight", "teacher_heatmaps", "teacher_weight"}
        np.testing.assert_allclose(py["heatmaps"], y["heatmaps"], atol=1e-4)  # labels moved exactly
        np.testing.assert_array_equal(py["target_weight"], y["target_weight"])
        np.testing.assert_array_equal(py["teacher_weight"], y["teacher_weight"])
        # JPEG (quality 90) on 0-255 pixels; augmented crops are resampled twice (photo -> region -> crop),
        # about a 3x3 Gaussian blur softer; a crop one pixel off differs by about 17
        assert np.abs(px - x).mean() < (6.0 if kwargs is PLAIN else 11.0)
        t, pt = y["teacher_heatmaps"], py["teacher_heatmaps"]
        assert t.max() > 0.5 and np.abs(pt - t).max() < 0.03  # uint8 rounding and negatives clipped
        assert np.abs(pt - t).mean() < 1e-3
        peaks = lambda hm: hm.reshape(len(hm), -1, hm.shape[-1]).argmax(1)  # noqa: E731
        taught_joints = y["teacher_weight"] > 0
        assert (peaks(pt) == peaks(t))[taught_joints].mean() > 0.95


def test_pack_carries_keypoint_teachers(taught, tmp_path):
    """A keypoint teacher's joints (here: the labels moved 3 px, NaN on one joint) are packed as coordinates."""
    samples = []
    for s in taught:
        joints = s.keypoints.astype(np.float64) + 3.0
        joints[2] = np.nan
        extra = {k: v for k, v in s.extra.items() if not k.startswith("teacher")}
        samples.append(dataclasses.replace(s, extra={**extra, TEACHER_KEYPOINTS: joints,
                                                     TEACHER_SCORES: np.ones(14, np.float32)}))
    write_pack(samples, tmp_path / "kp", CODEC, progress=False)
    packed = list(load_dataset(f"pack:{tmp_path / 'kp'}").samples)
    assert read_pack_meta(tmp_path / "kp")["teacher"] == "keypoints"
    for (_, y), (_, py) in zip(_batches(samples, **AUGMENTED), _batches(packed, **AUGMENTED)):
        np.testing.assert_allclose(py["teacher_heatmaps"], y["teacher_heatmaps"], atol=1e-4)
        np.testing.assert_array_equal(py["teacher_weight"], y["teacher_weight"])
        assert (py["teacher_weight"][:, [2, 3]] == 0).any(axis=1).all()  # joint 2, or its mirror when flipped


def test_pack_refuses_mixed_teachers_and_reads_only_packs(taught, tmp_path):
    mixed = taught[:2] + [dataclasses.replace(taught[2], extra={})]
    with pytest.raises(DataError, match="2 of 3 samples carry teacher heatmaps"):
        write_pack(mixed, tmp_path / "mixed", CODEC, progress=False)
    assert not (tmp_path / "mixed").exists()
    with pytest.raises(DataError, match="not a pack folder"):
        load_dataset(f"pack:{tmp_path}")


def _tiny_student():
    """A small conv net (64x48 -> 16x12 x 14) with seeded weights; its heatmaps start near 0, as a trained
    head's background, so the KD loss is mostly the teacher's maps."""
    x = keras.Input((64, 48, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(h)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(h)
    model = keras.Model(x, keras.layers.Conv2D(14, 1, name="hm")(h), name="student")
    rng = np.random.default_rng(0)
    for v in model.weights:
        shape = tuple(v.shape)
        scale = 0.01 if "hm" in v.path else 1.0
        v.assign((scale * (0.05 * rng.standard_normal(shape) if len(shape) == 1
                           else np.sqrt(2.0 / np.prod(shape[:-1])) * rng.standard_normal(shape))).astype("float32"))
    return model


SCRIPT = textwrap.dedent(
    """
    import no_tensorflow  # noqa: F401  (first: TensorFlow cannot be imported in this process)
    import json, sys
    import keras
    import numpy as np
    from kdpose_tf.cli.main import main
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import load_dataset
    from kdpose_tf.data.pipeline import PoseBatches
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.keypoints import LSP14

    pack, student_file, out = sys.argv[1:4]
    data = load_dataset("pack:" + pack)
    x, y = PoseBatches(list(data.samples), HeatmapCodec((64, 48), (16, 12)), LSP14, batch_size=6, training=False,
                       shuffle=False, seed=0)[0]
    d = Distiller(None, keras.saving.load_model(student_file), alpha=0.5)
    d.compile(optimizer=keras.optimizers.Adam(3e-3))
    first = {k: float(v) for k, v in d.compute_distillation_losses(x, y).items()}
    hist = d.fit(x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0).history
    rc = main(["distill", "--student", student_file, "--data", "pack:" + pack, "--epochs", "1", "--batch-size", "4",
               "--run-dir", out + "/run", "--output", out + "/trained.keras"])
    print("RESULT" + json.dumps({"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules,
                                 "first": first, "loss": hist["loss"], "cli": rc,
                                 "teacher_sum": float(y["teacher_heatmaps"].sum())}))
    """
)


def test_jax_without_tensorflow_trains_from_the_pack(taught, pack, tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (it is in the dev extra)")
    student = _tiny_student()
    student.save(tmp_path / "student.keras")
    # TensorFlow's losses on the pack's first batch, and on the photos' (the same teacher targets up to rounding)
    (x, y), = _batches(list(load_dataset(f"pack:{pack}").samples), **PLAIN)[:1]
    (px, py), = _batches(taught, **PLAIN)[:1]
    d = Distiller(None, student, alpha=0.5)
    tf_pack = {k: float(v) for k, v in d.compute_distillation_losses(x, y).items()}
    tf_photos = {k: float(v) for k, v in d.compute_distillation_losses(px, py).items()}
    no_teacher = {k: float(v) for k, v in d.compute_distillation_losses(
        x, dict(y, teacher_heatmaps=np.zeros_like(y["teacher_heatmaps"]))).items()}
    np.testing.assert_allclose(tf_pack["kd_loss"], tf_photos["kd_loss"], rtol=0.03)
    assert abs(no_teacher["kd_loss"] - tf_pack["kd_loss"]) > 0.1 * tf_pack["kd_loss"]  # the teacher's maps matter

    script = tmp_path / "train_from_pack.py"  # not no_tensorflow.py: the script would import itself
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(root), str(root / "tests")]))  # tests/: no_tensorflow
    proc = subprocess.run([sys.executable, str(script), str(pack), str(tmp_path / "student.keras"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])
    assert res["backend"] == "jax" and res["tensorflow"] is False and res["cli"] == 0
    np.testing.assert_allclose(res["teacher_sum"], float(np.sum(y["teacher_heatmaps"])), rtol=1e-5)
    for key in ("loss", "gt_loss", "kd_loss"):
        np.testing.assert_allclose(res["first"][key], tf_pack[key], rtol=1e-4, err_msg=key)
    assert all(np.isfinite(res["loss"])) and res["loss"][-1] < res["loss"][0]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1 and np.isfinite(state["history"]["kd_loss"]).all()
    assert state["history"]["kd_loss"][0] > 0
    assert (tmp_path / "trained.keras").is_file()


def test_cli_writes_a_pack_and_says_what_it_cannot_do(data_dir, tmp_path, capsys):
    from kdpose_tf.cli.main import main

    student = tmp_path / "student.keras"
    _tiny_student().save(student)
    parse = f"parse:{data_dir / 'parse'}:test"
    pack = tmp_path / "pack"
    base = ["distill", "--student", str(student), "--data", parse]
    assert main([*base, "--teacher", "pp_tinypose_128x96", "--save-pack", str(pack), "--pack-heatmap-stride", "4"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {pack}: 205 people at 64x48" in out and f"--data pack:{pack}" in out
    meta = read_pack_meta(pack)
    assert meta["teacher"] == "heatmaps" and meta["heatmap_stride"] == [4.0, 4.0]
    assert meta["info"]["teacher"] == "pp_tinypose_128x96" and len(list((pack / "images").iterdir())) == 205
    for args, message in [
        (["distill", "--student", str(student), "--data", f"pack:{pack}", "--teacher", "pp_tinypose_128x96"],
         "carries the targets of its teacher (pp_tinypose_128x96); drop --teacher"),
        (base, "distill needs --teacher, or --data pack:DIR"),
        ([*base, "--teacher", str(student), "--save-pack", str(tmp_path / "p2")], "cannot be packed"),
        ([*base, "--teacher", "pp_tinypose_128x96", "--val-data", parse, "--save-pack", str(tmp_path / "p3")],
         "pack validation people with a command of their own"),
    ]:
        assert main(args) == 2
        assert message in capsys.readouterr().err
