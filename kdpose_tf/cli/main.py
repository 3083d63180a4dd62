"""`kdpose`: the command line of kdpose_tf.

    kdpose train      train a teacher or a student from ground truth
    kdpose distill    distill a student from a teacher (fpd | lshm | dwpose)
    kdpose evaluate   PCK / PCKh / COCO OKS AP of a .keras, preset or .tflite model
    kdpose export     convert to TFLite (none | float16 | dynamic | int8 | int8-qat)
    kdpose import     a pretrained pose model from OpenVINO / ONNX (e.g. pp_tinypose_128x96) as a trainable Keras model
    kdpose graft      PSA / depthwise CSP-PAN grafted onto an imported model, starting as the identity (.keras students)
    kdpose soup       average the weights of several trained seeds of one model (model soup)
    kdpose recipe     rebuild a shipped preset from the shared data, step by step (resumable)
    kdpose predict    skeletons on a photo, a folder or a video: people detected, COCO JSON
    kdpose demo       the whole workflow on a synthetic (or given) dataset, with a report
    kdpose summary    parameters and FLOPs of a model
    kdpose presets    the built-in preset catalogue
    kdpose check-edgetpu  which ops of a .tflite the Edge TPU compiler would map
    kdpose check-xnnpack  which quantized ops of a .tflite XNNPACK would refuse (requantization scale >= 256)

Every command has --help. Models are given as a `.keras` file, a preset directory or a
catalogue preset name (students may also be a pretrained model from another framework, imported
with its weights: pp_tinypose_128x96, .xml, .onnx); data as a COCO JSON (or folder), `mpii:FILE`, `parse:DIR[:split]`,
`buffy:DIR`, ... or `pack:DIR` (people and their teacher's targets packed by `kdpose distill --save-pack`).
TensorFlow's native log lines (start-up, converter) are hidden unless `--verbose`.
"""

from __future__ import annotations

import argparse
import sys

from kdpose_tf.cli import demo, evaluate, export, graft, info, recipe, train
from kdpose_tf.cli import predict
from kdpose_tf.cli.common import parse_size, positive_float, positive_int, run_command
from kdpose_tf.export.targets import QUANTIZE_MODES, RANGE_METHODS, TARGETS
from kdpose_tf.training import STRATEGIES
from kdpose_tf.utils import native_logs
from kdpose_tf.version import __version__


_VERBOSE_HELP = "show TensorFlow's native log lines (start-up, converter), which are hidden by default"


def _scales(text):
    from kdpose_tf.distillation.heatmap_teacher import check_scales

    try:
        return check_scales(text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers such as 0.9,1,1.1, got {text!r}")


def _add_data(p, required=True, name="--data"):
    p.add_argument(name, required=required, help="COCO JSON or folder, mpii:FILE, parse:DIR[:split], buffy:DIR, "
                                                  "lspet:DIR, lsp:DIR[:split], pack:DIR (kdpose distill --save-pack); "
                                                  "SPEC+SPEC combines sets")
    p.add_argument("--on-bad-sample", choices=("raise", "skip"), default="skip",
                   help="what to do with a malformed sample (default: skip and report)")


def _add_training(p):
    p.add_argument("--input-size", type=parse_size, default=None, help="HxW crop size, e.g. 256x192")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--val-data", default=None, help="optional validation data (same forms as --data)")
    p.add_argument("--run-dir", default=None, help="checkpoints and curves; an interrupted run there resumes")
    p.add_argument("--output", default=None, help="write the trained model to this .keras file")
    p.add_argument("--preset-out", default=None, help="write the trained model as a preset directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="train on plain crops (no flip/rotation/scale)")
    p.add_argument("--distribute", choices=STRATEGIES, default="none",
                   help="tf.distribute strategy (see README: several GPUs or a TPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdpose", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kdpose_tf {__version__}")
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a teacher or student from ground truth")
    p.add_argument("--model", required=True, help="preset name, preset directory or .keras file")
    _add_data(p)
    _add_training(p)

    p = sub.add_parser("distill", help="distill a student from a frozen teacher")
    p.add_argument("--teacher", default=None,
                   help="a Keras teacher (.keras file, preset directory) or a pretrained one from another framework: "
                        "pp_tinypose_256x192 | pp_tinypose_128x96 | ultralight_nano_simplepose, a folder with "
                        "teacher.json, a .xml/.onnx/.tflite model; comma-separated: an ensemble. Not with "
                        "--data pack:DIR of a pack written with a teacher: its targets are in the pack")
    p.add_argument("--teacher-min-score", type=float, default=0.3,
                   help="keypoint teachers (MoveNet .tflite): joints they score lower give no KD (default 0.3)")
    p.add_argument("--unlabeled", default=None,
                   help="people who train on the pretrained teacher alone: a COCO keypoints JSON "
                        "(coco:JSON[:IMAGES]: its person boxes without keypoints) or any --data spec whose labels "
                        "are set aside (e.g. lspet:DIR, whose crowd-sourced labels follow other conventions than "
                        "LSP's)")
    p.add_argument("--student", required=True,
                   help="student: preset name, preset directory, .keras file, or a pretrained model to start from "
                        "(pp_tinypose_128x96, .xml/.onnx: imported with its weights, joints mapped by name)")
    p.add_argument("--method", choices=("fpd", "lshm", "dwpose"), default="fpd")
    p.add_argument("--alpha", type=float, default=0.5, help="fpd: KD weight alpha (GT weight 1-alpha)")
    p.add_argument("--lshm-sigma", type=float, default=0.1, help="lshm: sigma of the linear schedule")
    p.add_argument("--dwpose-feature-weight", type=float, default=5e-5, help="dwpose: alpha (feature KD)")
    p.add_argument("--dwpose-logit-weight", type=float, default=0.1, help="dwpose: beta (heatmap KD)")
    p.add_argument("--stage2-fraction", type=float, default=0.2, help="dwpose: stage-2 epochs / stage-1 epochs")
    p.add_argument("--teacher-feature", default=None, help="feature distillation: teacher layer name")
    p.add_argument("--student-feature", default=None, help="feature distillation: student layer name")
    p.add_argument("--teacher-scales", type=_scales, default=(1.0,), metavar="S,S,...",
                   help="pretrained teachers: also run each crop zoomed by these factors and average the heatmaps "
                        "(multi-scale test, computed once; e.g. 0.9,1,1.1; default 1: none)")
    p.add_argument("--teacher-flip-test", action="store_true",
                   help="pretrained teachers: average each crop's heatmaps with its mirror image's (computed once)")
    p.add_argument("--resize-teacher", action="store_true",
                   help="resize teacher heatmaps bilinearly when their size differs from the student's")
    p.add_argument("--save-pack", default=None, metavar="DIR",
                   help="instead of training: write the --data people with the pretrained teacher's targets as a "
                        "pack folder at the student's input size, for training elsewhere with --data pack:DIR "
                        "(e.g. KERAS_BACKEND=jax on a GPU machine without TensorFlow or the data)")
    p.add_argument("--pack-margin", type=float, default=1.25,
                   help="--save-pack: each person's stored region over the training crop (1-4, default 1.25): "
                        "context for scale and rotation augmentation, at the cost of size")
    p.add_argument("--pack-jpeg-quality", type=int, default=90, help="--save-pack: JPEG quality (default 90)")
    p.add_argument("--pack-heatmap-stride", type=positive_int, default=None,
                   help="--save-pack: input pixels per stored teacher-heatmap cell (default: the teacher's own "
                        "resolution, e.g. 2 for PP-TinyPose 256x192 over a 128x96 student; the student's 4 makes "
                        "packs about a third smaller and blurs the teacher's peaks under augmentation)")
    _add_data(p)
    _add_training(p)

    p = sub.add_parser("evaluate", help="PCK / PCKh / COCO OKS AP of a model")
    p.add_argument("--model", required=True,
                   help=".keras file, preset directory, .tflite file, or a pretrained teacher (pp_tinypose_256x192, "
                        ".xml/.onnx, comma-separated ensemble) scored at its own input size")
    _add_data(p)
    p.add_argument("--metrics", default=None, help="comma list of pck,pckh,coco (default: by keypoint set)")
    p.add_argument("--flip-test", action="store_true")
    p.add_argument("--json-out", default=None, help="write the metrics as JSON here")

    p = sub.add_parser("export", help="convert a model to TFLite")
    p.add_argument("--model", required=True, help=".keras file or preset directory")
    p.add_argument("--output", required=True, help="the .tflite file to write (a .json sidecar goes beside it)")
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default="int8")
    p.add_argument("--io-dtype", choices=("uint8", "int8", "float32"), default="uint8",
                   help="input/output type of int8 models (default uint8: camera pixels)")
    p.add_argument("--target", choices=tuple(TARGETS), default="cpu")
    p.add_argument("--float-ops", nargs="+", choices=("SOFTMAX", "RSQRT"), default=None, metavar="OP",
                   help="int8, CPU only: keep these ops (SOFTMAX, RSQRT) in float32 so XNNPACK takes every op of "
                        "a model with PSA / LayerNorm (not with --target edgetpu)")
    _add_data(p, required=False, name="--calibration-data")
    p.add_argument("--num-calibration", type=positive_int, default=300, help="representative crops for int8")
    p.add_argument("--equalize", choices=("depthwise", "all", "none"), default="depthwise",
                   help="int8 / int8-qat: per-channel rescaling between convolutions before calibration, exact in "
                        "float (default depthwise: pairs feeding a depthwise conv; all: every conv pair)")
    p.add_argument("--qat-epochs", type=positive_int, default=1, help="int8-qat: fine-tuning epochs (needs --calibration-data)")
    p.add_argument("--activation-ranges", choices=RANGE_METHODS, default="mse",
                   help="int8-qat: activation ranges of the fake-quant model (default mse: the clip of each tensor's "
                        "calibrated min / max with the least 8-bit error, frozen in training; minmax: min / max, then "
                        "their moving average in training, as TFMOT)")

    p = sub.add_parser("import", help="a pretrained OpenVINO / ONNX pose model as a trainable Keras model")
    p.add_argument("model", help="pp_tinypose_128x96 | pp_tinypose_256x192 (presets), a folder with teacher.json, "
                                 "or an .xml / .onnx file")
    p.add_argument("--keypoint-set", default=None,
                   help="joints of the result (default: the source's); joints are carried over by name, others "
                        "start untrained (e.g. lsp14 from COCO-17: neck and head_top)")
    p.add_argument("--input-size", type=parse_size, default=None,
                   help="HxW to build it at (default: the source's); a multiple of the graph's coarsest stride "
                        "(32 for PP-TinyPose, e.g. 160x128); fine-tune it there")
    p.add_argument("--output", default=None, help="a .keras file to write")
    p.add_argument("--preset-dir", default=None, help="a preset folder to write (config.json + weights)")

    p = sub.add_parser("graft", help="PSA / depthwise CSP-PAN grafted onto an imported model (identity at init)")
    p.add_argument("--base", required=True,
                   help="pp_tinypose_128x96 (or another pretrained source: imported with --keypoint-set), or a .keras "
                        "file / preset folder of an imported model (e.g. lsp14_student_128x96)")
    p.add_argument("--keypoint-set", default=None,
                   help="joints of an imported base (default: the source's), e.g. lsp14; a trained base keeps its own")
    p.add_argument("--psa-head", action="store_true", help="gated PSA on the feature the final heatmap conv reads")
    p.add_argument("--psa-blocks", action="store_true",
                   help="gated PSA in every block of the highest-resolution branch")
    p.add_argument("--block-site", choices=("depthwise", "output"), default="depthwise",
                   help="--psa-blocks: after each block's 3x3 depthwise conv (default, the proposal's placement) or "
                        "after its channel shuffle")
    p.add_argument("--csp-pan", action="store_true",
                   help="depthwise CSP-PAN over the branch outputs, added to the head's input (zero-initialised)")
    p.add_argument("--step-scale", type=positive_float, default=1.0,
                   help="step multiplier of the grafted gates and projections (they start at 0): under Adam they "
                        "learn as with a learning rate this many times the rest's (default 1; e.g. 50)")
    p.add_argument("--output", default=None, help="the .keras file to write")
    p.add_argument("--variants", default=None, metavar="DIR",
                   help="write the ablation's variants instead: DIR/base.keras, psa_head, psa_blocks, csp_pan, "
                        "psa_csp (PSA in the blocks + CSP-PAN)")

    p = sub.add_parser("predict", help="skeletons on a photo, a folder of photos or a video (people detected)")
    p.add_argument("input", nargs="?", default=None,
                   help="an image, a folder of images or a video (.mp4, ...): the people in it are detected "
                        "(RTMDet-nano, --detector) and each gets a skeleton; a video follows one person")
    p.add_argument("--model", required=True, help=".keras file, preset directory or .tflite file")
    p.add_argument("--image", default=None,
                   help="one person on one image instead: the --box, or the whole image (no detector)")
    p.add_argument("--box", default=None, help="person box x,y,w,h in pixels: no detection (with --image: default "
                                               "the whole image; on a video: the first frame's person)")
    p.add_argument("--output", default=None, help="image to write, in the format its extension names (.png, .jpg, ...; "
                                                  "default: <image>_pose.png); never the input image; for a folder "
                                                  "the folder to write (default <folder>_pose), for a video the .mp4; "
                                                  "the JSON (COCO keypoint results) goes beside it")
    p.add_argument("--flip-test", action="store_true")
    p.add_argument("--threshold", type=float, default=0.2, help="minimum joint score to draw")
    p.add_argument("--detector", default=None, help="person detector: an RTMDet .onnx with its pipeline.json "
                                                    "(default: KDPOSE_SHARED's models/rtmdet_nano_person)")
    p.add_argument("--max-people", type=positive_int, default=20, help="at most this many people per image")
    p.add_argument("--box-threshold", type=predict.fraction, default=0.3, help="minimum person box score")
    p.add_argument("--no-smoothing", action="store_true", help="video: no One Euro filter on the joints")

    p = sub.add_parser("demo", help="teacher -> distilled student -> int8 TFLite, with a report")
    p.add_argument("--data", default=None, help="a real COCO-format dataset instead of the synthetic one")
    p.add_argument("--output", default="demo_output")
    p.add_argument("--quick", action="store_true", help="a very short run (smoke test)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("recipe", help="rebuild a shipped preset from the shared data, step by step (resumable)")
    p.add_argument("recipe", help="a shipped preset name, a preset directory or a recipe .json file")
    p.add_argument("--work", required=True, help="working folder for the steps' models and run directories")
    p.add_argument("--shared", default=None, help="the shared data folder (default: KDPOSE_SHARED or ../shared)")
    p.add_argument("--skip-controls", action="store_true", help="skip the labels-only control runs")
    p.add_argument("--dry-run", action="store_true", help="print the steps without running them")

    p = sub.add_parser("soup", help="average the weights of several trained seeds of one model (model soup)")
    p.add_argument("models", nargs="+", help=".keras files or preset directories of the same architecture")
    p.add_argument("--output", default=None, help="write the averaged model to this .keras file")
    p.add_argument("--preset-out", default=None, help="write the averaged model as a preset directory")

    p = sub.add_parser("summary", help="parameters and FLOPs of a model")
    p.add_argument("model", help="preset name, preset directory or .keras file")
    p.add_argument("--input-size", type=parse_size, default=None)

    p = sub.add_parser("presets", help="list the built-in presets")
    p.add_argument("--measure", action="store_true", help="build every preset and count params / GMACs (slow)")

    p = sub.add_parser("check-edgetpu", help="check a .tflite model against the Edge TPU compiler 16.0")
    p.add_argument("model", help=".tflite file")
    p = sub.add_parser("check-xnnpack", help="quantized ops of a .tflite that XNNPACK (Android's CPU path) refuses")
    p.add_argument("model", help=".tflite file")
    for p in sub.choices.values():  # --verbose after the command too; SUPPRESS keeps the top-level value
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    return parser


# command -> the function that runs it (each takes the parsed arguments; None or an exit code)
COMMANDS = {
    "train": train.run_train,
    "distill": train.run_distill,
    "evaluate": evaluate.run_evaluate,
    "predict": predict.run_predict,
    "export": export.run_export,
    "import": export.run_import,
    "graft": graft.run_graft,
    "check-edgetpu": export.run_check_edgetpu,
    "check-xnnpack": export.run_check_xnnpack,
    "soup": train.run_soup,
    "recipe": recipe.run_recipe,
    "demo": demo.run_demo,
    "summary": info.run_summary,
    "presets": info.run_presets,
}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's start-up lines were already kept off stderr when `kdpose_tf` was imported
    # (native_logs.quiet_cli_start); this covers the converter's lines, also for in-process calls.
    previous = native_logs.set_quiet(not args.verbose)
    try:
        return run_command(COMMANDS[args.command], args)
    finally:
        native_logs.set_quiet(previous)


if __name__ == "__main__":
    sys.exit(main())
