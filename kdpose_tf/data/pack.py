"""Training packs: the people of a data set cut out with their teacher targets, for a machine without the data.

A pretrained teacher runs where its runtime is (OpenVINO, LiteRT: the CPU machine, with TensorFlow);
the student trains where the accelerator is (Keras on JAX, no TensorFlow, no data set, a few tens of
MiB carried). A pack is what the training side needs and nothing more: per person the region around
the box as a JPEG at the student's pixel density, the labels in that region's pixels and, when the
samples carry a pretrained teacher's targets (`attach_teacher_heatmaps` / `attach_teacher_keypoints`
in `kdpose_tf.distillation`), those targets in the same frame. `read_pack` gives back ordinary
`PoseSample`s whose images are the regions, so training reads a pack through the one data pipeline
(`data/pipeline.py`: augmentation, heatmap codec, teacher heatmaps warped like the labels), on any
Keras backend. On the command line:

    kdpose distill --teacher pp_tinypose_256x192 --student S --data SPEC --save-pack PACK     (CPU)
    KERAS_BACKEND=jax kdpose distill --student S --data pack:PACK                            (GPU)

Geometry: the region is the pipeline's un-augmented crop (`box_to_center_scale`, padding 1.25)
widened by `margin` (rounded to whole heatmap cells on each side), sampled at the crop's density, so
the un-augmented crop of a packed person is the region's centre, an integer pixel shift: the same
pixels as the crop of the photo (up to JPEG) and the same labels. An augmented crop is resampled
twice (photo -> region -> crop), so it comes out a little softer than one cut from the photo (about
a 3x3 Gaussian blur); augmentation that reaches beyond the region sees black, as beyond a photo's
border: a larger `margin` keeps more context for scale and rotation at the cost of size.
A heatmap teacher's maps are resampled onto a grid over the region at the teacher's own resolution
(`teacher_grid_stride`: the student's stride, or a whole fraction of it for a finer teacher; the
student's grid is then a sub-grid at whole-cell offsets), so training resamples them once, as from
the photo; they are stored as uint8 with a scale per person and joint (negative values clipped to
0). A keypoint teacher's joints are stored as coordinates (NaN where it gave none).

Layout of a pack folder:
    pack.json    format, keypoint set, input size, heatmap grid, margin, what made it (e.g. the teacher)
    pack.npz     boxes, joints, visibility, per-person ids and scalar extras; the teacher's targets
    images/      one JPEG region per person (000000.jpg, ...)

Example:
>>> write_pack(samples, "runs/pack_parse", HeatmapCodec((128, 96)))  # doctest: +SKIP
>>> people = read_pack("runs/pack_parse")  # doctest: +SKIP
>>> people[0].image_path.endswith("images/000000.jpg"), people[0].extra["teacher_heatmaps"].shape  # doctest: +SKIP
(True, (40, 30, 14))
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kdpose_tf.data.images import read_image
from kdpose_tf.data.sample import (
    TEACHER_HEATMAP_MATRIX,
    TEACHER_HEATMAP_WEIGHT,
    TEACHER_HEATMAPS,
    TEACHER_KEYPOINTS,
    TEACHER_SCORES,
    PoseSample,
)
from kdpose_tf.data.transforms import (
    affine_points,
    box_to_center_scale,
    compose_affine,
    get_affine_transform,
    invert_affine,
    warp_heatmaps,
)
from kdpose_tf.data.validation import LoadReport, SampleList, check_policy
from kdpose_tf.errors import DataError
from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.utils import io as kio

FORMAT = "kdpose_tf.pack/1"
META_NAME, ARRAYS_NAME, IMAGES_DIR = "pack.json", "pack.npz", "images"
TEACHER_KINDS = ("none", "heatmaps", "keypoints")


def region_geometry(codec, margin):
    """((RH, RW) region pixels, (ph, pw) heatmap cells between region and crop on each side) of `margin`.

    The region is the crop plus whole heatmap cells on every side, so the crop sits on the region's
    pixel and heatmap grids at integer offsets.
    """
    if not (isinstance(margin, (int, float)) and 1.0 <= margin <= 4.0):
        raise ValueError(f"margin must be a number in [1, 4] (the region's size over the crop's), got {margin!r}")
    (hm_h, hm_w), (sx, sy) = codec.heatmap_size, codec.stride
    ph, pw = int(round((margin - 1.0) / 2.0 * hm_h)), int(round((margin - 1.0) / 2.0 * hm_w))
    return (int(round((hm_h + 2 * ph) * sy)), int(round((hm_w + 2 * pw) * sx))), (ph, pw)


def teacher_grid_stride(samples, codec, heatmap_stride=None):
    """(sx, sy) region pixels per stored heatmap cell.

    Default (`heatmap_stride` None): the student's stride, or a whole fraction of it when the teacher's
    heatmaps are finer (PP-TinyPose 256x192's 64x48 maps over a 128x96 student's crop: 2 pixels a cell),
    so the maps are resampled once, as from a photo. An int (e.g. the student's 4) stores them coarser:
    smaller packs, but augmented crops resample a sharp peak twice.
    """
    stride = np.asarray(codec.stride, np.float64)
    if heatmap_stride is not None:
        if not (isinstance(heatmap_stride, (int, np.integer)) and heatmap_stride > 0):
            raise ValueError(f"heatmap_stride must be a positive int (pixels of the student's input per stored "
                             f"heatmap cell) or None, got {heatmap_stride!r}")
        return np.array([float(heatmap_stride)] * 2)
    in_h, in_w = codec.input_size
    cells = []
    for s in samples[:64]:  # one teacher for all: the first people tell its grid
        center, scale = box_to_center_scale(s.bbox, in_w / in_h)
        linear = np.asarray(s.extra[TEACHER_HEATMAP_MATRIX], np.float64)[:, :2]
        cells.append((in_w / scale[0]) / np.linalg.norm(linear, axis=1))  # crop pixels per teacher cell (x, y)
    cell = np.min(cells, axis=0)
    return stride / np.maximum(1.0, np.floor(stride / cell + 1e-6))


def _teacher_kind(samples):
    """'heatmaps', 'keypoints' or 'none': what every sample carries (DataError when only some do, or both)."""
    kinds = []
    for key, kind in ((TEACHER_HEATMAPS, "heatmaps"), (TEACHER_KEYPOINTS, "keypoints")):
        has = [key in s.extra for s in samples]
        if any(has) and not all(has):
            s = samples[has.index(False)]
            raise DataError(f"{sum(has)} of {len(samples)} samples carry teacher {kind} (extra['{key}']) but this "
                            "one does not; a pack holds one teacher's targets for every person",
                            path=s.image_path, annotation_id=s.annotation_id)
        if all(has):
            kinds.append(kind)
    if len(kinds) > 1:
        raise DataError("samples carry both teacher keypoints and teacher heatmaps; attach one kind",
                        path=samples[0].image_path, annotation_id=samples[0].annotation_id)
    return kinds[0] if kinds else "none"


def _scalar_extras(extra):
    """The JSON-able scalars of a sample's `extra` (dataset name, flags); arrays and teacher keys stay out."""
    return {k: v for k, v in extra.items() if isinstance(v, (str, bool, int, float))}


def _quantize(heatmaps):
    """float (h, w, K) -> uint8 (K, h, w) and (K,) scales (value = uint8 · scale); channel-first so the
    compressor sees each map whole."""
    hm = np.clip(np.asarray(heatmaps, np.float32), 0.0, None)
    peak = hm.max(axis=(0, 1))
    scale = np.where(peak > 0, peak / 255.0, 1.0).astype(np.float32)
    return np.round(hm / scale).astype(np.uint8).transpose(2, 0, 1), scale


def write_pack(samples, path, codec, margin=1.25, jpeg_quality=90, heatmap_stride=None, info=None, progress=True):
    """Write `samples` (and the teacher targets they carry) as a pack folder at `path` (see the module doc).

    Args:
        samples: `PoseSample`s of one keypoint set, optionally all carrying a heatmap teacher's targets
            (`extra["teacher_heatmaps"]`, `"teacher_heatmap_matrix"`, `"teacher_heatmap_weight"`) or
            a keypoint teacher's joints (`extra["teacher_keypoints"]`, `"teacher_scores"`).
        path: the folder to write (replaced atomically when it exists).
        codec: the student's `HeatmapCodec`: its input size sets the pixel density.
        margin: region size over the crop's, in [1, 4]. Default 1.25.
        jpeg_quality: JPEG quality of the regions. Default 90.
        heatmap_stride: pixels (at the student's input density) per stored teacher-heatmap cell; None
            (default): the teacher's own resolution, up to the student's stride (`teacher_grid_stride`).
        info: JSON-able dict recorded in pack.json (e.g. the teacher that made the targets).
        progress: tqdm progress bar. Default True.

    Returns:
        the pack's metadata (what pack.json holds).
    """
    samples = list(samples)
    if not samples:
        raise ValueError("write_pack needs at least one PoseSample, got none")
    if not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100):
        raise ValueError(f"jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}")
    keypoint_set = get_keypoint_set(samples[0].keypoint_set)
    for s in samples:
        if s.keypoint_set != keypoint_set.name or s.num_keypoints != keypoint_set.num_keypoints:
            raise DataError(f"a pack holds one keypoint set: this sample is {s.keypoint_set} with {s.num_keypoints} "
                            f"joints, the first is {keypoint_set.name}", path=s.image_path,
                            annotation_id=s.annotation_id)
    kind = _teacher_kind(samples)
    (in_h, in_w), (rh, rw) = codec.input_size, region_geometry(codec, margin)[0]
    stride = teacher_grid_stride(samples, codec, heatmap_stride) if kind == "heatmaps" else codec.stride
    grid = (int(round(rh / stride[1])), int(round(rw / stride[0])))
    to_grid = np.array([[1.0 / stride[0], 0.0, 0.0], [0.0, 1.0 / stride[1], 0.0]])
    n, k = len(samples), keypoint_set.num_keypoints
    arrays = {"bbox": np.zeros((n, 4), np.float32), "keypoints": np.zeros((n, k, 2), np.float32),
              "visibility": np.zeros((n, k), np.float32), "area": np.full(n, np.nan, np.float32),
              "head_size": np.full(n, np.nan, np.float32)}
    if kind == "heatmaps":
        arrays.update(teacher_heatmaps=np.zeros((n, k, *grid), np.uint8), teacher_scale=np.zeros((n, k), np.float32),
                      teacher_weight=np.zeros((n, k), np.float32))
    elif kind == "keypoints":
        arrays.update(teacher_keypoints=np.zeros((n, k, 2), np.float32), teacher_scores=np.zeros((n, k), np.float32))
    people = []
    with kio.atomic_dir(path) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        last_path, image = None, None
        for i, s in enumerate(tqdm(samples, desc="pack", unit="person", disable=not progress)):
            if s.image_path != last_path:
                last_path, image = s.image_path, read_image(s.image_path)
            center, scale = box_to_center_scale(s.bbox, in_w / in_h)
            density = in_w / scale[0]
            M = get_affine_transform(center, scale * np.array([rw / in_w, rh / in_h]), 0.0, (rh, rw))
            region = cv2.warpAffine(image, M, (rw, rh), flags=cv2.INTER_LINEAR, borderValue=0)
            ok, jpeg = cv2.imencode(".jpg", region[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:
                raise DataError("JPEG encoding of the person's region failed", path=s.image_path,
                                annotation_id=s.annotation_id)
            (tmp / IMAGES_DIR / f"{i:06d}.jpg").write_bytes(jpeg.tobytes())
            x0, y0 = affine_points(s.bbox[:2], M)
            arrays["bbox"][i] = (x0, y0, s.bbox[2] * density, s.bbox[3] * density)
            arrays["keypoints"][i] = affine_points(s.keypoints, M)
            arrays["visibility"][i] = s.visibility
            if s.area is not None:
                arrays["area"][i] = s.area * density ** 2
            if s.head_size is not None:
                arrays["head_size"][i] = s.head_size * density
            if kind == "heatmaps":  # teacher grid -> image -> region -> region grid
                to_image = invert_affine(s.extra[TEACHER_HEATMAP_MATRIX])
                to_region_grid = compose_affine(to_grid, compose_affine(M, to_image))
                hm = warp_heatmaps(np.asarray(s.extra[TEACHER_HEATMAPS], np.float32), to_region_grid, grid)
                arrays["teacher_heatmaps"][i], arrays["teacher_scale"][i] = _quantize(hm)
                arrays["teacher_weight"][i] = s.extra[TEACHER_HEATMAP_WEIGHT]
            elif kind == "keypoints":
                arrays["teacher_keypoints"][i] = affine_points(np.asarray(s.extra[TEACHER_KEYPOINTS], np.float64), M)
                arrays["teacher_scores"][i] = s.extra.get(TEACHER_SCORES, np.ones(k))
            people.append(json.dumps(kio.jsonable({"image": Path(str(s.image_path)).name, "image_id": s.image_id,
                                                   "annotation_id": s.annotation_id,
                                                   "extra": _scalar_extras(s.extra)}), default=str))
        arrays["people"] = np.array(people)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        (tmp / ARRAYS_NAME).write_bytes(buf.getvalue())
        meta = {"format": FORMAT, "keypoint_set": keypoint_set.name, "num_people": n, "input_size": [in_h, in_w],
                "heatmap_stride": [float(v) for v in stride], "region_size": [rh, rw], "margin": float(margin),
                "teacher": kind, "jpeg_quality": jpeg_quality, "info": kio.jsonable(info or {})}
        kio.write_json(tmp / META_NAME, meta)
    return meta


def read_pack_meta(path):
    """The metadata of the pack folder `path` (pack.json), checked; DataError naming the file otherwise."""
    meta_path = Path(path) / META_NAME
    if not meta_path.is_file():
        raise DataError(f"not a pack folder: no {META_NAME} (write one with kdpose distill ... --save-pack)",
                        path=path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON ({e})", path=meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"format is {got!r}; expected {FORMAT!r}", path=meta_path, field="format")
    if meta.get("teacher") not in TEACHER_KINDS:
        raise DataError(f"teacher is {meta.get('teacher')!r}; expected one of {TEACHER_KINDS}", path=meta_path,
                        field="teacher")
    return meta


def read_pack(path, on_bad_sample="skip"):
    """The people of the pack folder `path` as a `SampleList` of `PoseSample` (images: the regions).

    Samples carry the packed teacher targets in `extra` exactly as the attach functions leave them
    (heatmaps float16 (h, w, K) with the matrix region pixels -> their grid and the weight; or
    joints and scores), and `extra["pack"]` = the folder. Missing region files are left to
    `load_dataset`'s image check (`on_bad_sample`).
    """
    check_policy(on_bad_sample)
    path = Path(path)
    meta = read_pack_meta(path)
    arrays_path = path / ARRAYS_NAME
    try:
        arrays = dict(np.load(arrays_path, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the pack's arrays ({e})", path=arrays_path) from None
    keypoint_set = get_keypoint_set(meta["keypoint_set"])
    n, k = int(meta["num_people"]), keypoint_set.num_keypoints
    expected = {"bbox": (n, 4), "keypoints": (n, k, 2), "visibility": (n, k), "people": (n,)}
    if meta["teacher"] == "heatmaps":
        expected.update(teacher_heatmaps=(n, k), teacher_scale=(n, k), teacher_weight=(n, k))
    elif meta["teacher"] == "keypoints":
        expected.update(teacher_keypoints=(n, k, 2), teacher_scores=(n, k))
    for key, shape in expected.items():
        got = arrays[key].shape if key in arrays else None
        if got is None or got[:len(shape)] != shape:
            raise DataError(f"{key} has shape {got}; expected {shape} ({n} people, {k} joints)", path=arrays_path,
                            field=key)
    to_grid = np.array([[1.0 / meta["heatmap_stride"][0], 0.0, 0.0], [0.0, 1.0 / meta["heatmap_stride"][1], 0.0]])
    rh, rw = meta["region_size"]
    out = []
    for i in range(n):
        person = json.loads(str(arrays["people"][i]))
        extra = {**person["extra"], "pack": str(path), "source_image": person["image"]}
        if meta["teacher"] == "heatmaps":
            hm = arrays["teacher_heatmaps"][i].transpose(1, 2, 0).astype(np.float32) * arrays["teacher_scale"][i]
            extra.update({TEACHER_HEATMAPS: hm.astype(np.float16), TEACHER_HEATMAP_MATRIX: to_grid,
                          TEACHER_HEATMAP_WEIGHT: arrays["teacher_weight"][i]})
        elif meta["teacher"] == "keypoints":
            extra.update({TEACHER_KEYPOINTS: arrays["teacher_keypoints"][i].astype(np.float64),
                          TEACHER_SCORES: arrays["teacher_scores"][i]})
        area, head = float(arrays["area"][i]), float(arrays["head_size"][i])
        out.append(PoseSample(
            image_path=str(path / IMAGES_DIR / f"{i:06d}.jpg"), bbox=arrays["bbox"][i],
            keypoints=arrays["keypoints"][i], visibility=arrays["visibility"][i], keypoint_set=keypoint_set.name,
            image_id=person["image_id"], annotation_id=person["annotation_id"], image_size=(rw, rh),
            area=None if np.isnan(area) else area, head_size=None if np.isnan(head) else head, extra=extra))
    return SampleList(out, LoadReport(str(path), kept=n))
