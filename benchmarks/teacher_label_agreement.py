"""Where do the teacher and the labels disagree? PP-TinyPose 256x192's heatmap peaks vs the training labels.

Heatmap KD blends the teacher's heatmaps with the ground truth (FPD); where the two put a joint in
different places the blend is a compromise between two conventions. This script measures, per joint
and per source (LSPET's crowd-sourced labels vs PARSE 1-100 + BUFFY + coco_mini), the offset of the
teacher's decoded heatmap peak (`HeatmapCodec` on the pack's heatmap grid) from the labelled joint
on the training people of a pack (`kdpose_tf.data.pack`: regions at the student's 128x96 density,
the teacher's heatmaps as packed, LSP-14 order): median distance, mean dx / dy (input pixels; +dy =
the teacher lower in the image) and the share of joints more than 2 student heatmap pixels
(8 input pixels) apart. Only joints that are labelled and where the teacher's peak is >= 0.1 count.

    KDPOSE_SHARED=/work/shared PYTHONPATH=. python benchmarks/teacher_label_agreement.py [--pack .gpu/pp256]

(the pack: the training set of `gpu_train.py`'s docstring, ``kdpose distill --teacher pp_tinypose_256x192
... --save-pack .gpu/pp256``). Writes benchmarks/results/teacher_label_agreement.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec  # noqa: E402
from kdpose_tf.data.datasets import load_dataset  # noqa: E402
from kdpose_tf.data.sample import TEACHER_HEATMAP_WEIGHT, TEACHER_HEATMAPS  # noqa: E402
from kdpose_tf.keypoints import LSP14  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def agreement(maps, kp, vis, region_size, input_size, min_peak=0.1):
    """Per joint: (n, median distance, mean dx, mean dy, share > 2 heatmap px); distances in input pixels.

    maps: (N, h, w, K) teacher heatmaps over the packed regions (`region_size`, pixels at the
    student's `input_size` density), kp: (N, K, 2) labelled joints in region pixels, vis: (N, K) > 0
    where labelled. The teacher's joints are decoded by `HeatmapCodec` (argmax + quarter shift).
    """
    codec = HeatmapCodec(region_size, maps.shape[1:3])
    k = maps.shape[-1]
    joints, peak = codec.decode(maps)
    dx, dy = joints[..., 0] - kp[..., 0], joints[..., 1] - kp[..., 1]
    far = 2 * HeatmapCodec(input_size).stride[1]  # 2 student heatmap pixels, in input pixels
    rows = []
    for j in range(k):
        m = (vis[:, j] > 0) & (peak[:, j] >= min_peak)
        d = np.hypot(dx[m, j], dy[m, j])
        rows.append({"n": int(m.sum()), "median": float(np.median(d)) if m.any() else float("nan"),
                     "dx": float(dx[m, j].mean()) if m.any() else float("nan"),
                     "dy": float(dy[m, j].mean()) if m.any() else float("nan"),
                     "far": float(100 * (d > far).mean()) if m.any() else float("nan")})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default=str(Path(__file__).resolve().parents[1] / ".gpu" / "pp256"))
    ap.add_argument("--out", default=str(RESULTS / "teacher_label_agreement"))
    args = ap.parse_args(argv)
    if not (Path(args.pack) / "pack.json").is_file():
        raise SystemExit(f"{args.pack}: no pack; write it with kdpose distill --teacher pp_tinypose_256x192 ... "
                         f"--save-pack {args.pack} (see gpu_train.py)")
    data = load_dataset(f"pack:{args.pack}")
    people = list(data.samples)
    if data.info["teacher"] != "heatmaps":
        raise SystemExit(f"{args.pack}: packed with a {data.info['teacher']} teacher; this compares heatmaps")
    maps = np.stack([s.extra[TEACHER_HEATMAPS] for s in people]).astype(np.float32)
    kp, vis = np.stack([s.keypoints for s in people]), np.stack([s.visibility for s in people])
    taught = people[0].extra[TEACHER_HEATMAP_WEIGHT] > 0
    lspet = np.array([s.extra.get("dataset") == "lspet" for s in people])
    groups = {"LSPET (crowd-sourced)": lspet, "PARSE 1-100 + BUFFY + coco_mini": ~lspet}
    results = {"pack": str(args.pack), "input_size": data.info["input_size"], "groups": {}}
    for name, sel in groups.items():
        rows = agreement(maps[sel], kp[sel], vis[sel], tuple(data.info["region_size"]), tuple(data.info["input_size"]))
        results["groups"][name] = {LSP14.names[j]: r for j, r in enumerate(rows) if taught[j]}
    h, w = results["input_size"]
    gh, gw = maps.shape[1:3]
    lines = ["# PP-TinyPose 256x192's heatmap peaks vs the training labels", "",
             f"Training people of a pack (`kdpose distill --save-pack`; {h}x{w} crops, LSP-14), teacher heatmaps "
             f"as packed ({gh}x{gw} over each person's region). Offsets in input pixels (teacher minus label; +dy = "
             "teacher lower in the image); far = share more than 2 student heatmap pixels (8 input pixels) apart.", ""]
    names = list(groups)
    lines += ["| joint | " + " | ".join(f"{g}: n / median / mean dx, dy / far %" for g in names) + " |",
              "|---|" + "---|" * len(names)]
    for joint in results["groups"][names[0]]:
        cells = []
        for g in names:
            r = results["groups"][g][joint]
            cells.append(f"{r['n']} / {r['median']:.1f} / {r['dx']:+.1f}, {r['dy']:+.1f} / {r['far']:.0f}")
        lines.append(f"| {joint} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    write_json(f"{args.out}.json", results)
    write_text(f"{args.out}.md", md)
    print(md)


if __name__ == "__main__":
    main()
