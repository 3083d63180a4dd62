"""Float islands for XNNPACK: the proposal student's int8 export with SOFTMAX / RSQRT left in float32, timed and
checked against the full-int8 file, next to MoveNet Lightning int8; and a cheaper PSA placement.

`export_tflite(..., quantize="int8", float_ops=("SOFTMAX", "RSQRT"))` keeps PSA's softmaxes, LayerNorm's RSQRT
and the var + eps ADD feeding it in float32 (CPU targets only). In full int8 XNNPACK takes none of them, so
the delegated graph falls apart into partitions with builtin-kernel ops between them.

Variants (all `build_proposal_student` at 128x96, COCO-17, untrained with trained-like BatchNorm / LayerNorm
weights, `bench_weights.trained_like`: latency depends on the graph; the default builder arguments are the
`dite_hrnet_18_psa_csppan_coco_256x192` preset's):
    proposal   PSA after the dynamic split conv of every backbone block (the proposal's placement, 48 PSA).
    psa_head   PSA once, before the head's final conv (psa_in_blocks=False, psa_in_head=True): the reference
               layer itself, so its maths is the reference's; only the placement differs (1 instead of 48).
Each is exported full-int8 and with float islands, calibrated on 32 real crops (PARSE 1-100 + BUFFY +
coco_mini, as benchmarks/latency.py). The shipped `lsp14_student_128x96` (an imported PP-TinyPose graph) is
inspected: its graph has no softmax and no normalisation, so the option does not change it (reported,
not exported).

Measured per file: ops in XNNPACK and partitions (`tflite_profile.delegation`, the interpreter's node
list), 1-thread XNNPACK latency interleaved with MoveNet (`tflite_profile.interleaved_ms`, one round per
call: every model once per round; the lowest round median, and the per-round ratio of a variant's two
files, steadier on a loaded machine), and agreement with the float Keras model on PARSE test crops
(101-305): the share of joints whose heatmap argmax is within 1 heatmap pixel of Keras', the mean argmax
distance, and the heatmap RMS error over the Keras heatmaps' RMS. Untrained weights: these say how
faithful each int8 file is to its float model, not how accurate the model is.

    python benchmarks/float_islands.py [--variants proposal psa_head] [--rounds 5] [--runs 30] [--reuse]

Writes benchmarks/results/float_islands.{json,md}; the exports are kept in --work-dir (reused with --reuse).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from bench_weights import trained_like  # noqa: E402
from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors  # noqa: E402
from tflite_profile import delegation, interleaved_ms, make_interpreter  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MOVENET = "movenet_singlepose_lightning_int8.tflite"
INPUT = (128, 96)
VARIANTS = {
    "proposal": {"psa_in_blocks": True, "psa_in_head": False},
    "psa_head": {"psa_in_blocks": False, "psa_in_head": True},
}
SHIPPED = "lsp14_student_128x96"
REUSED = ", exports reused from --work-dir: made by an earlier run of this script"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (best round and paired ratios)")
    ap.add_argument("--runs", type=int, default=30, help="timed invoke() calls per round (>= 20)")
    ap.add_argument("--num-calibration", type=int, default=32, help="real crops for int8 calibration")
    ap.add_argument("--num-test", type=int, default=100, help="PARSE test crops for the agreement with Keras")
    ap.add_argument("--work-dir", default="runs/float_islands", help="where the exported .tflite files are kept")
    ap.add_argument("--reuse", action="store_true", help="reuse exported files found in --work-dir")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.runs < 20:
        ap.error(f"--runs must be >= 20 for a stable median, received {args.runs}")
    return args


def build_variant(name):
    import keras

    from kdpose_tf.models.proposal import build_proposal_student

    keras.utils.set_random_seed(0)
    model = build_proposal_student(input_shape=(*INPUT, 3), name=f"proposal_{name}", **VARIANTS[name])
    trained_like(model)  # the trained graph: a fresh BN's zero shift / LN's unit gain would be dropped
    return model


def export_pair(model, name, crops, work, reuse):
    """{"int8": path, "islands": path} of `model` exported full-int8 and with float islands."""
    from kdpose_tf.export.tflite import FLOAT_OPS, export_tflite

    paths = {}
    for kind, float_ops in (("int8", ()), ("islands", FLOAT_OPS)):
        path = work / f"{name}_{INPUT[0]}x{INPUT[1]}_{kind}.tflite"
        if not (reuse and path.is_file() and path.with_suffix(".json").is_file()):
            t = time.time()
            export_tflite(model, path, quantize="int8", representative_data=crops, num_calibration=len(crops),
                          keypoint_set="coco17", float_ops=float_ops)
            print(f"exported {path.name} in {time.time() - t:.0f} s", flush=True)
        paths[kind] = path
    return paths


def graph_report(path):
    """Ops, XNNPACK delegation and partitions, float ops (from the sidecar) of one exported file."""
    import json

    status = delegation(path)
    it = make_interpreter(path, 1, "xnnpack")
    side = json.loads(Path(path).with_suffix(".json").read_text())
    ops, tensors = model_ops(path), model_tensors(path)
    quantize_of = {op["inputs"][0]: op["outputs"][0] for op in ops if op["name"] == "QUANTIZE"}
    softmax = Counter()  # (positions the softmax runs over, int8 scale its output is stored at)
    for op in ops:
        if op["name"] == "SOFTMAX":
            out = tensors[quantize_of.get(op["outputs"][0], op["outputs"][0])]
            softmax[(tensors[op["outputs"][0]]["shape"][-1], out["scale"][0] if out["scale"] else None)] += 1
    return {
        "softmax_length_scale": [[n, sc, c] for (n, sc), c in sorted(softmax.items())],
        "ops": len(status),
        "delegated_ops": sum(d for _, _, d in status),
        "partitions": sum(o["op_name"] == "DELEGATE" for o in it._get_ops_details()),
        "not_delegated": dict(sorted(Counter(n for _, n, d in status if not d).items())),
        "float_ops": side["float_ops"]["in_file"],
        "xnnpack_runtime": side["runtime"]["xnnpack"],
        "size_kib": round(Path(path).stat().st_size / 1024, 1),
    }


def argmax_joints(heatmaps):
    n, h, w, k = heatmaps.shape
    flat = heatmaps.reshape(n, h * w, k).argmax(axis=1)
    return np.stack([flat % w, flat // w], axis=-1)


def agreement(reference, heatmaps):
    """Joint argmax agreement and relative heatmap error of `heatmaps` against the float `reference`."""
    dist = np.linalg.norm((argmax_joints(heatmaps) - argmax_joints(reference)).astype(np.float64), axis=-1)
    rms = float(np.sqrt(np.mean((heatmaps - reference) ** 2)) / np.sqrt(np.mean(reference ** 2)))
    return {"within_1px": round(float((dist <= 1.0 + 1e-9).mean()), 4), "mean_px": round(float(dist.mean()), 3),
            "heatmap_rel_rms": round(rms, 4)}


def shipped_report():
    """What in the shipped student could become a float island: its graph's op types and the head's PSA."""
    from kdpose_tf.models.pose_estimator import PoseEstimator

    model = PoseEstimator.from_preset(SHIPPED)
    ops = Counter(node["op"] for node in model.backbone.nodes)
    layers = Counter(type(layer).__name__ for layer in model._flatten_layers(include_self=False, recursive=True))
    islands = sorted(n for n in layers if "SelfAttention" in n or "LayerNorm" in n or "Softmax" in n)
    return {"graph_ops": dict(sorted(ops.items())), "head_psa": bool(getattr(model.head, "psa", False)),
            "softmax_or_norm_layers": islands,
            "float_island_sources": bool(islands) or "softmax" in ops or bool(getattr(model.head, "psa", False))}


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()} {cpu}, {os.cpu_count()} CPUs visible, shared by other jobs (load {load:.1f})"


def main(argv=None):
    args = parse_args(argv)
    import keras

    from kdpose_tf.data.datasets import real_benchmark_split
    from kdpose_tf.data.pipeline import make_inference_inputs
    from kdpose_tf.runtimes.litert import TFLiteRunner
    from kdpose_tf.runtimes.xnnpack import litert_version, xnnpack_check
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    t0 = time.time()
    shared = shared_dir()
    train, test = real_benchmark_split(shared)
    rng = np.random.default_rng(0)
    crops = np.asarray(make_inference_inputs([train[i] for i in rng.permutation(len(train))[: args.num_calibration]],
                                             INPUT)[0], np.float32)
    test_crops = np.asarray(make_inference_inputs(test[: args.num_test], INPUT)[0], np.float32)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    export_s = 0.0
    rows, files = [], {"MoveNet Lightning int8": shared / "models" / MOVENET}
    for name in args.variants:
        model = build_variant(name)
        t = time.time()
        paths = export_pair(model, name, crops, work, args.reuse)
        export_s += time.time() - t
        out = model.predict(test_crops, batch_size=16, verbose=0)
        reference = np.asarray(out[-1] if isinstance(out, list) else out)
        params = int(model.count_params())
        keras.backend.clear_session()
        outputs = {}
        for kind, path in paths.items():
            if xnnpack_check(path)["xnnpack"] != "ok":  # never time a file the delegate refuses in this process
                rows.append({"variant": name, "file": kind, "error": f"xnnpack {xnnpack_check(path)}"})
                continue
            outputs[kind] = TFLiteRunner(path)(test_crops)
            row = {"variant": name, "file": kind, "params": params, **graph_report(path),
                   **agreement(reference, outputs[kind])}
            if kind == "islands" and "int8" in outputs:  # the same int8 heatmaps? (SOFTMAX is requantized at 1/256)
                diff = np.abs(outputs["islands"] - outputs["int8"])
                row["vs_int8_max_abs"] = float(diff.max())
                row["vs_int8_equal"] = round(float((diff == 0).mean()), 4)
            rows.append(row)
            files[f"{name} {kind}"] = path
            print(row, flush=True)
    # one interleaved_ms round per call, so every round's medians are kept: on a loaded machine the paired
    # per-round ratio (islands / int8 of the same round) is steadier than the ratio of the best rounds
    per_round = {name: [] for name in files}
    for _ in range(args.rounds):
        for name, value in interleaved_ms(files, threads=1, rounds=1, runs=args.runs).items():
            per_round[name].append(value)
    ms = {name: min(values) for name, values in per_round.items()}
    movenet = np.asarray(per_round["MoveNet Lightning int8"])
    for r in rows:
        if "error" not in r:
            mine = np.asarray(per_round[f"{r['variant']} {r['file']}"])
            r["xnnpack_ms_1t"] = round(ms[f"{r['variant']} {r['file']}"], 3)
            r["rounds_ms"] = [round(float(v), 3) for v in mine]
            r["x_movenet"] = round(ms[f"{r['variant']} {r['file']}"] / ms["MoveNet Lightning int8"], 3)
            r["x_movenet_median_round"] = round(float(np.median(mine / movenet)), 3)
            if r["file"] == "islands" and f"{r['variant']} int8" in per_round:
                ratio = mine / np.asarray(per_round[f"{r['variant']} int8"])
                r["vs_int8_ratio"] = [round(float(q), 3) for q in np.percentile(ratio, [25, 50, 75])]
    meta = {"machine": machine(), "litert": litert_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "input": f"{INPUT[0]}x{INPUT[1]}", "rounds": args.rounds, "runs": args.runs,
            "movenet_ms_1t": round(ms["MoveNet Lightning int8"], 3),
            "movenet_spread": round(float(movenet.max() / movenet.min() - 1), 3),
            "calibration": f"{len(crops)} real crops (PARSE 1-100 + BUFFY + coco_mini)",
            "test": f"{len(test_crops)} PARSE test crops (101-)", "shipped": {SHIPPED: shipped_report()},
            "wall_s": round(time.time() - t0), "export_s": round(export_s),
            "reused": bool(args.reuse)}
    write_json(Path(args.out) / "float_islands.json", {"meta": meta, "rows": rows})
    md = render(rows, meta)
    write_text(Path(args.out) / "float_islands.md", md)
    print(md)


def render(rows, meta):
    head = ["variant", "file", "ms (1 thr)", "x MoveNet", "islands / int8 per round", "ops in XNNPACK", "partitions",
            "not delegated", "float ops", "joints within 1 px of Keras", "mean px", "heatmap rel. RMS error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["variant"], r["file"]): r for r in rows}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['file']} | {r['error'][:80]} |" + " |" * (len(head) - 3))
            continue
        fl = ", ".join(f"{k} {v}" for k, v in r["float_ops"].items()) or "-"
        nd = ", ".join(f"{k} {v}" for k, v in r["not_delegated"].items()) or "-"
        q = r.get("vs_int8_ratio")
        paired = f"{q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]" if q else "-"
        lines.append(f"| {r['variant']} | {r['file']} | {r['xnnpack_ms_1t']:.2f} | {r['x_movenet']:.2f} | {paired} | "
                     f"{r['delegated_ops']}/{r['ops']} | {r['partitions']} | {nd} | {fl} | "
                     f"{100 * r['within_1px']:.1f} % | {r['mean_px']:.2f} | {r['heatmap_rel_rms']:.3f} |")
    notes = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        a, b = by.get((v, "int8")), by.get((v, "islands"))
        if a and b and "error" not in a and "error" not in b:
            notes.append(f"- {v}: float islands {b['xnnpack_ms_1t']:.2f} vs full int8 {a['xnnpack_ms_1t']:.2f} ms "
                         f"(best rounds {100 * (b['xnnpack_ms_1t'] / a['xnnpack_ms_1t'] - 1):+.1f} %; paired "
                         f"per-round median {100 * (b['vs_int8_ratio'][1] - 1):+.1f} %), {b['partitions']} vs "
                         f"{a['partitions']} XNNPACK partitions; joints within 1 px of Keras "
                         f"{100 * b['within_1px']:.1f} vs {100 * a['within_1px']:.1f} %; the two files' heatmaps "
                         f"equal in {100 * b['vs_int8_equal']:.1f} % of values (max |difference| "
                         f"{b['vs_int8_max_abs']:.3g}).")
    scales = sorted({sc for r in rows if "error" not in r for _, sc, _ in r["softmax_length_scale"] if sc is not None})
    s = meta["shipped"][SHIPPED]
    shipped = (f"- `{SHIPPED}` (shipped): graph ops {', '.join(f'{k} {v}' for k, v in s['graph_ops'].items())}; "
               f"head PSA {s['head_psa']}; softmax / normalisation layers: "
               f"{', '.join(s['softmax_or_norm_layers']) or 'none'}. "
               + ("It has float-island sources; export it with float_ops to measure."
                  if s["float_island_sources"] else
                  "No SOFTMAX and no RSQRT: `float_ops` leaves its int8 file as it is (its int8 export already "
                  "runs every op but the uint8 I/O QUANTIZEs in XNNPACK, latency.md), so it is not exported here."))
    return "\n".join([
        "# Float islands: SOFTMAX / RSQRT in float32 inside an int8 model, for XNNPACK (CPU)", "",
        f"{meta['date']}, {meta['machine']}, ai-edge-litert {meta['litert']}, {meta['wall_s']} s for the whole run "
        f"({meta['export_s']} s of it exporting{REUSED if meta['reused'] else ''}). "
        f"Input {meta['input']}; int8 (uint8 I/O) through `export_tflite`, calibrated on {meta['calibration']}; "
        f"1 thread, XNNPACK, {meta['rounds']} interleaved rounds of {meta['runs']} invokes with MoveNet Lightning "
        f"int8 ({meta['movenet_ms_1t']:.2f} ms; its round medians spread by {100 * meta['movenet_spread']:.0f} %), "
        "lowest round median; islands / int8: median [quartiles] over rounds of the two files' ratio in the "
        "same round. Agreement with the float Keras model on "
        f"{meta['test']}; untrained models with trained-like norm weights, so it measures the int8 file's "
        "fidelity, not PCK.", "",
        *lines, "",
        "- file: int8 = `quantize=\"int8\"`; islands = the same with `float_ops=(\"SOFTMAX\", \"RSQRT\")` (RSQRT's "
        "var + eps ADD goes with it), CPU only: `target=\"edgetpu\"` refuses it.",
        "- ops in XNNPACK / partitions: the XNNPACK interpreter's node list (`tflite_profile.delegation`); the two "
        "QUANTIZEs left in every file are the uint8 <-> int8 input / output conversions.",
        f"- softmax outputs: int8 scales of every SOFTMAX result in these files (the islands files' QUANTIZE after "
        f"the float SOFTMAX included): {', '.join(f'{v:.6g}' for v in scales)}; the int8 SOFTMAX's output scale is "
        "fixed at 1/256 = 0.00390625, and where the island's QUANTIZE has the same scale the float island stores "
        "the same int8 values: it changes which kernels run, not the numbers. A softmax over n positions "
        "averages 1/n (1/768 at 32x24 is a third of one 1/256 step). Lengths / scales / counts per file: "
        "`softmax_length_scale` in float_islands.json.",
        "- psa_head: the reference `PolarizedSelfAttention` once before the head's final conv instead of after "
        "every backbone block: the same layer and maths, fewer placements (its accuracy cost needs training, "
        "the grafting ablation, ablation_graft.md).", "",
        *notes, shipped, "",
    ])


if __name__ == "__main__":
    main()
