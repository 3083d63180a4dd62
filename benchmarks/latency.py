"""CPU latency of the zoo's int8 students next to MoveNet Lightning int8, with per-op profiles.

Models: the students of the preset catalogue (`kdpose_tf.models.presets`), built untrained with
trained-like normalisation weights (`bench_weights.trained_like`: latency depends on the graph, and a
fresh BatchNorm's zero shift would be dropped by the converter) at their input size, PP-TinyPose 128x96 imported with its weights
(`kdpose_tf.models.imported`, the starting point of the fine-tuned students in distill_finetune.md), with the mobile preset (Lite-HRNet-18 at 128x96; 192x144
is not possible: 4 branches need H, W divisible by 32); post-training full-int8 (uint8 in / out) through `kdpose_tf.export.tflite.export_tflite`,
calibrated on real person crops (PARSE 1-100 + BUFFY + coco_mini from the shared data). Reference:
MoveNet Lightning int8 (`<shared>/models/movenet_singlepose_lightning_int8.tflite`).

Timing: `ai_edge_litert.interpreter.Interpreter` with the default resolver (XNNPACK delegate) and with
`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (builtin kernels), `num_threads` 1 and 2, a fixed
random input, warm-up, then the median of `--runs` `invoke()` calls. Each (model, kernels, round) runs
in its own subprocess, so an interpreter abort (LiteRT 2.2/2.3's XNNPACK double free on a collapsed
int8 range, issue 14) becomes a "crashed" cell. Rounds are interleaved (every model, MoveNet included,
once per round) and the lowest round median is kept; the machine is shared, so the ratios to MoveNet
(same round structure, same process layout) are the figures to read, and the MoveNet spread over rounds
is printed as the noise.

Per-op profile (`benchmarks/tflite_profile.py`, also in a subprocess): which ops XNNPACK takes (from
the interpreter's node list), the number of XNNPACK partitions, and the single-op time per op type.

    python benchmarks/latency.py [--rounds 5] [--runs 30] [--models lite_hrnet_18_coco_256x192 ...]

Writes benchmarks/results/latency.md and latency.json (atomically); the exported models are kept in
--work-dir (reused with --reuse).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from bench_weights import trained_like  # noqa: E402
from kdpose_tf.runtimes.pretrained_models import is_pretrained_source  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MOVENET = "movenet_singlepose_lightning_int8.tflite"
KERNELS = ("xnnpack", "builtin")
# (preset, input size or None for the preset's own)
DEFAULT_MODELS = (
    ("lite_hrnet_18_coco_256x192", None),
    ("lite_hrnet_18_mobile_coco_128x96", None),
    ("dite_hrnet_18_psa_csppan_coco_256x192", None),
    ("dite_hrnet_18_psa_csppan_coco_256x192", (128, 96)),  # the proposal student at the mobile input
    ("dite_hrnet_18_coco_256x192", None),
    ("pp_tinypose_128x96", None),  # imported from OpenVINO IR (kdpose_tf.models.imported), COCO-pretrained
    ("pp_tinypose_256x192", None),  # the same Lite-HRNet derivative at 256x192: what that input costs
)


# ---------------------------------------------------------------- children (one model each)
def child_main(argv):
    from tflite_profile import delegation, make_interpreter, profile_ops, summarize, time_invoke

    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("time", "profile"))
    ap.add_argument("path")
    ap.add_argument("--kernels", default="xnnpack", choices=KERNELS)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args(argv)
    if a.mode == "time":
        out = {}
        for t in a.threads:
            it = make_interpreter(a.path, t, a.kernels)
            for _ in range(a.warmup):
                it.invoke()
            out[str(t)] = time_invoke(it, a.runs, warmup=0) * 1e3
    else:
        status = delegation(a.path)
        it = make_interpreter(a.path, 1, "xnnpack")
        partitions = sum(o["op_name"] == "DELEGATE" for o in it._get_ops_details())
        rows = profile_ops(a.path, threads=1, kernels="xnnpack", runs=a.runs)
        out = {**summarize(rows, top=10), "partitions": partitions,
               "not_delegated": sorted({n for _, n, d in status if not d})}
    print("RESULT " + json.dumps(out), flush=True)


def run_child(args, timeout):
    """Parsed RESULT of a child run, or {"error": "crashed (...)"}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = [ln for ln in (p.stderr or "").strip().splitlines() if ln.strip()][-1:] or [""]
    why = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
    return {"error": f"crashed ({why}): {tail[0][:160]}"}


# ---------------------------------------------------------------- parent
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None,
                    help="preset[@HxW] entries (default: the students listed in DEFAULT_MODELS)")
    ap.add_argument("--runs", type=int, default=30, help="timed invoke() calls per round (>= 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the lowest round median is kept")
    ap.add_argument("--num-calibration", type=int, default=32, help="real crops for int8 calibration")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-op profiles")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per child run")
    ap.add_argument("--work-dir", default="runs/latency", help="where the exported .tflite files are kept")
    ap.add_argument("--reuse", action="store_true", help="reuse exported files found in --work-dir")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.runs < 20:
        ap.error(f"--runs must be >= 20 for a stable median, received {args.runs}")
    if args.models is None:
        args.models = [p if hw is None else f"{p}@{hw[0]}x{hw[1]}" for p, hw in DEFAULT_MODELS]
    return args


def _spec(entry):
    preset, _, size = entry.partition("@")
    from kdpose_tf.runtimes.pretrained_models import resolve_teacher_config
    from kdpose_tf.models import presets

    if is_pretrained_source(preset):  # a pretrained model imported with its weights: its own fixed size
        own = tuple(resolve_teacher_config(preset).input_size)
        if size and tuple(int(v) for v in size.split("x")) != own:
            raise SystemExit(f"{preset} is imported at its fixed input size {own}")
        return preset, own
    hw = tuple(int(v) for v in size.split("x")) if size else tuple(presets.get_entry(preset)["input_size"])
    return preset, hw


def _build(preset, hw):
    from kdpose_tf.models import presets
    from kdpose_tf.models.imported.openvino_import import import_pose_model

    return import_pose_model(preset) if is_pretrained_source(preset) else presets.build(preset, input_size=hw)


def export_students(args, shared):
    """[(label, preset, (H, W), path or None, error or None)] of int8 exports (real-crop calibration)."""
    import keras

    from kdpose_tf.data.datasets import real_benchmark_split
    from kdpose_tf.data.pipeline import make_inference_inputs
    from kdpose_tf.export.tflite import export_tflite

    train, _ = real_benchmark_split(shared)
    pick = np.random.default_rng(0).permutation(len(train))[: args.num_calibration]
    samples = [train[i] for i in pick]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for entry in args.models:
        preset, hw = _spec(entry)
        label = f"{preset} @ {hw[0]}x{hw[1]}" + (" (imported, pretrained)" if is_pretrained_source(preset) else "")
        path = work / f"{preset}_{hw[0]}x{hw[1]}_int8.tflite"
        if not (args.reuse and path.is_file()):
            keras.utils.set_random_seed(0)
            t = time.time()
            try:
                model = _build(preset, hw)
                if not is_pretrained_source(preset):
                    trained_like(model)  # the trained graph: a fresh BN's zero shift would be dropped
                crops = np.asarray(make_inference_inputs(samples, hw)[0], np.float32)
                export_tflite(model, path, quantize="int8", representative_data=crops, num_calibration=len(crops))
            except Exception as e:  # noqa: BLE001  (one failed export must not stop the benchmark)
                out.append((label, preset, hw, None, f"export failed: {type(e).__name__}: {str(e)[:160]}"))
                continue
            finally:
                keras.backend.clear_session()
            print(f"exported {label} in {time.time() - t:.0f} s", flush=True)
        out.append((label, preset, hw, path, None))
    return out


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    args = parse_args(argv)
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    shared = shared_dir()
    specs = export_students(args, shared)
    movenet = shared / "models" / MOVENET
    rows = [{"model": "MoveNet Lightning int8", "preset": None, "input": "192x192", "_path": movenet,
             "size_kib": round(movenet.stat().st_size / 1024, 1)}]
    for label, preset, hw, path, err in specs:
        row = {"model": label, "preset": preset, "input": f"{hw[0]}x{hw[1]}", "_path": path}
        if err:
            row["error"] = err
        else:
            row["size_kib"] = round(path.stat().st_size / 1024, 1)
        rows.append(row)

    timed = [r for r in rows if "error" not in r]
    rounds = {(r["model"], k): [] for r in timed for k in KERNELS}
    for rnd in range(args.rounds):
        for r in timed:
            for k in KERNELS:
                if r.get(f"{k}_error"):
                    continue
                res = run_child(["time", r["_path"], "--kernels", k, "--threads", *args.threads,
                                 "--runs", args.runs, "--warmup", args.warmup], args.timeout)
                if "error" in res:
                    r[f"{k}_error"] = res["error"]
                else:
                    rounds[(r["model"], k)].append(res)
                print(f"round {rnd} {r['model']} {k}: {res}", flush=True)
    for r in timed:
        for k in KERNELS:
            got = rounds[(r["model"], k)]
            for t in args.threads:
                series = [g[str(t)] for g in got]
                r[f"{k}_ms_{t}t"] = round(min(series), 3) if series else None
                r[f"{k}_rounds_ms_{t}t"] = [round(v, 3) for v in series]
    ref = rows[0]
    for r in rows:
        for k in KERNELS:
            for t in args.threads:
                a, b = r.get(f"{k}_ms_{t}t"), ref.get(f"xnnpack_ms_{t}t")
                r[f"{k}_x_movenet_{t}t"] = round(a / b, 2) if a and b else None
    if not args.no_profile:
        for r in timed:
            r["profile"] = run_child(["profile", r["_path"], "--runs", 20], args.timeout * 4)
            print(f"profile {r['model']}: {r['profile'].get('error') or r['profile']['xnnpack_time_share']}", flush=True)
    spread = {t: ref.get(f"xnnpack_rounds_ms_{t}t") or [] for t in args.threads}
    meta = {
        "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, shared by other jobs",
        "litert": _litert_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "movenet_noise": {str(t): round(max(s) / min(s) - 1, 3) if s else None for t, s in spread.items()},
        "calibration": f"{args.num_calibration} real crops (PARSE 1-100 + BUFFY + coco_mini)",
    }
    for r in rows:
        r.pop("_path", None)
    md = render(rows, meta)
    write_json(Path(args.out) / "latency.json", {"meta": meta, "rows": rows})
    write_text(Path(args.out) / "latency.md", md)
    print(md)


def _litert_version():
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        return "unknown"


def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def render(rows, meta):
    th = meta["threads"]
    head = ["model", "input", "KiB"]
    for k in KERNELS:
        head += [f"{k} ms ({t} thr)" for t in th]
    head += [f"x MoveNet xnnpack ({t} thr)" for t in th]
    head += ["ops in XNNPACK", "XNNPACK partitions", "XNNPACK share of op time", "not delegated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['input']} | {r['error']} |" + " |" * (len(head) - 3))
            continue
        cells = [r["model"], r["input"], _f(r.get("size_kib"), ".0f")]
        for k in KERNELS:
            cells += [r.get(f"{k}_error", "crashed")[:40] if r.get(f"{k}_ms_{t}t") is None else _f(r[f"{k}_ms_{t}t"])
                      for t in th]
        cells += [_f(r.get(f"xnnpack_x_movenet_{t}t")) for t in th]
        p = r.get("profile") or {}
        if "ops" in p:
            cells += [f"{p['delegated_ops']}/{p['ops']}", str(p["partitions"]), f"{100 * p['xnnpack_time_share']:.1f} %",
                      ", ".join(p["not_delegated"]) or "-"]
        else:
            cells += [p.get("error", "-")[:40], "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    noise = ", ".join(f"{t} thr {100 * v:.0f} %" for t, v in meta["movenet_noise"].items() if v is not None)
    text = [
        "# Int8 latency of the zoo's students vs MoveNet Lightning (CPU)", "",
        f"{meta['date']}, {meta['machine']}, ai-edge-litert {meta['litert']}. {meta['rounds']} interleaved rounds "
        f"of {meta['runs']} timed `invoke()` after {meta['warmup']} warm-up, lowest round median, each (model, "
        f"kernels, round) in its own process; students untrained with random trained-like BatchNorm / LayerNorm weights (`bench_weights.py`), int8 exported by `export_tflite`, calibrated on {meta['calibration']}. "
        f"Noise: MoveNet's round medians spread by {noise} (max / min - 1).", "",
        *lines, "",
        "- xnnpack: default resolver (XNNPACK delegate); builtin: BUILTIN_WITHOUT_DEFAULT_DELEGATES.",
        "- ops in XNNPACK / partitions: from the XNNPACK interpreter's node list (benchmarks/tflite_profile.py); "
        "every partition boundary costs a hand-over between XNNPACK and the builtin kernels.",
        "- XNNPACK share of op time: single-op models, each op timed alone with the same resolver; a share of "
        "the sum over ops, not of the full-model time (fusion and boundaries are not in single-op timings).",
    ]
    prof = [r for r in rows if (r.get("profile") or {}).get("by_type")]
    for r in prof:
        p = r["profile"]
        text += ["", f"## Per-op profile: {r['model']}", "",
                 f"{p['ops']} ops, {p['delegated_ops']} in XNNPACK, {p['partitions']} partitions; sum of single-op "
                 f"times {p['sum_ms']:.2f} ms vs full model {_f(r.get('xnnpack_ms_1t'))} ms (1 thread).", "",
                 "| op | count | in XNNPACK | single-op ms | of which not delegated |", "|---|---|---|---|---|"]
        text += [f"| {b['op']} | {b['count']} | {b['delegated']} | {b['ms']:.2f} | {b['ms_not_delegated']:.2f} |"
                 for b in p["by_type"]]
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    main()
