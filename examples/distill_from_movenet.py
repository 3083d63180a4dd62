"""Distil a pretrained TFLite model (MoveNet Lightning int8) into your own heatmap student.

MoveNet is not a Keras model and outputs keypoints, not heatmaps. `KeypointTeacher` runs it
once on every person box, `attach_teacher_keypoints` stores its joints with the samples, the
data pipeline warps them with each random augmentation and renders them with the student's
codec, and `Distiller(None, student)` distils from them (FPD: α·KD + (1−α)·GT).

Data: the real COCO photos in $KDPOSE_SHARED/data/coco_mini; the teacher:
$KDPOSE_SHARED/models/movenet_singlepose_lightning_int8.tflite. Sizes are tiny so that it runs in
a few minutes on a laptop CPU: the student's scores show the plumbing, not a trained model.

    python examples/distill_from_movenet.py [--epochs 2] [--output example_output]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import keras

from kdpose_tf import COCO17
from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.coco import read_coco
from kdpose_tf.distillation import Distiller
from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, attach_teacher_keypoints, teacher_predict_fn
from kdpose_tf.evaluation import evaluate, keras_predict_fn
from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.training import fit_resumable

SIZE = (128, 96)  # (height, width), COCO's 4:3 aspect


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", default="example_output")
    args = parser.parse_args(argv)
    out = Path(args.output)
    keras.utils.set_random_seed(0)

    shared = Path(os.environ.get("KDPOSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    root = shared / "data" / "coco_mini"
    gt_file = root / "annotations" / "person_keypoints_train2017.json"
    samples = read_coco(gt_file, root / "train2017", on_bad_sample="skip")

    movenet = KeypointTeacher(shared / "models" / "movenet_singlepose_lightning_int8.tflite")
    train = attach_teacher_keypoints(samples, movenet, COCO17, min_score=0.3)  # tqdm bar

    codec = HeatmapCodec(input_size=SIZE)
    backbone = HourglassBackbone(num_stacks=1, filters=16, order=3, block="inverted_residual", num_keypoints=17,
                                 input_shape=(*SIZE, 3), name="student_backbone")
    student = PoseEstimator(backbone, keypoint_set="coco17", codec=codec, name="student")
    distiller = Distiller(None, student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
    # Resumable: run it again with the same --output and it continues from the last epoch.
    history = fit_resumable(distiller, train, codec, COCO17, out / "run_movenet", epochs=args.epochs, batch_size=16)
    print({k: round(v[-1], 5) for k, v in history.items()})
    student.save(out / "student_from_movenet.keras")

    for name, fn in (("MoveNet (as the student sees it)", teacher_predict_fn(movenet, codec, COCO17)),
                     ("student", keras_predict_fn(student))):
        report = evaluate(fn, samples, SIZE, codec, COCO17, metrics=("pck", "coco"), coco_gt=gt_file)
        print(f"{name:34s} PCK@0.2 {100 * report['pck']['mean']:5.1f}   OKS AP {100 * report['coco']['AP']:5.1f}")
    print(f"wrote {out / 'student_from_movenet.keras'}")


if __name__ == "__main__":
    main()
