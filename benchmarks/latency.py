"""CPU latency of kdpose_tf students (TFLite variants), their teacher and reference models.

Models:
  (a) the distill_real FPD student (128x128, LSP-14; `benchmarks/distill_real.py`), all five export
      variants (float32, float16, dynamic, int8, int8-qat); trained weights when its checkpoint
      exists (`--checkpoint-dir`), else the same architecture untrained;
  (b) Lite-HRNet-18 (preset `lite_hrnet_18_coco_256x192`) at 256x192, float32 and int8;
  (c) the proposal student (`build_proposal_student`, resize+conv tail) at 256x192, float32 and int8;
  (d) the float teacher of (a) (float32);
  and the reference models in `<shared>/models` (MoveNet Lightning int8, BlazePose lite, full).
(b) and (c) have random weights (latency does not depend on them); int8 calibration uses real
person crops from PARSE 1-100 + BUFFY + coco_mini, which with random weights only sets plausible
activation ranges. The int8-qat variant of (a) is the fake-quant model converted without fine-tuning.

Timing: every model runs through `ai_edge_litert.interpreter.Interpreter` with identical settings
(default op resolver with XNNPACK, `num_threads` 1 and 2), a fixed random input set once (the
preprocessing is not timed), warm-up runs, then the median of >= 50 timed `invoke()` calls. Each
(model, round) is timed in its own subprocess so that an interpreter crash (LiteRT 2.3's XNNPACK
delegate once crashed with a double free on an int8 TRANSPOSE_CONV model) is recorded as "crashed"
instead of killing the benchmark. Rounds are interleaved (round r times every model once) and the
lowest round median is kept, the machine being shared. Ratios are against MoveNet Lightning int8.

    python benchmarks/latency.py [--runs 50] [--warmup 10] [--threads 1 2] [--rounds 3]
    python benchmarks/latency.py --quick        # tiny models, 5 runs, writes /tmp/latency.{md,json}

Writes benchmarks/results/latency.md and latency.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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
REFERENCES = (("MoveNet Lightning int8", "movenet_singlepose_lightning_int8.tflite"),
              ("BlazePose lite", "blazepose_landmark_lite.tflite"),
              ("BlazePose full", "blazepose_landmark_full.tflite"))
INTERPRETER = "ai_edge_litert.interpreter.Interpreter (default resolver, XNNPACK)"


# ---------------------------------------------------------------- child: time one model
def time_model(path, threads, runs, warmup):
    """(median ms, p90 ms) of `runs` invoke() calls after `warmup`, one interpreter per thread count."""
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


def child_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--threads", type=int, nargs="+", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    a = ap.parse_args(argv)
    from ai_edge_litert.interpreter import Interpreter

    d = Interpreter(model_path=a.path).get_input_details()[0]
    out = {"input": "x".join(map(str, d["shape"][1:])) + " " + np.dtype(d["dtype"]).name}
    for t in a.threads:
        out[str(t)] = time_model(a.path, t, a.runs, a.warmup)
    print("RESULT " + json.dumps(out), flush=True)


def time_in_subprocess(path, threads, runs, warmup, timeout):
    """Dict {"input", "<t>": (median, p90)} or {"error": "crashed (...)"}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--time-one", str(path), "--threads",
           *map(str, threads), "--runs", str(runs), "--warmup", str(warmup)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (p.stderr or "").strip().splitlines()[-1:] or [""]
    why = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
    return {"error": f"crashed ({why}) {tail[0][:160]}".strip()}


# ---------------------------------------------------------------- parent: build, export, time
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round median is kept")
    ap.add_argument("--checkpoint-dir", default="runs/distill_real/128",
                    help="distill_real work dir of the 128x128 run (fpd_s0/, teacher/)")
    ap.add_argument("--method", default="fpd", help="distill_real student to load (default fpd)")
    ap.add_argument("--num-calibration", type=int, default=64, help="real crops for int8 calibration")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per model and round before giving up")
    ap.add_argument("--quick", action="store_true", help="tiny models, 5 runs, 1 round, writes to /tmp")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results, /tmp with --quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.rounds, args.num_calibration = 5, 2, 1, 8
    elif args.runs < 50:
        raise SystemExit(f"--runs must be >= 50 for a stable median, got {args.runs}")
    return args


def build_models(args, train, codec):
    """[(label, keras model or None, variants, note)] for (a)-(d)."""
    import keras

    from distill_real import build_models as distill_models

    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.models import presets
    from kdpose_tf.models.students import build_proposal_student

    keras.utils.set_random_seed(0)
    size = 64 if args.quick else 128
    ckdir = Path(args.checkpoint_dir)
    trained = (not args.quick and (ckdir / "teacher" / "checkpoint.weights.h5").is_file()
               and (ckdir / f"{args.method}_s0" / "checkpoint.weights.h5").is_file())
    if trained:
        from quantized_accuracy import load_trained

        qa = argparse.Namespace(checkpoint_dir=str(ckdir), method=args.method, seed=0, size=128,
                                student_filters=32, teacher_filters=64)
        student, teacher, _ = load_trained(qa, train, codec, LSP14)
        note = f"trained ({ckdir}/{args.method}_s0)"
    else:
        cfg = argparse.Namespace(student_filters=8 if args.quick else 32, teacher_filters=16 if args.quick else 64)
        make_teacher, make_student = distill_models(LSP14, size, cfg, seed=0)
        student, teacher = make_student(f"student_{args.method}"), make_teacher()
        note = "untrained architecture (no checkpoint)" if not args.quick else "--quick: filters 8/16, 64x64"
    if args.quick:
        lite = presets.build("lite_hrnet_18_coco_256x192", input_size=(64, 64), stem_width=8,
                             widths=(8, 16, 32, 64), stage_modules=(1, 1, 1))
        prop = build_proposal_student(input_shape=(64, 64, 3), widths=(8, 16, 32, 64), stage_modules=(1, 1, 1),
                                      blocks_per_module=1)
        hw = "64x64 (quick, reduced widths)"
    else:
        lite = presets.build("lite_hrnet_18_coco_256x192", input_size=(256, 192))
        prop = build_proposal_student(input_shape=(256, 192, 3))
        hw = "256x192"
    small = ("none", "int8")
    return [
        (f"FPD student {size}x{size}", student, ("none", "float16", "dynamic", "int8", "int8-qat"), note),
        (f"Lite-HRNet-18 {hw}", lite, small, "random weights"),
        (f"proposal student {hw}", prop, small, "random weights, resize+conv tail"),
        (f"teacher {size}x{size}", teacher, ("none",), note),
    ], trained


VARIANT_LABEL = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8", "int8-qat": "int8-qat"}


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--time-one":
        return child_main(sys.argv[2:])
    args = parse_args(argv)
    out = Path(args.out or ("/tmp" if args.quick else RESULTS))

    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import real_benchmark_split
    from kdpose_tf.data.pipeline import make_inference_inputs
    from kdpose_tf.export.qat import quantize_model
    from kdpose_tf.export.tflite import export_tflite
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    shared = shared_dir()
    train, _ = real_benchmark_split(shared, LSP14)
    rng = np.random.default_rng(0)
    calib_samples = [train[i] for i in rng.permutation(len(train))[:args.num_calibration]]
    size = 64 if args.quick else 128
    codec = HeatmapCodec(input_size=(size, size))
    specs, trained = build_models(args, train, codec)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, model, variants, note in specs:
            in_size = tuple(int(v) for v in model.inputs[0].shape[1:3])
            crops = np.asarray(make_inference_inputs(calib_samples, in_size)[0], np.float32)
            for q in variants:
                name = f"{label} {VARIANT_LABEL[q]}"
                row = {"model": name, "note": note}
                t = time.time()
                try:
                    m = quantize_model(model, calibration_data=crops) if q == "int8-qat" else model
                    path = export_tflite(m, tmp / f"m{len(rows)}.tflite", quantize=q,
                                         representative_data=crops if q.startswith("int8") else None,
                                         num_calibration=len(crops))
                    row.update(size_kb=round(path.stat().st_size / 1024, 1), export_s=round(time.time() - t, 1),
                               _path=path)
                except Exception as e:  # noqa: BLE001  (one failed export must not stop the benchmark)
                    row["error"] = f"export failed: {type(e).__name__}: {str(e)[:200]}"
                print(f"exported {name}: {row.get('size_kb', row.get('error'))} KB", flush=True)
                rows.append(row)
        ref_dir = shared / "models"
        for label, fname in REFERENCES:
            if (ref_dir / fname).is_file():
                rows.append({"model": label, "note": f"shared/models/{fname}",
                             "size_kb": round((ref_dir / fname).stat().st_size / 1024, 1), "_path": ref_dir / fname})
            else:
                rows.append({"model": label, "note": f"shared/models/{fname}", "error": "file missing"})

        # Interleaved rounds: each round times every model once (each in its own subprocess).
        per_round = {r["model"]: {t: [] for t in args.threads} for r in rows}
        for rnd in range(args.rounds):
            for r in rows:
                if "_path" not in r or "error" in r:
                    continue
                res = time_in_subprocess(r["_path"], args.threads, args.runs, args.warmup, args.timeout)
                if "error" in res:
                    r["error"] = res["error"]
                    print(f"round {rnd}: {r['model']}: {res['error']}", flush=True)
                    continue
                r["input"] = res["input"]
                for t in args.threads:
                    per_round[r["model"]][t].append(res[str(t)])
                print(f"round {rnd}: {r['model']}: " + ", ".join(f"{t} thr {res[str(t)][0]:.2f} ms"
                                                                 for t in args.threads), flush=True)
    for r in rows:
        r.pop("_path", None)
        for t in args.threads:
            got = per_round[r["model"]][t]
            if got and "error" not in r:
                best = min(got)
                r[f"ms_{t}t"], r[f"p90_ms_{t}t"] = round(best[0], 3), round(best[1], 3)
                r[f"round_medians_ms_{t}t"] = [round(m, 3) for m, _ in got]
    ref = next((r for r in rows if r["model"].startswith("MoveNet") and "ms_1t" in r), None)
    for r in rows:
        for t in args.threads:
            ok = ref is not None and f"ms_{t}t" in r
            r[f"ratio_vs_movenet_{t}t"] = round(r[f"ms_{t}t"] / ref[f"ms_{t}t"], 3) if ok else None

    meta = {"runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads,
            "quick": args.quick, "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "interpreter": INTERPRETER, "student_trained": trained,
            "note": "Lite-HRNet-18 and the proposal student have random weights (latency does not depend on "
                    "them); int8 calibration on real crops; each (model, round) timed in a subprocess"}
    md = render(rows, meta)
    write_text(out / "latency.md", md)
    write_json(out / "latency.json", {"meta": meta, "rows": rows})
    print(md)
    print(f"wrote {out / 'latency.md'} and {out / 'latency.json'}")


def render(rows, meta):
    th = meta["threads"]
    header = ["model", "input", "size (KiB)"] + [f"median ms ({t} thr)" for t in th] + \
             [f"x MoveNet ({t} thr)" for t in th] + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        size = "-" if r.get("size_kb") is None else str(r["size_kb"])
        if "error" in r:
            timing = [r["error"]] + ["-"] * (2 * len(th) - 1)
        else:
            timing = [f"{r[f'ms_{t}t']:.2f}" for t in th] + \
                     [("-" if r[f"ratio_vs_movenet_{t}t"] is None else f"{r[f'ratio_vs_movenet_{t}t']:.2f}") for t in th]
        lines.append("| " + " | ".join([r["model"], r.get("input", "-"), size] + timing + [r.get("note", "")]) + " |")
    head = (f"# TFLite latency (CPU)\n\n{meta['rounds']} interleaved round(s) of {meta['runs']} timed runs after "
            f"{meta['warmup']} warm-up, lowest round median; {meta['interpreter']}; each model timed in its own "
            f"subprocess; {meta['cpu_count']} CPU(s) visible, machine shared. {meta['note']}.\n\n")
    if meta["quick"]:
        head += "**--quick run: tiny models, 5 runs; numbers are meaningless.**\n\n"
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
