"""Accuracy of every TFLite export variant of a trained student, against its Keras float32 model.

The student (default: the `benchmarks/distill_real.py` FPD student, seed 0, 128x128, LSP-14) is
exported as float32 ("none"), "float16", "dynamic" (int8 weights), "int8" (post-training, calibrated
on real training crops: PARSE 1-100 + BUFFY + coco_mini, default 300) and "int8-qat" (fake-quant copy
fine-tuned by quantization-aware distillation from the float student for `--qat-epochs`, then
converted). Every variant, the Keras float32 student and the Keras float teacher go through the
same evaluator (`kdpose_tf.evaluation.evaluate`, PCK@0.2 torso rule, LSP-14) on
(a) PARSE 101-305 and (b) coco_mini mapped to LSP-14 by joint name (people with >= 4 labelled
joints). Note that coco_mini is also in the training (and calibration) set: (b) measures how well
each variant reproduces the float model on seen photos, not generalisation.

Target: "int8 within 1 PCK point of float32": an integer variant meets it when its PCK is at most
1 point below the Keras float32 student's on both test sets.

    python benchmarks/quantized_accuracy.py                           # after distill_real.py
    python benchmarks/quantized_accuracy.py --method lshm --checkpoint-dir runs/distill_real/128_movenet
    python benchmarks/quantized_accuracy.py --quick                   # ~2 minutes, writes to /tmp

--quick trains its own tiny student (1 epoch, 64x64, 64 samples), uses 16 calibration crops and
32 test people per set, and writes to /tmp/quantized_accuracy.{md,json}.
Writes benchmarks/results/quantized_accuracy.md and .json (atomically).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("none", "float16", "dynamic", "int8", "int8-qat")
TARGET_POINTS = 1.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", choices=["movenet", "hourglass"], default="movenet",
                   help="the teacher distill_real.py used (default movenet, its default)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="distill_real work dir: <dir>/<method>_s<seed>/ (and <dir>/teacher/ for the hourglass "
                        "teacher); default runs/distill_real/<size>_<teacher>")
    p.add_argument("--method", default="fpd", help="fpd | lshm (Distiller checkpoints) or scratch (default fpd)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="square input size of the checkpoint (default 128)")
    p.add_argument("--student-filters", type=int, default=32)
    p.add_argument("--teacher-filters", type=int, default=64)
    p.add_argument("--num-calibration", type=int, default=300, help="real training crops for int8 calibration")
    p.add_argument("--qat-epochs", type=int, default=1, help="quantization-aware distillation epochs")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--threads", type=int, default=1, help="TFLite interpreter threads for evaluation")
    p.add_argument("--quick", action="store_true", help="tiny self-trained student, to check the script")
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/quantized_accuracy, "
                                               "/tmp/quantized_accuracy with --quick)")
    return p.parse_args(argv)


def coco_test_set(shared, keypoint_set, min_joints=4):
    from kdpose_tf.data.coco import read_coco
    from kdpose_tf.data.datasets import to_keypoint_set

    root = shared / "data" / "coco_mini"
    coco = read_coco(root / "annotations" / "person_keypoints_train2017.json", root / "train2017",
                     on_bad_sample="skip")
    return [s for s in to_keypoint_set(coco, keypoint_set) if int((s.visibility > 0).sum()) >= min_joints]


def _restore(model, path, train, codec, ks):
    """Load a fit_resumable checkpoint (weights + optimizer variables) into `model`."""
    from kdpose_tf.training import make_optimizer
    from kdpose_tf.data.pipeline import make_dataset
    from kdpose_tf.training import _build_variables

    model.compile(optimizer=make_optimizer(1e-3, 100))
    _build_variables(model, train[:1], codec, ks, make_dataset)
    model.load_weights(str(path))


def load_trained(args, train, codec, ks):
    """(student, teacher, description) from the distill_real checkpoints."""
    from distill_real import build_models

    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.schedules import ConstantWeight

    ckdir = Path(args.checkpoint_dir or f"runs/distill_real/{args.size}_{args.teacher}")
    teacher_ckpt = ckdir / "teacher" / "checkpoint.weights.h5"
    student_ckpt = ckdir / f"{args.method}_s{args.seed}" / "checkpoint.weights.h5"
    needed = (teacher_ckpt, student_ckpt) if args.teacher == "hourglass" else (student_ckpt,)
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SystemExit(f"checkpoint(s) not found: {', '.join(missing)}; run benchmarks/distill_real.py first "
                         "(or pass --checkpoint-dir / --method), or use --quick")
    cfg = argparse.Namespace(student_filters=args.student_filters, teacher_filters=args.teacher_filters)
    make_teacher, _ = build_models(ks, args.size, cfg, seed=0)
    _, make_student = build_models(ks, args.size, cfg, seed=args.seed)
    teacher = None
    if args.teacher == "hourglass":
        teacher = make_teacher()
        _restore(teacher, teacher_ckpt, train, codec, ks)
    student = make_student(f"student_{args.method}")
    if args.method == "scratch":
        _restore(student, student_ckpt, train, codec, ks)
    elif args.method in ("fpd", "lshm"):
        # The alpha schedule holds no variables, so a ConstantWeight rebuild loads an LSHM checkpoint too.
        _restore(Distiller(teacher, student, alpha=ConstantWeight(0.5)), student_ckpt, train, codec, ks)
    else:
        raise SystemExit(f"--method {args.method!r}: only scratch, fpd and lshm checkpoints can be loaded here")
    if teacher is not None:
        teacher.trainable = False
    return student, teacher, f"distill_real {args.method} student seed {args.seed} ({student_ckpt})"


def train_quick(train, codec, ks, size):
    """A tiny hourglass student trained 1 epoch from scratch (the --quick stand-in)."""
    import keras

    from distill_real import build_models

    from kdpose_tf.training import make_optimizer
    from kdpose_tf.data.pipeline import make_dataset

    cfg = argparse.Namespace(student_filters=8, teacher_filters=16)
    _, make_student = build_models(ks, size, cfg, seed=0)
    student = make_student("student_quick")
    student.compile(optimizer=make_optimizer(2e-3, max(1, len(train) // 16)))
    keras.utils.set_random_seed(0)
    student.fit(make_dataset(train, codec, ks, batch_size=16, training=True, drop_remainder=True),
                epochs=1, verbose=2)
    return student, None, f"--quick: hourglass student (filters 8) trained 1 epoch on {len(train)} people"


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.size, args.num_calibration = 64, 16
    out = Path(args.out or ("/tmp/quantized_accuracy" if args.quick else RESULTS / "quantized_accuracy"))

    from kdpose_tf.distillation.qat_finetune import quantization_aware_finetune
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import calibration_crops, real_benchmark_split
    from kdpose_tf.evaluation import evaluate, keras_predict_fn
    from kdpose_tf.runtimes.litert import TFLiteRunner
    from kdpose_tf.export.tflite import export_tflite
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils import io
    from kdpose_tf.utils.shared import shared_dir

    shared = shared_dir()
    train, parse_test = real_benchmark_split(shared, LSP14)
    coco_test = coco_test_set(shared, LSP14)
    size = (args.size, args.size)
    codec = HeatmapCodec(input_size=size)
    if args.quick:
        rng = np.random.default_rng(0)
        train = [train[i] for i in rng.permutation(len(train))[:64]]
        parse_test, coco_test = parse_test[:32], coco_test[:32]
        student, teacher, source = train_quick(train, codec, LSP14, args.size)
    else:
        student, teacher, source = load_trained(args, train, codec, LSP14)
    crops = calibration_crops(train, size, args.num_calibration)
    print(f"{source}\ncalibration crops {len(crops)}, test: PARSE {len(parse_test)}, coco_mini {len(coco_test)}",
          flush=True)

    test_sets = {"parse": parse_test, "coco_mini": coco_test}

    def score(predict_fn):
        return {name: 100 * float(evaluate(predict_fn, samples, size, codec, LSP14, metrics=("pck",),
                                           progress=False)["pck"]["mean"])
                for name, samples in test_sets.items()}

    rows = []
    t = time.time()
    rows.append({"variant": "keras float32", "size_kb": None, **score(keras_predict_fn(student)),
                 "eval_s": round(time.time() - t, 1)})
    print(rows[-1], flush=True)
    if teacher is not None:
        rows.append({"variant": "teacher keras float32", "size_kb": None, **score(keras_predict_fn(teacher))})
        print(rows[-1], flush=True)
    elif not args.quick:
        from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, teacher_predict_fn

        movenet = KeypointTeacher(shared / "models" / "movenet_singlepose_lightning_int8.tflite")
        rows.append({"variant": "teacher MoveNet int8 (12 of 14 joints)", "size_kb": None,
                     **score(teacher_predict_fn(movenet, codec, LSP14, 0.3))})
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for q in args.variants:
            t = time.time()
            model = student
            extra = {}
            if q == "int8-qat":
                model = quantization_aware_finetune(student, train, LSP14, args.qat_epochs, crops)
                extra["qat_s"] = round(time.time() - t, 1)
            path = export_tflite(model, Path(tmp) / f"student_{q.replace('-', '_')}.tflite", quantize=q,
                                 representative_data=crops if q.startswith("int8") else None,
                                 num_calibration=args.num_calibration, keypoint_set=LSP14)
            size_kb = round(path.stat().st_size / 1024, 1)
            t_eval = time.time()
            rows.append({"variant": q, "size_kb": size_kb, **score(TFLiteRunner(path, num_threads=args.threads)),
                         "export_s": round(t_eval - t, 1), "eval_s": round(time.time() - t_eval, 1), **extra})
            print(rows[-1], flush=True)
    ref = rows[0]
    for r in rows:
        for name in test_sets:
            r[f"delta_{name}"] = round(r[name] - ref[name], 2)
            r[name] = round(r[name], 2)
        integer = r["variant"].startswith("int8")
        r["target_met"] = (all(r[f"delta_{n}"] >= -TARGET_POINTS for n in test_sets) if integer else None)
    results = {
        "config": {**vars(args), "out": str(out)}, "source": source,
        "test_sets": {"parse": "PARSE 101-305 (LSP-14)", "coco_mini": "coco_mini mapped to LSP-14 (in training set)"},
        "num_test": {n: len(s) for n, s in test_sets.items()}, "num_calibration": int(len(crops)),
        "metric": "PCK@0.2 (torso), percent", "target": f"int8 within {TARGET_POINTS:g} PCK point of float32",
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()},
        "rows": rows,
    }
    text = render(results)
    io.write_json(out.with_suffix(".json"), results)
    io.write_text(out.with_suffix(".md"), text)
    print(text)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def render(results):
    cfg = results["config"]
    n = results["num_test"]
    lines = [
        "# Accuracy of the TFLite variants (PCK@0.2, LSP-14)",
        "",
        f"Model: {results['source']}. Input {cfg['size']}x{cfg['size']}. int8 calibration: "
        f"{results['num_calibration']} real training crops (PARSE 1-100 + BUFFY + coco_mini); int8-qat: "
        f"{cfg['qat_epochs']} epoch(s) of quantization-aware distillation from the float student (Adam 1e-4, "
        f"batch 16), then int8 conversion. All rows through `kdpose_tf.evaluation.evaluate` (TFLite: "
        f"`TFLiteRunner`, {cfg['threads']} thread(s)).",
        f"Test: PARSE 101-305 ({n['parse']} people) and coco_mini mapped to LSP-14 ({n['coco_mini']} people "
        "with >= 4 joints; also part of the training set, so it measures fidelity to the float model).",
        "",
        f"| variant | size (KB) | PCK PARSE | PCK coco_mini | Δ PARSE (pts) | Δ coco_mini (pts) | "
        f"{results['target']} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        met = "-" if r["target_met"] is None else ("yes" if r["target_met"] else "no")
        size = "-" if r["size_kb"] is None else f"{r['size_kb']:.1f}"
        lines.append(f"| {r['variant']} | {size} | {r['parse']:.1f} | {r['coco_mini']:.1f} | "
                     f"{r['delta_parse']:+.1f} | {r['delta_coco_mini']:+.1f} | {met} |")
    lines += ["", "Δ: PCK points against the Keras float32 student (first row). Target met: the integer "
              f"variant loses at most {TARGET_POINTS:g} point on both test sets."]
    if cfg.get("quick"):
        lines += ["", "**--quick run: tiny student trained 1 epoch; numbers are meaningless.**"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
