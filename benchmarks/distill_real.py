"""Does distillation help on real photos? Teacher, then one student trained four ways.

Train on PARSE images 1-100 + BUFFY (upper body, mapped to LSP-14) + coco_mini (COCO joints
mapped to LSP-14 by name); evaluate PCK@0.2 (torso rule) on PARSE images 101-305, with
per-joint rows. The student is trained (i) from scratch, (ii) FPD (alpha 0.5), (iii) with the
LSHM linear schedule, (iv) DWPose two-stage, with the same epochs and data, for several seeds.
Also the training cost: seconds per step of distillation versus plain student training.

Teachers: `--teacher movenet` (default) is the pretrained MoveNet Lightning int8 TFLite model
from ../shared/models used as a black-box keypoint teacher (kdpose_tf.distillation.keypoint_teacher:
its joints are attached to the samples once, warped with each augmentation and rendered as
heatmaps; it has no neck / head_top, which then learn from ground truth only). `--teacher
hourglass` trains a 2-stack bottleneck hourglass on the same data first (about 5 s/step on 2
CPU cores at 128x128, so a teacher that learns needs a GPU-sized budget); DWPose's L_fea is used
only with it.

    python benchmarks/distill_real.py                 # CPU: MoveNet teacher (about an hour on 2 cores)
    python benchmarks/distill_real.py --teacher hourglass   # train the hourglass teacher first (hours on CPU)
    python benchmarks/distill_real.py --quick         # a minute, to check it runs
    python benchmarks/distill_real.py --size 256 --teacher-epochs 60 --student-epochs 40   # GPU

Writes benchmarks/results/distill_real.md and .json (and a PNG of PCK per method).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GTFILL = "-gtfill"  # method suffix: keypoint-teacher joints it lacks filled from the labels


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="square input size (default 128)")
    p.add_argument("--teacher-epochs", type=int, default=16)
    p.add_argument("--student-epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=["scratch", "fpd", "lshm", "dwpose"],
                   help="scratch, fpd, lshm, dwpose; fpd-gtfill / lshm-gtfill: MoveNet teacher with the joints it "
                        "lacks filled from the labels (attach_teacher_keypoints(fill_from_ground_truth=True))")
    p.add_argument("--teacher", choices=["movenet", "hourglass"], default="movenet")
    p.add_argument("--teacher-min-score", type=float, default=0.3, help="MoveNet joints below are dropped")
    p.add_argument("--teacher-filters", type=int, default=64)
    p.add_argument("--student-filters", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--quick", action="store_true", help="tiny run to check the script")
    p.add_argument("--out", default=str(RESULTS / "distill_real"))
    p.add_argument("--work-dir", default="runs/distill_real", help="checkpoints (a killed run resumes)")
    p.add_argument("--append", action="store_true",
                   help="add these methods' runs to the results already at --out (same teacher and config)")
    p.add_argument("--rerender", action="store_true",
                   help="only re-write the Markdown from the JSON at --out (adding the image-free baseline)")
    return p.parse_args(argv)


def build_models(keypoint_set, size, args, seed):
    import keras

    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    keras.utils.set_random_seed(seed)
    k = keypoint_set.num_keypoints

    def student(name):
        return PoseEstimator(
            HourglassBackbone(num_stacks=2, filters=args.student_filters, order=3, block="inverted_residual",
                              num_keypoints=k, input_shape=(size, size, 3), name=f"{name}_backbone"),
            keypoint_set=keypoint_set.name, name=name)

    def teacher():
        return PoseEstimator(
            HourglassBackbone(num_stacks=2, filters=args.teacher_filters, order=3, block="bottleneck",
                              num_keypoints=k, input_shape=(size, size, 3), name="teacher_backbone"),
            keypoint_set=keypoint_set.name, name="teacher")

    return teacher, student


class StepTimer:
    """Keras callback measuring seconds per training step (excluding the first epoch's tracing)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times, self._t = [], None

            def on_train_batch_begin(self, batch, logs=None):
                self._t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._t)

            def seconds_per_step(self):
                t = self.times[len(self.times) // 4:] or self.times
                return float(np.median(t)) if t else float("nan")

        return _Timer()


def train_student(method, teacher, make_student, train, codec, ks, args, seed, run_dir):
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.schedules import ConstantWeight, LSHMLinearSchedule
    from kdpose_tf.distillation import dwpose
    from kdpose_tf.distillation.keypoint_teacher import strip_teacher_keypoints
    from kdpose_tf.training import fit_resumable
    from kdpose_tf.training import make_optimizer

    if method.endswith(GTFILL):
        # MoveNet's missing joints (neck, head_top) filled with the labels: full GT weight there.
        from kdpose_tf.distillation.keypoint_teacher import fill_from_labels

        method, train = method[: -len(GTFILL)], fill_from_labels(train)
    student = make_student(f"student_{method}")
    steps = max(1, len(train) // args.batch_size)
    timer = StepTimer()
    fit = dict(batch_size=args.batch_size, seed=seed, callbacks=[timer], verbose=2)
    if method == "scratch":
        train = strip_teacher_keypoints(train)  # plain training: no teacher targets to encode
        student.compile(optimizer=make_optimizer(args.lr, steps * args.student_epochs))
        fit_resumable(student, train, codec, ks, run_dir, epochs=args.student_epochs, **fit)
    elif method in ("fpd", "lshm"):
        alpha = ConstantWeight(0.5) if method == "fpd" else LSHMLinearSchedule(steps * args.student_epochs, sigma=0.1)
        distiller = Distiller(teacher, student, alpha=alpha)
        distiller.compile(optimizer=make_optimizer(args.lr, steps * args.student_epochs))
        fit_resumable(distiller, train, codec, ks, run_dir, epochs=args.student_epochs, **fit)
    elif method == "dwpose":
        # Same total budget: stage 1 + stage 2 (20 %) = student_epochs.
        stage1 = max(1, round(args.student_epochs / 1.2))
        # L_fea on the last backbone feature (both hourglasses name it "stack{n-1}_lin_relu").
        feature = student_feature = None
        if teacher is not None:
            feature = f"stack{teacher.backbone.num_stacks - 1}_lin_relu"
            student_feature = f"stack{student.backbone.num_stacks - 1}_lin_relu"
        student, _ = dwpose.run_two_stage(
            teacher, student, train, codec, ks, run_dir=run_dir, epochs=stage1, stage2_fraction=0.2,
            teacher_feature=feature, student_feature=student_feature,
            optimizer_fn=lambda n: make_optimizer(args.lr, n), **fit)
    else:
        raise ValueError(f"unknown method {method!r}")
    return student, timer.seconds_per_step()


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.size, args.teacher_epochs, args.student_epochs = 64, 1, 1
        args.seeds, args.teacher_filters, args.student_filters = [0], 16, 8

    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import real_benchmark_split
    from kdpose_tf.evaluation import evaluate, keras_predict_fn
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils import io
    from kdpose_tf.utils.shared import shared_dir

    train, test = real_benchmark_split(shared_dir())
    if args.rerender:
        results = json.loads(Path(args.out).with_suffix(".json").read_text())
        size = results["config"]["size"]
        results.setdefault("baseline", mean_pose_baseline(train, test, HeatmapCodec(input_size=(size, size))))
        io.write_json(Path(args.out).with_suffix(".json"), results)
        io.write_text(Path(args.out).with_suffix(".md"), render(results, LSP14))
        print(render(results, LSP14))
        return
    if args.quick:
        train, test = train[:64], test[:32]
    size = (args.size, args.size)
    codec = HeatmapCodec(input_size=size)
    work = Path(args.work_dir) / f"{args.size}_{args.teacher}"
    print(f"train {len(train)} people, test {len(test)} (PARSE 101-305), input {size}")

    results = {"config": dict(vars(args)), "runs": [], "teachers": [], "baseline": mean_pose_baseline(train, test, codec)}
    if args.teacher == "movenet":
        teacher, train = movenet_teacher(train, test, codec, args, results)
    else:
        teacher = hourglass_teacher(train, test, codec, args, results, work)
    out_json = Path(args.out).with_suffix(".json")
    if args.append and out_json.is_file():
        previous = json.loads(out_json.read_text())
        results["runs"] = [r for r in previous["runs"] if r["method"] not in args.methods]
        results["config"]["methods"] = list(dict.fromkeys(previous["config"]["methods"] + args.methods))
    for seed in args.seeds:
        _, make_student = build_models(LSP14, args.size, args, seed)
        for method in args.methods:
            t = time.time()
            student, sps = train_student(method, teacher, make_student, train, codec, LSP14, args, seed,
                                         work / f"{method}_s{seed}")
            res = evaluate(keras_predict_fn(student), test, size, codec, LSP14, metrics=("pck",))
            row = {"method": method, "seed": seed, "pck": res["pck"]["mean"], "per_joint": _per_joint(res),
                   "sec_per_step": sps, "train_s": time.time() - t, "params": student.count_params()}
            results["runs"].append(row)
            print(f"{method} seed {seed}: PCK@0.2 {100 * res['pck']['mean']:.1f}  ({sps * 1e3:.0f} ms/step)")
            io.write_json(Path(args.out).with_suffix(".json"), results)
    text = render(results, LSP14)
    io.write_text(Path(args.out).with_suffix(".md"), text)
    io.write_json(Path(args.out).with_suffix(".json"), results)
    print(text)


def movenet_teacher(train, test, codec, args, results):
    """MoveNet as a black-box teacher: score it, attach its joints to the training samples."""
    from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, attach_teacher_keypoints, teacher_predict_fn
    from kdpose_tf.evaluation import evaluate
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils.shared import shared_dir

    teacher = KeypointTeacher(shared_dir() / "models" / "movenet_singlepose_lightning_int8.tflite")
    res = evaluate(teacher_predict_fn(teacher, codec, LSP14, args.teacher_min_score), test, codec.input_size,
                   codec, LSP14, metrics=("pck",))
    t = time.time()
    train = attach_teacher_keypoints(train, teacher, LSP14, min_score=args.teacher_min_score)
    kept = np.mean([np.isfinite(s.extra["teacher_keypoints"]).all(axis=1).mean() for s in train])
    no_gt = int(sum((np.isfinite(s.extra["teacher_keypoints"]).all(axis=1) & (s.visibility == 0)).sum() for s in train))
    results["teachers"].append({"name": "MoveNet Lightning int8 (TFLite, pretrained)", "seed": 0,
                                "pck": res["pck"]["mean"], "per_joint": _per_joint(res), "params": None,
                                "train_s": 0.0, "attach_s": time.time() - t, "joints_kept": float(kept),
                                "joints_without_gt": no_gt})
    print(f"teacher MoveNet: PCK@0.2 {100 * res['pck']['mean']:.1f}; joints attached in {time.time() - t:.0f} s, "
          f"{no_gt} of them where the ground truth has none")
    return None, train


def hourglass_teacher(train, test, codec, args, results, work):
    """Train the hourglass teacher (seed 0); every student seed distils from it."""
    from kdpose_tf.training import make_optimizer
    from kdpose_tf.evaluation import evaluate, keras_predict_fn
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.training import fit_resumable

    make_teacher, _ = build_models(LSP14, args.size, args, seed=0)
    teacher = make_teacher()
    steps = max(1, len(train) // args.batch_size)
    teacher.compile(optimizer=make_optimizer(args.lr, steps * args.teacher_epochs))
    t = time.time()
    fit_resumable(teacher, train, codec, LSP14, work / "teacher", epochs=args.teacher_epochs,
                  batch_size=args.batch_size, seed=0, verbose=2)
    res = evaluate(keras_predict_fn(teacher), test, codec.input_size, codec, LSP14, metrics=("pck",))
    results["teachers"].append({"name": f"hourglass, {args.teacher_epochs} epochs", "seed": 0, "pck": res["pck"]["mean"], "per_joint": _per_joint(res),
                                "params": teacher.count_params(), "train_s": time.time() - t})
    print(f"teacher: PCK@0.2 {100 * res['pck']['mean']:.1f}")
    return teacher


def mean_pose_baseline(train, test, codec):
    """PCK of an image-free model: every test crop gets the mean training pose (crop pixels)."""
    from kdpose_tf.data.transforms import affine_points, box_to_center_scale, get_affine_transform
    from kdpose_tf.evaluation import evaluate
    from kdpose_tf.keypoints import LSP14

    h, w = codec.input_size
    pts, wts = [], []
    for s in train:
        c, sc = box_to_center_scale(s.bbox, w / h)
        pts.append(affine_points(s.keypoints, get_affine_transform(c, sc, 0.0, (h, w))))
        wts.append(s.visibility > 0)
    pts, wts = np.stack(pts), np.stack(wts)[..., None]
    mean = (pts * wts).sum(0) / np.maximum(wts.sum(0), 1)
    heatmaps = codec.encode(mean, np.ones(len(mean)))[0]
    res = evaluate(lambda x: np.repeat(heatmaps[None], len(x), 0), test, codec.input_size, codec, LSP14,
                   metrics=("pck",), progress=False)
    return {"pck": res["pck"]["mean"], "per_joint": _per_joint(res)}


def _per_joint(res):
    return [float(v) for v in res["pck"]["per_joint"].values()]


def render(results, keypoint_set):
    import platform

    methods = list(dict.fromkeys(r["method"] for r in results["runs"]))
    by = {m: [r for r in results["runs"] if r["method"] == m] for m in methods}
    scratch_sps = np.median([r["sec_per_step"] for r in by.get("scratch", [])] or [np.nan])
    cfg = results["config"]
    t0 = results["teachers"][0]
    teacher_name = t0.get("name") or f"hourglass, {cfg['teacher_epochs']} epochs"
    params = "pretrained" if t0.get("params") is None else f"{t0['params'] / 1e6:.2f} M"
    lines = [
        "# Distillation on real photos (PARSE 101-305, PCK@0.2)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only. "
        f"Input {cfg['size']}x{cfg['size']}, teacher: {teacher_name}, students "
        f"{cfg['student_epochs']} epochs, batch {cfg['batch_size']}, seeds {cfg['seeds']}.",
        "Train: PARSE 1-100 + BUFFY (upper body) + coco_mini, joints mapped to LSP-14.",
        "",
        "| model | PCK@0.2 mean ± spread (%) | per seed | s/step | cost vs scratch |",
        "|---|---|---|---|---|",
    ]
    t = [r["pck"] for r in results["teachers"]]
    lines.append(f"| teacher ({params}) | {100 * np.mean(t):.1f} ± "
                 f"{100 * (np.max(t) - np.min(t)) / 2:.1f} | {', '.join(f'{100 * v:.1f}' for v in t)} | - | - |")
    if results.get("baseline"):
        lines.append(f"| mean training pose, no image (reference) | {100 * results['baseline']['pck']:.1f} | - | - | - |")
    for m in methods:
        p = [r["pck"] for r in by[m]]
        sps = np.median([r["sec_per_step"] for r in by[m]])
        lines.append(f"| student {m} ({by[m][0]['params'] / 1e6:.2f} M) | {100 * np.mean(p):.1f} ± "
                     f"{100 * (np.max(p) - np.min(p)) / 2:.1f} | {', '.join(f'{100 * v:.1f}' for v in p)} | "
                     f"{sps:.3f} | {sps / scratch_sps:.2f}x |")
    lines += ["", "Spread = half the range over seeds. Cost: median seconds per training step (DWPose: "
              "stage 1 + 2 steps pooled), ratio to the scratch student."]
    if "attach_s" in t0:
        lines += ["", f"The keypoint teacher ran once over the training "
                  f"samples before training ({t0['attach_s']:.0f} s); {100 * t0['joints_kept']:.0f} % of its joints "
                  f"passed the score threshold, {t0['joints_without_gt']} of them where the ground truth has none. "
                  "Its row is scored through the same codec as the students (rendered and decoded heatmaps); "
                  "it has no neck or head_top (0 there)."]
    lines += ["", "## PCK@0.2 per joint (%)", ""]
    header = "| joint | teacher | " + " | ".join(methods) + " |"
    lines += [header, "|" + "---|" * (2 + len(methods))]
    for j, name in enumerate(keypoint_set.names):
        def cell(rows):
            vals = [r["per_joint"][j] for r in rows if r.get("per_joint")]
            return f"{100 * np.nanmean(vals):.1f}" if vals else "-"
        lines.append(f"| {name} | {cell(results['teachers'])} | " + " | ".join(cell(by[m]) for m in methods) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
