"""Every zoo preset's int8 export loads and runs under XNNPACK (ai-edge-litert and TF's interpreter).

For each preset of `kdpose_tf.models.presets` (untrained, with trained-like BatchNorm / LayerNorm
weights from `bench_weights.trained_like` so the graph is the trained one's: whether XNNPACK accepts a
file depends on its quantisation parameters, not on trained weights) the script builds the model at a small input
size, converts it to int8 calibrated on real COCO-mini person crops, and records:

- the static check (`xnnpack_compat.check_xnnpack_compat`) and the child-process probe
  (`delegates.xnnpack_check`) on the converter's raw output, before the exporter's pass: evidence
  for whether the probe tells anything the static check does not;
- the exported file (the exporter's pass applied to those bytes, as `export_tflite` does; the
  script converts once instead of twice): the fixes the pass made, the static check, and one run of a
  real crop in a child process with (a) ai-edge-litert's default interpreter (XNNPACK),
  (b) TF's `tf.lite.Interpreter` (XNNPACK by default too) and (c) the builtin kernels; the largest
  XNNPACK-vs-builtin output difference in output quantisation steps.

Every interpreter runs in a child process, so a native abort is a table entry, not a dead script.

    python benchmarks/xnnpack_zoo.py                         # all presets, 128x96 / 64x64 inputs
    python benchmarks/xnnpack_zoo.py --presets lite_hrnet_18_coco_256x192 --calibration 8

Writes benchmarks/results/xnnpack_zoo.md and .json (atomically).
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

import numpy as np  # noqa: E402

from bench_weights import trained_like  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# small inputs that every family's strides divide (Lite-HRNet: 1/32; hourglass: 1/64)
SMALL_SIZE = {"coco17": (128, 96), "mpii16": (64, 64)}

# Child: run the model once on argv[3] (.npy) with argv[2] in {litert, tf, builtin}; save the raw output.
_RUN = """
import sys
import numpy as np
path, kind, x_path, out_path = sys.argv[1:5]
if kind == "tf":
    import tensorflow as tf
    it = tf.lite.Interpreter(model_path=path, num_threads=1)
else:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kw = {} if kind == "litert" else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    it = Interpreter(model_path=path, num_threads=1, **kw)
it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], np.load(x_path))
it.invoke()
np.save(out_path, it.get_tensor(it.get_output_details()[-1]["index"]))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=None,
                   help="preset names (default: all); a subset replaces its rows in an existing table, keeping the others")
    p.add_argument("--calibration", type=int, default=16, help="real calibration crops (default 16)")
    p.add_argument("--output", default=str(RESULTS / "xnnpack_zoo"), help="output stem (.md and .json)")
    return p.parse_args(argv)


def run_child(path, kind, x, tmp):
    """(raw output or None, status text) of one interpreter run in a child process."""
    x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / f"out_{kind}.npy"
    np.save(x_path, x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _RUN, str(path), kind, str(x_path), str(out_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or [""]
        return None, f"exit {proc.returncode}: {last[0][:120]}"
    return np.load(out_path), "ok"


def measure(name, crops_for, calibration):
    import keras

    from kdpose_tf.runtimes.xnnpack import xnnpack_check
    from kdpose_tf.runtimes.flatbuffer import model_io, model_tensors
    from kdpose_tf.runtimes.litert import quantize
    from kdpose_tf.export.sidecar import make_sidecar
    from kdpose_tf.export.bn_folding import fold_kernel_sum_batchnorm
    from kdpose_tf.export.tflite import convert_to_tflite, single_output_model
    from kdpose_tf.export.xnnpack_compat import fix_requantization_scales
    from kdpose_tf.runtimes.xnnpack import check_xnnpack_compat
    from kdpose_tf.models.presets import build, get_entry

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    size = SMALL_SIZE[get_entry(name)["keypoint_set"]]
    t0 = time.perf_counter()
    model = build(name, input_size=size)
    trained_like(model)  # the trained graph's ops: a fresh BN's zero shift is dropped by the converter
    model, _ = fold_kernel_sum_batchnorm(single_output_model(model))  # the graph export_tflite converts
    crops = crops_for(size, calibration)
    row = {"preset": name, "input": f"{size[0]}x{size[1]}", "params": int(model.count_params())}
    with tempfile.TemporaryDirectory() as tmp:
        raw = convert_to_tflite(model, "int8", representative_data=crops)
        raw_path = Path(tmp) / "raw.tflite"
        raw_path.write_bytes(raw)
        before = check_xnnpack_compat(raw)
        row["raw_over_limit"] = before["messages"]
        row["raw_probe"] = xnnpack_check(raw_path)["xnnpack"]
        # what export_tflite(model, path, quantize="int8", ...) does after converting, without
        # converting a second time (conversion is most of the time): the pass, then the sidecar
        path = Path(tmp) / f"{name}.tflite"
        data, fixes = fix_requantization_scales(raw)
        path.write_bytes(data)
        side = make_sidecar(path, quantize="int8", xnnpack_fixes=fixes)
        row["fixes"] = len(side["xnnpack_compat"]["fixes"])
        row["over_limit"] = len(side["xnnpack_compat"]["over_limit"])
        row["not_delegated"] = len(side["xnnpack_compat"]["not_delegated"])
        row["sidecar_runtime"] = side["runtime"]["xnnpack"]
        t = model_tensors(path)[model_io(path)["inputs"][0]]
        x = quantize(crops[:1], np.dtype(t["dtype"].lower()), t["scale"][0], t["zero_point"][0])
        outs = {}
        for kind in ("litert", "tf", "builtin"):
            outs[kind], row[kind] = run_child(path, kind, x, tmp)
        if outs["litert"] is not None and outs["builtin"] is not None:
            row["max_steps_vs_builtin"] = int(np.abs(outs["litert"].astype(np.int32) - outs["builtin"].astype(np.int32)).max())
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def markdown(rows, meta):
    lines = [
        "# Zoo int8 exports under XNNPACK",
        "",
        f"{meta['machine']}; ai-edge-litert {meta['litert']}, TensorFlow {meta['tf']}; untrained presets with trained-like normalisation weights, "
        f"int8 calibrated on {meta['calibration']} real COCO-mini crops; one real crop per run; every "
        "interpreter in a child process. `raw`: the converter's output before the exporter's "
        "XNNPACK pass (static check / child probe); the other columns are `export_tflite`'s file. `fixes`: "
        "scales the pass raised (ops over the requantization limit, and ADD / SUB / MUL outside XNNPACK's "
        "elementwise ranges); `ADD/SUB/MUL left to builtin kernels`: what is still outside them after it.",
        "",
        "| preset | input | raw: ops over limit | raw: probe | fixes | over limit | ai-edge-litert (XNNPACK) "
        "| TF interpreter | builtin | max steps XNNPACK vs builtin | ADD/SUB/MUL left to builtin kernels | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r.get('input', '')} | error: {r['error'][:80]} ||||||||||")
            continue
        lines.append(
            f"| {r['preset']} | {r['input']} | {len(r['raw_over_limit'])} | {r['raw_probe']} | {r['fixes']} | "
            f"{r['over_limit']} | {r['litert']} | {r['tf']} | {r['builtin']} | {r.get('max_steps_vs_builtin', '')} | "
            f"{r.get('not_delegated', 'not measured')} | {r['seconds']} |"
        )
    agree = [r for r in rows if "error" not in r]
    same = sum((len(r["raw_over_limit"]) > 0) == (r["raw_probe"] != "ok") for r in agree)
    lines += ["", f"Static check and child probe agree on {same} of {len(agree)} raw conversions."]
    for r in agree:
        for m in r["raw_over_limit"]:
            lines.append(f"- {r['preset']} (raw): {m}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    from kdpose_tf.data.coco import read_coco
    from kdpose_tf.data.datasets import calibration_crops
    from kdpose_tf.runtimes.xnnpack import litert_version
    from kdpose_tf.models.presets import PRESETS
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    coco = shared_dir() / "data" / "coco_mini"
    samples = read_coco(coco / "annotations" / "person_keypoints_train2017.json", coco / "train2017")
    cache = {}

    def crops_for(size, count):
        if (size, count) not in cache:
            cache[(size, count)] = calibration_crops(samples, size, count)
        return cache[(size, count)]

    names = args.presets or list(PRESETS)
    meta = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
            "litert": litert_version(), "tf": tf.__version__, "calibration": args.calibration}
    out_json = Path(args.output).with_suffix(".json")
    previous = json.loads(out_json.read_text()) if args.presets and out_json.is_file() else {"meta": meta, "rows": []}
    if previous["meta"] != meta:  # rows measured under other versions or settings are not merged
        raise SystemExit(f"{out_json} was measured with {previous['meta']}, this run has {meta}: run all presets")
    kept = [r for r in previous["rows"] if r["preset"] in PRESETS]
    order = [r["preset"] for r in kept] + [n for n in names if n not in {r["preset"] for r in kept}]
    done = {r["preset"]: r for r in kept}
    rows = []
    for name in names:
        try:
            row = measure(name, crops_for, args.calibration)
        except Exception as exc:  # one preset failing to build/convert is a table entry
            row = {"preset": name, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)
        done[name] = row
        rows = [done[n] for n in order if n in done]
        # written after every preset, so an interrupted run keeps what it measured
        write_json(out_json, {"meta": meta, "rows": rows})
        write_text(Path(args.output).with_suffix(".md"), markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
