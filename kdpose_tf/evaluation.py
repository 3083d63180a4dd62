"""The evaluator shared by Keras models, TFLite runners and teachers: predict, decode, score.

A model is seen only through a `predict_fn`: float32 images (B, H, W, 3) with raw pixels in
[0, 255] -> heatmaps (B, h, w, K) (numpy or tensor). `keras_predict_fn(model)` adapts a Keras
model (its final output when it returns one per stack); `kdpose_tf.export.tflite.TFLiteRunner`
is one by itself. Samples are cropped with the ground-truth box exactly as in training
(`kdpose_tf.data.pipeline.make_inference_inputs`), heatmaps decoded by the `HeatmapCodec`
(optionally averaged with the mirrored crop's: flip test, HRNet) and mapped back to image
pixels, where PCK@0.2 (torso), PCKh@0.5 (head) and COCO OKS AP are computed.

Example:
>>> codec = HeatmapCodec(input_size=(256, 256))                              # doctest: +SKIP
>>> report = evaluate(keras_predict_fn(model), samples, (256, 256), codec, LSP14,
...                   metrics=("pck", "pckh"))                                # doctest: +SKIP
>>> report["pck"]["mean"], report["rows"][0]                                  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from kdpose_tf.data.images import read_image
from kdpose_tf.data.pipeline import keypoints_to_image, make_inference_inputs
from kdpose_tf.data.transforms import box_to_center_scale, crop_person
from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.metrics.coco import coco_keypoint_eval, coco_results, samples_to_coco
from kdpose_tf.metrics.pck import PROTOCOLS, head_normalizer, pck, protocol_pck, torso_normalizer

METRICS = ("pck", "pckh", "coco")
# LSP-14's joints below the head: the "body-12" mean compares LSP-14 models with COCO-17 ones (no neck / head top)
BODY12 = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
          "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist")


def sample_protocol(samples):
    """The `PCKProtocol` the samples' reader names (``extra["protocol"]``, e.g. LSP's), or None for the
    package's default PCK (torso of the keypoint set, labelled joints only). Mixed sets get None."""
    names = {s.extra.get("protocol") for s in samples}
    return PROTOCOLS.get(names.pop()) if len(names) == 1 else None


def _final_output(output):
    if isinstance(output, dict):
        raise ValueError(f"predict_fn returned a dict with keys {sorted(output)}; expected heatmaps (B, h, w, K)")
    if isinstance(output, (list, tuple)):
        if not output:
            raise ValueError("predict_fn returned an empty list; expected heatmaps (B, h, w, K)")
        output = output[-1]
    return np.asarray(output, dtype=np.float32)


def keras_predict_fn(model):
    """Adapt a Keras model to a predict_fn: images -> final heatmaps (numpy).

    Args:
        model: a Keras model taking float32 images in [0, 255]; when it returns a list (one output
            per supervised stack, as `PoseEstimator`) the last (final) output is used.
    """
    if not callable(model):
        raise ValueError(f"model must be a callable Keras model, got {type(model).__name__}")

    def predict_fn(images):
        return _final_output(model(np.asarray(images, np.float32), training=False))

    return predict_fn


def _check_inputs(samples, input_size, codec, keypoint_set, batch_size):
    ks = get_keypoint_set(keypoint_set)
    samples = list(samples)
    if not samples:
        raise ValueError("samples is empty; expected at least one PoseSample")
    try:
        input_size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width), got {input_size!r}") from None
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}")
    if tuple(codec.input_size) != input_size:
        raise ValueError(f"codec.input_size {tuple(codec.input_size)} differs from input_size {input_size}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    bad = [s.annotation_id for s in samples if s.num_keypoints != ks.num_keypoints]
    if bad:
        raise ValueError(
            f"{len(bad)} samples (e.g. {bad[0]!r}) do not have the {ks.num_keypoints} keypoints of {ks.name!r}"
        )
    return samples, input_size, ks


def predict_samples(
    predict_fn, samples, input_size, codec, keypoint_set, flip_test=False, batch_size=32, progress=True
):
    """Run `predict_fn` on the box crops of `samples` and decode joints in image pixels.

    Args:
        predict_fn: float32 images (B, H, W, 3) in [0, 255] -> heatmaps (B, h, w, K), or a list of
            such (the last is used).
        samples: list of N `PoseSample` (their `bbox` defines the crop).
        input_size: (H, W) of the network input.
        codec: `HeatmapCodec` with the same input size (and the model's heatmap size).
        keypoint_set: KeypointSet or name (flip index for the flip test).
        flip_test: also predict the mirrored crops and average (HRNet flip test). Default False.
        batch_size: crops per call. Default 32.
        progress: show a tqdm bar. Default True.

    Returns:
        keypoints float32 (N, K, 2) in image pixels and scores float32 (N, K).
    """
    samples, input_size, ks = _check_inputs(samples, input_size, codec, keypoint_set, batch_size)
    batches = (
        make_inference_inputs(samples[start : start + batch_size], input_size)
        for start in range(0, len(samples), batch_size)
    )
    bar = tqdm(total=len(samples), desc="evaluate", unit="person", disable=not progress, leave=False)
    try:
        return _decode_crops(predict_fn, batches, input_size, codec, ks.num_keypoints, ks.flip_index, flip_test,
                             bar.update)
    finally:
        bar.close()


def predict_boxes(predict_fn, images, boxes, input_size, codec, keypoint_set=None, flip_test=False, batch_size=32,
                  num_keypoints=None):
    """Keypoints in image pixels for person boxes on images: crop -> predict -> decode -> map back.

    The one crop/predict/decode path for images without annotations (`PoseEstimator.predict_keypoints`,
    `kdpose predict`); `predict_samples` does the same for `PoseSample`s. Each box is widened to the
    input's aspect ratio with padding 1.25 and cropped by an affine warp, as in training.

    Args:
        predict_fn: float32 images (B, H, W, 3) in [0, 255] -> heatmaps (B, h, w, K) (or a list, last used).
        images: one uint8 RGB array (H, W, 3) or image path per box.
        boxes: (N, 4) person boxes x, y, w, h in image pixels.
        input_size: (H, W) of the network input.
        codec: `HeatmapCodec` with that input size.
        keypoint_set: KeypointSet or name; needed for `flip_test` (default None).
        flip_test: average with the mirrored crop's heatmaps (default False).
        batch_size: crops per call (default 32).
        num_keypoints: K; default None = the keypoint set's (or whatever the model returns).

    Returns:
        keypoints float32 (N, K, 2) (x, y) image pixels, scores float32 (N, K) (heatmap maxima).

    Example:
    >>> from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    >>> codec = HeatmapCodec(input_size=(64, 48))
    >>> def dot_at_crop_centre(images):  # heatmaps with one peak in the middle
    ...     heat = np.zeros((len(images), 16, 12, 1), np.float32)
    ...     heat[:, 8, 6] = 1.0
    ...     return heat
    >>> kp, scores = predict_boxes(dot_at_crop_centre, [np.zeros((200, 200, 3), np.uint8)], [(50, 40, 60, 80)],
    ...                            (64, 48), codec)
    >>> np.round(kp[0, 0]).tolist(), scores.shape  # heatmap centre -> crop centre -> box centre
    ([80.0, 80.0], (1, 1))
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(images) != len(boxes):
        raise ValueError(f"predict_boxes: {len(images)} images for {len(boxes)} boxes; give one image per box")
    ks = None if keypoint_set is None else get_keypoint_set(keypoint_set)
    if flip_test and ks is None:
        raise ValueError("predict_boxes(flip_test=True) needs a keypoint set for the left/right swap")
    if num_keypoints is None and ks is not None:
        num_keypoints = ks.num_keypoints
    in_h, in_w = (int(v) for v in input_size)

    def batches():
        for start in range(0, len(boxes), batch_size):
            crops = np.zeros((len(boxes[start : start + batch_size]), in_h, in_w, 3), np.float32)
            centers, scales = np.zeros((len(crops), 2)), np.zeros((len(crops), 2))
            for i, (image, box) in enumerate(zip(images[start : start + batch_size], boxes[start : start + batch_size])):
                centers[i], scales[i] = box_to_center_scale(box, in_w / in_h, 1.25)
                crops[i] = crop_person(_image_array(image), centers[i], scales[i], 0.0, (in_h, in_w))
            yield crops, centers, scales

    if not len(boxes):
        k = num_keypoints or 0
        return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
    return _decode_crops(predict_fn, batches(), (in_h, in_w), codec, num_keypoints,
                         None if ks is None else ks.flip_index, flip_test)


def _image_array(image):
    """uint8 RGB (H, W, 3) from an array or a path (`kdpose_tf.data.images.read_image`)."""
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        return read_image(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"predict_boxes: images must be (H, W, 3) RGB arrays or paths, received shape {image.shape}")
    return image


def _decode_crops(predict_fn, batches, input_size, codec, num_keypoints, flip_index, flip_test, done=None):
    """Predict each batch of (crops, centers, scales), flip-average, decode, map back to image pixels."""
    all_kp, all_sc = [], []
    for images, centers, scales in batches:
        images = np.asarray(images, np.float32)
        heatmaps = _final_output(predict_fn(images))
        expected = (len(images), *codec.heatmap_size, num_keypoints or heatmaps.shape[-1])
        if heatmaps.shape != expected:
            raise ValueError(f"predict_fn returned heatmaps of shape {heatmaps.shape}; expected {expected}")
        if flip_test:
            flipped = _final_output(predict_fn(np.ascontiguousarray(images[:, :, ::-1])))
            heatmaps = codec.flip_test_average(heatmaps, flipped, flip_index)
        kp_crop, scores = codec.decode(heatmaps)
        all_kp.append(np.asarray(keypoints_to_image(kp_crop, centers, scales, input_size), np.float32))
        all_sc.append(np.asarray(scores, np.float32))
        if done is not None:
            done(len(images))
    return np.concatenate(all_kp), np.concatenate(all_sc)


def _per_joint_dict(ks, values):
    return {name: (None if not np.isfinite(v) else float(v)) for name, v in zip(ks.names, values)}


def score_predictions(keypoints, scores, samples, keypoint_set, metrics=("pck",), coco_gt=None,
                      pck_threshold=0.2, pckh_threshold=0.5, sigmas=None, protocol="auto") -> dict:
    """Metrics of already decoded predictions (image pixels); see `evaluate` for the result layout."""

    ks = get_keypoint_set(keypoint_set)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown or metrics!r}; expected a subset of {METRICS}")
    gt = np.stack([s.keypoints for s in samples]).astype(np.float64)
    vis = np.stack([s.visibility for s in samples]) > 0
    report = {"num_samples": len(samples), "keypoint_set": ks.name}
    rows = [{"joint": name} for name in ks.names]
    if "pck" in metrics:
        if protocol == "auto":
            protocol = sample_protocol(samples)
        elif isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise ValueError(f"unknown PCK protocol {protocol!r}; expected 'auto', None or one of {sorted(PROTOCOLS)}")
            protocol = PROTOCOLS[protocol]
        if protocol is not None:
            r = protocol_pck(keypoints, gt, vis, ks, protocol, pck_threshold)
            normalizer = f"torso ({protocol.torso[0]} to {protocol.torso[1]})"
        else:
            r = pck(keypoints, gt, vis, torso_normalizer(gt, ks, vis), pck_threshold)
            normalizer = f"torso ({ks.names[ks.torso[0]]} to {ks.names[ks.torso[1]]})"
        report["pck"] = {
            "mean": r["mean"], "count": r["count"], "excluded": r["excluded"], "threshold": r["threshold"],
            "normalizer": normalizer, "protocol": None if protocol is None else protocol.name,
            "protocol_description": "labelled joints, torso of the keypoint set" if protocol is None
            else protocol.description,
            "per_joint": _per_joint_dict(ks, r["per_joint"]),
        }
        if all(name in ks.names for name in BODY12) and ks.num_keypoints > len(BODY12):
            body = [ks.names.index(name) for name in BODY12]
            counted, correct = r["counted"][:, body], r["correct"][:, body]
            report["pck"]["body12"] = float(correct.sum() / counted.sum()) if counted.any() else float("nan")
        for row, v in zip(rows, r["per_joint"]):
            row[f"PCK@{pck_threshold:g}"] = float(v)
    if "pckh" in metrics:
        sizes = head_normalizer(samples, ks)
        from_file = sum(1 for s in samples if s.head_size)
        r = pck(keypoints, gt, vis, sizes, pckh_threshold)
        report["pckh"] = {
            "mean": r["mean"], "count": r["count"], "excluded": r["excluded"], "threshold": r["threshold"],
            "normalizer": f"head size: PoseSample.head_size for {from_file} samples, "
            f"else the {ks.head and ks.names[ks.head[0]]}-{ks.head and ks.names[ks.head[1]]} segment",
            "per_joint": _per_joint_dict(ks, r["per_joint"]),
        }
        if ks.name == "mpii16":  # MPII's published total leaves out pelvis and thorax
            keep = [i for i in range(ks.num_keypoints) if ks.names[i] not in ("pelvis", "thorax")]
            report["pckh"]["mean_mpii"] = pck(keypoints, gt, vis, sizes, pckh_threshold, joints=keep)["mean"]
        for row, v in zip(rows, r["per_joint"]):
            row[f"PCKh@{pckh_threshold:g}"] = float(v)
    if "coco" in metrics:
        gt_source = coco_gt if coco_gt is not None else samples_to_coco(samples, ks)
        report["coco"] = coco_keypoint_eval(gt_source, coco_results(samples, keypoints, scores), ks, sigmas=sigmas)
    report["rows"] = rows
    return report


def evaluate(predict_fn, samples, input_size, codec, keypoint_set, metrics=("pck",), flip_test=False,
             coco_gt=None, batch_size=32, pck_threshold=0.2, pckh_threshold=0.5, sigmas=None,
             progress=True, protocol="auto") -> dict:
    """Predict `samples` and compute the requested metrics.

    Args:
        predict_fn, samples, input_size, codec, keypoint_set, flip_test, batch_size, progress:
            as in `predict_samples`.
        metrics: any of "pck" (PCK@`pck_threshold`, torso), "pckh" (PCKh@`pckh_threshold`),
            "coco" (OKS AP via pycocotools). Default ("pck",).
        coco_gt: COCO ground truth (path, dict or COCO) for "coco"; default: built from the samples
            with `samples_to_coco` (box area as OKS scale unless `sample.area` is set).
        pck_threshold: Default 0.2. pckh_threshold: Default 0.5.
        sigmas: OKS sigmas for keypoint sets without their own.
        protocol: the PCK protocol: "auto" (default: the one the samples' reader names, e.g. LSP's
            published protocol for ``lsp:`` data, else the package's), None (the package's: labelled
            joints, the keypoint set's torso) or a name in `kdpose_tf.metrics.pck.PROTOCOLS`.

    Returns:
        dict with `num_samples`, `keypoint_set`, one entry per metric ("pck"/"pckh": mean, count,
        excluded, threshold, normalizer, per_joint {name: value}; "coco": AP, AP50, ..., AR) and
        `rows`: one dict per joint ({"joint", "PCK@0.2", "PCKh@0.5"}) for `markdown_table`.
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics or any(m not in METRICS for m in metrics):  # fail before predicting anything
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {metrics!r}")
    keypoints, scores = predict_samples(
        predict_fn, samples, input_size, codec, keypoint_set, flip_test=flip_test,
        batch_size=batch_size, progress=progress,
    )
    report = score_predictions(
        keypoints, scores, list(samples), keypoint_set, metrics=metrics, coco_gt=coco_gt,
        pck_threshold=pck_threshold, pckh_threshold=pckh_threshold, sigmas=sigmas, protocol=protocol,
    )
    report["flip_test"] = bool(flip_test)
    return report
