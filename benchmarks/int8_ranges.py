"""Where a shipped student's int8 accuracy goes, and what each step of the int8-qat export gives back.

One student (default: the shipped `lsp14_student_128x96`), in one run on this CPU, every variant scored by
the same code as `shipped_students.py` (LSP test 1001-2000 under the literature's protocol, PARSE 101-305
with the package's PCK) and on LSP 901-1000, the split the choice is made on (those people are in the
student's training set: there the figure says how well int8 keeps the float model, not how it generalises):

- float: the Keras model;
- int8: post-training quantization (activation equalization, the converter's min / max ranges);
- int8-qat at 0 epochs (the fake-quant clone converted untrained): min / max ranges, "mse" ranges
  (`kdpose_tf.export.qat.calibrate`), equalization + "mse";
- int8-qat after `--qat-epochs` of quantization-aware distillation from the float model: min / max ranges
  with their moving average (TFMOT's scheme), frozen "mse" ranges, equalization + frozen "mse" ranges.

Calibration and fine-tuning data: LSP train 1-1000 + PARSE train 1-100 (300 calibration crops), as the
recipe's `int8` step. Per variant: seconds to build it.

    KDPOSE_SHARED=/work/shared .venv/bin/python benchmarks/int8_ranges.py [--model lsp14_student_128x96]
        [--qat-epochs 2] [--variants ...] [--limit N] [--out int8_ranges]

Writes benchmarks/results/<out>.{json,md}.
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

from shipped_students import hits, lsp14_predictions, scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# label -> (quantize, qat epochs or None, equalize, range method)
VARIANTS = {
    "float": (None, None, False, None),
    "int8 PTQ": ("int8", None, True, None),
    "QAT 0 ep, min/max": ("int8-qat", 0, False, "minmax"),
    "QAT 0 ep, mse": ("int8-qat", 0, False, "mse"),
    "QAT 0 ep, eq + mse": ("int8-qat", 0, True, "mse"),
    "QAT, min/max (EMA)": ("int8-qat", "epochs", False, "minmax"),
    "QAT, mse (frozen)": ("int8-qat", "epochs", False, "mse"),
    "QAT, eq + mse (frozen)": ("int8-qat", "epochs", True, "mse"),
}


def build(model, label, data, calibration, epochs, work):
    """The .tflite file of one variant (the float model itself for "float")."""
    from kdpose_tf.distillation.qat_finetune import quantization_aware_finetune
    from kdpose_tf.export.tflite import export_tflite

    quantize, qat_epochs, equalize, ranges = VARIANTS[label]
    path = Path(work) / (label.replace(" ", "_").replace("/", "").replace(",", "").replace("+", "") + ".tflite")
    export_model = model
    if quantize == "int8-qat":
        qat_epochs = epochs if qat_epochs == "epochs" else qat_epochs
        export_model = quantization_aware_finetune(model, data.samples, data.keypoint_set, qat_epochs, calibration,
                                                   equalize=equalize, range_method=ranges)
    export_tflite(export_model, path, quantize=quantize, representative_data=calibration, equalize=equalize,
                  keypoint_set=model.keypoint_set)
    return path


def markdown(results):
    tests = list(results["test_sets"])
    lines = [f"# int8 of {results['model']}: where the accuracy goes", "",
             f"{results['machine']}; calibration / QAT data {results['calibration_data']}, "
             f"{results['qat_epochs']} QAT epoch(s) where it says QAT without '0 ep'. "
             "PCK@0.2 all-14 / body-12; LSP under the literature's protocol, PARSE with the package's PCK. "
             "LSP 901-1000 (choice) are training people of the student.", "",
             "| variant | " + " | ".join(f"{t} all-14 | {t} body-12" for t in tests) + " | build s |",
             "|---|" + "---|---|" * len(tests) + "---|"]
    for label, row in results["rows"].items():
        cells = " | ".join(f"{row[t]['all14']:.1f} | {row[t]['body12']:.1f}" for t in tests)
        lines.append(f"| {label} | {cells} | {row['build_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from kdpose_tf.cli.common import load_data, load_model
    from kdpose_tf.data.datasets import calibration_crops, load_samples
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lsp14_student_128x96", help="preset name, preset folder or .keras")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--limit", type=int, default=None, help="first N people of each test set (smoke run)")
    p.add_argument("--out", default="int8_ranges")
    p.add_argument("--fresh", action="store_true", help="rebuild every variant (default: keep the rows of an "
                                                        "earlier run of the same model, epochs and sets)")
    args = p.parse_args(argv)
    data_dir = shared_dir() / "data"
    spec = f"lsp:{data_dir / 'lsp'}:train+parse:{data_dir / 'parse'}:train"
    data = load_data(spec)
    model = load_model(args.model)
    calibration = calibration_crops(data.samples, tuple(model.input_size), 300)
    tests = {"LSP 901-1000": load_samples(f"lsp:{data_dir / 'lsp'}:val"),
             "LSP test": load_samples(f"lsp:{data_dir / 'lsp'}:test"),
             "PARSE test": load_samples(f"parse:{data_dir / 'parse'}:test")}
    if args.limit:
        tests = {k: v[:args.limit] for k, v in tests.items()}
    results = {"model": args.model, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "calibration_data": "LSP train 1-1000 + PARSE train 1-100, 300 crops", "qat_epochs": args.qat_epochs,
               "test_sets": list(tests), "rows": {}}
    earlier = RESULTS / f"{args.out}.json"
    if earlier.is_file() and not args.fresh:  # a stopped or extended run: keep what it measured
        old = json.loads(earlier.read_text())
        if all(old.get(k) == results[k] for k in ("model", "qat_epochs", "test_sets")) and not args.limit:
            results["rows"] = old["rows"]
    work = Path(tempfile.mkdtemp(prefix="int8_ranges_"))
    for label in args.variants:
        if label in results["rows"]:
            print(f"{label}: kept from {earlier.name}")
            continue
        t0 = time.time()
        target = args.model if VARIANTS[label][0] is None else str(build(model, label, data, calibration,
                                                                          args.qat_epochs, work))
        row = {"build_seconds": round(time.time() - t0, 1)}
        for name, samples in tests.items():
            row[name] = scores(*hits(lsp14_predictions(target, samples), samples, name.startswith("LSP")))
        results["rows"][label] = row
        results["rows"] = {k: results["rows"][k] for k in VARIANTS if k in results["rows"]}
        print(f"{label}: " + ", ".join(f"{n} {row[n]['all14']:.1f} / {row[n]['body12']:.1f}" for n in tests)
              + f" ({row['build_seconds']:.0f} s to build)", flush=True)
        write_json(RESULTS / f"{args.out}.json", results)  # after each variant: a stopped run keeps what it had
    write_text(RESULTS / f"{args.out}.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
