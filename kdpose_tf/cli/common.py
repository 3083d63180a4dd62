"""Helpers shared by the `kdpose` commands: reading data and model arguments, saving results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdpose_tf.errors import DataError, KdposeError


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


def load_data(spec: str, on_bad_sample: str = "skip", split: str | None = None):
    """Read samples from a data argument.

    Accepted forms:
        path/to/person_keypoints.json     COCO keypoints JSON (images in --images, its
                                          sibling `images/` or `<root>/<stem of split>`)
        DIR                               a folder with `annotations/*.json` (COCO layout)
        coco:JSON[:IMAGE_DIR]             explicit COCO JSON
        mpii:JSON[:IMAGE_DIR]             MPII JSON (MMPose layout)
        parse:DIR[:train|test|all]        PARSE (labels.mat), LSP-14
        buffy:DIR                         Buffy Stickmen v3, LSP-14 upper body

    Returns (samples, keypoint_set, coco_gt_path_or_None).
    """
    from kdpose_tf.keypoints import LSP14, MPII16, get_keypoint_set

    kind, _, rest = spec.partition(":") if spec.split(":", 1)[0] in ("coco", "mpii", "parse", "buffy") else ("", "", spec)
    if kind == "parse":
        from kdpose_tf.data.parse import read_parse

        root, _, part = rest.partition(":")
        return read_parse(root, split=part or split or "all"), LSP14, None
    if kind == "buffy":
        from kdpose_tf.data.buffy import read_buffy

        return read_buffy(rest), LSP14, None
    if kind == "mpii":
        from kdpose_tf.data.mpii import read_mpii_json

        path, _, image_dir = rest.partition(":")
        return read_mpii_json(path, image_dir=image_dir or None, on_bad_sample=on_bad_sample), MPII16, None

    path, image_dir = (rest.partition(":")[0], rest.partition(":")[2] or None) if kind == "coco" else (rest, None)
    path = Path(path)
    if path.is_dir():
        candidates = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
        if not candidates:
            raise DataError(
                "expected a COCO keypoints JSON file or a folder with annotations/*.json", path=path, field="--data"
            )
        image_dir = image_dir or _guess_image_dir(path, candidates[0])
        path = candidates[0]
    if not path.exists():
        raise DataError("no such file", path=path, field="--data")
    from kdpose_tf.data.coco import read_coco

    keypoint_set = _coco_keypoint_set(path)
    samples = read_coco(path, image_dir=image_dir, keypoint_set=keypoint_set.name, on_bad_sample=on_bad_sample)
    return samples, get_keypoint_set(keypoint_set.name), str(path)


def _guess_image_dir(root: Path, annotation: Path):
    stem = annotation.stem.split("_")[-1]  # person_keypoints_train2017 -> train2017
    for candidate in (root / stem, root / "images", root):
        if candidate.is_dir() and (any(candidate.glob("*.jp*g")) or any(candidate.glob("*.png"))):
            return str(candidate)
    return str(root)


def _coco_keypoint_set(path: Path):
    from kdpose_tf.keypoints import COCO17, KEYPOINT_SETS

    try:
        with open(path) as f:
            head = json.load(f)
        cats = head.get("categories") or []
        names = tuple(cats[0].get("keypoints", ())) if cats else ()
    except (OSError, json.JSONDecodeError, AttributeError, IndexError) as e:
        raise DataError(f"not a readable COCO JSON ({e})", path=path) from e
    for ks in KEYPOINT_SETS.values():
        if names == ks.names:
            return ks
    if names and len(names) != 17:
        raise DataError(
            f"categories[0].keypoints has {len(names)} joints {names[:4]}...; known sets: {sorted(KEYPOINT_SETS)}",
            path=path, field="categories.keypoints",
        )
    return COCO17


def load_model(spec: str, **overrides):
    """A model from a `.keras` file, a preset directory or a catalogue preset name.

    `overrides` (keypoint_set, num_keypoints, input_size) apply to catalogue names only: a
    `.keras` file or preset directory is a trained model and keeps its own.
    """
    import keras

    from kdpose_tf.models.pose_estimator import PoseEstimator

    path = Path(spec)
    if path.suffix == ".keras":
        if not path.exists():
            raise CLIError(f"model file {path} does not exist")
        return keras.saving.load_model(str(path), compile=False)
    if path.is_dir():  # a trained preset: its own keypoint set and size (overrides would break its weights)
        return PoseEstimator.from_preset(str(path))
    if spec.endswith(".tflite"):
        raise CLIError(f"{spec}: a TFLite model cannot be trained; give a .keras file, preset directory or preset name")
    return PoseEstimator.from_preset(spec, load_weights=False, **overrides)


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


def run_command(fn, args) -> int:
    """Run a command; user-facing errors print one clear line and exit 2."""
    try:
        result = fn(args)
    except (KdposeError, FileNotFoundError, argparse.ArgumentTypeError) as e:
        print(f"kdpose {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)
