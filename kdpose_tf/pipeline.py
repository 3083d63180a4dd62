"""From a photo or a video to skeletons: person detection, a top-down model on every box, tracking.

A top-down model needs a person box. On a photo, `detect_and_estimate` finds the people with the person
detector (`kdpose_tf.runtimes.detector.PersonDetector`, RTMDet-nano through OpenVINO) and runs the pose
model on every box, through the same crop -> predict -> decode path as the evaluator
(`kdpose_tf.evaluation.predict_boxes`). On a video, `track_video` follows one person as MoveNet's app does
(`kdpose_tf.tracking.PersonTracker`): each frame is cropped around the previous frame's joints, the
detector runs only when the person is lost, and the joints are smoothed by a 1 € filter.

The pose model is a `PoseEstimator` (or any Keras model with `input_size` and `keypoint_set`), a preset
name or folder, or the ``(predict_fn, input_size, codec, keypoint_set)`` that
`kdpose_tf.cli.evaluate.load_predictor` returns for a ``.tflite`` or OpenVINO file (`top_down`).

Example:
    >>> people = detect_and_estimate("photo.jpg", PoseEstimator.from_preset("pp_tinypose_128x96"))  # doctest: +SKIP
    >>> [(p["box"], p["keypoints"].shape) for p in people]      # doctest: +SKIP
    >>> for frame in track_video("walk.mp4", model): ...        # doctest: +SKIP
"""

from __future__ import annotations

import functools
import types
import weakref
from pathlib import Path

import numpy as np

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.images import read_image
from kdpose_tf.evaluation import keras_predict_fn, predict_boxes
from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.metrics.coco import coco_results
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.runtimes.detector import PersonDetector
from kdpose_tf.tracking import PersonTracker
from kdpose_tf.visualization import draw_keypoints


class TopDown:
    """The pose half of the pipeline: person boxes on images -> joints in image pixels.

    Args:
        predict_fn: float32 crops (B, H, W, 3) in [0, 255] -> heatmaps (B, h, w, K).
        input_size: (H, W) of the crops.
        codec: the `HeatmapCodec` that decodes them.
        keypoint_set: the K joints (KeypointSet or name).
        flip_test: average with the mirrored crop's heatmaps. Default False.
    """

    def __init__(self, predict_fn, input_size, codec, keypoint_set, flip_test=False):
        self.predict_fn = predict_fn
        self.input_size = tuple(int(v) for v in input_size)
        self.codec = codec
        self.keypoint_set = get_keypoint_set(keypoint_set)
        self.flip_test = bool(flip_test)

    def __call__(self, images, boxes):
        """Keypoints (N, K, 2) float32 image pixels and scores (N, K) for N boxes (x, y, w, h), one image each."""
        return predict_boxes(self.predict_fn, images, boxes, self.input_size, self.codec, self.keypoint_set,
                             flip_test=self.flip_test, num_keypoints=self.keypoint_set.num_keypoints)


_TOP_DOWN = weakref.WeakKeyDictionary()  # Keras model -> its TopDown, so its compiled predict function is kept


def top_down(model, compiled=True, flip_test=False):
    """A `TopDown` for `model`: a TopDown (returned as is), a Keras pose model (`PoseEstimator`), a preset
    name or folder (`PoseEstimator.from_preset`), or a ``(predict_fn, input_size, codec, keypoint_set)``
    tuple (what `kdpose_tf.cli.evaluate.load_predictor` returns for ``.tflite`` / OpenVINO files).

    compiled: run a Keras model through its compiled predict function (`predict_on_batch`) rather than
    eagerly. Measured on PP-TinyPose 128x96 (imported graph), 2 loaded CPU cores: eager 2.2 s per call,
    compiled 0.08 s after a one-off trace of about 10 s (and one more when the batch size first changes),
    so a video or a folder wants it and a single photo does not. Default True.
    """
    if isinstance(model, TopDown):
        return model
    if isinstance(model, (tuple, list)):
        if len(model) != 4:
            raise ValueError(f"expected (predict_fn, input_size, codec, keypoint_set), got {len(model)} items")
        predict_fn, size, codec, keypoint_set = model
        if keypoint_set is None:
            raise ValueError("the model does not say which joints it predicts (keypoint_set None); give them")
        return TopDown(predict_fn, size, codec, keypoint_set, flip_test)
    if isinstance(model, (str, Path)):
        model = PoseEstimator.from_preset(str(model))
    key = (bool(compiled), bool(flip_test))
    cached = _TOP_DOWN.get(model, {})
    if key in cached:
        return cached[key]
    size = getattr(model, "input_size", None)
    keypoint_set = getattr(model, "keypoint_set", None)
    if size is None or keypoint_set is None:
        raise ValueError(f"{type(model).__name__} has no input_size / keypoint_set; give a PoseEstimator or "
                         "a (predict_fn, input_size, codec, keypoint_set) tuple")
    inference = model.inference_model() if hasattr(model, "inference_model") else model
    codec = getattr(model, "codec", None) or HeatmapCodec(input_size=tuple(size),
                                                          heatmap_size=tuple(inference.outputs[-1].shape[1:3]))
    predict_fn = inference.predict_on_batch if compiled else keras_predict_fn(inference)
    result = TopDown(predict_fn, size, codec, keypoint_set, flip_test)
    _TOP_DOWN.setdefault(model, {})[key] = result
    return result


@functools.lru_cache(maxsize=4)
def _detector(path):
    return PersonDetector(path)


def person_detector(detector=None):
    """A `PersonDetector`: the given one, one for a model file path, or (None) the shared folder's
    RTMDet-nano, made once per process."""
    if isinstance(detector, PersonDetector):
        return detector
    if detector is None:
        return _detector(None)
    if isinstance(detector, (str, Path)):
        return _detector(str(detector))
    raise TypeError(f"detector must be a PersonDetector, a model file path or None, got {type(detector).__name__}")


def as_image(image):
    """uint8 RGB (H, W, 3) from a path (`read_image`) or an RGB array."""
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        return read_image(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be an (H, W, 3) RGB array or a path, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def detect_and_estimate(image, model, detector=None, max_people=20, box_score=0.3, boxes=None, compiled=True):
    """Every person's pose on one image: detect the people, run the top-down model on each box.

    Args:
        image: an image path or an RGB uint8 array (H, W, 3).
        model: the pose model (see `top_down`).
        detector: a `PersonDetector`, its model file, or None = the shared folder's RTMDet-nano.
        max_people: at most this many people, the detector's most confident first. Default 20.
        box_score: detector boxes scored below it are dropped. Default 0.3.
        boxes: (N, 4) x, y, w, h person boxes to use instead of detecting (score 1 each). Default None.
        compiled: see `top_down`. Default True.

    Returns:
        list of {"box": (4,) x, y, w, h pixels, "score": the detector's box score, "keypoints": (K, 2) x, y
        pixels, "keypoint_scores": (K,)}, best box first; empty when nobody is found.
    """
    img = as_image(image)
    pose = top_down(model, compiled=compiled)
    if boxes is None:
        found, scores = person_detector(detector)(img, score_threshold=box_score, max_people=max_people)
    else:
        found = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.ones(len(found), np.float32)
    keypoints, keypoint_scores = pose([img] * len(found), found)
    return [{"box": found[i], "score": float(scores[i]), "keypoints": keypoints[i],
             "keypoint_scores": keypoint_scores[i]} for i in range(len(found))]


def coco_people(people, image_id, score_threshold=0.2):
    """COCO keypoint results for one image's people: {"image_id", "category_id": 1, "bbox", "keypoints":
    [x, y, score] * K, "score"}; the instance score is `kdpose_tf.metrics.coco.coco_results`' (mean joint
    score above `score_threshold`, times the box score)."""
    if not people:
        return []
    owners = [types.SimpleNamespace(image_id=int(image_id))] * len(people)
    results = coco_results(owners, np.stack([p["keypoints"] for p in people]),
                           np.stack([p["keypoint_scores"] for p in people]), score_threshold,
                           box_scores=[p["score"] for p in people])
    for result, person in zip(results, people):
        result["bbox"] = [round(float(v), 2) for v in person["box"]]
        result["keypoints"] = [round(v, 3) for v in result["keypoints"]]
    return results


def draw_people(image, people, keypoint_set, threshold=0.2, boxes=True):
    """The image (RGB uint8) with every person's skeleton (`kdpose_tf.visualization.draw_keypoints`) and,
    with `boxes`, the person box in grey."""
    import cv2

    canvas = np.ascontiguousarray(np.asarray(image, np.uint8).copy())
    for person in people:
        if boxes:
            x, y, w, h = (int(round(float(v))) for v in person["box"])
            cv2.rectangle(canvas, (x, y), (x + w, y + h), (200, 200, 200), max(1, round(max(canvas.shape) / 400)))
        canvas = draw_keypoints(canvas, person["keypoints"], person["keypoint_scores"], keypoint_set, threshold)
    return canvas


def track_video(frames, model, detector=None, fps=30.0, smoothing=True, box_score=0.3, box=None, compiled=True,
                **settings):
    """Follow one person through frames: yields one dict per frame, {"frame": index, "time": seconds,
    "image": the frame, "person": None or the tracker's result (box, keypoints (smoothed), raw_keypoints,
    keypoint_scores, score, detector), "detector": whether the detector ran on this frame}.

    Args:
        frames: an iterable of RGB uint8 frames (a `kdpose_tf.data.video.Video`, a list of arrays).
        model: the pose model (see `top_down`).
        detector: see `detect_and_estimate`; it runs on the first frame and whenever the person is lost.
        fps: frames per second (the filter's clock). Default 30.
        smoothing: 1 € filter on the joints. Default True.
        box_score: detector boxes scored below it are dropped. Default 0.3.
        box: the first frame's person box (x, y, w, h) instead of the detector's. Default None.
        compiled: see `top_down`. Default True.
        **settings: `kdpose_tf.tracking.PersonTracker` settings (lost_score, min_cutoff, beta, ...).
    """
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    pose = top_down(model, compiled=compiled)
    find = person_detector(detector)

    def detect(frame):
        return find(frame, score_threshold=box_score, max_people=5)

    def estimate(frame, box):
        kp, sc = pose([frame], [box])
        return kp[0], sc[0]

    tracker = PersonTracker(detect, estimate, pose.keypoint_set.names, smoothing=smoothing, box=box,
                            **settings)
    for index, frame in enumerate(frames):
        runs = tracker.detector_runs
        person = tracker.update(frame, index / fps)
        yield {"frame": index, "time": index / fps, "image": frame, "person": person,
               "detector": tracker.detector_runs > runs}
