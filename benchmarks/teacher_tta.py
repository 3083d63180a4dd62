"""Teacher-side test-time augmentation on LSP: none, flip, and flip with several scales, chosen on LSP val.

The teacher runs once per training person, so its test-time augmentation costs nothing at the student's
run time; this measures what each option gives a pretrained heatmap teacher (`HeatmapTeacher(flip_test,
scales)`) under the literature's LSP protocol (`metrics.pck.LSP_PROTOCOL`), body-12 and all-14 (joints
the teacher lacks count as misses). Every option is scored on LSP val (901-1000 of the train half); LSP test
1001-2000 scores no augmentation, the flip test and the option chosen on val (the test set picks nothing).

    KDPOSE_SHARED=/work/shared .venv/bin/python benchmarks/teacher_tta.py [--teacher pp_tinypose_256x192]

Writes benchmarks/results/teacher_tta.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shipped_students import hits, scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OPTIONS = {"none": (False, (1.0,)), "flip": (True, (1.0,)), "flip + 0.9, 1, 1.1": (True, (0.9, 1.0, 1.1)),
           "flip + 1, 1.1": (True, (1.0, 1.1)), "flip + 1, 1.15, 1.3": (True, (1.0, 1.15, 1.3)),
           "flip + 0.85, 1": (True, (0.85, 1.0))}


def main(argv=None):
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.data.datasets import load_samples
    from kdpose_tf.distillation.pretrained import pretrained_teachers
    from kdpose_tf.evaluation import predict_samples
    from kdpose_tf.keypoints import LSP14
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="pp_tinypose_256x192", help="a pretrained teacher (preset, .xml, .tflite)")
    p.add_argument("--out", default="teacher_tta")
    args = p.parse_args(argv)
    lsp = shared_dir() / "data" / "lsp"
    sets = {"lsp_val": load_samples(f"lsp:{lsp}:val"), "lsp_test": load_samples(f"lsp:{lsp}:test")}
    rows = {}

    def score(label, name):
        flip, scales = OPTIONS[label]
        teacher = pretrained_teachers(args.teacher, flip_test=flip, scales=scales)[0]
        codec = HeatmapCodec(teacher.input_size, teacher.heatmap_size)
        row = rows.setdefault(label, {"flip_test": flip, "scales": list(scales),
                                      "runs_per_person": len(scales) * (2 if flip else 1)})
        t0 = time.time()
        pred, _ = predict_samples(teacher.predict_fn(codec, LSP14), sets[name], teacher.input_size, codec, LSP14,
                                  progress=False)
        row[name] = scores(*hits(pred, sets[name], True))
        row[f"{name}_seconds"] = round(time.time() - t0, 1)
        print(f"{label} on {name}: body-12 {row[name]['body12']:.1f}, all-14 {row[name]['all14']:.1f} "
              f"({row[f'{name}_seconds']} s)", flush=True)

    for label in OPTIONS:
        score(label, "lsp_val")
    best = max(rows, key=lambda k: (rows[k]["lsp_val"]["body12"], -rows[k]["runs_per_person"]))
    for label in dict.fromkeys(["none", "flip", best]):
        score(label, "lsp_test")
    results = {"teacher": args.teacher, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "chosen_on_val": best, "rows": rows}
    write_json(RESULTS / f"{args.out}.json", results)
    lines = [f"# Teacher test-time augmentation: {args.teacher} on LSP ({results['machine']})", "",
             "LSP protocol (box = the image's central 70 %, torso = left shoulder to right hip, all joints counted); val = "
             "LSP 901-1000, test = 1001-2000. Scales zoom the crop about its centre (> 1: the person larger) and "
             "the heatmaps are zoomed back and averaged (`HeatmapTeacher(scales=...)`).", "",
             "| option | runs per person | val body-12 | test body-12 | test all-14 |", "|---|---|---|---|---|"]
    for label, r in rows.items():
        mark = " (chosen on val)" if label == best else ""
        test = r.get("lsp_test")
        lines.append(f"| {label}{mark} | {r['runs_per_person']} | {r['lsp_val']['body12']:.1f} | "
                     + (f"{test['body12']:.1f} | {test['all14']:.1f} |" if test else "- | - |"))
    write_text(RESULTS / f"{args.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
