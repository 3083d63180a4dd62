"""Distiller under tf.distribute.MirroredStrategy (2 logical CPUs) matches the single-device run.

The logical devices must be configured before TensorFlow initialises, so the check runs in a
subprocess. Same models, same data, same global batch, plain SGD: per-step losses (History),
final student weights and evaluate() must agree with the default-strategy run. A wrong
per-replica loss scaling would double the update (weights differ) and a wrong metric
aggregation would halve or double the logged losses.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_distiller import photo_batch, tiny
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.schedules import LSHMLinearSchedule
    from pathlib import Path

    x, y = photo_batch(Path(sys.argv[1]), n=8)

    def run(strategy):
        with strategy.scope():
            d = Distiller(tiny("teacher", 16, 2, seed=1), tiny("student", 8, 2, seed=5),
                          alpha=LSHMLinearSchedule(total_steps=4), stack_mapping="matched")
            d.compile(optimizer=keras.optimizers.SGD(0.05))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # global batch 8 -> 4 per replica
        hist = d.fit(ds, epochs=4, verbose=0)
        ev = d.evaluate(ds, verbose=0, return_dict=True)
        return {"history": hist.history, "eval": ev, "replicas": strategy.num_replicas_in_sync,
                "weights": [w.tolist() for w in d.student.get_weights()]}

    single = run(tf.distribute.get_strategy())
    mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT" + json.dumps({"single": single, "mirrored": mirrored}))
    """
)


def test_mirrored_matches_single_device(data_dir, tmp_path):
    script = tmp_path / "mirrored_check.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(script), str(data_dir), str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    single, mirrored = res["single"], res["mirrored"]
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    for key in ("loss", "gt_loss", "kd_loss", "kd_weight", "gt_weight"):
        np.testing.assert_allclose(mirrored["history"][key], single["history"][key], rtol=1e-4, err_msg=key)
        np.testing.assert_allclose(mirrored["eval"][key], single["eval"][key], rtol=1e-4, err_msg=key)
    # training changed the loss (4 steps) and the schedule moved
    assert single["history"]["loss"][-1] < single["history"]["loss"][0]
    np.testing.assert_allclose(single["history"]["kd_weight"], [0.6, 0.55, 0.5, 0.45], rtol=1e-6)
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
