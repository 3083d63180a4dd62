"""`kdpose evaluate` and `kdpose predict`: the same decoding for Keras and TFLite models."""

from __future__ import annotations

import json
from pathlib import Path

from kdpose_tf.cli.common import CLIError, data_summary, load_data, load_model


def load_predictor(spec: str, keypoint_set=None):
    """(predict_fn, input_size, codec, keypoint_set_name_or_None) for a .keras/preset/.tflite model, or for
    a pretrained teacher from another framework (its joints mapped by name onto `keypoint_set`).

    predict_fn maps float32 images (B, H, W, 3) in [0, 255] to final heatmaps (B, h, w, K).
    """
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
    from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher
    from kdpose_tf.distillation.pretrained import is_keypoint_model, pretrained_teachers, teacher_evaluation

    single_tflite = str(spec).endswith(".tflite") and "," not in str(spec)
    if keypoint_set is not None and not single_tflite:
        teachers = pretrained_teachers(spec)
        if teachers is not None:  # a teacher preset or folder, .xml/.onnx, an ensemble: its own input size
            return (*teacher_evaluation(teachers, keypoint_set), None)

    if single_tflite:
        from kdpose_tf.export.runner import TFLiteRunner

        if not Path(spec).exists():
            raise CLIError(f"TFLite model {spec} does not exist")
        runner = TFLiteRunner(spec)
        if keypoint_set is not None and is_keypoint_model(runner):  # MoveNet-style: joints, not heatmaps
            return (*teacher_evaluation([KeypointTeacher(spec)], keypoint_set), None)
        shape = runner.input_details["shape"]
        size = (int(shape[1]), int(shape[2]))
        sidecar = Path(spec).with_suffix(".json")
        keypoint_set = None
        if sidecar.exists():
            keypoint_set = (json.loads(sidecar.read_text()).get("keypoints") or {}).get("set")
        out = runner.output_details["shape"] if hasattr(runner, "output_details") else None
        heatmap_size = (int(out[1]), int(out[2])) if out is not None else None
        return runner, size, HeatmapCodec(input_size=size, heatmap_size=heatmap_size), keypoint_set

    from kdpose_tf.evaluation import keras_predict_fn

    model = load_model(spec)
    shape = model.inputs[0].shape
    size = (int(shape[1]), int(shape[2]))
    codec = getattr(model, "codec", None) or HeatmapCodec(input_size=size)
    keypoint_set = getattr(model, "keypoint_set", None)
    keypoint_set = getattr(keypoint_set, "name", keypoint_set)
    return keras_predict_fn(model), size, codec, keypoint_set


def default_metrics(keypoint_set) -> tuple:
    if keypoint_set.name == "coco17":
        return ("coco", "pck")
    if keypoint_set.head is not None and keypoint_set.name == "mpii16":
        return ("pckh", "pck")
    return ("pck",)


def run_evaluate(args):
    from kdpose_tf.evaluation import evaluate
    from kdpose_tf.utils import io

    data = load_data(args.data, on_bad_sample=args.on_bad_sample)
    samples, keypoint_set = data.samples, data.keypoint_set
    predict_fn, size, codec, model_keypoints = load_predictor(args.model, keypoint_set)
    if model_keypoints is not None and model_keypoints != keypoint_set.name:
        raise CLIError(f"--model {args.model} predicts {model_keypoints} joints but --data {args.data} is "
                       f"labelled with {keypoint_set.name}; evaluate on data with the model's joints")
    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else default_metrics(keypoint_set)
    unknown = set(metrics) - {"pck", "pckh", "coco"}
    if unknown:
        raise CLIError(f"--metrics accepts pck, pckh, coco; got {sorted(unknown)}")
    results = evaluate(predict_fn, samples, size, codec, keypoint_set, metrics=metrics,
                       flip_test=args.flip_test, coco_gt=data.coco_gt)
    print(f"{args.model} on {len(samples)} people of {args.data}" + (" (flip test)" if args.flip_test else ""))
    for key, value in headline_metrics(results).items():
        print(f"  {key:<10s} {100 * value:6.2f} %")
    if getattr(samples, "report", None) is not None and samples.report.skipped:
        print(f"data: {data_summary(samples)}")
    if args.json_out:
        io.write_json(args.json_out, results)
        print(f"wrote {args.json_out}")


def headline_metrics(report) -> dict:
    """The one-number summaries of an `evaluate` report: PCK / PCKh means and COCO AP/AR values."""
    out = {}
    for name in ("pck", "pckh"):
        if name in report:
            out[f"{name.upper() if name == 'pck' else 'PCKh'}@{report[name]['threshold']:g}"] = report[name]["mean"]
    out.update({k: v for k, v in report.get("coco", {}).items() if isinstance(v, (int, float))})
    return out


def predict_image(predict_fn, image_path, size, codec, keypoint_set, box=None, flip_test=False):
    """Keypoints (K, 2) and scores (K,) on one image for one person box (default: whole image)."""
    import numpy as np

    from kdpose_tf.data.images import read_image
    from kdpose_tf.data.sample import PoseSample
    from kdpose_tf.evaluation import predict_samples

    image = read_image(image_path)
    h, w = image.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    k = keypoint_set.num_keypoints
    sample = PoseSample(str(image_path), np.asarray(box, np.float32), np.zeros((k, 2)), np.zeros(k),
                        keypoint_set.name, image_size=(w, h))
    keypoints, scores = predict_samples(predict_fn, [sample], size, codec, keypoint_set,
                                        flip_test=flip_test, progress=False)
    return image, keypoints[0], scores[0]


def run_predict(args):
    from kdpose_tf.keypoints import COCO17, get_keypoint_set
    from kdpose_tf.visualization import draw_keypoints, save_png

    predict_fn, size, codec, ks_name = load_predictor(args.model)
    keypoint_set = get_keypoint_set(ks_name) if ks_name else COCO17
    box = None
    if args.box:
        try:
            box = [float(v) for v in args.box.split(",")]
        except ValueError:
            box = []
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise CLIError(f"--box must be x,y,w,h with w, h > 0, got {args.box!r}")
    image, keypoints, scores = predict_image(predict_fn, args.image, size, codec, keypoint_set, box, args.flip_test)
    drawn = draw_keypoints(image, keypoints, scores, keypoint_set, threshold=args.threshold)
    output = args.output or str(Path(args.image).with_suffix("")) + "_pose.png"
    save_png(output, drawn)
    for name, (x, y), s in zip(keypoint_set.names, keypoints, scores):
        print(f"{name:>16s}: x={x:8.1f} y={y:8.1f} score={s:.3f}")
    print(f"wrote {output}")
