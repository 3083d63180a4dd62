"""The shipped students against MoveNet Lightning on LSP test and PARSE test, in one run on this CPU.

For every model given (a shipped preset name, a preset directory, a .keras or a .tflite file), and for
MoveNet Lightning int8 (../shared) in the same process:
- float PCK@0.2 on LSP test 1001-2000 under the literature's protocol (`kdpose_tf.metrics.pck.LSP_PROTOCOL`:
  box = the image's central 70 %, torso = left shoulder to right hip, every joint counted), all-14 and body-12;
- float PCK@0.2 on PARSE 101-305 (the package's PCK: labelled joints, torso right shoulder to left hip);
- the int8 export (`export_tflite`, uint8 I/O, 300 calibration crops of LSP train) scored the same way,
  or the int8 file given with `--int8-file LABEL=FILE` (a quantization-aware export);
- int8 latency, LiteRT XNNPACK, 1 thread, interleaved with MoveNet (`tflite_profile.interleaved_ms`);
- the paired bootstrap of the int8 student against MoveNet, body-12, over the test people (95 % interval).
Models with COCO-17 joints are mapped by name onto LSP-14 (neck and head top count as misses in all-14,
as for MoveNet), so body-12 is the figure every model here has.

    KDPOSE_SHARED=/work/shared .venv/bin/python benchmarks/shipped_students.py \\
        --model lsp14=lsp14_student_128x96 --model coco17=coco17_student_128x96 \\
        [--model teacher=/work/runs/teacher_lsp.tflite] [--flip-test-also teacher] [--out shipped_students]

Writes benchmarks/results/<out>.{json,md}; `--cards` copies each preset's figures into its model card.
`--install WORK/NAME` (before scoring) copies a preset that `kdpose recipe NAME --work WORK` built into the
package (``kdpose_tf/models/imported/presets/NAME/``, weights stored as written, recipe kept) and fills
its model card with the recipe's "card" fields and the recipe's step times.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from paired_pck import paired_bootstrap  # noqa: E402
from tflite_profile import interleaved_ms  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def predictor(spec):
    """(predict_fn, input_size, codec, keypoint set) of a model argument; "movenet" for MoveNet Lightning int8."""
    from kdpose_tf.cli.evaluate import load_predictor
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, teacher_predict_fn
    from kdpose_tf.keypoints import LSP14, get_keypoint_set
    from kdpose_tf.utils.shared import shared_dir

    if spec == "movenet":
        size = (192, 192)
        teacher = KeypointTeacher(shared_dir() / "models" / "movenet_singlepose_lightning_int8.tflite")
        return teacher_predict_fn(teacher, HeatmapCodec(size), LSP14), size, HeatmapCodec(size), LSP14
    fn, size, codec, ks = load_predictor(spec)
    return fn, size, codec, get_keypoint_set(ks or "coco17")


def lsp14_predictions(spec, samples, flip_test=False):
    """(N, 14, 2) LSP-14 predictions of a model on `samples`; joints the model lacks are NaN (a miss)."""
    from kdpose_tf.evaluation import predict_samples
    from kdpose_tf.keypoints import LSP14, joint_mapping

    from kdpose_tf.data.datasets import to_keypoint_set

    fn, size, codec, ks = predictor(spec)
    people = samples if ks.name == LSP14.name else to_keypoint_set(samples, ks)  # the same boxes, the model's joints
    pred, _ = predict_samples(fn, people, size, codec, ks, flip_test=flip_test, progress=False)
    if ks.name == LSP14.name:
        return pred
    out = np.full((len(samples), LSP14.num_keypoints, 2), np.nan)
    for src, dst in joint_mapping(ks, LSP14).items():
        out[:, dst] = pred[:, src]
    return out


def hits(pred, samples, lsp_protocol):
    """(N, 14) correct and counted matrices: the LSP protocol on LSP, the package's PCK elsewhere."""
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.metrics.pck import LSP_PROTOCOL, pck, protocol_pck, torso_normalizer

    gt = np.stack([s.keypoints for s in samples]).astype(np.float64)
    vis = np.stack([s.visibility for s in samples])
    if lsp_protocol:
        r = protocol_pck(pred, gt, vis, LSP14, LSP_PROTOCOL)
    else:
        r = pck(pred, gt, vis > 0, torso_normalizer(gt, LSP14, vis > 0), 0.2)
    return r["correct"], r["counted"]


def scores(correct, counted):
    from kdpose_tf.evaluation import BODY12
    from kdpose_tf.keypoints import LSP14

    body = [LSP14.names.index(n) for n in BODY12]
    per_joint = correct.sum(0) / np.maximum(counted.sum(0), 1)
    return {"all14": 100 * float(per_joint.mean()), "body12": 100 * float(per_joint[body].mean()),
            "per_joint": {n: 100 * float(v) for n, v in zip(LSP14.names, per_joint)}}


def int8_export(spec, calibration, work):
    from kdpose_tf.cli.common import load_model
    from kdpose_tf.export.tflite import export_tflite

    model = load_model(spec)
    path = Path(work) / f"{Path(str(spec)).stem}_int8.tflite"
    export_tflite(model, path, quantize="int8", representative_data=calibration,
                  keypoint_set=getattr(model.keypoint_set, "name", None))
    return path, int(model.count_params())


def main(argv=None):
    from kdpose_tf.data.datasets import calibration_crops
    from kdpose_tf.data.lsp import read_lsp
    from kdpose_tf.data.datasets import load_samples
    from kdpose_tf.evaluation import BODY12
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="LABEL=SPEC (repeatable)")
    p.add_argument("--flip-test-also", action="append", default=[], help="LABEL: also score this one with flip test")
    p.add_argument("--float-only", action="append", default=[], help="LABEL: no int8 export (teachers)")
    p.add_argument("--out", default="shipped_students")
    p.add_argument("--cards", action="store_true", help="write each shipped preset's figures into its model card")
    p.add_argument("--install", action="append", default=[], help="WORK/NAME: a recipe's preset to ship")
    p.add_argument("--limit", type=int, default=None, help="score only the first N people of each test set (smoke run)")
    p.add_argument("--int8-file", action="append", default=[],
                   help="LABEL=FILE.tflite: score this int8 file as LABEL's int8 export instead of exporting one "
                        "(e.g. a quantization-aware export, kdpose export --quantize int8-qat)")
    args = p.parse_args(argv)
    for built in args.install:
        install(Path(built))
    models = dict(m.split("=", 1) for m in args.model)
    given_int8 = dict(m.split("=", 1) for m in args.int8_file)
    data = shared_dir() / "data"
    tests = {"lsp_test": load_samples(f"lsp:{data / 'lsp'}:test"), "parse_test": load_samples(f"parse:{data / 'parse'}:test")}
    if args.limit:
        tests = {k: v[:args.limit] for k, v in tests.items()}
    calibration = calibration_crops(read_lsp(data / "lsp", "train"), (128, 96), 300)
    body = [LSP14.names.index(n) for n in BODY12]
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "protocols": {"lsp_test": "LSP protocol (box = the image's central 70 %, torso = left shoulder to right hip, "
                             "all joints counted)", "parse_test": "package PCK@0.2 (labelled joints, torso right "
                             "shoulder to left hip)"}, "rows": {}}
    hit_cache = {}
    work = Path(tempfile.mkdtemp(prefix="shipped_"))
    int8_files = {}
    entries = [("MoveNet Lightning int8", "movenet", False)]
    for label, spec in models.items():
        entries.append((label, spec, False))
        if label in args.flip_test_also:
            entries.append((f"{label} + flip test", spec, True))
    for label, spec, flip in entries:
        t0 = time.time()
        row = {"spec": spec, "flip_test": flip}
        for name, samples in tests.items():
            pred = lsp14_predictions(spec, samples, flip)
            correct, counted = hits(pred, samples, name == "lsp_test")
            hit_cache[(label, name)] = (correct, counted)
            row[name] = scores(correct, counted)
        if spec != "movenet" and not flip and label not in args.float_only and not str(spec).endswith(".tflite"):
            if label in given_int8:
                from kdpose_tf.cli.common import load_model

                path, params = Path(given_int8[label]), int(load_model(spec).count_params())
                row["int8_file"] = str(path)
            else:
                path, params = int8_export(spec, calibration, work)
            int8_files[label] = path
            row["params"] = params
            for name, samples in tests.items():
                correct, counted = hits(lsp14_predictions(str(path), samples), samples, name == "lsp_test")
                hit_cache[(f"{label} int8", name)] = (correct, counted)
                row[f"{name}_int8"] = scores(correct, counted)
                diff, ci, _, _ = paired_bootstrap(correct, hit_cache[("MoveNet Lightning int8", name)][0], counted, body)
                row[f"{name}_int8_vs_movenet_body12"] = {"diff": float(diff), "ci95": [float(ci[0]), float(ci[1])]}
        row["seconds"] = round(time.time() - t0, 1)
        results["rows"][label] = row
        print(f"{label}: " + ", ".join(f"{n} all-14 {row[n]['all14']:.1f} body-12 {row[n]['body12']:.1f}"
                                      for n in tests), flush=True)
    if int8_files:
        movenet = shared_dir() / "models" / "movenet_singlepose_lightning_int8.tflite"
        ms = interleaved_ms({"MoveNet Lightning int8": str(movenet), **{k: str(v) for k, v in int8_files.items()}},
                            rounds=7, runs=50)  # more turns than the default: one slow round cannot decide
        for label, value in ms.items():
            results["rows"].setdefault(label, {})["int8_ms"] = value
            results["rows"][label]["int8_vs_movenet"] = value / ms["MoveNet Lightning int8"]
    write_json(RESULTS / f"{args.out}.json", results)
    write_text(RESULTS / f"{args.out}.md", markdown(results))
    print(markdown(results))
    if args.cards:
        write_cards(results)


def _cell(row, key, metric):
    return f"{row[key][metric]:.1f}" if key in row else "-"


def markdown(results):
    lines = [f"# Shipped students against MoveNet Lightning ({results['machine']})", "",
             f"LSP test 1001-2000: {results['protocols']['lsp_test']}. PARSE test 101-305: "
             f"{results['protocols']['parse_test']}. int8: uint8 I/O, 300 LSP-train calibration crops (post-training), "
             "or the file named in the row's int8 column (quantization-aware); latency LiteRT XNNPACK, 1 thread, interleaved with MoveNet in the same run. Paired bootstrap: int8 student "
             "minus MoveNet, body-12, 95 % interval over the test people.", "",
             "| model | params | LSP all-14 | LSP body-12 | PARSE all-14 | PARSE body-12 | int8 LSP all-14 | "
             "int8 LSP body-12 | int8 PARSE body-12 | int8 ms | vs MoveNet | int8 - MoveNet body-12 LSP [95 %] | "
             "PARSE [95 %] |", "|" + "---|" * 13]
    for label, r in results["rows"].items():
        if r.get("int8_file"):
            label = f"{label} (int8: {Path(r['int8_file']).name})"
        boot = []
        for name in ("lsp_test", "parse_test"):
            b = r.get(f"{name}_int8_vs_movenet_body12")
            boot.append(f"{b['diff']:+.1f} [{b['ci95'][0]:+.1f}, {b['ci95'][1]:+.1f}]" if b else "-")
        lines.append(
            f"| {label} | {r['params'] / 1e6:.2f} M | " if r.get("params") else f"| {label} | - | ")
        lines[-1] += " | ".join([
            _cell(r, "lsp_test", "all14"), _cell(r, "lsp_test", "body12"), _cell(r, "parse_test", "all14"),
            _cell(r, "parse_test", "body12"), _cell(r, "lsp_test_int8", "all14"), _cell(r, "lsp_test_int8", "body12"),
            _cell(r, "parse_test_int8", "body12"),
            f"{r['int8_ms']:.2f}" if "int8_ms" in r else "-",
            f"{r['int8_vs_movenet']:.2f}x" if "int8_vs_movenet" in r else "-", *boot]) + " |"
    per = [(label, r) for label, r in results["rows"].items() if "lsp_test_int8" in r]
    if per:
        from kdpose_tf.keypoints import LSP14

        lines += ["", "## int8 per joint on LSP test (literature protocol)", "",
                  "| joint | " + " | ".join(label for label, _ in per) + " | MoveNet |", "|" + "---|" * (len(per) + 2)]
        mn = results["rows"]["MoveNet Lightning int8"]["lsp_test"]["per_joint"]
        for j in LSP14.names:
            lines.append(f"| {j} | " + " | ".join(f"{r['lsp_test_int8']['per_joint'][j]:.1f}" for _, r in per)
                         + f" | {mn[j]:.1f} |")
    return "\n".join(lines) + "\n"


def store_float16(weights_file):
    """Rewrite a Keras weights file with float16 storage (half the size; Keras casts back to the variables'
    float32 on load), its groups in HDF5's compact format (`libver="latest"`: a Keras weights file holds a
    group for each of the ~1400 layers, weightless ones too, and the old format's group costs about 1 KB).
    The model card's figures are measured on the weights as stored."""
    import h5py

    tmp = weights_file.with_suffix(".repack")
    with h5py.File(weights_file, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        def rebuild(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                new = dst.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
            else:
                new = dst.require_group(name)
            for key, value in obj.attrs.items():
                new.attrs[key] = value

        for key, value in src.attrs.items():
            dst.attrs[key] = value
        src.visititems(rebuild)
    tmp.replace(weights_file)


def install(built):
    """Copy the preset a recipe built (WORK/NAME) into the package and complete its model card."""
    import shutil

    from kdpose_tf.models.preset_utils import METADATA_FILE, _SHIPPED_ROOT
    from kdpose_tf.utils.io import write_json

    target = _SHIPPED_ROOT / "imported" / "presets" / built.name
    recipe = json.loads((target / "recipe.json").read_text())
    for f in built.iterdir():
        shutil.copy2(f, target / f.name)
    store_float16(target / "model.weights.h5")
    card = json.loads((target / METADATA_FILE).read_text())
    card.pop("date_saved", None)
    card.update(recipe["card"])
    log = built.parent / f"recipe_log_{built.name}.json"
    if log.is_file():
        steps = json.loads(log.read_text())
        card["rebuild_minutes_here"] = {k: round(v["seconds"] / 60, 1) for k, v in steps.items()
                                        if any(s["name"] == k for s in recipe["steps"])}
    write_json(target / METADATA_FILE, card)
    print(f"installed {built} as {target}")


def write_cards(results):
    """Copy each shipped preset's measured figures into its metadata.json (the model card)."""
    from kdpose_tf.models.preset_utils import METADATA_FILE, shipped_presets
    from kdpose_tf.utils.io import write_json

    shipped = shipped_presets()
    for label, r in results["rows"].items():
        if r.get("spec") not in shipped or r.get("flip_test"):
            continue
        path = shipped[r["spec"]] / METADATA_FILE
        card = json.loads(path.read_text())
        card["metrics"] = {k: r[k] for k in r if k.endswith(("_test", "_int8", "_body12"))}
        card["metrics"]["int8_ms"] = r.get("int8_ms")
        card["metrics"]["int8_vs_movenet"] = r.get("int8_vs_movenet")
        card["metrics"]["measured_on"] = results["machine"]
        card["headline"] = {
            "LSP test all-14 (int8)": round(r["lsp_test_int8"]["all14"], 1),
            "LSP body-12 (int8)": round(r["lsp_test_int8"]["body12"], 1),
            "PARSE body-12 (int8)": round(r["parse_test_int8"]["body12"], 1),
            "int8 vs MoveNet latency": round(r.get("int8_vs_movenet", float("nan")), 2),
        }
        write_json(path, card)
        print(f"wrote the figures into {path}")


if __name__ == "__main__":
    main()
