"""Helpers shared by the `kdpose` commands: turning data and model arguments into library objects, saving results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdpose_tf.errors import KdposeError


class CLIError(KdposeError):
    """A command-line argument that cannot be used; printed without a traceback."""


def parse_size(text: str) -> tuple:
    """'256x192' -> (256, 192) as (height, width); '128' -> (128, 128)."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16 or any(p % 4 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected an input size HEIGHTxWIDTH with both multiples of 4 and >= 16 (e.g. 256x192), got {text!r}"
        )
    return tuple(parts)


def positive_int(text: str) -> int:
    """An argument that counts something (epochs, batch size): an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argument such as the learning rate: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def load_data(spec: str, on_bad_sample: str = "skip", option: str = "--data"):
    """Read a data argument through the library's one loader, `kdpose_tf.data.datasets.load_dataset`.

    Returns its `LoadedData` (`.samples`, `.keypoint_set`, `.coco_gt`); prints one line with the
    count of people and, under "skip", what was left out. A spec that cannot be read raises a
    DataError naming `option`.
    """
    from kdpose_tf.data.datasets import load_dataset

    try:
        data = load_dataset(spec, on_bad_sample=on_bad_sample)
    except ValueError as e:
        if isinstance(e, KdposeError):
            raise
        raise CLIError(f"{option} {spec}: {e}") from None
    print(f"{option} {spec}: {data_summary(data.samples)}")
    return data


def data_summary(samples) -> str:
    """'86 people (COCO-17)' or '204 people; skipped 1: <reason> (e.g. <example>)' for a SampleList."""
    report = getattr(samples, "report", None)
    text = f"{len(samples)} people"
    if report is None:
        return text
    skipped = sum(report.skipped.values())
    if skipped:
        reasons = "; ".join(
            f"{n} {reason}" + (f" (e.g. {report.examples[reason][0]})" if report.examples.get(reason) else "")
            for reason, n in report.skipped.most_common())
        text += f"; skipped {skipped}: {reasons}"
    repaired = sum(report.repaired.values())
    if repaired:
        text += f"; repaired {repaired} joints (" + "; ".join(report.repaired) + ")"
    return text


def load_model(spec: str, **overrides):
    """A model from a `.keras` file, a preset directory, a catalogue preset name, or a pretrained model
    from another framework (a teacher preset such as pp_tinypose_128x96, or an .xml / .onnx file),
    imported with its weights (`kdpose_tf.models.imported`).

    `overrides` (keypoint_set, num_keypoints, input_size) apply to catalogue names only: a
    `.keras` file or preset directory is a trained model and keeps its own.
    """
    from kdpose_tf.runtimes.pretrained_models import is_pretrained_source
    from kdpose_tf.models.pose_estimator import PoseEstimator
    from kdpose_tf.models.preset_utils import load_keras_file

    path = Path(spec)
    if is_pretrained_source(spec):
        return import_model(spec, **overrides)
    if path.suffix == ".keras":
        if not path.exists():
            raise CLIError(f"model file {path} does not exist")
        return load_keras_file(path)
    if path.is_dir():  # a trained preset: its own keypoint set and size (overrides would break its weights)
        return PoseEstimator.from_preset(str(path))
    if spec.endswith(".tflite"):
        raise CLIError(f"{spec}: a TFLite model cannot be trained; give a .keras file, preset directory or preset name")
    from kdpose_tf.models.preset_utils import shipped_presets

    if spec in shipped_presets():  # a trained preset shipped with the package: its weights, size and joints
        return PoseEstimator.from_preset(spec)
    return PoseEstimator.from_preset(spec, load_weights=False, **overrides)


def import_model(spec: str, keypoint_set=None, input_size=None, **ignored):
    """`import_pose_model` for the CLI: joints carried over by name to `keypoint_set`; `input_size`
    (default: the source's) must be a multiple of the graph's coarsest stride."""
    from kdpose_tf.models.imported.openvino_import import GraphImportError, import_pose_model

    try:
        return import_pose_model(spec, keypoint_set=keypoint_set, input_size=input_size)
    except GraphImportError as e:
        raise CLIError(str(e)) from None


def save_model(model, output: str | None = None, preset_dir: str | None = None, metadata: dict | None = None):
    """Save `model` to a `.keras` file and/or a preset directory, atomically."""
    from kdpose_tf.utils import io

    written = []
    if output:
        if not output.endswith(".keras"):
            raise CLIError(f"--output must end with .keras, got {output!r}")
        with io.atomic_path(output) as tmp:
            model.save(str(tmp))
        written.append(output)
    if preset_dir:
        if metadata is not None:
            model.save_to_preset(preset_dir, metadata=metadata)
        else:
            model.save_to_preset(preset_dir)
        written.append(preset_dir)
    return written


def model_input_size(model) -> tuple:
    shape = model.inputs[0].shape
    return int(shape[1]), int(shape[2])


def _interrupted(args) -> str:
    """What Ctrl-C left behind, for the one line the command prints."""
    if args.command in ("train", "distill"):
        where = f" in {args.run_dir}" if getattr(args, "run_dir", None) else ""
        return (f"interrupted; every finished epoch is saved{where}: rerunning the same command resumes from the "
                "last one")
    return "interrupted; no file was replaced (files are written under temporary names): rerun the same command"


def run_command(fn, args) -> int:
    """Run a command: every expected failure prints one line (`kdpose <command>: error: ...`) and exits 2,
    Ctrl-C one line saying how to go on (exit 130), never a traceback."""
    try:
        result = fn(args)
    except KeyboardInterrupt:
        print(f"kdpose {args.command}: {_interrupted(args)}", file=sys.stderr)
        return 130
    except (KdposeError, FileNotFoundError, argparse.ArgumentTypeError) as e:
        print(f"kdpose {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full output folder, a permission: the file and the system's reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"kdpose {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)
