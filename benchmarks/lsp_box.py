"""How tight LSP's image-derived person box should be, chosen on LSP val (901-1000).

LSP's photos are already cropped around one person, so the literature gives the method the whole image.
A top-down model crops the box padded 1.25 and widened to its aspect ratio; from the whole image that crop
is mostly black frame around a small person. This scores, on LSP val under the literature's protocol, the
box = the image's central fraction f for several f, for the models given (the shipped student and MoveNet
Lightning by default); `kdpose_tf.data.lsp.LSP_BOX_FRACTION` is the value chosen here.

    KDPOSE_SHARED=/work/shared .venv/bin/python benchmarks/lsp_box.py [--model LABEL=SPEC ...]

Writes benchmarks/results/lsp_box.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from shipped_students import hits, lsp14_predictions, scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def main(argv=None):
    from kdpose_tf.data.lsp import image_box, read_lsp
    from kdpose_tf.utils.io import write_json, write_text
    from kdpose_tf.utils.shared import shared_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="LABEL=SPEC (default: the LSP-14 student, MoveNet)")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) for m in (args.model or ["lsp14_student_128x96=lsp14_student_128x96",
                                                           "MoveNet Lightning int8=movenet"]))
    val = read_lsp(shared_dir() / "data" / "lsp", "val")
    rows = {}
    for label, spec in models.items():
        rows[label] = {}
        for f in FRACTIONS:
            people = [dataclasses.replace(s, bbox=np.asarray(image_box(s.image_size, f), np.float32)) for s in val]
            r = scores(*hits(lsp14_predictions(spec, people), people, True))
            rows[label][str(f)] = {"all14": r["all14"], "body12": r["body12"]}
            print(f"{label} f={f}: body-12 {r['body12']:.1f} all-14 {r['all14']:.1f}", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    write_json(RESULTS / "lsp_box.json", {"machine": machine, "split": "LSP val 901-1000", "rows": rows})
    lines = ["# LSP's person box: the image's central fraction f, on LSP val 901-1000", "",
             "Literature protocol (torso = left shoulder to right hip, all joints counted); the crop is the box "
             "padded 1.25 and widened to the model's aspect ratio. body-12 / all-14 PCK@0.2.", "",
             "| model | " + " | ".join(f"f = {f}" for f in FRACTIONS) + " |", "|---|" + "---|" * len(FRACTIONS)]
    for label, r in rows.items():
        best = max(r, key=lambda k: r[k]["body12"])
        lines.append(f"| {label} | " + " | ".join(
            ("**{:.1f}** / {:.1f}" if k == best else "{:.1f} / {:.1f}").format(r[k]["body12"], r[k]["all14"])
            for k in r) + " |")
    write_text(RESULTS / "lsp_box.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
