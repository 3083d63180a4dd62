"""Resumable training: a real `kdpose train` subprocess is killed mid-run and restarted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdpose_tf.training import epoch_ordered_samples, read_run_state

ROOT = Path(__file__).resolve().parents[1]


def _tiny_model(path):
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    model = PoseEstimator(
        HourglassBackbone(num_stacks=1, filters=8, order=2, block="inverted_residual", num_keypoints=17,
                          input_shape=(64, 64, 3)),
        keypoint_set="coco17",
    )
    model.save(str(path))
    return path


def _train_cmd(model, data, run_dir, epochs):
    return [sys.executable, "-m", "kdpose_tf.cli.main", "train", "--model", str(model), "--data", data,
            "--epochs", str(epochs), "--batch-size", "8", "--run-dir", str(run_dir), "--no-augment",
            "--lr", "3e-3"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def test_epoch_order_is_a_function_of_seed_and_epoch():
    samples = list(range(10))
    full = epoch_ordered_samples(samples, seed=3, first_epoch=0, epochs=3, steps_per_epoch=2, batch_size=4)
    resumed = epoch_ordered_samples(samples, seed=3, first_epoch=1, epochs=3, steps_per_epoch=2, batch_size=4)
    assert len(full) == 24 and full[8:] == resumed
    assert full[:8] != full[8:16]  # each epoch has its own order
    assert sorted(full[:8]) == sorted(set(full[:8]))  # within an epoch, no repeats while data lasts


def test_corrupt_run_state_is_reported(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    (tmp_path / "checkpoint.weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="state.json"):
        read_run_state(tmp_path)


@pytest.mark.slow
def test_killed_training_resumes_and_matches_uninterrupted_run(tmp_path, data_dir):
    coco = data_dir / "coco_mini"
    data = f"coco:{coco / 'annotations' / 'person_keypoints_train2017.json'}:{coco / 'train2017'}"
    model = _tiny_model(tmp_path / "tiny.keras")
    epochs = 5

    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(model, data, straight, epochs), check=True, env=_env(), capture_output=True)

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(_train_cmd(model, data, resumed, epochs), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        state = resumed / "state.json"
        if state.exists():
            try:
                killed_at = json.loads(state.read_text())["epoch"]
            except (json.JSONDecodeError, KeyError):
                killed_at = None
            if killed_at and killed_at >= 2:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_at is not None and killed_at < epochs, "the run was not interrupted mid-way"
    assert proc.returncode == -signal.SIGKILL

    out = subprocess.run(_train_cmd(model, data, resumed, epochs), check=True, env=_env(),
                         capture_output=True, text=True)
    a = read_run_state(straight)["history"]["loss"]
    b = read_run_state(resumed)["history"]["loss"]
    assert len(a) == len(b) == epochs
    # Same data order, weights and optimizer state: the curves agree up to float noise.
    np.testing.assert_allclose(b, a, rtol=2e-2)
    assert a[-1] < a[0]
    assert "final:" in out.stdout
