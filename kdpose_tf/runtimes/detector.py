"""Person detection for top-down pose on photos and video frames: RTMDet-nano (person only) through OpenVINO.

The detector is an MMDeploy export (``end2end.onnx``, NMS inside the graph: outputs ``dets`` (1, N, 5) =
x1, y1, x2, y2, score in the padded input frame, and ``labels`` (1, N)) with the preprocessing its
``pipeline.json`` states, read from that file rather than assumed: the image in BGR, resized keeping its
aspect ratio so that it fits the Resize size (320 x 320: the long side becomes 320, OpenCV bilinear as
MMCV's ``imrescale``), padded at the right and bottom to the Pad size with the pad value (114), then
normalised with the Normalize mean / std. Boxes are divided by the per-axis resize factors, which maps
them back to image pixels exactly (the padding is at the far edges), and clipped to the image.

The model file is not part of the package: it is found under the shared folder
(``$KDPOSE_SHARED/models/rtmdet_nano_person/end2end.onnx``, `DEFAULT_DETECTOR`) or given by path; its
``pipeline.json`` must sit beside it. RTMDet-nano is OpenMMLab's (Apache-2.0).

Example:
    >>> detector = PersonDetector()                                       # doctest: +SKIP
    >>> boxes, scores = detector(rgb_image)   # (N, 4) x, y, w, h pixels, (N,) best first  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from kdpose_tf.errors import DataError, ModelFileError
from kdpose_tf.runtimes import openvino
from kdpose_tf.utils.shared import shared_dir

# where the detector lives inside the shared folder (utils/shared.py), and the config it needs beside it
DEFAULT_DETECTOR = Path("models") / "rtmdet_nano_person" / "end2end.onnx"
PIPELINE_FILE = "pipeline.json"


def default_detector_path():
    """The shared folder's RTMDet-nano person detector; DataError saying how to give one when it is absent."""
    root = shared_dir(required=False)
    path = None if root is None else root / DEFAULT_DETECTOR
    if path is None or not path.is_file():
        where = f"{path} does not exist" if path is not None else "no shared folder (KDPOSE_SHARED) was found"
        raise DataError(f"no person detector: {where}; give one with --detector FILE (an RTMDet .onnx with its "
                        f"{PIPELINE_FILE}) or set KDPOSE_SHARED to the folder holding {DEFAULT_DETECTOR}",
                        field="detector")
    return path


def _transform(transforms, name, path):
    found = [t for t in transforms if isinstance(t, dict) and t.get("type") == name]
    if not found:
        raise DataError(f"no {name!r} step in the preprocessing transforms; expected MMDeploy's Resize, Pad "
                        "and Normalize", path=path, field="pipeline.tasks[Preprocess].transforms")
    return found


def _numbers(value, count, path, field):
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        out = []
    if len(out) != count or not all(math.isfinite(v) for v in out):
        raise DataError(f"expected {count} finite numbers, got {value!r}", path=path, field=field)
    return out


def read_preprocessing(path):
    """The detector's preprocessing from an MMDeploy ``pipeline.json``:
    {"size": (h, w), "pad_value": (b, g, r), "mean": (3,), "std": (3,), "to_rgb": bool}.

    A missing or malformed file is a DataError naming the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the detector's preprocessing config is missing (MMDeploy writes {PIPELINE_FILE} beside "
                        "the .onnx; it says how images are resized, padded and normalised)", path=path)
    try:
        tasks = json.loads(path.read_text())["pipeline"]["tasks"]
        transforms = next(t["transforms"] for t in tasks if t.get("module") == "Transform")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, StopIteration):
        raise DataError("not an MMDeploy pipeline (expected pipeline.tasks with a Transform task and its "
                        "transforms)", path=path, field="pipeline.tasks") from None
    resize = _transform(transforms, "Resize", path)[0]
    if resize.get("keep_ratio") is not True:
        raise DataError(f"keep_ratio {resize.get('keep_ratio')!r}: only aspect-keeping resizes are supported",
                        path=path, field="Resize.keep_ratio")
    size = _numbers(resize.get("size"), 2, path, "Resize.size")
    pads = [t for t in _transform(transforms, "Pad", path) if "size" in t]  # size_divisor 1 pads are no-ops
    pad_size = _numbers(pads[0]["size"], 2, path, "Pad.size") if pads else size
    pad_value = _numbers(((pads[0].get("pad_val") or {}).get("img", [0, 0, 0])) if pads else [0, 0, 0], 3, path,
                         "Pad.pad_val.img")
    norm = _transform(transforms, "Normalize", path)[0]
    mean = _numbers(norm.get("mean"), 3, path, "Normalize.mean")
    std = _numbers(norm.get("std"), 3, path, "Normalize.std")
    if min(std) <= 0:
        raise DataError(f"std must be > 0, got {std}", path=path, field="Normalize.std")
    # MMDeploy writes (w, h) sizes; the configs here are square, so the order only matters for others
    return {"resize": (int(size[1]), int(size[0])), "size": (int(pad_size[1]), int(pad_size[0])),
            "pad_value": tuple(pad_value), "mean": np.asarray(mean, np.float32), "std": np.asarray(std, np.float32),
            "to_rgb": bool(norm.get("to_rgb", False))}


def letterbox(image_rgb, prep):
    """The detector's input (1, 3, H, W) float32 for an RGB uint8 image, and the (x, y) resize factors.

    Resize keeping the aspect ratio to fit ``prep["resize"]`` (rounded as MMCV rounds: int(v * s + 0.5)),
    pad right / bottom to ``prep["size"]`` with ``pad_value``, normalise in the config's channel order.
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
    h, w = img.shape[:2]
    rh, rw = prep["resize"]
    scale = min(max(rh, rw) / max(h, w), min(rh, rw) / min(h, w))
    new_w, new_h = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
    ph, pw = prep["size"]
    if new_h > ph or new_w > pw:
        raise ValueError(f"resized image {new_w}x{new_h} does not fit the padded input {pw}x{ph}")
    color = img if prep["to_rgb"] else img[:, :, ::-1]
    resized = cv2.resize(np.ascontiguousarray(color), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.empty((ph, pw, 3), np.float32)
    canvas[:] = np.asarray(prep["pad_value"], np.float32)
    canvas[:new_h, :new_w] = resized
    canvas = (canvas - prep["mean"]) / prep["std"]
    return canvas.transpose(2, 0, 1)[None], (new_w / w, new_h / h)


def boxes_to_image(dets, factors, image_size, score_threshold, max_people, labels=None):
    """Detector rows (x1, y1, x2, y2, score) in the padded frame -> boxes (N, 4) x, y, w, h in image pixels
    (clipped to the image, empty ones dropped) and scores (N,), highest score first, at most `max_people`,
    scores >= `score_threshold`; rows whose label is not 0 (person) are dropped when labels are given."""
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    keep = np.isfinite(dets).all(1) & (dets[:, 4] >= score_threshold)
    if labels is not None:
        keep &= np.asarray(labels).reshape(-1) == 0
    dets = dets[keep]
    w, h = image_size
    x1 = np.clip(dets[:, 0] / factors[0], 0, w)
    y1 = np.clip(dets[:, 1] / factors[1], 0, h)
    x2 = np.clip(dets[:, 2] / factors[0], 0, w)
    y2 = np.clip(dets[:, 3] / factors[1], 0, h)
    boxes = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
    good = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    boxes, scores = boxes[good], dets[good, 4]
    order = np.argsort(-scores, kind="stable")[:max_people]
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


class PersonDetector:
    """People in an RGB image, as boxes, through an MMDeploy RTMDet export run by OpenVINO.

    Args:
        path: the ``.onnx`` (or OpenVINO ``.xml``) file, its ``pipeline.json`` beside it. Default None = the
            shared folder's RTMDet-nano person detector (`default_detector_path`).
        score_threshold: boxes scored below it are dropped. Default 0.3 (MMPose's top-down demo's
            ``--bbox-thr``).
        max_people: at most this many boxes, best first. Default 20.
        num_threads: OpenVINO CPU threads; None = OpenVINO's choice.
    """

    def __init__(self, path=None, score_threshold=0.3, max_people=20, num_threads=None):
        if not (isinstance(score_threshold, (int, float)) and 0 <= score_threshold <= 1):
            raise ValueError(f"score_threshold must be a number in [0, 1], got {score_threshold!r}")
        if not (isinstance(max_people, int) and not isinstance(max_people, bool) and max_people >= 1):
            raise ValueError(f"max_people must be an int >= 1, got {max_people!r}")
        path = default_detector_path() if path is None else Path(path)
        if not path.is_file():
            raise ModelFileError(f"person detector {path} does not exist (an RTMDet .onnx exported by MMDeploy, "
                                 f"with its {PIPELINE_FILE} beside it)")
        self.path = path
        self.prep = read_preprocessing(path.parent / PIPELINE_FILE)
        self.score_threshold = float(score_threshold)
        self.max_people = max_people
        model = openvino.read_model(path)
        dims = openvino.input_dims(model)
        if len(dims) != 4 or dims[1] not in (-1, 3):
            raise ModelFileError(f"{path}: expected a (N, 3, H, W) image input, got {dims}")
        self._compiled = openvino.compile_model(model, num_threads, [1, 3, *self.prep["size"]])
        names = openvino.output_names(self._compiled)
        if "dets" not in names:
            raise ModelFileError(f"{path}: no 'dets' output (x1, y1, x2, y2, score); the model's outputs are {names}")

    def __call__(self, image, score_threshold=None, max_people=None):
        """(boxes (N, 4) float32 x, y, w, h in image pixels, scores (N,) float32), best first, for an RGB image.

        `score_threshold` / `max_people` override the detector's own for this call.
        """
        x, factors = letterbox(image, self.prep)
        out = openvino.run(self._compiled, x)
        h, w = np.asarray(image).shape[:2]
        return boxes_to_image(out["dets"][0], factors, (w, h),
                              self.score_threshold if score_threshold is None else score_threshold,
                              self.max_people if max_people is None else max_people,
                              out["labels"][0] if "labels" in out else None)
