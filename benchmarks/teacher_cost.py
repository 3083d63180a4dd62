"""What a pretrained teacher costs per training step, cached (as shipped) versus run on every batch.

On real LSPET people at the mobile student's input (Lite-HRNet-18, 128x96, batch 32), one run:
- the teachers' own time per crop (PP-TinyPose 256x192 / 128x96 through OpenVINO, MoveNet through LiteRT);
- the data pipeline's samples/s with labels only and with cached PP-TinyPose heatmaps warped through
  each augmentation (`attach_teacher_heatmaps` + `make_dataset`);
- the training step (s/step) of the plain student and of `Distiller(None, student)` on those batches;
- what running the teacher on every augmented batch instead would add per step (batch x ms per crop).

    python benchmarks/teacher_cost.py [--people 256] [--steps 6]

Writes benchmarks/results/teacher_cost.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec  # noqa: E402
from kdpose_tf.data.lspet import read_lspet  # noqa: E402
from kdpose_tf.data.pipeline import make_dataset, make_inference_inputs  # noqa: E402
from kdpose_tf.distillation.distiller import Distiller  # noqa: E402
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher, attach_teacher_heatmaps  # noqa: E402
from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher  # noqa: E402
from kdpose_tf.keypoints import LSP14  # noqa: E402
from kdpose_tf.models.pose_estimator import PoseEstimator  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402
from kdpose_tf.utils.shared import shared_dir  # noqa: E402
from pipeline import pipeline_rate, step_rate  # noqa: E402  (benchmarks/pipeline.py)

SIZE = (128, 96)


def ms_per_crop(teacher, samples, repeats=2):
    crops, _, _ = make_inference_inputs(samples, teacher.input_size)
    predict = teacher.predict_crops
    predict(crops[:8])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict(crops)
        best = min(best, (time.perf_counter() - start) / len(crops))
    return 1e3 * best


def step_time(model, samples, codec, steps):
    """Seconds per training step on one batch of 32 (`benchmarks/pipeline.step_rate`)."""
    batch = next(iter(make_dataset(samples, codec, LSP14, batch_size=32, seed=0)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return 32 / step_rate(model, batch, steps, 32)


def student():
    keras.utils.set_random_seed(0)
    return PoseEstimator.from_preset("lite_hrnet_18_mobile_coco_128x96", load_weights=False, keypoint_set="lsp14",
                                     num_keypoints=14)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--people", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_cost"))
    args = p.parse_args(argv)
    samples = list(read_lspet(shared_dir() / "data" / "lspet", on_bad_sample="skip", limit=args.people))
    codec = HeatmapCodec(SIZE)
    pp256 = HeatmapTeacher.from_preset("pp_tinypose_256x192")
    teachers = {"PP-TinyPose 256x192": pp256, "PP-TinyPose 128x96": HeatmapTeacher.from_preset("pp_tinypose_128x96"),
                "MoveNet Lightning int8": KeypointTeacher(shared_dir() / "models" /
                                                          "movenet_singlepose_lightning_int8.tflite")}
    crop_ms = {name: ms_per_crop(t, samples[:64]) for name, t in teachers.items()}
    start = time.perf_counter()
    taught = attach_teacher_heatmaps(samples, pp256, LSP14, progress=False)
    attach_s = time.perf_counter() - start
    rates = {"labels only": pipeline_rate(samples, codec, 32, args.batches, keypoint_set=LSP14)[0],
             "+ cached PP-TinyPose heatmaps": pipeline_rate(taught, codec, 32, args.batches, keypoint_set=LSP14)[0]}
    plain = step_time(student(), samples, codec, args.steps)
    kd = step_time(Distiller(None, student(), alpha=0.5), taught, codec, args.steps)
    online = 32 * crop_ms["PP-TinyPose 256x192"] / 1e3
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU", "people": len(samples),
           "teacher_ms_per_crop": crop_ms, "attach_seconds": attach_s, "pipeline_samples_per_s": rates,
           "step_s": {"student": plain, "Distiller(None) on cached heatmaps": kd},
           "online_teacher_s_per_step": online}
    lines = [
        "# What a pretrained teacher costs per training step", "",
        f"{res['machine']}; Lite-HRNet-18 at 128x96, batch 32, {len(samples)} LSPET people; one run.", "",
        "| teacher | ms per crop (batched, this CPU) |", "|---|---|",
        *[f"| {n} | {v:.1f} |" for n, v in crop_ms.items()], "",
        "| what | value |", "|---|---|",
        f"| one-off pass of PP-TinyPose 256x192 over {len(samples)} people (attach_teacher_heatmaps) | {attach_s:.1f} s |",
        *[f"| pipeline, {n} | {v:.0f} samples/s |" for n, v in rates.items()],
        f"| training step, student alone | {plain:.3f} s |",
        f"| training step, Distiller(None) on cached teacher heatmaps | {kd:.3f} s ({kd / plain:.2f}x) |",
        f"| the teacher run on every augmented batch instead (32 x ms per crop), added per step | {online:.3f} s "
        f"({(plain + online) / plain:.2f}x the plain step) |", "",
        "Caching keeps random augmentation: the heatmaps are warped through each augmented crop's affine map "
        "(kdpose_tf/data/pipeline.py), which costs pipeline time, not step time.",
    ]
    write_json(f"{args.out}.json", res)
    write_text(f"{args.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
