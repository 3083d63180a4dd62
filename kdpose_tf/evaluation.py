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

from kdpose_tf.keypoints import get_keypoint_set

METRICS = ("pck", "pckh", "coco")


def _inference_helpers():
    """`make_inference_inputs`, `keypoints_to_image` from the data pipeline (imported lazily)."""
    try:
        from kdpose_tf.data.pipeline import keypoints_to_image, make_inference_inputs
    except ImportError:  # pragma: no cover - depends on which module ends up holding them
        from kdpose_tf.data.transforms import keypoints_to_image, make_inference_inputs
    return make_inference_inputs, keypoints_to_image


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
    make_inference_inputs, keypoints_to_image = _inference_helpers()
    from tqdm.auto import tqdm

    all_kp, all_sc = [], []
    bar = tqdm(total=len(samples), desc="evaluate", unit="person", disable=not progress, leave=False)
    try:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            images, centers, scales = make_inference_inputs(batch, input_size)
            images = np.asarray(images, np.float32)
            heatmaps = _final_output(predict_fn(images))
            expected = (len(batch), *codec.heatmap_size, ks.num_keypoints)
            if heatmaps.shape != expected:
                raise ValueError(f"predict_fn returned heatmaps of shape {heatmaps.shape}; expected {expected}")
            if flip_test:
                flipped = _final_output(predict_fn(np.ascontiguousarray(images[:, :, ::-1])))
                heatmaps = codec.flip_test_average(heatmaps, flipped, ks.flip_index)
            kp_crop, scores = codec.decode(heatmaps)
            all_kp.append(np.asarray(keypoints_to_image(kp_crop, centers, scales, input_size), np.float32))
            all_sc.append(np.asarray(scores, np.float32))
            bar.update(len(batch))
    finally:
        bar.close()
    return np.concatenate(all_kp), np.concatenate(all_sc)


def _per_joint_dict(ks, values):
    return {name: (None if not np.isfinite(v) else float(v)) for name, v in zip(ks.names, values)}


def score_predictions(keypoints, scores, samples, keypoint_set, metrics=("pck",), coco_gt=None,
                      pck_threshold=0.2, pckh_threshold=0.5, sigmas=None) -> dict:
    """Metrics of already decoded predictions (image pixels); see `evaluate` for the result layout."""
    from kdpose_tf.metrics.pck import head_normalizer, pck, torso_normalizer

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
        r = pck(keypoints, gt, vis, torso_normalizer(gt, ks, vis), pck_threshold)
        report["pck"] = {
            "mean": r["mean"], "count": r["count"], "excluded": r["excluded"], "threshold": r["threshold"],
            "normalizer": f"torso ({ks.names[ks.torso[0]]} to {ks.names[ks.torso[1]]})",
            "per_joint": _per_joint_dict(ks, r["per_joint"]),
        }
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
        from kdpose_tf.metrics.coco import coco_keypoint_eval, coco_results, samples_to_coco

        gt_source = coco_gt if coco_gt is not None else samples_to_coco(samples, ks)
        report["coco"] = coco_keypoint_eval(gt_source, coco_results(samples, keypoints, scores), ks, sigmas=sigmas)
    report["rows"] = rows
    return report


def evaluate(predict_fn, samples, input_size, codec, keypoint_set, metrics=("pck",), flip_test=False,
             coco_gt=None, batch_size=32, pck_threshold=0.2, pckh_threshold=0.5, sigmas=None,
             progress=True) -> dict:
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
        pck_threshold=pck_threshold, pckh_threshold=pckh_threshold, sigmas=sigmas,
    )
    report["flip_test"] = bool(flip_test)
    return report
