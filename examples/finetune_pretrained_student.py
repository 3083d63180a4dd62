"""Ship a student that is as accurate as MoveNet and faster: start it from a pretrained model, distil, int8.

1. `PoseEstimator.from_preset("pp_tinypose_128x96", keypoint_set="lsp14")` imports PP-TinyPose 128x96
   (PaddleDetection, OpenVINO IR, COCO-trained) as a trainable Keras model: its 12 limb joints carried
   over by name, LSP's neck and head_top new.
2. Fine-tune it on your people with heatmap KD from the bigger PP-TinyPose 256x192 (`Distiller(None, ...)`
   on cached, augmentation-warped teacher heatmaps).
3. Export int8 (real-crop calibration, activation equalization, XNNPACK check) and score the .tflite the
   same way as the Keras model.

Data: LSPET's first --people photos for training, PARSE 101-305 for the test. The full, 3-seed
version of this with MoveNet timed beside it is `benchmarks/distill_real.py --student pp_tinypose_128x96`
(results/distill_finetune.md: 70.3 body-12 PCK int8 vs MoveNet 70.0, at 0.68x its latency).

    pip install "kdpose_tf[teachers]"      # openvino, to read the pretrained files
    python examples/finetune_pretrained_student.py [--epochs 1] [--people 800] [--output example_output]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras

from kdpose_tf import LSP14
from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.data.datasets import calibration_crops
from kdpose_tf.data.lspet import read_lspet
from kdpose_tf.data.parse import read_parse
from kdpose_tf.distillation import Distiller
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher, attach_teacher_heatmaps
from kdpose_tf.evaluation import evaluate, keras_predict_fn
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.training import fit_resumable, make_optimizer
from kdpose_tf.utils.shared import shared_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--people", type=int, default=800, help="LSPET people to fine-tune on")
    parser.add_argument("--output", default="example_output")
    args = parser.parse_args(argv)
    out = Path(args.output)
    keras.utils.set_random_seed(0)
    data = shared_dir() / "data"

    student = PoseEstimator.from_preset("pp_tinypose_128x96", keypoint_set="lsp14", name="student")
    size, codec = student.input_size, HeatmapCodec(student.input_size)
    train = list(read_lspet(data / "lspet", on_bad_sample="skip", limit=args.people))
    test = read_parse(data / "parse", split="test", on_bad_sample="skip")
    teacher = HeatmapTeacher.from_preset("pp_tinypose_256x192")
    train = attach_teacher_heatmaps(train, teacher, LSP14)            # once per person (tqdm bar)

    distiller = Distiller(None, student, alpha=0.5)
    steps = max(1, len(train) // 32) * args.epochs
    distiller.compile(optimizer=make_optimizer(2e-4, steps))           # fine-tuning: a small learning rate
    fit_resumable(distiller, train, codec, LSP14, out / "run_finetune", epochs=args.epochs, batch_size=32)
    student.save(out / "student_finetuned.keras")

    path = export_tflite(student, out / "student_finetuned_int8.tflite", quantize="int8",
                         representative_data=calibration_crops(train, size, 300), keypoint_set=LSP14)
    for name, fn in (("fine-tuned student, float", keras_predict_fn(student)),
                     ("fine-tuned student, int8", TFLiteRunner(path, num_threads=1))):
        report = evaluate(fn, test, size, codec, LSP14, progress=False)
        print(f"{name:28s} PCK@0.2 on PARSE 101-305: {100 * report['pck']['mean']:5.1f} (all 14 joints)")
    print(f"wrote {path} and its sidecar {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
