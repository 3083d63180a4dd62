"""Model-zoo benchmark: size, multiply-adds, int8 TFLite size and CPU latency of every pose model.

For each model that can be built from the package (HRNet-W32/W48, hourglass 8x256 / 4x128,
LSHM-2 / LSHM-4, Lite-HRNet-18/30, Dite-HRNet-18/30, the proposal student), with the standard
`PoseEstimator` head:

- params (M): learnable parameters (`kdpose_tf.models.summary.count_params`, BN statistics excluded);
- GMACs: multiply-adds of convs / matmuls (`count_flops`) / 1e9, next to the published "GFLOPs" and the
  ratio measured / published computed in the paper's own unit (HRNet divides by 1024**3);
- int8 TFLite: post-training full-integer quantization (uint8 input / output) through `export_tflite`
  (what users ship), trained-like BatchNorm / LayerNorm weights (`bench_weights.trained_like`), calibrated
  on random images in [0, 255]: fine for file size and latency, meaningless for accuracy;
- latency: median of >= 20 `invoke()` of `ai_edge_litert.interpreter.Interpreter(num_threads=1)` after
  warm-up, on this machine (the XNNPACK requantization fix of `export_tflite` applied). The students'
  latency against MoveNet Lightning, XNNPACK and builtin kernels, 1 and 2 threads, real-crop calibration
  and per-op profiles, is `benchmarks/latency.py` (results/latency.md).

Writes benchmarks/results/model_zoo.md and model_zoo.json (atomically).

Usage:
    python benchmarks/model_zoo.py                                  # everything, TFLite up to 10 M params
    python benchmarks/model_zoo.py --models lite_hrnet_18,student   # a subset
    python benchmarks/model_zoo.py --skip-tflite-over-params 0      # params / GMACs only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench_weights import trained_like  # noqa: E402
from kdpose_tf.models.summary import count_flops, count_params  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402

NOTES = [
    "GFLOPs are multiply-accumulates (MACs) of convolutions, transposed / depthwise convolutions and "
    "matrix products, BN / activations / additions / resizing excluded: the convention of the HRNet, "
    "Lite-HRNet and hourglass papers (one multiply-add = one 'FLOP').",
    "HRNet (Sun et al. 2019) printed MACs / 1024**3 (its `get_model_summary`): HRNet-W32 has 7.645e9 MACs = "
    "7.12 of its 'GFLOPs'. The ratio column is taken in each paper's own unit; the GMACs column is MACs / 1e9.",
    "Params follow PyTorch: learnable weights incl. BN gamma / beta, excluding BN running statistics "
    "(Keras' `count_params()` would add them).",
    "Every model carries the standard head: a 1x1 conv to K heatmaps at 1/4 resolution (K=17 COCO for "
    "HRNet / Lite / Dite / student, K=16 MPII for the hourglass family, one head per stack).",
    "LSHM: the paper's 2.3 M (2 stacks) and 12 M (4 stacks) cannot come from one width; the presets pick "
    "C=128 and C=224 (see hourglass_presets.py).",
    "Dite-HRNet: `count_flops` counts the graph as it executes; lite_hrnet_presets.py explains the gap "
    "between the paper's aggregated-kernel count and running the K dynamic kernels in parallel.",
    "Proposal student (methods.md section 5): Dite-HRNet-18 topology with stem 32 and branch widths "
    "(32, 64, 128, 256) ('width 32'), PSA after every block's split conv, no iterative head, depthwise "
    "CSP-PAN on P3-P5 (out 32 channels), head = one 4x4 stride-2 deconv (32 ch) back to 1/4 + 1x1 conv. "
    "The proposal gives no exact widths: these are our reading.",
    "int8 TFLite: post-training full-integer quantization calibrated on random images (size / latency only, "
    "not accuracy; weights do not change latency). Latency: LiteRT, XNNPACK, 1 thread, every model and "
    "MoveNet Lightning int8 (../shared/models) timed in one process, taking turns in each round; per model "
    "the lowest round median. A shared CPU machine: read the x MoveNet column, not phone numbers. Each "
    "student at mobile input sizes, 2 threads, builtin kernels and per-op profiles: results/latency.md.",
]
MOVENET = "movenet_singlepose_lightning_int8.tflite"
FLATBUFFERS = {}  # key -> int8 flatbuffer, timed together at the end


# --------------------------------------------------------------------------- model catalogue
def _hrnet(name):
    from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
    from kdpose_tf.models.hrnet.hrnet_presets import backbone_presets, preset_kwargs
    from kdpose_tf.models.pose_estimator import PoseEstimator

    meta = backbone_presets[name]["metadata"]
    model = PoseEstimator(HRNetBackbone(**preset_kwargs(name)), keypoint_set="coco17")
    return model, {"params_m": meta["params_m"], "gflops": meta["gflops"], "gflops_divisor": meta["gflops_divisor"]}


def _hourglass(name):
    from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    from kdpose_tf.models.hourglass.hourglass_presets import backbone_presets, preset_kwargs
    from kdpose_tf.models.pose_estimator import PoseEstimator

    meta = backbone_presets[name]["metadata"]
    model = PoseEstimator(HourglassBackbone(**preset_kwargs(name)), keypoint_set="mpii16")
    return model, {"params_m": meta.get("params_m"), "gflops": meta.get("gflops")}


def _lite(name):
    from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
    from kdpose_tf.models.lite_hrnet.lite_hrnet_presets import backbone_presets
    from kdpose_tf.models.pose_estimator import PoseEstimator

    preset = backbone_presets[name]
    meta = preset["metadata"]
    model = PoseEstimator(LiteHRNetBackbone(**preset["config"]), keypoint_set="coco17")
    return model, {"params_m": meta["params"] / 1e6, "gflops": meta["flops"] / 1e9}


def _student(name):
    from kdpose_tf.models.heads.heatmap_head import HeatmapHead
    from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
    from kdpose_tf.models.necks.csp_pan import DepthwiseCSPPAN
    from kdpose_tf.models.pose_estimator import PoseEstimator

    backbone = LiteHRNetBackbone(
        variant="dite", stem_width=32, widths=(32, 64, 128, 256), stage_modules=(2, 4, 2), psa=True,
        iterative_head=False, input_shape=(256, 192, 3),
    )
    neck = DepthwiseCSPPAN(in_levels=("P3", "P4", "P5"))
    head = HeatmapHead(17, num_deconv_layers=1, deconv_filters=32, name="heatmap_head")
    return PoseEstimator(backbone, keypoint_set="coco17", neck=neck, head=head), {}


MODELS = {
    "hrnet_w32": (_hrnet, "HRNet-W32"),
    "hrnet_w48": (_hrnet, "HRNet-W48"),
    "hourglass_8x256": (_hourglass, "Hourglass 8x256 (FPD teacher)"),
    "hourglass_4x128": (_hourglass, "Hourglass 4x128 (FPD student)"),
    "lshm_2": (_hourglass, "LSHM-2"),
    "lshm_4": (_hourglass, "LSHM-4"),
    "lite_hrnet_18": (_lite, "Lite-HRNet-18"),
    "lite_hrnet_30": (_lite, "Lite-HRNet-30"),
    "dite_hrnet_18": (_lite, "Dite-HRNet-18"),
    "dite_hrnet_30": (_lite, "Dite-HRNet-30"),
    "student": (_student, "Student: Dite-32 + PSA + dw CSP-PAN + deconv"),
}


# --------------------------------------------------------------------------- TFLite
def int8_tflite(model, input_shape, num_calibration=8, seed=0) -> bytes:
    """Post-training full-integer TFLite (uint8 in / out) as users export it (`export_tflite`: BatchNorm
    folding, activation equalization, the XNNPACK pass), calibrated on random images."""
    from kdpose_tf.export.tflite import export_tflite

    images = np.random.default_rng(seed).uniform(0, 255, (num_calibration,) + tuple(input_shape)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_tflite(model, Path(tmp) / "model.tflite", quantize="int8", representative_data=images,
                             num_calibration=num_calibration, sidecar=False)
        return path.read_bytes()


def zoo_latency_ms(models: dict, runs=20, rounds=3):
    """{name: ms} per invoke(), one thread, XNNPACK unless it refuses the model (`delegates.make_interpreter`),
    the models interleaved (`tflite_profile.interleaved_ms`). `models`: {name: flatbuffer bytes or path}."""
    from tflite_profile import interleaved_ms

    from kdpose_tf.runtimes.xnnpack import make_interpreter

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (name, data) in enumerate(models.items()):
            paths[name] = Path(data) if isinstance(data, (str, Path)) else Path(tmp) / f"m{i}.tflite"
            if not isinstance(data, (str, Path)):
                paths[name].write_bytes(data)
        return interleaved_ms(paths, threads=1, rounds=rounds, runs=runs,
                              make=lambda path, threads: make_interpreter(path, num_threads=threads)[0])


# --------------------------------------------------------------------------- run
def measure(key, args):
    builder, label = MODELS[key]
    row = {"key": key, "model": label}
    start = time.perf_counter()
    try:
        model, published = builder(key)
    except ImportError as exc:  # a family not in the tree yet
        row["error"] = f"not available: {exc}"
        return row
    model = model.inference_model() if hasattr(model, "inference_model") else model
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    params, macs = count_params(model), count_flops(model)
    row.update(
        input="x".join(map(str, input_shape[:2])),
        params=params,
        macs=macs,
        params_m=params / 1e6,
        gmacs=macs / 1e9,
        published_params_m=published.get("params_m"),
        published_gflops=published.get("gflops"),
        gflops_divisor=published.get("gflops_divisor", 1e9),
    )
    if row["published_params_m"]:
        row["params_ratio"] = row["params_m"] / row["published_params_m"]
    if row["published_gflops"]:
        row["flops_ratio"] = macs / row["gflops_divisor"] / row["published_gflops"]
    if params / 1e6 <= args.skip_tflite_over_params:
        trained_like(model)  # the trained graph's ops (a fresh BN's zero shift is dropped by the converter)
        data = int8_tflite(model, input_shape, args.calibration)
        row["int8_tflite_mb"] = len(data) / 2**20
        FLATBUFFERS[key] = data  # timed at the end, interleaved with MoveNet
    else:
        row["tflite_skipped"] = f"params > {args.skip_tflite_over_params} M (--skip-tflite-over-params)"
    row["bench_seconds"] = time.perf_counter() - start
    return row


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def markdown(rows, args):
    lines = [
        "# Model zoo: size, multiply-adds, int8 TFLite",
        "",
        f"Generated by `benchmarks/model_zoo.py` on {platform.machine()} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d %H:%M')}; int8 latency: XNNPACK, 1 thread, {args.runs} runs x {args.rounds} "
        "interleaved rounds with MoveNet Lightning int8, lowest round median.",
        "",
        "| model | input | params (M) | GMACs | published params (M) | published GFLOPs | params ratio | "
        "FLOPs ratio | int8 TFLite (MB) | int8 latency (ms) | x MoveNet |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} |" + " |" * 9)
            continue
        if r["key"] == "movenet":
            lines.append(f"| {r['model']} | {r['input']} | - | - | - | - | - | - | {r['int8_tflite_mb']:.2f} | "
                         f"{r['latency_ms_median']:.1f} | 1.00 |")
            continue
        latency = r.get("latency_ms_median")
        lines.append(
            "| " + " | ".join([
                r["model"], r["input"], f"{r['params_m']:.2f}", f"{r['gmacs']:.3f}",
                _fmt(r.get("published_params_m"), "g"), _fmt(r.get("published_gflops"), "g"),
                _fmt(r.get("params_ratio"), ".3f"), _fmt(r.get("flops_ratio"), ".3f"),
                _fmt(r.get("int8_tflite_mb"), ".2f") if "int8_tflite_mb" in r else "skipped",
                _fmt(latency, ".1f") if latency is not None else "skipped",
                _fmt(r.get("x_movenet"), ".2f"),
            ]) + " |"
        )
    lines += ["", "## Reading notes", ""] + [f"- {n}" for n in NOTES]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    parser.add_argument("--skip-tflite-over-params", type=float, default=10.0,
                        help="no TFLite conversion / latency above this many million params (default 10)")
    parser.add_argument("--runs", type=int, default=20, help="timed invoke() runs (>= 20, default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--calibration", type=int, default=8, help="random calibration images (default 8)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; expected names from {list(MODELS)}")
    if args.runs < 20:
        parser.error(f"--runs must be >= 20, received {args.runs}")

    rows = []
    for key in keys:
        print(f"[model_zoo] {key} ...", flush=True)
        row = measure(key, args)
        rows.append(row)
        print("[model_zoo]", json.dumps({k: v for k, v in row.items() if k not in ("model",)}), flush=True)
        import keras

        keras.backend.clear_session()
    timed = dict(FLATBUFFERS)
    from kdpose_tf.utils.shared import shared_dir

    movenet = shared_dir() / "models" / MOVENET
    if movenet.is_file():
        timed["movenet"] = movenet
    if timed:
        print(f"[model_zoo] timing {len(timed)} int8 models, interleaved ...", flush=True)
        latency = zoo_latency_ms(timed, args.runs, args.rounds)
        reference = latency.get("movenet")
        for row in rows:
            if row["key"] in latency:
                row["latency_ms_median"] = latency[row["key"]]
                row["latency_runs"], row["latency_rounds"] = args.runs, args.rounds
                if reference:
                    row["x_movenet"] = row["latency_ms_median"] / reference
        if reference:
            rows.append({"key": "movenet", "model": "MoveNet Lightning int8 (reference)", "input": "192x192",
                         "int8_tflite_mb": movenet.stat().st_size / 2**20, "latency_ms_median": reference,
                         "x_movenet": 1.0})
    out = Path(args.out)
    write_json(out / "model_zoo.json", {"settings": vars(args), "notes": NOTES, "rows": rows})
    write_text(out / "model_zoo.md", markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
