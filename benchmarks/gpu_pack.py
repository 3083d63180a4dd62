"""Pack the issue-11 training set for GPU training: base crops, labels and teacher outputs in one .npz.

The device machine that trains the students (benchmarks/gpu_train.py) has no TensorFlow, no
OpenVINO and no data; a call carries at most 64 MiB. This script runs here (CPU) once and writes
everything the trainer needs:

- the training people: LSPET (8000, LSP-14, ``visible = 0`` = unlabelled) + PARSE 1-100 + BUFFY +
  coco_mini mapped to LSP-14 (`kdpose_tf.data.datasets.real_benchmark_split`);
- per person the un-augmented base crop (box of the labelled joints, padding 1.25, student input
  size, default 128x96) as JPEG bytes, and the ground-truth joints in crop pixels + visibility;
- teacher heatmaps on the same region, on the student's heatmap grid (input / 4), LSP-14 channel
  order, uint8 (N, K, h, w) with a per-(person, joint) scale (`quantize`): PP-TinyPose 256x192 (run on the region at 256x192,
  its 64x48 heatmaps sampled at every second pixel: student heatmap pixel i <-> 256-crop pixel 8i
  <-> teacher heatmap pixel 2i, the codec's ``x / stride`` convention) and PP-TinyPose 128x96
  (run on the base crop itself, its 32x24 grid is the student's); COCO joints mapped by name,
  neck / head_top have no COCO joint (teacher weight 0);
- MoveNet Lightning int8 joints (`KeypointTeacher` + `attach_teacher_keypoints`, score >= 0.3)
  in crop pixels, NaN where absent.

Usage:
    KDPOSE_SHARED=/work/shared PYTHONPATH=. python benchmarks/gpu_pack.py --out /work/main/.gpu/pack.npz
    ... --limit 64   (a small smoke pack: the first 64 people of each source)
    ... --student-init pp_tinypose_128x96 --out /work/main/.gpu/pp_tinypose_128x96_lsp14.keras
        (an imported pretrained student for gpu_train.py --init)
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import cv2
import numpy as np

from kdpose_tf.data.datasets import real_benchmark_split
from kdpose_tf.data.images import read_image
from kdpose_tf.data.lspet import read_lspet
from kdpose_tf.data.sample import TEACHER_KEYPOINTS
from kdpose_tf.data.transforms import affine_points, box_to_center_scale, get_affine_transform
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher, map_heatmaps
from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, attach_teacher_keypoints
from kdpose_tf.keypoints import COCO17, LSP14, joint_mapping
from kdpose_tf.utils.io import write_bytes
from kdpose_tf.utils.shared import shared_dir

PADDING = 1.25
QUANT_FLOOR = 6
SOURCES = ("lspet", "parse", "buffy", "coco")
PP_PRESETS = {"pp256": "pp_tinypose_256x192", "pp128": "pp_tinypose_128x96"}


def source_of(sample):
    name = str(sample.extra.get("dataset", ""))
    if name not in SOURCES:
        raise ValueError(f"{sample.image_path}: extra['dataset'] is {name!r}; expected one of {SOURCES}")
    return name


def quantize(hm, floor=QUANT_FLOOR):
    """float (N, h, w, K) -> uint8 (N, K, h, w) and per-(N, K) scale (value = uint8 * scale).

    Negative values and values under `floor`/255 of the joint's peak become 0 (the tails compress
    to nothing: about 0.9 KB a person instead of 1.8 KB); channel-first so zlib sees each map whole.
    """
    hm = np.clip(hm, 0.0, None)
    peak = hm.max(axis=(1, 2))
    scale = np.where(peak > 0, peak / 255.0, 1.0).astype(np.float32)
    q = np.round(hm / scale[:, None, None, :])
    q[q < floor] = 0
    return np.ascontiguousarray(q.astype(np.uint8).transpose(0, 3, 1, 2)), scale


def pack(samples, input_size, models, jpeg_quality, progress_every=500):
    h, w = input_size
    movenet = KeypointTeacher(models / "movenet_singlepose_lightning_int8.tflite")
    t0 = time.time()
    with_mn = attach_teacher_keypoints(samples, movenet, LSP14, min_score=0.3, progress=False)
    print(f"MoveNet: {len(samples)} people in {time.time() - t0:.0f} s", flush=True)
    teachers = {k: HeatmapTeacher.from_preset(PP_PRESETS[k]) for k in PP_PRESETS}
    n, k = len(samples), LSP14.num_keypoints
    out = {
        "kp": np.zeros((n, k, 2), np.float32), "vis": np.zeros((n, k), np.float32),
        "mn_kp": np.full((n, k, 2), np.nan, np.float32), "mn_score": np.zeros((n, k), np.float32),
        "source": np.zeros(n, np.int8),
    }
    hms = {key: [] for key in PP_PRESETS}
    jpegs = []
    last_path, image = None, None
    chunk = 64
    t0 = time.time()
    for start in range(0, n, chunk):
        part = with_mn[start : start + chunk]
        c128, c256 = [], []
        for j, s in enumerate(part):
            i = start + j
            if s.image_path != last_path:
                last_path, image = s.image_path, read_image(s.image_path)
            center, scale = box_to_center_scale(s.bbox, w / h, PADDING)
            M = get_affine_transform(center, scale, 0.0, (h, w))
            M2 = get_affine_transform(center, scale, 0.0, (2 * h, 2 * w))
            crop = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
            c128.append(crop)
            c256.append(cv2.warpAffine(image, M2, (2 * w, 2 * h), flags=cv2.INTER_LINEAR, borderValue=0))
            ok, enc = cv2.imencode(".jpg", crop[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {s.image_path}")
            jpegs.append(enc.reshape(-1))
            vis = s.visibility > 0
            out["kp"][i] = np.where(vis[:, None], affine_points(s.keypoints, M), 0.0)
            out["vis"][i] = s.visibility
            tk = np.asarray(s.extra[TEACHER_KEYPOINTS], np.float64)
            out["mn_kp"][i] = affine_points(tk, M)  # NaN stays NaN
            out["mn_score"][i] = s.extra["teacher_scores"]
            out["source"][i] = SOURCES.index(source_of(s))
        hm256 = teachers["pp256"].predict_crops(np.stack(c256))[:, ::2, ::2]
        hm128 = teachers["pp128"].predict_crops(np.stack(c128))
        for key, hm in (("pp256", hm256), ("pp128", hm128)):
            if hm.shape[1:3] != (h // 4, w // 4):
                raise ValueError(f"{key}: heatmaps {hm.shape[1:3]} do not match the student grid {(h // 4, w // 4)}")
            hms[key].append(map_heatmaps(hm, COCO17, LSP14)[0])  # zeros where COCO lacks the joint
        if (start // chunk) % max(1, progress_every // chunk) == 0:
            print(f"  {start + len(part)}/{n} people, {time.time() - t0:.0f} s", flush=True)
    offsets = np.cumsum([0] + [len(b) for b in jpegs]).astype(np.int64)
    out["jpeg"], out["jpeg_offsets"] = np.concatenate(jpegs), offsets
    teacher_weight = np.zeros(k, np.float32)
    teacher_weight[list(joint_mapping(COCO17, LSP14).values())] = 1.0
    for key in PP_PRESETS:
        out[f"hm_{key}"], out[f"hm_{key}_scale"] = quantize(np.concatenate(hms[key]))
        out[f"hm_{key}_weight"] = teacher_weight
    out["sources"] = np.array(SOURCES)
    out["input_size"] = np.array(input_size, np.int32)
    out["flip_index"] = np.array(LSP14.flip_index, np.int32)
    return out


def write_student_init(preset, input_size, path):
    """An imported pretrained student with an LSP-14 head as one `.keras` file (gpu_train.py --init).

    The GPU machine has no OpenVINO to import the IR; the file carries the graph and its weights.
    """
    from kdpose_tf.models.imported.openvino_import import import_pose_model

    student = import_pose_model(preset, keypoint_set="lsp14", input_size=tuple(input_size), name="student")
    tmp = Path(path).with_suffix(".tmp.keras")
    student.save(str(tmp))
    tmp.replace(path)
    print(f"wrote {path}: {preset} at {tuple(input_size)}, {student.count_params() / 1e6:.2f} M params")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output .npz (put it in an ignored folder, never commit it)")
    ap.add_argument("--input-size", type=int, nargs=2, default=(128, 96), metavar=("H", "W"))
    ap.add_argument("--limit", type=int, default=0, help="first N people of each source (smoke pack); 0 = all")
    ap.add_argument("--jpeg-quality", type=int, default=80)
    ap.add_argument("--student-init", metavar="PRESET",
                    help="instead of a pack: write PRESET (e.g. pp_tinypose_128x96) imported with an LSP-14 head "
                         "to --out (.keras), the starting point of gpu_train.py --init")
    args = ap.parse_args()
    if args.student_init:
        return write_student_init(args.student_init, args.input_size, args.out)
    root = shared_dir()
    train, _ = real_benchmark_split(root)
    lspet = list(read_lspet(root / "data" / "lspet", on_bad_sample="skip"))
    samples = lspet + list(train)
    if args.limit:
        by_source = {}
        for s in samples:
            by_source.setdefault(source_of(s), []).append(s)
        samples = [s for group in by_source.values() for s in group[: args.limit]]
    counts = {src: sum(source_of(s) == src for s in samples) for src in SOURCES}
    print(f"{len(samples)} training people: {counts}", flush=True)
    data = pack(samples, tuple(args.input_size), root / "models", args.jpeg_quality)
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    write_bytes(args.out, buf.getvalue())
    size = Path(args.out).stat().st_size / 2**20
    parts = {key: data[key].nbytes / 2**20 for key in ("jpeg", "hm_pp256", "hm_pp128")}
    print(f"wrote {args.out}: {size:.1f} MiB ({', '.join(f'{k} {v:.1f} MiB raw' for k, v in parts.items())})")


if __name__ == "__main__":
    main()
