"""Data pipeline throughput versus the training-step consumption rate of a small student.

Measures samples/s of `kdpose_tf.data.pipeline.make_dataset` (image decode, affine crop,
HRNet augmentation, heatmap encoding; default settings, batch 32) on the real coco_mini
photos at 256x192 and 128x128, and samples/s consumed by `train_on_batch` of
  * a small plain conv net (~0.7 GMACs at 256x192) defined here, and
  * an LSHM-2 student (2-stack inverted-residual hourglass, C=128) when
    kdpose_tf.models.hourglass / pose_estimator are importable.
Target: pipeline >= 2x the step's consumption. Both are measured one after the other on the
same machine (in real training they share the CPU cores).

Writes benchmarks/results/pipeline.md and pipeline.json (atomically) and prints the table.

Usage:
    .venv/bin/python benchmarks/pipeline.py [--batches 8] [--steps 2] [--step-batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec  # noqa: E402
from kdpose_tf.data.pipeline import make_dataset  # noqa: E402
from kdpose_tf.data.sample import PoseSample  # noqa: E402
from kdpose_tf.keypoints import COCO17  # noqa: E402
from kdpose_tf.models.backbone import normalize_images  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402
from kdpose_tf.utils.shared import shared_dir  # noqa: E402


def ensure_image_reader():
    """Return the reader used: kdpose_tf.data.images.read_image, or a cv2 stand-in while that module is absent."""
    try:
        import kdpose_tf.data.images  # noqa: F401

        return "kdpose_tf.data.images.read_image"
    except ImportError:
        import types

        import cv2

        def read_image(path):
            return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

        sys.modules["kdpose_tf.data.images"] = types.SimpleNamespace(read_image=read_image)
        return "cv2 stand-in (kdpose_tf.data.images absent)"


def load_samples():
    root = shared_dir() / "data" / "coco_mini"
    ann_file = root / "annotations" / "person_keypoints_train2017.json"
    try:
        from kdpose_tf.data.coco import read_coco

        samples = read_coco(ann_file, image_dir=root / "train2017", keypoint_set="coco17", on_bad_sample="skip")
    except ImportError:
        ann = json.loads(ann_file.read_text())
        files = {im["id"]: im["file_name"] for im in ann["images"]}
        samples = []
        for a in ann["annotations"]:
            kp = np.asarray(a["keypoints"], np.float32).reshape(-1, 3)
            samples.append(PoseSample(str(root / "train2017" / files[a["image_id"]]), a["bbox"], kp[:, :2],
                                      kp[:, 2], "coco17", image_id=a["image_id"], annotation_id=a["id"]))
    return [s for s in samples if (s.visibility > 0).sum() > 0]


def small_convnet(input_size, num_keypoints=17):
    """Plain conv student: /2 stem, 64-ch 1/4 trunk, 128-ch 1/8 trunk, upsample, 1x1 head (~0.7 GMACs at 256x192)."""
    inputs = keras.Input((*input_size, 3), name="images")
    x = normalize_images(inputs)

    def cbr(x, filters, stride, name):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    x = cbr(x, 32, 2, "stem")
    x = cbr(x, 64, 2, "down1")
    for i in range(3):
        x = cbr(x, 64, 1, f"s4_{i}")
    skip = x
    x = cbr(x, 128, 2, "down2")
    for i in range(2):
        x = cbr(x, 128, 1, f"s8_{i}")
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up")(x)
    x = keras.layers.Conv2D(64, 1, name="up_proj")(x)
    x = keras.layers.Add(name="fuse")([x, skip])
    out = keras.layers.Conv2D(num_keypoints, 1, name="heatmaps", dtype="float32")(x)
    model = keras.Model(inputs, out, name="small_convnet")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def lshm2_student(input_size, num_keypoints=17):
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    bb = HourglassBackbone(num_stacks=2, filters=128, order=4, block="inverted_residual", expansion=2,
                           num_keypoints=num_keypoints, input_shape=(*input_size, 3))
    model = PoseEstimator(bb, keypoint_set="coco17")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def gmacs(model, input_size):
    try:
        from kdpose_tf.models.summary import count_flops

        return count_flops(model) / 1e9
    except Exception:  # summary module absent or unable to count this model
        return float("nan")


def pipeline_rate(samples, codec, batch_size, batches, keypoint_set=COCO17, **kwargs):
    ds = make_dataset(samples, codec, keypoint_set, batch_size=batch_size, training=True, repeat=True, seed=0,
                      **kwargs)
    it = iter(ds)
    for _ in range(2):  # warm-up: graph tracing, thread pools, page cache
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
    _ = images.numpy()
    return batches * batch_size / (time.perf_counter() - t0), it


def step_rate(model, batch, steps, step_batch):
    images, targets = batch
    images = images[:step_batch]
    targets = {k: v[:step_batch] for k, v in targets.items()}
    # PoseEstimator and Distiller take the dict (target weights, teacher targets)
    y = targets if hasattr(model, "backbone") or hasattr(model, "student") else targets["heatmaps"]
    model.train_on_batch(images, y)  # warm-up: tracing
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, y)
    return steps * int(images.shape[0]) / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=8, help="timed pipeline batches per configuration")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per student")
    p.add_argument("--step-batch", type=int, default=8,
                   help="batch of the timed training steps (samples/s per step barely depends on it on CPU)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline"))
    args = p.parse_args(argv)

    reader = ensure_image_reader()
    samples = load_samples()
    rows = []
    for input_size in ((256, 192), (128, 128)):
        codec = HeatmapCodec(input_size)
        rate, it = pipeline_rate(samples, codec, args.batch_size, args.batches)
        rate_cached, _ = pipeline_rate(samples, codec, args.batch_size, args.batches, cache_images=True)
        batch = next(it)
        students = [("small convnet", small_convnet)]
        try:
            import kdpose_tf.models.hourglass.hourglass_backbone  # noqa: F401
            import kdpose_tf.models.pose_estimator  # noqa: F401

            students.append(("LSHM-2 (C=128)", lshm2_student))
        except ImportError as e:
            print(f"LSHM-2 student skipped: {e}")
        for name, build in students:
            keras.backend.clear_session()
            model = build(input_size)
            steps = step_rate(model, batch, args.steps, args.step_batch)
            rows.append({
                "input_size": list(input_size),
                "student": name,
                "gmacs": round(gmacs(model, input_size), 3),
                "pipeline_samples_s": round(rate, 1),
                "pipeline_cached_samples_s": round(rate_cached, 1),
                "step_samples_s": round(steps, 1),
                "ratio": round(rate / steps, 2),
                "target_met": bool(rate >= 2 * steps),
            })
            print(rows[-1], flush=True)

    header = ("| input | student | GMACs | pipeline samples/s | pipeline (cached images) | train step samples/s "
              "| pipeline / step | >= 2x |\n|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {r['input_size'][0]}x{r['input_size'][1]} | {r['student']} | {r['gmacs']} | {r['pipeline_samples_s']} "
        f"| {r['pipeline_cached_samples_s']} | {r['step_samples_s']} | {r['ratio']} | "
        f"{'yes' if r['target_met'] else 'NO'} |"
        for r in rows
    ]
    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, TF {tf.__version__}, "
           f"keras {keras.__version__}; pipeline batch {args.batch_size}, train-step batch {args.step_batch}, "
           f"{len(samples)} coco_mini samples, default "
           f"AugmentConfig, num_parallel_calls=AUTOTUNE, image reader: {reader}; pipeline and step measured "
           "one after the other")
    table = header + "\n".join(lines) + "\n"
    md = f"# Data pipeline vs training step\n\n{env}\n\n{table}"
    print("\n" + table)
    write_text(args.out + ".md", md)
    write_json(args.out + ".json", {"environment": env, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
