"""CPU latency of every TFLite export variant of a student vs its teacher and reference models.

All models run in one process through `ai_edge_litert.interpreter.Interpreter` with identical
settings (default op resolver with XNNPACK, `num_threads` 1 and 2): warm-up runs, then the median
of >= 50 timed `invoke()` calls, in interleaved rounds (the lowest round median is kept, the
machine being shared) (input set once; the preprocessing is not timed). Reference models
come from `<shared>/models` (MoveNet Lightning int8, BlazePose landmark lite / full). Writes
`benchmarks/results/latency.md` and `latency.json` with ratios against MoveNet Lightning int8.

The student: a kdpose_tf preset is used when `--student` names one that imports; otherwise a
representative small student built here (inverted-residual encoder, resize+conv decoder, 17
heatmaps at stride 4, 256x192 input) and a 2x wider, deeper float teacher. Weights are random:
latency does not depend on them. Calibration (int8) uses real COCO-mini person crops.

Usage: .venv/bin/python benchmarks/latency.py [--runs 50] [--warmup 10] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from kdpose_tf.export.qat import quantize_model  # noqa: E402
from kdpose_tf.export.tflite import export_tflite  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402
from kdpose_tf.utils.shared import shared_dir  # noqa: E402

H, W = 256, 192


def _ir_block(x, cout, stride, expand, name):
    cin = x.shape[-1]
    y = keras.layers.Conv2D(cin * expand, 1, use_bias=False, name=f"{name}_expand")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = keras.layers.Conv2D(cout, 1, use_bias=False, name=f"{name}_project")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and cin == cout:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def small_pose_net(width=16, blocks=(1, 2, 2, 2), name="student"):
    """Encoder to stride 32 with skip connections, decoder (resize-nearest + conv) back to stride 4."""
    inp = keras.Input((H, W, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inp)
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    skips, c = [], width
    for s, n in enumerate(blocks):
        c = width * 2 ** (s + 1) if s else width * 2
        for i in range(n):
            x = _ir_block(x, c, 2 if i == 0 else 1, 4 if s else 2, f"s{s}_b{i}")
        skips.append(x)
    for lvl in (2, 1, 0):  # stride 32 -> 16 -> 8 -> 4
        skip = skips[lvl]
        x = keras.layers.Resizing(skip.shape[1], skip.shape[2], interpolation="nearest", name=f"up{lvl}")(x)
        x = keras.layers.Conv2D(skip.shape[-1], 1, name=f"up{lvl}_proj")(x)
        x = keras.layers.Add(name=f"up{lvl}_add")([x, skip])
        x = keras.layers.DepthwiseConv2D(3, padding="same", name=f"up{lvl}_dw")(x)
        x = keras.layers.Conv2D(max(width * 2, 32), 1, name=f"up{lvl}_pw")(x)
        x = keras.layers.ReLU(name=f"up{lvl}_relu")(x)
    out = keras.layers.Conv2D(17, 1, name="heatmaps")(x)
    return keras.Model(inp, out, name=name)


def coco_crops(n=64):
    root = shared_dir() / "data" / "coco_mini"
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    crops = []
    for a in ann["annotations"]:
        if a.get("num_keypoints", 0) < 5:
            continue
        img = cv2.imread(str(root / "train2017" / files[a["image_id"]]))
        x, y, w, h = a["bbox"]
        s = min(W / (w * 1.25), H / (h * 1.25))
        cx, cy = x + w / 2, y + h / 2
        m = np.array([[s, 0, W / 2 - s * cx], [0, s, H / 2 - s * cy]], np.float32)
        crop = cv2.warpAffine(img, m, (W, H), borderValue=(0, 0, 0))
        crops.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32))
        if len(crops) == n:
            break
    return np.stack(crops)


def time_model(path, threads, runs, warmup):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        shape, dtype = d["shape"], d["dtype"]
        if np.issubdtype(dtype, np.integer):
            x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
        else:
            x = rng.uniform(0, 1, size=shape).astype(dtype)
        it.set_tensor(d["index"], x)
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round median is kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.runs < 50:
        raise SystemExit(f"--runs must be >= 50 for a stable median, got {args.runs}")

    keras.utils.set_random_seed(0)
    student = small_pose_net(16, (1, 2, 2, 2), "student")
    teacher = small_pose_net(32, (2, 3, 4, 3), "teacher")
    crops = coco_crops(64)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for q in ("none", "float16", "dynamic", "int8"):
            models[f"student {q}"] = export_tflite(student, tmp / f"student_{q}.tflite", quantize=q,
                                                   representative_data=crops, num_calibration=64)
        qat = quantize_model(student, calibration_data=crops[:32])
        models["student int8-qat"] = export_tflite(qat, tmp / "student_int8_qat.tflite", quantize="int8-qat")
        models["teacher float32"] = export_tflite(teacher, tmp / "teacher.tflite")
        ref_dir = shared_dir() / "models"
        for label, name in (("MoveNet Lightning int8", "movenet_singlepose_lightning_int8.tflite"),
                            ("BlazePose lite", "blazepose_landmark_lite.tflite"),
                            ("BlazePose full", "blazepose_landmark_full.tflite")):
            if (ref_dir / name).is_file():
                models[label] = ref_dir / name
        # Interleaved rounds: each round times every model once; the machine is shared, so the
        # reported figure is the lowest per-round median (the round least disturbed by others).
        rows = []
        for label, path in models.items():
            from ai_edge_litert.interpreter import Interpreter

            d = Interpreter(model_path=str(path)).get_input_details()[0]
            rows.append({"model": label, "input": "x".join(map(str, d["shape"][1:])) + " " + np.dtype(d["dtype"]).name,
                         "size_kb": round(Path(path).stat().st_size / 1024, 1), "_path": path})
        for t in args.threads:
            per_round = {r["model"]: [] for r in rows}
            for _ in range(args.rounds):
                for r in rows:
                    per_round[r["model"]].append(time_model(r["_path"], t, args.runs, args.warmup))
            for r in rows:
                best = min(per_round[r["model"]])
                r[f"ms_{t}t"] = round(best[0], 3)
                r[f"p90_ms_{t}t"] = round(best[1], 3)
                r[f"round_medians_ms_{t}t"] = [round(m, 3) for m, _ in per_round[r["model"]]]
        for r in rows:
            r.pop("_path")
            print(r, flush=True)
    ref = next((r for r in rows if r["model"].startswith("MoveNet")), None)
    for r in rows:
        for t in args.threads:
            r[f"ratio_vs_movenet_{t}t"] = round(r[f"ms_{t}t"] / ref[f"ms_{t}t"], 3) if ref else None
    header = ["model", "input", "size (KiB)"] + [f"median ms ({t} thr)" for t in args.threads] + \
             [f"x MoveNet ({t} thr)" for t in args.threads]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["model"], r["input"], str(r["size_kb"])] + [f"{r[f'ms_{t}t']:.2f}" for t in args.threads] + \
                [("-" if r[f"ratio_vs_movenet_{t}t"] is None else f"{r[f'ratio_vs_movenet_{t}t']:.2f}")
                 for t in args.threads]
        lines.append("| " + " | ".join(cells) + " |")
    import platform

    meta = {"runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads, "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "interpreter": "ai_edge_litert.interpreter.Interpreter (default resolver, XNNPACK)",
            "student_input": [H, W], "note": "student/teacher: representative nets built in benchmarks/latency.py"}
    md = ("# TFLite latency (CPU)\n\n" + f"{args.rounds} interleaved rounds of {args.runs} timed runs after {args.warmup} warm-up; lowest round median; "
          f"{meta['interpreter']}; {meta['cpu_count']} CPU(s) visible, machine shared.\n\n" + "\n".join(lines) + "\n")
    out = Path(args.out)
    write_text(out / "latency.md", md)
    write_json(out / "latency.json", {"meta": meta, "rows": rows})
    print(md)


if __name__ == "__main__":
    main()
