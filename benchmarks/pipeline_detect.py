"""From photos and a video to skeletons: what detection costs in accuracy and time, and what tracking buys.

1. COCO OKS AP on coco_mini (80 images of COCO's *training* split, 28 with labelled people; so the figures
   compare the two box sources, they are not a val2017 result) with the person detector's boxes
   (RTMDet-nano through OpenVINO, `kdpose_tf.pipeline.detect_and_estimate`) against the ground-truth boxes,
   the same pose model and decoding; pycocotools over all 80 images (`kdpose_tf.metrics.coco`). No OKS-NMS
   after the pose model (MMPose's top-down evaluation applies one).
2. Latency per image on this CPU: detector, pose model (all the image's people in one batch), both.
3. A video made from a real photo (coco_mini 000000535506: one person, 480x640) moved along a known
   path (`kdpose_tf.data.video.moving_photo`: 100 px left-right sine over 3 s, 15 px up-down, 90 frames
   at 30 fps, written as MP4 and read back): the tracker's frames per second (`kdpose_tf.pipeline.track_video`)
   against detector + pose on every frame, and the joints' jitter (RMS frame-to-frame change of the error
   against the moved ground truth, labelled joints) and error, raw and with the One Euro filter.

Pose models: the shipped preset coco17_student_128x96 when the package carries it, and PP-TinyPose 128x96
(imported with its weights; `PoseEstimator.from_preset("pp_tinypose_128x96")`).

Writes benchmarks/results/pipeline_detect.json and .md (atomically) and prints the table.

Usage:
    KDPOSE_SHARED=../shared .venv/bin/python benchmarks/pipeline_detect.py [--frames 90] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdpose_tf.data.coco import read_coco  # noqa: E402
from kdpose_tf.data.images import read_image  # noqa: E402
from kdpose_tf.data.video import VideoWriter, moving_photo, read_video  # noqa: E402
from kdpose_tf.metrics.coco import coco_keypoint_eval, coco_results  # noqa: E402
from kdpose_tf.pipeline import coco_people, top_down, track_video  # noqa: E402
from kdpose_tf.runtimes.detector import PersonDetector  # noqa: E402
from kdpose_tf.tracking import TRACKING, OneEuroFilter  # noqa: E402
from kdpose_tf.utils.io import write_json, write_text  # noqa: E402
from kdpose_tf.utils.shared import shared_dir  # noqa: E402
from kdpose_tf.visualization import markdown_table  # noqa: E402

VIDEO_PHOTO = 535506  # coco_mini image id: one standing person, legs partly hidden by the kitchen counter


def pose_models():
    """The shipped COCO-17 student when the package carries it, and PP-TinyPose 128x96 (its initial weights)."""
    from kdpose_tf.models.preset_utils import shipped_presets

    names = ["coco17_student_128x96"] if "coco17_student_128x96" in shipped_presets() else []
    return names + ["pp_tinypose_128x96"]


def coco_ap(pose, detector, root, thresholds):
    ann_file = root / "annotations" / "person_keypoints_train2017.json"
    gt = json.loads(ann_file.read_text())
    files = {im["id"]: root / "train2017" / im["file_name"] for im in gt["images"]}
    image_ids = sorted(files)
    samples = read_coco(ann_file, image_dir=root / "train2017", keypoint_set="coco17", on_bad_sample="skip")
    images = {i: read_image(p) for i, p in files.items()}
    kp, sc = pose([images[s.image_id] for s in samples], [s.bbox for s in samples])
    rows = [{"boxes": "ground truth", "people": len(samples),
             **coco_keypoint_eval(ann_file, coco_results(samples, kp, sc), image_ids=image_ids)}]
    timing = []
    for threshold in thresholds:
        results, count = [], 0
        for image_id in image_ids:
            image = images[image_id]
            boxes, scores = detector(image, score_threshold=threshold, max_people=20)
            kps, kss = pose([image] * len(boxes), boxes)
            people = [{"box": b, "score": float(s), "keypoints": k, "keypoint_scores": ks}
                      for b, s, k, ks in zip(boxes, scores, kps, kss)]
            results += coco_people(people, image_id)
            count += len(people)
            if threshold == thresholds[0]:  # timed apart, the fastest of `repeats` (the cores are shared)
                timing.append({"detector_ms": best_ms(lambda: detector(image, score_threshold=threshold)),
                               "pose_ms": best_ms(lambda: pose([image] * len(boxes), boxes)) if len(boxes) else 0.0,
                               "people": len(boxes)})
        rows.append({"boxes": f"detected (score >= {threshold:g})", "people": count,
                     **coco_keypoint_eval(ann_file, results, image_ids=image_ids)})
    return rows, timing


REPEATS = 3


def best_ms(fn, repeats=REPEATS):
    """The fastest of `repeats` calls, in ms: the least disturbed by other jobs on the shared cores."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def make_video(root, path, frames, fps=30.0):
    ann = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    image = next(im for im in ann["images"] if im["id"] == VIDEO_PHOTO)
    person = max((a for a in ann["annotations"] if a["image_id"] == VIDEO_PHOTO), key=lambda a: a["num_keypoints"])
    photo = read_image(root / "train2017" / image["file_name"])
    t = np.arange(frames) / fps
    shifts = np.stack([100 * np.sin(2 * np.pi * t / 3.0), 15 * np.sin(2 * np.pi * t / 1.5)], axis=1)
    with VideoWriter(path, fps, (photo.shape[1], photo.shape[0])) as out:
        for frame in moving_photo(photo, shifts):
            out.write(frame)
    joints = np.asarray(person["keypoints"], np.float64).reshape(-1, 3)
    return joints[:, :2][None] + shifts[:, None], joints[:, 2] > 0, person["bbox"][3]


def smooth(raw, heights, fps, min_cutoff, beta):
    f = OneEuroFilter(min_cutoff, beta, TRACKING["one_euro"]["d_cutoff"])
    return np.stack([f(k, i / fps, 1.0 / h) for i, (k, h) in enumerate(zip(raw, heights))])


def jitter_row(name, keypoints, truth, visible, height):
    err = (keypoints - truth)[:, visible]
    jitter = np.sqrt((np.diff(err, axis=0) ** 2).sum(-1).mean())
    return {"joints": name, "jitter_px": float(jitter), "error_px": float(np.sqrt((err ** 2).sum(-1)).mean()),
            "error_pct_height": float(100 * np.sqrt((err ** 2).sum(-1)).mean() / height)}


def video_rows(pose, detector, root, frames):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "moving_person.mp4"
        truth, visible, height = make_video(root, path, frames)
        fps = read_video(path).fps
        steps = [{k: v for k, v in step.items() if k != "image"}
                 for step in track_video(read_video(path), pose, detector, fps=fps)]
        count = sum(1 for _ in read_video(path))

        def tracked():  # decoding + tracking, as `kdpose predict VIDEO` without the drawing and writing
            for _ in track_video(read_video(path), pose, detector, fps=fps):
                pass

        def every_frame():  # decoding + detector + pose on every frame (no tracking)
            for frame in read_video(path):
                boxes, _ = detector(frame, score_threshold=0.3, max_people=1)
                pose([frame] * len(boxes), boxes)

        # the two passes interleaved, the fastest of each counted (the cores are shared with other jobs)
        tracked_s, every_s = [], []
        for _ in range(REPEATS):
            tracked_s.append(best_ms(tracked, 1) / 1e3)
            every_s.append(best_ms(every_frame, 1) / 1e3)
        tracked_fps, every_fps = count / min(tracked_s), count / min(every_s)
    found = [s["person"] is not None for s in steps]
    if not all(found):
        raise RuntimeError(f"the tracker lost the person on {found.count(False)} frames")
    raw = np.stack([s["person"]["raw_keypoints"] for s in steps])
    smoothed = np.stack([s["person"]["keypoints"] for s in steps])
    boxes = np.stack([s["person"]["box"] for s in steps])
    centers = boxes[:, :2] + boxes[:, 2:] / 2
    moved = truth.mean(1) - truth[0].mean(0)  # the true shift of every frame
    # from frame 1 on, every box is the tracker's crop (frame 0's is the detector's, another size)
    follow = np.abs((centers[1:] - centers[1]) - (moved[1:] - moved[1])).max(1)
    euro = TRACKING["one_euro"]
    # the filter run offline on the raw joints is the tracker's own (the next crop uses the raw joints)
    assert np.allclose(smooth(raw, boxes[:, 3], fps, euro["min_cutoff"], euro["beta"]), smoothed)
    rows = [jitter_row("raw", raw, truth, visible, height),
            jitter_row(f"One Euro (default: min_cutoff {euro['min_cutoff']:g}, beta {euro['beta']:g})", smoothed,
                       truth, visible, height)]
    for min_cutoff, beta in ((0.3, 4.0), (1.0, 0.0), (1.0, 4.0), (0.5, 10.0), (2.0, 1.0)):
        if (min_cutoff, beta) != (euro["min_cutoff"], euro["beta"]):
            rows.append(jitter_row(f"One Euro min_cutoff {min_cutoff:g}, beta {beta:g}",
                                   smooth(raw, boxes[:, 3], fps, min_cutoff, beta), truth, visible, height))
    summary = {"frames": len(steps), "fps_video": fps, "tracked_fps": tracked_fps, "detect_every_frame_fps": every_fps,
               "detector_frames": int(sum(s["detector"] for s in steps)),
               "crop_follow_median_error_px": float(np.median(follow)), "crop_follow_max_error_px": float(follow.max()),
               "person_height_px": height}
    return rows, summary


def measure(name, detector, root, frames):
    """AP, latency, tracking and jitter of one pose model."""
    from kdpose_tf.models.pose_estimator import PoseEstimator

    pose = top_down(PoseEstimator.from_preset(name), compiled=True)
    warm = read_image(next((root / "train2017").glob("*.jpg")))
    for n in (1, 2, 3):  # the compiled predict function traces twice (then its batch size is free)
        pose([warm] * n, [[0, 0, warm.shape[1], warm.shape[0]]] * n)
    ap_rows, timing = coco_ap(pose, detector, root, thresholds=(0.3, 0.05))
    jitter, video = video_rows(pose, detector, root, frames)
    det = np.array([t["detector_ms"] for t in timing])
    pos = np.array([t["pose_ms"] for t in timing])
    people = np.array([t["people"] for t in timing])
    some = people > 0  # the pose model runs only where the detector found someone
    latency = {"images": len(timing), "images_with_people": int(some.sum()),
               "detector_ms_median": float(np.median(det[some])), "detector_ms_median_all_images": float(np.median(det)),
               "pose_ms_median": float(np.median(pos[some])), "total_ms_median": float(np.median((det + pos)[some])),
               "total_ms_mean_all_images": float(np.mean(det + pos)),
               "people_per_image_mean": float(people[some].mean()),
               "pose_ms_per_person_median": float(np.median(pos[some] / people[some]))}
    return {"pose_model": name, "coco_ap": ap_rows, "latency": latency, "video": video, "jitter": jitter}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO threads of the detector")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline_detect"))
    args = parser.parse_args(argv)
    root = shared_dir() / "data" / "coco_mini"
    load_before = os.getloadavg()
    detector = PersonDetector(num_threads=args.threads)
    detector(read_image(next((root / "train2017").glob("*.jpg"))))
    models = [measure(name, detector, root, args.frames) for name in pose_models()]
    report = {"models": models, "detector": "RTMDet-nano person (OpenVINO, f32)", "detector_threads": args.threads,
              "data": "coco_mini: 80 images of COCO train2017 (the training split), 28 with labelled people",
              "tracking_defaults": TRACKING, "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()}
    write_json(args.out + ".json", report)
    ap_table = markdown_table([{"model": m["pose_model"], **{k: r[k] for k in ("boxes", "people", "AP", "AP50", "AP75",
                                                                                "AR")}}
                               for m in models for r in m["coco_ap"]])
    lat_table = markdown_table([{"model": m["pose_model"], "images": m["latency"]["images_with_people"],
                                 "people / image": m["latency"]["people_per_image_mean"],
                                 "detector ms": m["latency"]["detector_ms_median"],
                                 "pose ms (all people)": m["latency"]["pose_ms_median"],
                                 "pose ms / person": m["latency"]["pose_ms_per_person_median"],
                                 "detector + pose ms": m["latency"]["total_ms_median"]} for m in models], digits=1)
    fps_table = markdown_table([{"model": m["pose_model"], "tracker FPS": m["video"]["tracked_fps"],
                                 "detector runs": m["video"]["detector_frames"],
                                 "detector + pose every frame FPS": m["video"]["detect_every_frame_fps"],
                                 "crop vs true motion, median px": m["video"]["crop_follow_median_error_px"],
                                 "max px": m["video"]["crop_follow_max_error_px"]} for m in models], digits=1)
    jit_table = markdown_table([{"model": m["pose_model"], **r} for m in models for r in m["jitter"]],
                               ["model", "joints", ("jitter_px", "jitter px"), ("error_px", "error px"),
                                ("error_pct_height", "error % of height")], digits=2)
    video = models[0]["video"]
    md = f"""# Person detection + top-down pose, and tracking on a video

Detector RTMDet-nano (person, OpenVINO f32, {args.threads} threads); pose models: {', '.join(f'`{m["pose_model"]}`'
                                                                                        for m in models)}.
Measured on {report['cpu_count']} CPU cores shared with other jobs (load average {load_before[0]:.1f} before,
{report['load_average_after'][0]:.1f} after): each time is the fastest of {REPEATS} runs, still an upper bound.
Re-run: `KDPOSE_SHARED=../shared .venv/bin/python benchmarks/pipeline_detect.py`.

## COCO OKS AP on coco_mini

coco_mini is 80 images of COCO's **training** split (28 with labelled people), and the shipped student was
trained on its 86 people: the table compares detected boxes with ground-truth boxes for one model; it is not
a val2017 result and does not rank the models. All 80 images scored (pycocotools), the same decoding for
both box sources, no OKS-NMS after the pose model (MMPose's top-down evaluation applies one).

{ap_table}

## Latency per image

Medians over the images where the detector (score >= 0.3) found someone; the pose model runs through
Keras' compiled predict function (TensorFlow, 2 threads), all of an image's people in one batch. The two
models are one network (the student is PP-TinyPose 128x96 fine-tuned), measured one after the other: a gap
between their rows is the machine's load changing, not the models; compare within a row.

{lat_table}

## Video: one person tracked

{video['frames']} frames at {video['fps_video']:g} FPS made from a real photo (coco_mini 000000535506, one
person {video['person_height_px']:.0f} px tall) moved along a known path (100 px left-right sine over 3 s,
15 px up-down), written as MP4 and read back. Tracker: crop from the previous frame's joints, detector when
lost; MP4 decoding included, drawing and writing not; the tracker's and the every-frame passes interleaved.
"Crop vs true motion": how far the tracker's box centre moved from the person's true motion.

{fps_table}

{jit_table}

Jitter: RMS of the frame-to-frame change of each labelled joint's error against the moved ground truth (the
true motion removed); error: mean distance to it. At 128x96 the heatmaps are 32x24: this 500 px person
lies on ~16 px heatmap cells (quarter-cell offsets), hence the raw jitter. The default filter
(`kdpose_tf.tracking.TRACKING`) is the compromise of the grid above: most of the jitter gone for about 1 px
more error; min_cutoff 1 with beta 0 is smoother still but lags (error +8 px).
"""
    write_text(args.out + ".md", md)
    print(md)


if __name__ == "__main__":
    main()
