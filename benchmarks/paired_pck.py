"""Is one model really ahead of another on PARSE 101-305? A paired bootstrap over the test people.

Both models predict every test person; each (person, joint) is a hit when within 0.2 x torso of the
label (the PCK@0.2 rule of `kdpose_tf.metrics.pck`). The difference of the two models' PCK over the
12 body joints is then resampled over people (paired: the same people for both models), which gives a
95 % interval for the gap. A gap whose interval contains 0 is a tie on this test set.

    python benchmarks/paired_pck.py --a runs/distill_finetune/.../best_int8.tflite --b movenet
        [--a-name "distilled int8"] [--b-name "MoveNet Lightning int8"] [--resamples 5000]

`--a` / `--b`: a .tflite file exported by kdpose_tf (heatmaps, LSP-14), "movenet" (the shared MoveNet
Lightning int8), or a teacher preset (pp_tinypose_128x96, run through OpenVINO).
Writes benchmarks/results/paired_pck.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def predictor(spec):
    """(predict_fn, input_size) for a model argument (see the module docstring)."""
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher
    from kdpose_tf.runtimes.pretrained_models import PRETRAINED_MODELS
    from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, teacher_predict_fn
    from kdpose_tf.runtimes.litert import TFLiteRunner
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils.shared import shared_dir

    if spec == "movenet":
        size = (192, 192)
        teacher = KeypointTeacher(shared_dir() / "models" / "movenet_singlepose_lightning_int8.tflite")
        return teacher_predict_fn(teacher, HeatmapCodec(size), LSP14), size
    if spec in PRETRAINED_MODELS:
        teacher = HeatmapTeacher.from_preset(spec)
        return teacher.predict_fn(HeatmapCodec(teacher.input_size), LSP14), tuple(teacher.input_size)
    runner = TFLiteRunner(spec, num_threads=1)
    return runner, tuple(runner.input_size)


def hits(spec, test):
    """(N, 14) bool hits and (N, 14) bool counted of a model on `test` (LSP-14, PCK@0.2, torso rule),
    from `kdpose_tf.metrics.pck.pck`, the benchmarks' own metric."""
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.evaluation import predict_samples
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.metrics.pck import pck, torso_normalizer

    fn, size = predictor(spec)
    pred, _ = predict_samples(fn, test, size, HeatmapCodec(size), LSP14, progress=False)
    gt = np.stack([s.keypoints for s in test]).astype(np.float64)
    vis = np.stack([s.visibility for s in test]) > 0
    r = pck(pred, gt, vis, torso_normalizer(gt, LSP14, vis), 0.2)
    return r["correct"], r["counted"]


def _mean_of_joints(hit, counted):
    """Mean over joints of per-joint PCK (the benchmarks' body-12 / all-14 figure), in %; axis -2 = people."""
    return 100 * np.mean(hit.sum(-2) / np.maximum(counted.sum(-2), 1), axis=-1)


def paired_bootstrap(hit_a, hit_b, counted, joints, resamples=5000, seed=0):
    """PCK of a and b on `joints` (mean of per-joint PCK, as the benchmark tables), their difference
    (a - b, points) and its 95 % interval from resampling the people (the same people for a and b)."""
    a, b, c = hit_a[:, joints], hit_b[:, joints], counted[:, joints]
    idx = np.random.default_rng(seed).integers(0, len(c), size=(resamples, len(c)))
    diffs = _mean_of_joints(a[idx], c[idx]) - _mean_of_joints(b[idx], c[idx])
    pa, pb = float(_mean_of_joints(a, c)), float(_mean_of_joints(b, c))
    return pa - pb, np.percentile(diffs, [2.5, 97.5]), pa, pb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", default="movenet")
    ap.add_argument("--a-name", default=None)
    ap.add_argument("--b-name", default=None)
    ap.add_argument("--resamples", type=int, default=5000)
    ap.add_argument("--out", default=str(RESULTS / "paired_pck"))
    args = ap.parse_args(argv)
    from distill_real import BODY12

    from kdpose_tf.data.datasets import real_benchmark_split
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils import io
    from kdpose_tf.utils.shared import shared_dir

    _, test = real_benchmark_split(shared_dir())
    test = list(test)
    names = (args.a_name or Path(args.a).name, args.b_name or Path(args.b).name)
    hit_a, counted = hits(args.a, test)
    hit_b, counted_b = hits(args.b, test)
    assert np.array_equal(counted, counted_b)
    body = [LSP14.index(n) for n in BODY12]
    rows = {}
    for label, joints in (("body-12", body), ("all-14", list(range(14)))):
        diff, ci, pa, pb = paired_bootstrap(hit_a, hit_b, counted, joints, args.resamples)
        rows[label] = {"a": pa, "b": pb, "diff": diff, "ci95": [float(ci[0]), float(ci[1])]}
    lines = [f"# Paired bootstrap: {names[0]} vs {names[1]} (PARSE 101-305, {len(test)} people, PCK@0.2)", "",
             f"{args.resamples} resamples of the test people (the same people for both models).", "",
             f"| joints | {names[0]} | {names[1]} | difference (points) | 95 % interval |", "|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['a']:.1f} | {r['b']:.1f} | {r['diff']:+.1f} | "
                     f"[{r['ci95'][0]:+.1f}, {r['ci95'][1]:+.1f}] |")
    md = "\n".join(lines) + "\n"
    io.write_json(Path(args.out).with_suffix(".json"), {"a": args.a, "b": args.b, "names": names, "rows": rows})
    io.write_text(Path(args.out).with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
