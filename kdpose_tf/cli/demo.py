"""`kdpose demo`: the whole workflow in one command, on a synthetic (or given) dataset.

1. data: a synthetic COCO-17 person dataset generated on the fly (or `--data DIR`, COCO format)
2. teacher: a 2-stack bottleneck hourglass trained from ground truth
3. student: a 1-stack inverted-residual hourglass (LSHM style), distilled (FPD, alpha 0.5)
4. the same student trained from scratch with the same budget
5. all three evaluated (PCK@0.2, COCO OKS AP); student exported to int8 TFLite, evaluated again
6. the int8 model run on a held-out image; report.md with a table, curves and drawings

Sized to finish in well under 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from kdpose_tf.cli.common import CLIError, load_data

# (teacher epochs, student epochs, train images, val images, batch) for the full and --quick runs
FULL = dict(teacher_epochs=12, student_epochs=10, train_images=900, val_images=120, batch_size=32, size=128)
QUICK = dict(teacher_epochs=1, student_epochs=1, train_images=64, val_images=16, batch_size=16, size=64)


def build_demo_models(keypoint_set, input_size):
    """The demo's teacher (2-stack bottleneck hourglass) and student (1-stack LSHM-style)."""
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    shape = (*input_size, 3)
    k = keypoint_set.num_keypoints
    teacher = PoseEstimator(
        HourglassBackbone(num_stacks=2, filters=64, order=3, block="bottleneck", num_keypoints=k,
                          input_shape=shape, name="teacher_backbone"),
        keypoint_set=keypoint_set.name, name="teacher")
    student = lambda name: PoseEstimator(  # noqa: E731
        HourglassBackbone(num_stacks=1, filters=32, order=3, block="inverted_residual", num_keypoints=k,
                          input_shape=shape, name=f"{name}_backbone"),
        keypoint_set=keypoint_set.name, name=name)
    return teacher, student("student_distilled"), student("student_scratch")


def run_demo(args):
    import keras

    from kdpose_tf.cli.train import make_optimizer
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.schedules import ConstantWeight
    from kdpose_tf.training import fit_resumable

    cfg = QUICK if args.quick else FULL
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    keras.utils.set_random_seed(args.seed)

    train, val, keypoint_set, coco_gt = _demo_data(args, cfg, out)
    size = (cfg["size"], cfg["size"])
    print(f"[demo] {len(train)} training people, {len(val)} validation people, input {size[0]}x{size[1]}")
    teacher, distilled, scratch = build_demo_models(keypoint_set, size)
    codec = teacher.codec
    bs = cfg["batch_size"]
    steps = max(1, len(train) // bs)
    fit = dict(batch_size=bs, val_samples=val, seed=args.seed)
    histories, timings = {}, {}

    stages = (
        ("teacher", teacher, "teacher_epochs",
         f"1/4 teacher: {teacher.count_params():,} params"),
        ("student (distilled)", Distiller(teacher, distilled, alpha=ConstantWeight(0.5)), "student_epochs",
         f"2/4 student distilled from the teacher (FPD, alpha=0.5): {distilled.count_params():,} params"),
        ("student (scratch)", scratch, "student_epochs", "3/4 the same student from scratch, same budget"),
    )
    for (name, model, epochs_key, message), run in zip(stages, ("teacher", "distilled", "scratch")):
        print(f"[demo] {message}, {cfg[epochs_key]} epochs")
        model.compile(optimizer=make_optimizer(2e-3, steps * cfg[epochs_key]))
        t = time.time()
        histories[name] = fit_resumable(model, train, codec, keypoint_set, out / "runs" / run,
                                        epochs=cfg[epochs_key], **fit)
        timings[name] = time.time() - t

    print("[demo] 4/4 evaluate, export int8 TFLite, predict")
    rows = _evaluate_and_export(out, teacher, distilled, scratch, train, val, keypoint_set, codec, coco_gt, timings)
    _report(out, rows, histories, cfg, keypoint_set, val, codec, time.time() - t0, args)
    print(f"[demo] done in {time.time() - t0:.0f} s: {out / 'report.md'}")


def _demo_data(args, cfg, out):
    if args.data:
        samples, keypoint_set, coco_gt = load_data(args.data)
        if len(samples) < 4:
            raise CLIError(f"--data {args.data}: need at least 4 annotated people, found {len(samples)}")
        n_val = max(2, len(samples) // 8)
        return samples[n_val:], samples[:n_val], keypoint_set, coco_gt
    from kdpose_tf.data.synthetic import generate_synthetic_dataset

    size = (cfg["size"] * 2, cfg["size"] * 2)
    data = out / "data"
    train_json, train_dir = generate_synthetic_dataset(data / "train", num_images=cfg["train_images"],
                                                       image_size=size, seed=args.seed)
    val_json, val_dir = generate_synthetic_dataset(data / "val", num_images=cfg["val_images"],
                                                   image_size=size, seed=args.seed + 10_000)
    train, keypoint_set, _ = load_data(f"coco:{train_json}:{train_dir}")
    val, _, coco_gt = load_data(f"coco:{val_json}:{val_dir}")
    return train, val, keypoint_set, coco_gt


def _evaluate_and_export(out, teacher, distilled, scratch, train, val, keypoint_set, codec, coco_gt, timings):
    from kdpose_tf.data.pipeline import make_inference_inputs
    from kdpose_tf.evaluation import evaluate, keras_predict_fn
    from kdpose_tf.export.runner import TFLiteRunner
    from kdpose_tf.export.tflite import export_tflite
    from kdpose_tf.models.summary import count_flops

    size = codec.input_size
    metrics = ("pck", "coco") if keypoint_set.name == "coco17" else ("pck",)
    rows = []
    for name, model in (("teacher", teacher), ("student (distilled)", distilled), ("student (scratch)", scratch)):
        res = evaluate(keras_predict_fn(model), val, size, codec, keypoint_set, metrics=metrics, coco_gt=coco_gt)
        rows.append(dict(model=name, params=model.count_params(), gmacs=count_flops(model) / 1e9,
                         pck=res["pck"]["mean"], ap=res.get("coco", {}).get("AP"), train_s=timings.get(name),
                         format="Keras float32"))

    student_file = out / "student_distilled.keras"
    from kdpose_tf.utils import io

    with io.atomic_path(student_file) as tmp:
        distilled.save(str(tmp))
    calib, _, _ = make_inference_inputs(train[:200], size)
    tflite_path = export_tflite(distilled, out / "student_int8.tflite", quantize="int8",
                                representative_data=calib, io_dtype="uint8", keypoint_set=keypoint_set)
    runner = TFLiteRunner(tflite_path)
    res = evaluate(runner, val, size, codec, keypoint_set, metrics=metrics, coco_gt=coco_gt)
    rows.append(dict(model="student (distilled)", params=distilled.count_params(), gmacs=rows[1]["gmacs"],
                     pck=res["pck"]["mean"], ap=res.get("coco", {}).get("AP"), train_s=None,
                     format=f"TFLite int8 ({Path(tflite_path).stat().st_size / 1e3:.0f} kB)"))
    return rows


def _report(out, rows, histories, cfg, keypoint_set, val, codec, seconds, args):
    from kdpose_tf.cli.evaluate import predict_image
    from kdpose_tf.export.runner import TFLiteRunner
    from kdpose_tf.utils import io
    from kdpose_tf.visualization import draw_keypoints, markdown_table, plot_history, save_png

    plot_history(histories, out / "loss_curves.png", metrics=("loss", "val_loss"))
    runner = TFLiteRunner(out / "student_int8.tflite")
    held_out = val[0]
    image, kp, sc = predict_image(runner, held_out.image_path, codec.input_size, codec, keypoint_set,
                                  box=held_out.bbox)
    save_png(out / "prediction_int8.png", draw_keypoints(image, kp, sc, keypoint_set))
    save_png(out / "ground_truth.png", draw_keypoints(image, held_out.keypoints, held_out.visibility / 2.0,
                                                      keypoint_set))
    table = markdown_table(
        [{"model": r["model"], "format": r["format"], "params": f"{r['params'] / 1e6:.3f} M",
          "GMACs": f"{r['gmacs']:.3f}", "PCK@0.2": _pct(r["pck"]), "OKS AP": _pct(r["ap"]),
          "train time": "-" if r["train_s"] is None else f"{r['train_s']:.0f} s"} for r in rows],
        ["model", "format", "params", "GMACs", "PCK@0.2", "OKS AP", "train time"],
    )
    data = args.data or f"synthetic COCO-17 persons ({cfg['train_images']} train / {cfg['val_images']} val images)"
    text = f"""# kdpose_tf demo report

Data: {data}; input {codec.input_size[0]}x{codec.input_size[1]}, heatmaps {codec.heatmap_size[0]}x{codec.heatmap_size[1]};
{len(val)} validation people. Teacher {cfg['teacher_epochs']} epochs, students {cfg['student_epochs']} epochs each
(same data, optimizer and budget). Total run time {seconds:.0f} s.

{table}

- PCK@0.2: fraction of labelled joints within 0.2 x torso size of the truth; OKS AP through pycocotools.
- The int8 row is the distilled student after full-integer post-training quantization
  (uint8 input/output, up to 200 calibration crops from training data), run with ai_edge_litert.

![loss curves](loss_curves.png)

| int8 student on a held-out image | ground truth |
|---|---|
| ![prediction](prediction_int8.png) | ![truth](ground_truth.png) |
"""
    io.write_text(out / "report.md", text)
    io.write_json(out / "report.json", {"rows": rows, "seconds": seconds, "config": cfg})
    print(table)


def _pct(v):
    return "-" if v is None else f"{100 * float(v):.1f}"
