"""`kdpose predict IMAGE|FOLDER|VIDEO`: people found by the person detector, a skeleton on each, COCO JSON.

``--image FILE`` keeps the one-person form (`kdpose_tf.cli.evaluate.run_predict`: the ``--box`` or the
whole image). The positional input detects the people (`kdpose_tf.pipeline.detect_and_estimate`) unless
``--box`` gives the one box; a video follows one person (`kdpose_tf.pipeline.track_video`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kdpose_tf.cli.common import CLIError, load_model
from kdpose_tf.cli.evaluate import _parse_box, _predict_output, load_predictor, run_predict as _predict_one_box


def fraction(text: str) -> float:
    """An argument such as a score threshold: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _kind(path):
    from kdpose_tf.data.video import VIDEO_SUFFIXES
    from kdpose_tf.visualization import IMAGE_SUFFIXES

    path = Path(path)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    if path.suffix.lower() in IMAGE_SUFFIXES or not path.exists():
        return "image"  # a missing file is reported by the image reader, naming it
    raise CLIError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) "
                   "or a folder of images")


def _image_id(path, index):
    """COCO's own ids for COCO file names (000000012345.jpg), else 1, 2, ... in order."""
    return int(path.stem) if path.stem.isdigit() else index


def _pose_model(args, many):
    """The `TopDown` of --model: compiled when it will run many times (a folder, a video)."""
    from kdpose_tf.keypoints import COCO17
    from kdpose_tf.pipeline import top_down

    if str(args.model).endswith(".tflite"):
        predict_fn, size, codec, keypoint_set = load_predictor(args.model)
        return top_down((predict_fn, size, codec, keypoint_set or COCO17), flip_test=args.flip_test)
    return top_down(load_model(args.model), compiled=many, flip_test=args.flip_test)


def _report(people, where):
    if not people:
        print(f"{where}: nobody found (no person box scored above --box-threshold)")
    for n, p in enumerate(people, 1):
        x, y, w, h = (float(v) for v in p["box"])
        print(f"{where}: person {n}: box {x:.0f},{y:.0f},{w:.0f},{h:.0f} score {p['score']:.2f}, "
              f"mean joint score {float(p['keypoint_scores'].mean()):.2f}")


def run_predict(args):
    if args.image is not None:
        if args.input is not None:
            raise CLIError(f"give the image once: {args.input} or --image {args.image}")
        return _predict_one_box(args)
    if args.input is None:
        raise CLIError("give an image, a folder of images or a video to predict on (or --image FILE)")
    box = _parse_box(args.box) if args.box else None  # cheap checks before the models load
    kind = _kind(args.input)
    if kind == "video":
        return _predict_video(args, box)
    from kdpose_tf.data.images import check_image_file
    from kdpose_tf.visualization import IMAGE_SUFFIXES

    source = Path(args.input)
    if kind == "folder":
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise CLIError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        out_dir = Path(args.output or f"{source.as_posix().rstrip('/')}_pose")
        if out_dir.exists() and out_dir.resolve() == source.resolve():
            raise CLIError(f"--output {out_dir} is the input folder: predict does not write among its inputs")
        outputs = [out_dir / f"{p.stem}_pose.png" for p in images]
        json_path = out_dir / "results.json"
    else:
        images = [source]
        outputs = [_predict_output(source, args.output)]
        json_path = outputs[0].with_suffix(".json")
    for image in images:  # every image is checked before the models load
        check_image_file(image)
    _predict_images(args, images, outputs, json_path, box)


def _predict_images(args, images, outputs, json_path, box):
    from tqdm.auto import tqdm

    from kdpose_tf.data.images import read_image
    from kdpose_tf.pipeline import coco_people, detect_and_estimate, draw_people, person_detector
    from kdpose_tf.utils import io
    from kdpose_tf.visualization import save_image

    detector = None if box is not None else person_detector(args.detector)
    pose = _pose_model(args, many=len(images) > 2)
    results, found = [], 0
    for index, (image, output) in enumerate(tqdm(list(zip(images, outputs)), unit="image",
                                                         disable=len(images) < 2), 1):
        rgb = read_image(image)
        people = detect_and_estimate(rgb, pose, detector, max_people=args.max_people,
                                     box_score=args.box_threshold, boxes=None if box is None else [box])
        save_image(output, draw_people(rgb, people, pose.keypoint_set, threshold=args.threshold))
        entries = coco_people(people, _image_id(image, index))
        for entry in entries:
            entry["file_name"] = image.name
        results.extend(entries)
        found += len(people)
        if len(images) == 1:
            _report(people, image)
    io.write_json(json_path, results)
    where = outputs[0] if len(outputs) == 1 else f"{len(outputs)} images in {outputs[0].parent}"
    print(f"{found} {'person' if found == 1 else 'people'} in {len(images)} image(s); wrote {where} and "
          f"{json_path} (COCO keypoint results)")


def _predict_video(args, box):
    import os

    from tqdm.auto import tqdm

    from kdpose_tf.data.video import VideoWriter, read_video
    from kdpose_tf.pipeline import coco_people, draw_people, person_detector, track_video
    from kdpose_tf.utils import io

    source = Path(args.input)
    output = Path(args.output or str(source.with_suffix("")) + "_pose.mp4")
    if output.suffix.lower() != ".mp4":
        raise CLIError(f"--output {output}: a video is written as MP4; give a .mp4 file")
    if output.exists() and source.exists() and os.path.samefile(output, source):
        raise CLIError(f"--output {output} is the input video: predict does not overwrite its input")
    json_path = output.with_suffix(".json")
    video = read_video(source)
    try:
        detector = person_detector(args.detector)
        pose = _pose_model(args, many=True)
        frames, lost, first_done = [], 0, None
        bar = tqdm(video, total=video.frame_count or None, unit="frame", desc="track")
        tracked = track_video(bar, pose, detector, fps=video.fps, smoothing=not args.no_smoothing,
                              box_score=args.box_threshold, box=box)
        started = time.perf_counter()
        with VideoWriter(output, video.fps, video.size) as writer:
            for step in tracked:
                person = step["person"]
                people = [] if person is None else [person]
                lost += person is None
                writer.write(draw_people(step["image"], people, pose.keypoint_set, threshold=args.threshold))
                frames.append({"frame": step["frame"], "time_s": round(step["time"], 4),
                               "detector": step["detector"],
                               "people": coco_people(people, step["frame"] + 1)})
                if first_done is None:  # the first frame pays the one-off costs (tracing, warm-up)
                    first_done = time.perf_counter()
        finished = time.perf_counter()
        bar.close()
    finally:
        video.close()
    io.write_json(json_path, frames)
    n, detected = len(frames), sum(f["detector"] for f in frames)
    after = f", {(n - 1) / (finished - first_done):.1f} FPS after the first frame" if n > 1 else ""
    print(f"{n} frames in {finished - started:.1f} s: {n / (finished - started):.1f} FPS{after} (detector on "
          f"{detected} frames, nobody found on {lost}); wrote {output} and {json_path} (one entry per frame)")
