"""Where do the teacher and the labels disagree? PP-TinyPose 256x192's heatmap peaks vs the training labels.

Heatmap KD blends the teacher's heatmaps with the ground truth (FPD); where the two put a joint in
different places the blend is a compromise between two conventions. This script measures, per joint
and per source (LSPET's crowd-sourced labels vs PARSE 1-100 + BUFFY + coco_mini), the offset of the
teacher's decoded heatmap peak (the students' `HeatmapCodec`) from the labelled joint on the training crops that `gpu_pack.py` packed
(128x96 crops, teacher heatmaps on the student's 32x24 grid, LSP-14 order): median distance, mean
dx / dy (input pixels; +dy = the teacher lower in the image) and the share of joints more than
2 heatmap pixels (8 input pixels) apart. Only joints that are labelled and where the teacher's peak
is >= 0.1 count.

    KDPOSE_SHARED=/work/shared PYTHONPATH=. python benchmarks/teacher_label_agreement.py [--pack .gpu/pack.npz]

(the pack: ``python benchmarks/gpu_pack.py --out .gpu/pack.npz``, about 3 minutes here). Writes
benchmarks/results/teacher_label_agreement.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec  # noqa: E402
from kdpose_tf.keypoints import LSP14  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def agreement(hm, scale, kp, vis, input_size, min_peak=0.1):
    """Per joint: (n, median distance, mean dx, mean dy, share > 2 heatmap px); distances in input pixels.

    hm: (N, K, h, w) uint8 teacher heatmaps, scale: (N, K) their de-quantization factors,
    kp: (N, K, 2) labelled joints in input pixels, vis: (N, K) > 0 where labelled. The teacher's joints
    are decoded by the students' own `HeatmapCodec` (argmax + quarter shift, input pixels).
    """
    codec = HeatmapCodec(input_size)
    k = hm.shape[1]
    maps = (hm.astype(np.float32) * scale[:, :, None, None]).transpose(0, 2, 3, 1)
    joints, peak = codec.decode(maps)
    dx, dy = joints[..., 0] - kp[..., 0], joints[..., 1] - kp[..., 1]
    far = 2 * codec.input_size[0] / codec.heatmap_size[0]  # 2 heatmap pixels, in input pixels
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
    ap.add_argument("--pack", default=str(Path(__file__).resolve().parents[1] / ".gpu" / "pack.npz"))
    ap.add_argument("--out", default=str(RESULTS / "teacher_label_agreement"))
    args = ap.parse_args(argv)
    if not Path(args.pack).is_file():
        raise SystemExit(f"{args.pack}: no pack; write it with benchmarks/gpu_pack.py --out {args.pack}")
    d = np.load(args.pack)
    sources = [str(s) for s in d["sources"]]
    taught = d["hm_pp256_weight"] > 0
    groups = {"LSPET (crowd-sourced)": d["source"] == sources.index("lspet"),
              "PARSE 1-100 + BUFFY + coco_mini": d["source"] != sources.index("lspet")}
    results = {"pack": str(args.pack), "input_size": d["input_size"].tolist(), "groups": {}}
    for name, sel in groups.items():
        rows = agreement(d["hm_pp256"][sel], d["hm_pp256_scale"][sel], d["kp"][sel], d["vis"][sel],
                         tuple(int(v) for v in d["input_size"]))
        results["groups"][name] = {LSP14.names[j]: r for j, r in enumerate(rows) if taught[j]}
    h, w = results["input_size"]
    lines = ["# PP-TinyPose 256x192's heatmap peaks vs the training labels", "",
             f"Training crops of `gpu_pack.py` ({h}x{w}, LSP-14), teacher heatmaps on the student's {h // 4}x{w // 4} "
             "grid. Offsets in input pixels (teacher minus label; +dy = teacher lower in the image); "
             "far = share more than 2 heatmap pixels (8 input pixels) apart.", ""]
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
