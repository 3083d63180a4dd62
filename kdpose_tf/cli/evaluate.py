"""`kdpose evaluate` and `kdpose predict`: the same decoding for Keras and TFLite models."""

from __future__ import annotations

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
        from kdpose_tf.runtimes.litert import TFLiteRunner

        if not Path(spec).exists():
            raise CLIError(f"TFLite model {spec} does not exist")
        runner = TFLiteRunner(spec)
        if is_keypoint_model(runner):  # MoveNet-style: joints, not heatmaps; predict draws its own joints
            teacher = KeypointTeacher(spec)
            own = None if keypoint_set is not None else teacher.keypoint_set.name
            return (*teacher_evaluation([teacher], keypoint_set or teacher.keypoint_set), own)
        shape = runner.input_details["shape"]
        size = (int(shape[1]), int(shape[2]))
        from kdpose_tf.runtimes.litert import read_sidecar

        keypoint_set = ((read_sidecar(spec) or {}).get("keypoints") or {}).get("set")
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

    requested = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else None
    unknown = set(requested or ()) - {"pck", "pckh", "coco"}
    if unknown:
        raise CLIError(f"--metrics accepts pck, pckh, coco; got {sorted(unknown)}")
    data = load_data(args.data, on_bad_sample=args.on_bad_sample)
    samples, keypoint_set = data.samples, data.keypoint_set
    metrics = requested or default_metrics(keypoint_set)
    coco_gt = data.coco_gt
    if "coco" in metrics and coco_gt is not None:  # read and checked before the inference, not after it
        from kdpose_tf.metrics.coco import load_coco_gt

        coco_gt = load_coco_gt(coco_gt)
    predict_fn, size, codec, model_keypoints = load_predictor(args.model, keypoint_set)
    if model_keypoints is not None and model_keypoints != keypoint_set.name:
        raise CLIError(f"--model {args.model} predicts {model_keypoints} joints but --data {args.data} is "
                       f"labelled with {keypoint_set.name}; evaluate on data with the model's joints")
    results = evaluate(predict_fn, samples, size, codec, keypoint_set, metrics=metrics,
                       flip_test=args.flip_test, coco_gt=coco_gt)
    print(f"{args.model} on {len(samples)} people of {args.data}" + (" (flip test)" if args.flip_test else ""))
    if "pck" in results:
        print(f"  PCK: {results['pck']['protocol_description']}")
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
    if "body12" in report.get("pck", {}):
        out["body-12"] = report["pck"]["body12"]
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
    x, y, bw, bh = box
    if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        raise CLIError(f"box {','.join(f'{v:g}' for v in box)} lies entirely outside the {w}x{h} image {image_path}")
    k = keypoint_set.num_keypoints
    sample = PoseSample(str(image_path), np.asarray(box, np.float32), np.zeros((k, 2)), np.zeros(k),
                        keypoint_set.name, image_size=(w, h))
    keypoints, scores = predict_samples(predict_fn, [sample], size, codec, keypoint_set,
                                        flip_test=flip_test, progress=False)
    return image, keypoints[0], scores[0]


def _parse_box(text):
    """--box 'x,y,w,h' -> four finite floats with w, h > 0."""
    import math

    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise CLIError(f"--box must be x,y,w,h: four finite numbers with w, h > 0, got {text!r}")
    return box


def _predict_output(image, output):
    """The image predict writes: --output (default <image>_pose.png), never the input itself, with a
    suffix that names its format."""
    import os

    from kdpose_tf.visualization import IMAGE_SUFFIXES

    output = Path(output or str(Path(image).with_suffix("")) + "_pose.png")
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise CLIError(f"--output {output}: unknown image extension {output.suffix or '(none)'!r}; the file is "
                       f"written in the format its extension names, one of {', '.join(IMAGE_SUFFIXES)}")
    if output.exists() and Path(image).exists() and os.path.samefile(output, image):
        raise CLIError(f"--output {output} is the input image --image {image}: predict does not overwrite its "
                       "input; give another --output")
    return output


def run_predict(args):
    from kdpose_tf.keypoints import COCO17, get_keypoint_set
    from kdpose_tf.visualization import draw_keypoints, save_image

    box = _parse_box(args.box) if args.box else None  # cheap checks before the model loads
    output = _predict_output(args.image, args.output)
    predict_fn, size, codec, ks_name = load_predictor(args.model)
    keypoint_set = get_keypoint_set(ks_name) if ks_name else COCO17
    image, keypoints, scores = predict_image(predict_fn, args.image, size, codec, keypoint_set, box, args.flip_test)
    drawn = draw_keypoints(image, keypoints, scores, keypoint_set, threshold=args.threshold)
    save_image(output, drawn)
    for name, (x, y), s in zip(keypoint_set.names, keypoints, scores):
        print(f"{name:>16s}: x={x:8.1f} y={y:8.1f} score={s:.3f}")
    print(f"wrote {output}")
