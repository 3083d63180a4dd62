"""Score the GPU-trained students (benchmarks/gpu_train.py) on PARSE 101-305 with the package's evaluator.

Runs here (TensorFlow backend, CPU). For every ``RUN.keras`` (the trained student, written on JAX by
`kdpose train` / `kdpose distill`) + ``RUN.json`` (the job and its per-epoch losses) in the given
run folders it loads the student, copies it to --weights-out (an ignored folder: weights are never
committed) and evaluates PCK@0.2 (torso rule) for all 14 LSP joints and the 12 body joints (LSP-14
without neck and head_top: the joints every model here has). Rows = methods, mean ± spread (half the
range) over seeds; runs planned for different numbers of epochs get their own rows.

Usage:
    KDPOSE_SHARED=/work/shared PYTHONPATH=. python benchmarks/distill_gpu.py \\
        --runs /tmp/gpu_runs/main /tmp/gpu_runs/rerun --weights-out /work/main/.gpu/weights \\
        --device "one NVIDIA H100 80GB HBM3 (nvidia-h100-x1)"
Later folders override earlier ones for runs of the same name and planned epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from distill_real import scores
from kdpose_tf.data.datasets import real_benchmark_split
from kdpose_tf.evaluation import evaluate, keras_predict_fn
from kdpose_tf.keypoints import LSP14
from kdpose_tf.models.preset_utils import load_keras_file
from kdpose_tf.utils.io import write_json, write_text
from kdpose_tf.utils.shared import shared_dir

LABELS = {  # job method (gpu_train.py: a pack's name, or scratch) -> row label, in row order
    "scratch": "scratch (labels only)",
    "movenet": "KD from MoveNet Lightning joints",
    "pp256": "heatmap KD from PP-TinyPose 256x192",
    "pp128": "heatmap KD from PP-TinyPose 128x96",
    "ens": "heatmap KD from PP-TinyPose 256x192 + 128x96 (mean)",
}
# how the runs trained, for tables of runs whose records do not say (the first GPU runs, trained by an
# earlier numpy copy of the pipeline in gpu_train.py: see git history)
EARLIER_AUGMENTATION = "scale 0.75-1.25, rotation +-30 deg (p 0.6), flip; teacher heatmaps warped with the crop"


def label(method):
    return LABELS.get(method, f"KD from the {method} pack")


def _codec(model, size):
    """The model's own codec (a PoseEstimator's), else the default one at its input size."""
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec

    return getattr(model, "codec", None) or HeatmapCodec(size)


def method_order(method):
    return list(LABELS).index(method) if method in LABELS else len(LABELS)


def load_runs(folders):
    runs = {}
    for folder in folders:
        for meta in sorted(Path(folder).glob("*.json")):
            record = json.loads(meta.read_text())
            model = meta.with_suffix(".keras")
            if "run" not in record or not model.is_file():
                continue
            record["model_file"] = str(model)
            runs[(record["run"], record["epochs_planned"], record.get("init"))] = record
    return list(runs.values())


def mean_spread(values):
    v = np.asarray(values, np.float64)
    return float(v.mean()), float((v.max() - v.min()) / 2)


def row_key(record, budgets):
    """Rows = method x planned budget (the cosine's length); one budget: the method alone."""
    m = record["method"]
    return m if len(budgets) == 1 else f"{m} ({record['epochs_planned']} epochs)"


def markdown(results):
    rows, runs = results["rows"], results["runs"]
    r0 = runs[0]
    lines = [
        "# Distillation on the lent GPU: LSPET + PARSE/BUFFY/coco_mini -> PARSE 101-305 (PCK@0.2)", "",
        f"Trained on {results['device']} with Keras {r0.get('keras', '3')} on JAX (`benchmarks/gpu_train.py`); scored here "
        f"({results['eval_machine']}, TensorFlow) with "
        "`kdpose_tf.evaluation.evaluate` (torso PCK@0.2, un-augmented crops, no flip test).",
        f"Student: {r0['student']} with an LSP-14 head at {r0['input_size'][0]}x{r0['input_size'][1]} "
        + (f"started from its COCO-pretrained weights (imported: `{r0['init']}`) " if r0.get("init")
           else "from random initialization ")
        + f"({r0['params'] / 1e6:.2f} M params); {r0['num_people']} training people (LSPET 8000 + PARSE 1-100 + "
        f"BUFFY + coco_mini), batch {r0['batch']}, Adam {r0['lr']:g}"
        + (f" with {r0['warmup']} warm-up steps and a" if r0.get("warmup") else " with a")
        + f" cosine planned over {' or '.join(str(e) for e in sorted({r['epochs_planned'] for r in runs}))} epochs "
        "(the row's), the epochs done per seed shown (a call's time limit can stop a run at the end of an epoch; see "
        f"the notes). Augmentation: {r0.get('augmentation', EARLIER_AUGMENTATION)}. FPD alpha {r0.get('alpha', 0.5):g}.",
        "",
        "| row | all-14 mean ± spread | body-12 mean ± spread | body-12 per seed | epochs | final loss |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        lines.append(
            f"| {row['label']} | {row['all14'][0]:.1f} ± {row['all14'][1]:.1f} | {row['body12'][0]:.1f} ± "
            f"{row['body12'][1]:.1f} | {', '.join(f'{v:.1f}' for v in row['body12_per_seed'])} | "
            f"{', '.join(str(e) for e in row['epochs'])} | {np.mean(row['final_loss']):.5f} |"
        )
    loss = "the Distiller's loss" if "command" in r0 else "the blended target-weighted MSE"
    lines += ["", f"Spread = half the range over seeds. Final loss = {loss} "
              "(not comparable across rows: the targets differ).", "", "## PCK@0.2 per joint (%), mean over seeds", "",
              "| joint | " + " | ".join(row["label"] for row in rows.values()) + " |", "|---|" + "---|" * len(rows)]
    for j, name in enumerate(LSP14.names):
        lines.append(f"| {name} | " + " | ".join(f"{row['per_joint'][j]:.1f}" for row in rows.values()) + " |")
    if any(key.split(" (")[0] == "scratch" for key in rows):
        lines += ["", "## Against scratch at the same budget (body-12 / all-14, points; spread = the larger of the "
                  "two rows' spreads)", ""]
        for key, row in rows.items():
            method = key.split(" (")[0]
            if method == "scratch":
                continue
            base = rows.get("scratch" + key[len(method):])
            if base is None:
                lines.append(f"- {row['label']}: no scratch run at this budget")
                continue
            parts = []
            for metric in ("body12", "all14"):
                d, spread = row[metric][0] - base[metric][0], max(row[metric][1], base[metric][1])
                ratio = f"{d / spread:.1f}x spread" if spread > 0 else "one seed, spread unknown"
                parts.append(f"{d:+.1f} ({ratio})")
            lines.append(f"- {row['label']} vs {base['label']}: {' / '.join(parts)}")
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    best = results["best"]
    lines += ["", f"Best distilled seed (body-12): `{best['run']}`, {best['body12']:.1f} body-12, "
              f"weights (not committed) at `{best['weights']}`."]
    soup = results.get("soup")
    if soup:
        lines += ["", f"**Weight soup** (`kdpose soup`, `kdpose_tf.training.average_weights`) of the "
                  f"{label(soup['method'])} seeds {soup['seeds']} at {soup['epochs_planned']} epochs: all-14 "
                  f"{soup['all14']:.1f}, body-12 {soup['body12']:.1f} (the seeds: "
                  f"{', '.join(f'{v:.1f}' for v in soup['seeds_body12'])}); one model, the seeds' size and speed, "
                  f"no seed picked on the test set. Weights (not committed) at `{soup['weights']}`."]
        best = soup
    q = results.get("int8")
    if q:
        lines += ["", "## The shipped distilled student as int8 TFLite, against MoveNet Lightning int8", "",
                  "| model | input | params | GMACs | all-14 | body-12 | int8 ms/crop (XNNPACK, 1 thread) | vs MoveNet |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| `{best['run']}` int8 ({q['size_kb']:.0f} KB) | {q['input']} | {q['params'] / 1e6:.2f} M | "
                  f"{q['gmacs']:.3f} | {q['all14']:.1f} | {q['body12']:.1f} | {q['ms']:.2f} | {q['ms'] / q['movenet_ms']:.2f}x |",
                  f"| MoveNet Lightning int8 | 192x192 | - | - | {q['movenet_all14']:.1f} | {q['movenet_body12']:.1f} | "
                  f"{q['movenet_ms']:.2f} | 1.00x |", "",
                  f"Same process, models interleaved, min of 5 round medians ({q['machine']}). The int8 student is "
                  "scored by the same evaluator as every row; MoveNet through its joints rendered on the same codec."]
        if q.get("ulp_copies"):
            b = [c[1] for c in q["ulp_copies"]]
            lines += ["", f"The int8 figure's own noise: {len(b)} more exports of the same float model with every "
                      "weight moved by one float32 ulp (`ulp_perturbed_int8`) score body-12 "
                      f"{', '.join(f'{v:.1f}' for v in b)} (mean {np.mean(b):.1f}, range {min(b):.1f}-{max(b):.1f}; "
                      f"all-14 mean {np.mean([c[0] for c in q['ulp_copies']]):.1f}): int8 differences of this "
                      "size between models are not differences between models."]
        if q.get("paired"):
            lines += ["", "Paired bootstrap over the test people (`benchmarks/paired_pck.py`, 5000 resamples), int8 "
                      "student minus MoveNet: " + "; ".join(
                          f"{k} {v['diff']:+.1f} points, 95 % interval [{v['ci95'][0]:+.1f}, {v['ci95'][1]:+.1f}]"
                          for k, v in q["paired"].items()) + "."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="folders with RUN.keras + RUN.json from gpu_train.py")
    ap.add_argument("--weights-out", required=True, help="where RUN.weights.h5 go (an ignored folder)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "distill_gpu"))
    ap.add_argument("--device", required=True, help="the GPU the runs were trained on, in words")
    ap.add_argument("--note", action="append", default=[], help="a reading note for the Markdown (repeatable)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the Markdown from OUT.json (new notes)")
    ap.add_argument("--int8", action="store_true",
                    help="export the best distilled student to int8, score it and time it against MoveNet")
    ap.add_argument("--int8-perturbations", type=int, default=0, metavar="N",
                    help="also export N copies of the int8 student with every float weight moved by <= 1 ulp: "
                         "the spread of their PCK is the int8 figure's own noise")
    ap.add_argument("--soup", default=None, metavar="METHOD",
                    help="also score the uniform weight soup of METHOD's seeds at the longest budget "
                         "(`kdpose_tf.training.average_weights`); --int8 then exports the soup")
    args = ap.parse_args()
    if args.render_only:
        results = json.loads(Path(f"{args.out}.json").read_text())
        results["notes"] = args.note or results.get("notes", [])
        write_json(f"{args.out}.json", results)
        write_text(f"{args.out}.md", markdown(results))
        return
    _, test = real_benchmark_split(shared_dir())
    records = load_runs(args.runs)
    if not records:
        raise SystemExit(f"no RUN.json + RUN.keras pairs in {args.runs}")
    starts = {r.get("init") for r in records}
    if len(starts) > 1:  # one table = one student and one starting point
        raise SystemExit(f"{args.runs}: runs from different starting points ({sorted(map(str, starts))}); "
                         "score them into separate tables (--out)")
    weights_out = Path(args.weights_out)
    weights_out.mkdir(parents=True, exist_ok=True)
    for r in records:
        size = tuple(r["input_size"])
        student = load_keras_file(r["model_file"])
        r["params"] = int(student.count_params())
        r["weights"] = str(weights_out / f"{r['run']}_{r['epochs_planned']}ep.keras")
        student.save(r["weights"])
        t0 = time.time()
        all14, body12, per_joint = scores(evaluate(keras_predict_fn(student), test, size, _codec(student, size), LSP14,
                                                   progress=False))
        r.update(all14=all14, body12=body12, per_joint=per_joint, eval_seconds=time.time() - t0)
        print(f"{r['run']} ({r['epochs_done']} epochs): all-14 {r['all14']:.1f}, body-12 {r['body12']:.1f}", flush=True)
    rows, budgets = {}, {r["epochs_planned"] for r in records}
    for key in dict.fromkeys(row_key(r, budgets) for r in sorted(
            records, key=lambda r: (method_order(r["method"]), r["epochs_planned"]))):
        group = sorted((r for r in records if row_key(r, budgets) == key), key=lambda r: r["seed"])
        text = label(group[0]["method"]) + ("" if key == group[0]["method"] else f", {group[0]['epochs_planned']} epochs")
        if group[0].get("init"):
            text = text.replace("scratch (labels only)", "labels only (fine-tuned)")
        rows[key] = {
            "label": text, "seeds": [r["seed"] for r in group], "all14": mean_spread([r["all14"] for r in group]),
            "body12": mean_spread([r["body12"] for r in group]), "body12_per_seed": [r["body12"] for r in group],
            "all14_per_seed": [r["all14"] for r in group], "epochs": [r["epochs_done"] for r in group],
            "final_loss": [r["epochs"][-1]["loss"] for r in group],
            "per_joint": np.mean([r["per_joint"] for r in group], axis=0).tolist(),
        }
    best = max((r for r in records if r["method"] != "scratch"), key=lambda r: r["body12"])
    results = {
        "device": args.device, "eval_machine": f"{platform.machine()}, CPU", "test": f"PARSE 101-305 ({len(test)})",
        "metric": "PCK@0.2 torso, %; body-12 = mean of the 12 body joints' PCK", "rows": rows,
        "runs": [{k: v for k, v in r.items() if k != "model_file"} for r in records],
        "best": {"run": best["run"], "body12": best["body12"], "all14": best["all14"], "weights": best["weights"],
                 "input_size": best["input_size"], "init": best.get("init")},
        "notes": args.note,
    }
    if args.soup:
        results["soup"] = soup_row(records, args.soup, weights_out, test)
    if args.int8:
        shipped = results.get("soup") or best
        results["int8"] = int8_against_movenet(shipped, test, args.int8_perturbations)
    write_json(f"{args.out}.json", results)
    write_text(f"{args.out}.md", markdown(results))
    print(markdown(results))


def soup_row(records, method, weights_out, test):
    """The uniform soup of `method`'s seeds at the longest planned budget, scored like every run."""
    from kdpose_tf.training import average_weights

    budget = max(r["epochs_planned"] for r in records if r["method"] == method)
    group = sorted((r for r in records if r["method"] == method and r["epochs_planned"] == budget),
                   key=lambda r: r["seed"])
    if len(group) < 2:
        raise SystemExit(f"--soup {method}: needs two or more seeds at {budget} epochs, found {len(group)}")
    size = tuple(group[0]["input_size"])
    soup = average_weights([load_keras_file(r["model_file"]) for r in group])
    path = Path(weights_out) / f"{method}_soup_{budget}ep.keras"
    soup.save(str(path))
    all14, body12, per_joint = scores(evaluate(keras_predict_fn(soup), test, size, _codec(soup, size), LSP14, progress=False))
    print(f"soup of {method} x{len(group)} ({budget} epochs): all-14 {all14:.1f}, body-12 {body12:.1f}", flush=True)
    return {"run": f"{method}_soup_{budget}ep", "method": method, "seeds": [r["seed"] for r in group],
            "epochs_planned": budget, "all14": all14, "body12": body12, "per_joint": per_joint,
            "weights": str(path), "input_size": group[0]["input_size"], "init": group[0].get("init"),
            "seeds_body12": [r["body12"] for r in group]}


def paired_against_movenet(path, test):
    """Paired bootstrap (benchmarks/paired_pck.py) of the int8 student vs MoveNet on the same test people."""
    from distill_real import BODY12
    from paired_pck import hits, paired_bootstrap

    hit_a, counted = hits(str(path), list(test))
    hit_b, _ = hits("movenet", list(test))
    rows = {}
    for name, joints in (("body-12", [LSP14.index(n) for n in BODY12]), ("all-14", list(range(14)))):
        diff, ci, _, _ = paired_bootstrap(hit_a, hit_b, counted, joints)
        rows[name] = {"diff": diff, "ci95": [float(ci[0]), float(ci[1])]}
    return rows


def ulp_perturbed_int8(student, calibration, test, n, work):
    """int8 PCK of `n` copies of `student` whose float weights each moved by one float32 ulp (random sign).

    Two float models that differ only in the last bit of their weights can give int8 files that score
    differently on these 205 test people (seen here: the same weight soup averaged in float64 or in
    float32, 70.5 vs 71.4 body-12): a weight or a calibrated range on a rounding boundary goes one way
    or the other. The spread over such copies is the int8 figure's own noise, below which int8
    differences between models mean nothing.
    Returns [(all-14, body-12)], one per copy; `student`'s weights are restored.
    """
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.runtimes.litert import TFLiteRunner
    from kdpose_tf.export.tflite import export_tflite

    size = tuple(int(v) for v in student.input_shape[1:3])
    original = [np.asarray(v.numpy()) for v in student.weights]
    out = []
    try:
        for k in range(n):
            rng = np.random.default_rng(1000 + k)
            for v, w in zip(student.weights, original):
                if np.issubdtype(w.dtype, np.floating):
                    toward = np.where(rng.random(w.shape) < 0.5, -np.inf, np.inf).astype(w.dtype)  # w's own ulp
                    v.assign(np.nextafter(w, toward))
            path = Path(work) / f"ulp_{k}.int8.tflite"
            export_tflite(student, path, quantize="int8", representative_data=calibration, keypoint_set=LSP14)
            a, b, _ = scores(evaluate(TFLiteRunner(path), test, size, HeatmapCodec(size), LSP14, progress=False))
            print(f"ulp-perturbed copy {k}: int8 all-14 {a:.1f}, body-12 {b:.1f}", flush=True)
            out.append((a, b))
            path.unlink()
    finally:
        for v, w in zip(student.weights, original):
            v.assign(w)
    return out


def int8_against_movenet(best, test, perturbations=0):
    """Export `best` to int8 (calibrated on real training crops), score it and MoveNet, time both."""
    from tflite_profile import interleaved_ms

    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import calibration_crops
    from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, teacher_predict_fn
    from kdpose_tf.runtimes.litert import TFLiteRunner
    from kdpose_tf.export.tflite import export_tflite
    from kdpose_tf.models.summary import count_flops

    size = tuple(best["input_size"])
    student = load_keras_file(best["weights"])
    train, _ = real_benchmark_split(shared_dir())
    path = Path(best["weights"]).with_suffix("").with_suffix(".int8.tflite")
    calibration = calibration_crops(train, size, 300)
    export_tflite(student, path, quantize="int8", representative_data=calibration, keypoint_set=LSP14)
    all14, body12, _ = scores(evaluate(TFLiteRunner(path), test, size, HeatmapCodec(size), LSP14, progress=False))
    movenet_path = shared_dir() / "models" / "movenet_singlepose_lightning_int8.tflite"
    codec = HeatmapCodec((192, 192))
    mv_all14, mv_body12, _ = scores(evaluate(teacher_predict_fn(KeypointTeacher(movenet_path), codec, LSP14), test,
                                             (192, 192), codec, LSP14, progress=False))
    ms = interleaved_ms({"student": path, "movenet": movenet_path}, threads=1)
    paired = paired_against_movenet(path, test)
    ulp = ulp_perturbed_int8(student, calibration, test, perturbations, path.parent) if perturbations else []
    return {"input": f"{size[0]}x{size[1]}", "params": student.count_params(),
            "gmacs": count_flops(student.inference_model()) / 1e9, "all14": all14, "body12": body12,
            "size_kb": path.stat().st_size / 1024, "ms": ms["student"], "movenet_ms": ms["movenet"],
            "movenet_all14": mv_all14, "movenet_body12": mv_body12, "paired": paired, "ulp_copies": ulp,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, ai_edge_litert"}


if __name__ == "__main__":
    main()
