"""The whole kdpose_tf workflow in Python, on the real COCO photos in $KDPOSE_SHARED/data/coco_mini.

1. read COCO keypoints (bad annotations skipped and counted), build the tf.data pipeline;
2. train a small stacked-hourglass teacher with plain `model.fit`;
3. distill an inverted-residual (LSHM) student from it with `Distiller` and the LSHM schedule;
4. evaluate both (PCK@0.2, COCO OKS AP through pycocotools);
5. export the student to full-int8 TFLite (+ sidecar JSON), evaluate the int8 model the same way;
6. predict keypoints on a photo and draw them.

The sizes are tiny so that it runs in a few minutes on a laptop CPU: the scores show the
plumbing, not a trained model (use real epochs and input sizes for that: see the README).

    python examples/distill_coco_mini.py [--epochs 2] [--output example_output]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import keras
import numpy as np

from kdpose_tf import COCO17
from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.coco import read_coco
from kdpose_tf.data.pipeline import make_dataset
from kdpose_tf.distillation import Distiller, LSHMLinearSchedule
from kdpose_tf.evaluation import evaluate, keras_predict_fn
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.data.images import read_image
from kdpose_tf.visualization import draw_keypoints, save_png

SIZE = (128, 96)  # (height, width), COCO's 4:3 aspect


def hourglass(name, stacks, filters, block):
    backbone = HourglassBackbone(num_stacks=stacks, filters=filters, order=3, block=block, num_keypoints=17,
                                 input_shape=(*SIZE, 3), name=f"{name}_backbone")
    return PoseEstimator(backbone, keypoint_set="coco17", codec=HeatmapCodec(input_size=SIZE), name=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", default="example_output")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)

    root = Path(os.environ.get("KDPOSE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "coco_mini"
    gt_file = root / "annotations" / "person_keypoints_train2017.json"
    samples = read_coco(gt_file, root / "train2017", on_bad_sample="skip")
    print(samples.report)

    teacher = hourglass("teacher", stacks=2, filters=32, block="bottleneck")
    student = hourglass("student", stacks=1, filters=16, block="inverted_residual")
    codec = student.codec
    train = make_dataset(samples, codec, COCO17, batch_size=16, training=True, seed=0)

    teacher.compile(optimizer=keras.optimizers.Adam(2e-3))
    teacher.fit(train, epochs=args.epochs)

    steps = args.epochs * len(train)
    distiller = Distiller(teacher, student, alpha=LSHMLinearSchedule(total_steps=steps))
    distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = distiller.fit(train, epochs=args.epochs)  # loss, gt_loss, kd_loss, kd_weight, gt_weight
    print({k: round(v[-1], 5) for k, v in history.history.items()})
    student.save(out / "student.keras")

    def score(predict_fn):
        report = evaluate(predict_fn, samples, SIZE, codec, COCO17, metrics=("pck", "coco"), coco_gt=gt_file)
        return report["pck"]["mean"], report["coco"]["AP"]

    crops = np.stack([next(iter(train))[0][i].numpy() for i in range(16)])  # real training crops
    tflite = export_tflite(student, out / "student_int8.tflite", quantize="int8", representative_data=crops,
                           keypoint_set=COCO17)
    runner = TFLiteRunner(tflite)
    for name, fn in (("teacher", keras_predict_fn(teacher)), ("student", keras_predict_fn(student)),
                     (f"student int8 ({runner.delegate} kernels)", runner)):
        pck, ap = score(fn)
        print(f"{name:32s} PCK@0.2 {100 * pck:5.1f}   OKS AP {100 * ap:5.1f}")

    person = samples[0]
    keypoints, scores = student.predict_keypoints([str(person.image_path)], [person.bbox])
    drawn = draw_keypoints(read_image(person.image_path), keypoints[0], scores[0], COCO17, threshold=0.0)
    path = save_png(out / "prediction.png", drawn)
    print(f"wrote {out / 'student.keras'}, {tflite}, {path}")


if __name__ == "__main__":
    main()
