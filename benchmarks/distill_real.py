"""Does a competent teacher make a better mobile student? Real photos, pretrained teachers, one table.

Train on LSPET (8000 sports photos, LSP-14, 12 % of joints unlabelled) + PARSE 1-100 + BUFFY
(upper body) + coco_mini (COCO-17 mapped to LSP-14 by name); test PCK@0.2 (torso rule) on PARSE
101-305 for all 14 joints and for the 12 body joints every model here has (shoulders, elbows,
wrists, hips, knees, ankles). Rows, same evaluator and decoding:

- anchors, as they are: PP-TinyPose 256x192 and 128x96 (OpenVINO, COCO-trained), MoveNet Lightning int8;
- the student (a mobile preset at a mobile input size) trained four ways at the same budget:
  `scratch` (labels only), `kd-movenet` (FPD on MoveNet's joints rendered as heatmaps),
  `kd-pptinypose` (FPD on PP-TinyPose 256x192's heatmaps), `kd-ensemble` (both PP-TinyPose sizes
  and MoveNet averaged per joint), each over several seeds (mean ± half range);
- the best distilled student as int8 TFLite, scored again, and timed against MoveNet int8 on the
  same interpreter and thread count in the same process (XNNPACK, 1 thread).

Teacher heatmaps are computed once per person on the un-augmented crop and warped through every
augmentation by the data pipeline (`kdpose_tf.distillation.heatmap_teacher`), so the teacher costs
one pass over the data, not one per step; the table gives that pass and the step times.

    python benchmarks/distill_real.py --quick        # two minutes: checks that it runs
    python benchmarks/distill_real.py                # CPU: hours on 2 cores (see --epochs)
    python benchmarks/distill_real.py --methods kd-ensemble --append

Writes benchmarks/results/distill_real.{md,json,png}. A killed run resumes (checkpoints per run
under --work-dir; finished runs are kept in the JSON).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("scratch", "kd-movenet", "kd-pptinypose", "kd-ensemble")
MOVENET = "movenet_singlepose_lightning_int8.tflite"
BODY12 = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
          "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="lite_hrnet_18_coco_256x192",
                   help="catalogue preset of the student, or a pretrained heatmap model to start from (a teacher "
                        "preset such as pp_tinypose_128x96, or .xml/.onnx): imported with its weights, so the "
                        "'scratch' row is then 'labels only' fine-tuning from those weights")
    p.add_argument("--input", default="128x96", help="student input HxW (default 128x96)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--alpha", type=float, default=0.5, help="FPD weight of the KD term (default 0.5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--lspet-limit", type=int, default=None, help="use only the first N LSPET people")
    p.add_argument("--unlabeled", action="store_true", help="add coco_mini's unlabelled person boxes (KD rows)")
    p.add_argument("--quick", action="store_true", help="tiny run to check the script")
    p.add_argument("--out", default=str(RESULTS / "distill_real"))
    p.add_argument("--work-dir", default="runs/distill_real")
    p.add_argument("--append", action="store_true", help="keep the runs already in --out's JSON")
    p.add_argument("--rerender", action="store_true", help="only re-write the Markdown from the JSON")
    p.add_argument("--int8-only", action="store_true",
                   help="redo only the int8 rows (best KD run, from its saved weights in --work-dir) with the current "
                        "exporter, keeping the trained runs in --out's JSON")
    args = p.parse_args(argv)
    args.input_size = tuple(int(v) for v in args.input.lower().split("x"))
    return args


def load_data(args):
    from kdpose_tf.data.coco import unlabelled_people
    from kdpose_tf.data.datasets import real_benchmark_split, to_keypoint_set
    from kdpose_tf.data.lspet import read_lspet
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils.shared import shared_dir

    small, test = real_benchmark_split(shared_dir())
    lspet = read_lspet(shared_dir() / "data" / "lspet", on_bad_sample="skip", limit=args.lspet_limit)
    train = list(lspet) + list(small)
    unlabelled = []
    if args.unlabeled:
        coco = shared_dir() / "data" / "coco_mini"
        unlabelled = list(to_keypoint_set(unlabelled_people(
            coco / "annotations" / "person_keypoints_train2017.json", coco / "train2017", on_bad_sample="skip"), LSP14))
    return train, unlabelled, list(test)


def scores(report):
    """(all-14 PCK, body-12 PCK, per-joint list) of an evaluation report, in %."""
    pj = report["pck"]["per_joint"]
    return 100 * report["pck"]["mean"], 100 * float(np.mean([pj[n] for n in BODY12])), [100 * float(v) for v in pj.values()]


def anchors(test, teachers, results):
    """PP-TinyPose 256x192 / 128x96 and MoveNet as they are, at their own input sizes."""
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.distillation.keypoint_teacher import teacher_predict_fn
    from kdpose_tf.evaluation import evaluate
    from kdpose_tf.keypoints import LSP14

    for name, t in teachers.items():
        codec = HeatmapCodec(t.input_size)
        fn = t.predict_fn(codec, LSP14) if hasattr(t, "predict_fn") else teacher_predict_fn(t, codec, LSP14)
        start = time.perf_counter()
        all14, body12, per_joint = scores(evaluate(fn, test, t.input_size, codec, LSP14, progress=False))
        ms = 1e3 * (time.perf_counter() - start) / len(test)
        results["anchors"][name] = {"all14": all14, "body12": body12, "per_joint": per_joint,
                                    "input": "x".join(map(str, t.input_size)), "eval_ms_per_crop": ms}
        print(f"{name}: PCK@0.2 all-14 {all14:.1f}, body-12 {body12:.1f} ({ms:.0f} ms/crop incl. decoding)")


def teacher_data(method, train, unlabelled, teachers, results):
    """The training samples of `method`, with its teacher's targets attached (timed)."""
    from kdpose_tf.distillation.heatmap_teacher import attach_teacher_heatmaps
    from kdpose_tf.distillation.keypoint_teacher import attach_teacher_keypoints
    from kdpose_tf.keypoints import LSP14

    if method == "scratch":
        return train
    samples = train + unlabelled
    start = time.perf_counter()
    if method == "kd-movenet":
        out = attach_teacher_keypoints(samples, teachers["MoveNet Lightning int8"], LSP14, min_score=0.3)
    elif method == "kd-pptinypose":
        out = attach_teacher_heatmaps(samples, teachers["PP-TinyPose 256x192"], LSP14)
    else:
        out = attach_teacher_heatmaps(samples, [teachers["PP-TinyPose 256x192"], teachers["PP-TinyPose 128x96"],
                                                teachers["MoveNet Lightning int8"]], LSP14)
    seconds = time.perf_counter() - start
    results["teacher_pass"][method] = {"seconds": seconds, "ms_per_person": 1e3 * seconds / len(samples),
                                       "people": len(samples)}
    print(f"{method}: teacher pass over {len(samples)} people in {seconds:.0f} s")
    return out


def is_imported(args):
    """Whether --student names a pretrained model from another framework (imported with its weights)."""
    from kdpose_tf.runtimes.pretrained_models import is_pretrained_source

    return is_pretrained_source(args.student)


def build_student(args, name=None):
    """The LSP-14 student: a catalogue preset built untrained, or a pretrained model imported with its weights."""
    from kdpose_tf.models.imported.openvino_import import import_pose_model
    from kdpose_tf.models.pose_estimator import PoseEstimator

    if is_imported(args):
        return import_pose_model(args.student, keypoint_set="lsp14", name=name, input_size=args.input_size)
    return PoseEstimator.from_preset(args.student, load_weights=False, keypoint_set="lsp14", num_keypoints=14,
                                     input_size=args.input_size, **({"name": name} if name else {}))


def train_one(method, samples, args, seed, run_dir):
    import keras

    from kdpose_tf.training import make_optimizer
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.schedules import ConstantWeight
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.training import fit_resumable

    keras.utils.set_random_seed(seed)
    student = build_student(args, name=f"student_{method.replace('-', '_')}")
    codec = HeatmapCodec(args.input_size)
    steps = max(1, len(samples) // args.batch_size)
    model = student if method == "scratch" else Distiller(None, student, alpha=ConstantWeight(args.alpha))
    model.compile(optimizer=make_optimizer(args.lr, steps * args.epochs))
    timer = StepTimer()
    start = time.perf_counter()
    fit_resumable(model, samples, codec, LSP14, run_dir, epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                  callbacks=[timer], verbose=2)
    return student, timer.seconds_per_step(), time.perf_counter() - start


class StepTimer:
    """Keras callback: median seconds per training step (the first quarter, tracing included, left out)."""

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


def int8_row(best, train, test, args, results, work, movenet_path):
    """Export the best distilled student to int8, score it, time it against MoveNet (same run)."""
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import calibration_crops
    from kdpose_tf.evaluation import evaluate
    from kdpose_tf.runtimes.litert import TFLiteRunner
    from kdpose_tf.export.tflite import export_tflite
    from kdpose_tf.keypoints import LSP14

    student, row = best
    crops = calibration_crops(train, args.input_size, 300)  # one calibration set for every export below
    codec = HeatmapCodec(args.input_size)

    def export_and_score(model, name, **kwargs):
        path = export_tflite(model, work / name, quantize="int8", representative_data=crops, keypoint_set=LSP14,
                             **kwargs)
        runner = TFLiteRunner(path, num_threads=1)
        return path, runner, scores(evaluate(runner, test, args.input_size, codec, LSP14, progress=False))

    path, runner, (all14, body12, per_joint) = export_and_score(student, "best_int8.tflite")
    # the same student without activation equalization (kdpose_tf.export.equalization), for comparison
    _, _, plain_scores = export_and_score(student, "best_int8_no_equalization.tflite", equalize=False)
    paths = {"student int8": path, "MoveNet Lightning int8": movenet_path}
    if is_imported(args):  # the pretrained start point as int8 too: what fine-tuning added
        paths["pretrained int8"], _, (s_all14, s_body12, s_per_joint) = export_and_score(
            build_student(args), "pretrained_int8.tflite")
    from tflite_profile import interleaved_ms

    timings = interleaved_ms(paths, threads=1)
    if is_imported(args):
        results["int8_pretrained"] = {"all14": s_all14, "body12": s_body12, "per_joint": s_per_joint,
                                      "ms": timings["pretrained int8"]}
    results["int8"] = {"method": row["method"], "seed": row["seed"], "all14": all14, "body12": body12,
                       "per_joint": per_joint, "size_kb": path.stat().st_size / 1024, "delegate": runner.delegate,
                       "ms": timings["student int8"], "movenet_ms": timings["MoveNet Lightning int8"],
                       "no_equalization": {"all14": plain_scores[0], "body12": plain_scores[1]},
                       "float": {"all14": row["all14"], "body12": row["body12"]}}
    print(f"int8 {row['method']} seed {row['seed']}: all-14 {all14:.1f}, body-12 {body12:.1f}; "
          f"{timings['student int8']:.2f} ms vs MoveNet {timings['MoveNet Lightning int8']:.2f} ms ({runner.delegate})")


def model_cost(args):
    from kdpose_tf.models.summary import count_flops

    m = build_student(args)
    return m.count_params(), count_flops(m.inference_model()) / 1e9


def main(argv=None):
    args = parse_args(argv)
    import json

    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher
    from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher
    from kdpose_tf.evaluation import evaluate, keras_predict_fn
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils import io
    from kdpose_tf.utils.shared import shared_dir

    out_json = Path(args.out).with_suffix(".json")
    if args.rerender:
        results = json.loads(out_json.read_text())
        io.write_text(out_json.with_suffix(".md"), render(results))
        print(render(results))
        return
    if args.int8_only:
        results = json.loads(out_json.read_text())
        train, _, test = load_data(args)
        work = Path(args.work_dir) / f"{args.student}_{args.input}"
        row = max((r for r in results["runs"] if r["method"] != "scratch"), key=lambda r: r["body12"])
        int8_row((rebuild(args, row, work), row), train, test, args, results, work, shared_dir() / "models" / MOVENET)
        io.write_json(out_json, results)
        io.write_text(out_json.with_suffix(".md"), render(results))
        print(render(results))
        return
    if args.quick:
        args.epochs, args.seeds, args.lspet_limit = 1, [0], 64
    train, unlabelled, test = load_data(args)
    if args.quick:
        train, test = train[:96], test[:32]
    work = Path(args.work_dir) / f"{args.student}_{args.input}"
    movenet_path = shared_dir() / "models" / MOVENET
    teachers = {"PP-TinyPose 256x192": HeatmapTeacher.from_preset("pp_tinypose_256x192"),
                "PP-TinyPose 128x96": HeatmapTeacher.from_preset("pp_tinypose_128x96"),
                "MoveNet Lightning int8": KeypointTeacher(movenet_path)}
    params, gmacs = model_cost(args)
    results = {"config": {**{k: v for k, v in vars(args).items() if k != "input_size"}, "imported": is_imported(args)},
               "anchors": {}, "runs": [],
               "teacher_pass": {}, "student": {"params": params, "gmacs": gmacs},
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only",
               "data": {"train": len(train), "unlabelled": len(unlabelled), "test": len(test)}}
    if args.append and out_json.is_file():
        previous = json.loads(out_json.read_text())
        results["runs"] = [r for r in previous["runs"] if r["method"] not in args.methods]
        results["teacher_pass"].update(previous.get("teacher_pass", {}))
    print(f"train {len(train)} people (+{len(unlabelled)} unlabelled), test {len(test)} (PARSE 101-305); "
          f"student {args.student} at {args.input}: {params / 1e6:.2f} M params, {gmacs:.3f} GMACs")
    anchors(test, teachers, results)
    codec = HeatmapCodec(args.input_size)
    for method in args.methods:
        samples = teacher_data(method, train, unlabelled, teachers, results)
        for seed in args.seeds:
            student, sps, seconds = train_one(method, samples, args, seed, work / f"{method}_s{seed}")
            all14, body12, per_joint = scores(evaluate(keras_predict_fn(student), test, args.input_size, codec, LSP14,
                                                       progress=False))
            results["runs"].append({"method": method, "seed": seed, "all14": all14, "body12": body12,
                                    "per_joint": per_joint, "sec_per_step": sps, "train_s": seconds})
            student.save_weights(str(work / f"{method}_s{seed}" / "final.weights.h5"))
            print(f"{method} seed {seed}: PCK@0.2 all-14 {all14:.1f}, body-12 {body12:.1f} ({sps * 1e3:.0f} ms/step)")
            io.write_json(out_json, results)
    kd = [r for r in results["runs"] if r["method"] != "scratch"]
    if kd:
        row = max(kd, key=lambda r: r["body12"])
        student = rebuild(args, row, work)
        int8_row((student, row), train, test, args, results, work, movenet_path)
    io.write_json(out_json, results)
    io.write_text(out_json.with_suffix(".md"), render(results))
    plot(results, out_json.with_suffix(".png"))
    print(render(results))


def rebuild(args, row, work):
    student = build_student(args)
    path = str(work / f"{row['method']}_s{row['seed']}" / "final.weights.h5")
    if is_imported(args):  # runs saved before the delegate-friendly ReLUs: load into that graph, copy by name
        from kdpose_tf.models.imported.openvino_import import copy_weights_by_name, import_pose_model

        try:
            student.load_weights(path)
        except ValueError:
            old = import_pose_model(args.student, keypoint_set="lsp14", delegate_friendly=False)
            old.load_weights(path)
            student = build_student(args)  # fresh: the failed load may have written part of it
            copy_weights_by_name(old, student)
        return student
    student.load_weights(path)
    return student


def _mean_spread(values):
    return float(np.mean(values)), float((np.max(values) - np.min(values)) / 2)


def render(results):
    from kdpose_tf.keypoints import LSP14

    cfg = results["config"]
    runs = results["runs"]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    by = {m: [r for r in runs if r["method"] == m] for m in methods}
    st = results["student"]
    lines = [
        "# Distillation from pretrained teachers on real photos (PARSE 101-305, PCK@0.2)", "",
        f"Machine: {results['machine']}. Student `{cfg['student']}` at {cfg['input']} "
        f"({st['params'] / 1e6:.2f} M params, {st['gmacs']:.3f} GMACs), {cfg['epochs']} epochs, batch "
        f"{cfg['batch_size']}, lr {cfg['lr']}, FPD alpha {cfg['alpha']}, seeds {cfg['seeds']}."
        + (f" Every student row starts from `{cfg['student']}`'s COCO-pretrained weights (imported, "
           "`kdpose_tf.models.imported`): 'scratch' is fine-tuning on the labels only, the KD rows add the "
           "teacher at the same budget." if cfg.get("imported") else ""),
        f"Train: {results['data']['train']} people (LSPET + PARSE 1-100 + BUFFY + coco_mini, LSP-14)"
        + (f" + {results['data']['unlabelled']} unlabelled boxes (KD rows)" if results["data"]["unlabelled"] else "")
        + f"; test: {results['data']['test']} PARSE people. body-12 = the joints every model here has.", "",
        "| model | all-14 mean ± spread | body-12 mean ± spread | per seed (body-12) | s/step | vs scratch |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in results["anchors"].items():
        lines.append(f"| {name} (pretrained, {a['input']}) | {a['all14']:.1f} | {a['body12']:.1f} | - | - | - |")
    scratch = by.get("scratch")
    base_sps = np.median([r["sec_per_step"] for r in scratch]) if scratch else np.nan
    base = _mean_spread([r["body12"] for r in scratch])[0] if scratch else np.nan
    for m in methods:
        a, a_s = _mean_spread([r["all14"] for r in by[m]])
        b, b_s = _mean_spread([r["body12"] for r in by[m]])
        sps = np.median([r["sec_per_step"] for r in by[m]])
        delta = "" if m == "scratch" else f"{b - base:+.1f} pts, {sps / base_sps:.2f}x step"
        per_seed = ", ".join(f"{r['body12']:.1f}" for r in by[m])
        lines.append(f"| student {m} | {a:.1f} ± {a_s:.1f} | {b:.1f} ± {b_s:.1f} | {per_seed} | {sps:.3f} | {delta} |")
    if results.get("int8"):
        q = results["int8"]
        lines += ["", f"**Best distilled student as int8 TFLite** ({q['method']}, seed {q['seed']}, "
                  f"{q['size_kb']:.0f} KB): all-14 {q['all14']:.1f}, body-12 {q['body12']:.1f}; "
                  f"{q['ms']:.2f} ms per crop vs MoveNet Lightning int8 {q['movenet_ms']:.2f} ms "
                  f"({q['ms'] / q['movenet_ms']:.2f}x; LiteRT, {q['delegate']}, 1 thread, same process, interleaved)."]
        if q.get("no_equalization"):
            lines[-1] += (f" Float: body-12 {q['float']['body12']:.1f}; int8 without activation equalization: "
                          f"body-12 {q['no_equalization']['body12']:.1f}, all-14 {q['no_equalization']['all14']:.1f}.")
    if results.get("int8_pretrained"):
        q = results["int8_pretrained"]
        lines += ["", f"The imported `{cfg['student']}` weights before fine-tuning, int8 the same way: body-12 "
                  f"{q['body12']:.1f} ({q['ms']:.2f} ms; all-14 {q['all14']:.1f}: neck and head_top untrained)."]
    if results["teacher_pass"]:
        lines += ["", "Teacher cost: one pass over the training people before training, then none per step "
                  "(the pipeline warps the cached heatmaps through each augmentation):", ""]
        for m, t in results["teacher_pass"].items():
            lines.append(f"- {m}: {t['seconds']:.0f} s for {t['people']} people ({t['ms_per_person']:.1f} ms each)")
    lines += ["", "Spread = half the range over seeds. s/step: median training step; vs scratch: body-12 points "
              "and step-time ratio.", "", "## PCK@0.2 per joint (%)", ""]
    cols = list(results["anchors"]) + methods
    lines += ["| joint | " + " | ".join(cols) + " |", "|" + "---|" * (1 + len(cols))]
    for j, name in enumerate(LSP14.names):
        cells = [f"{results['anchors'][c]['per_joint'][j]:.1f}" for c in results["anchors"]]
        cells += [f"{np.mean([r['per_joint'][j] for r in by[m]]):.1f}" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdpose_tf.utils import io

    names = list(results["anchors"]) + sorted({r["method"] for r in results["runs"]}, key=METHODS.index)
    vals = [results["anchors"][n]["body12"] for n in results["anchors"]]
    vals += [np.mean([r["body12"] for r in results["runs"] if r["method"] == m]) for m in names[len(vals):]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(names, vals, color=["#999"] * len(results["anchors"]) + ["#3a7"] * (len(names) - len(results["anchors"])))
    ax.set_xlabel("PCK@0.2, 12 body joints, PARSE 101-305 (%)")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
