"""Distil a pretrained heatmap model from another framework (PP-TinyPose, OpenVINO IR) into a Keras student.

`HeatmapTeacher.from_preset("pp_tinypose_256x192")` runs the PaddleDetection model through
OpenVINO with its own preprocessing (RGB, ImageNet mean/std, NCHW). `attach_teacher_heatmaps`
runs it once per person and keeps its heatmaps (mapped to the student's joints by name); the
data pipeline warps them through every random augmentation, flip included, so `model.fit` with
`Distiller(None, student)` costs no teacher pass per step. Unlabelled people (COCO's person boxes
without keypoints) train on the teacher alone.

Data: LSPET's first --people sports photos (LSP-14) from $KDPOSE_SHARED/data/lspet, plus coco_mini's
unlabelled person boxes; test: PARSE 101-305. Sizes are small so that it runs in a few minutes on a
laptop CPU; benchmarks/distill_real.py is the full comparison.

    pip install "kdpose_tf[teachers]"      # openvino
    python examples/distill_from_pp_tinypose.py [--epochs 2] [--people 400] [--output example_output]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras

from kdpose_tf import LSP14
from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.coco import unlabelled_people
from kdpose_tf.data.datasets import to_keypoint_set
from kdpose_tf.data.lspet import read_lspet
from kdpose_tf.data.parse import read_parse
from kdpose_tf.distillation import Distiller
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher, attach_teacher_heatmaps
from kdpose_tf.evaluation import evaluate, keras_predict_fn
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.training import fit_resumable
from kdpose_tf.utils.shared import shared_dir

SIZE = (128, 96)  # (height, width): a mobile input, the teacher's 4:3 aspect


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--people", type=int, default=400, help="LSPET people to train on")
    parser.add_argument("--output", default="example_output")
    args = parser.parse_args(argv)
    out = Path(args.output)
    keras.utils.set_random_seed(0)
    data = shared_dir() / "data"

    train = read_lspet(data / "lspet", on_bad_sample="skip", limit=args.people)
    coco = data / "coco_mini"
    extra = to_keypoint_set(unlabelled_people(coco / "annotations" / "person_keypoints_train2017.json",
                                              coco / "train2017", on_bad_sample="skip"), LSP14)
    test = read_parse(data / "parse", split="test", on_bad_sample="skip")

    teacher = HeatmapTeacher.from_preset("pp_tinypose_256x192")        # COCO-17 heatmaps, 64x48
    train = attach_teacher_heatmaps(list(train) + list(extra), teacher, LSP14)   # tqdm bar

    codec = HeatmapCodec(SIZE)
    student = PoseEstimator.from_preset("lite_hrnet_18_coco_256x192", load_weights=False, keypoint_set="lsp14",
                                        num_keypoints=14, input_size=SIZE, name="student")
    distiller = Distiller(None, student, alpha=0.5)   # FPD: 0.5 * teacher-heatmap MSE + 0.5 * ground-truth MSE
    distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
    # Resumable: run it again with the same --output and it continues from the last epoch.
    history = fit_resumable(distiller, train, codec, LSP14, out / "run_pp_tinypose", epochs=args.epochs, batch_size=32)
    print({k: round(v[-1], 5) for k, v in history.items()})
    student.save(out / "student_from_pp_tinypose.keras")

    for name, fn, size, c in (("PP-TinyPose 256x192 (teacher)", teacher.predict_fn(HeatmapCodec((256, 192)), LSP14),
                               (256, 192), HeatmapCodec((256, 192))),
                              ("student", keras_predict_fn(student), SIZE, codec)):
        report = evaluate(fn, test, size, c, LSP14, progress=False)
        print(f"{name:30s} PCK@0.2 on PARSE 101-305: {100 * report['pck']['mean']:5.1f}")
    print(f"wrote {out / 'student_from_pp_tinypose.keras'}")


if __name__ == "__main__":
    main()
