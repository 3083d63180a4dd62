"""Presets: save a model to a directory and build one from a catalogue name or a directory.

Layout of a preset directory (keras-hub's file names and config format):

    config.json        keras.saving.serialize_keras_object(model) without build/compile configs:
                       {"module", "class_name", "config", "registered_name"}
    model.weights.h5   model.save_weights(...) of the whole model
    metadata.json      kdpose_tf / keras / tensorflow versions, class, parameter count, keypoint set,
                       input size, date, and training data / metrics when given

Difference from keras-hub: keras-hub writes the *backbone* to config.json + model.weights.h5 and a
task to task.json + task.weights.h5; here config.json holds whatever was saved (a `PoseEstimator`
or a `Backbone`) and the weights file holds all of its weights. keras-hub's own loader
(`keras_hub.src.utils.preset_utils.get_preset_loader`) recognises the file by its
"registered_name" and resolves the class through the Keras registry, so it can read our
config.json once kdpose_tf is imported (registration happens at import).

Where `preset` may be:
  - a directory path (always works offline),
  - "hf://..." or "kaggle://..." (downloaded by keras_hub's `get_file` when keras-hub is installed),
  - a catalogue name (`kdpose_tf.models.presets`): the architecture is built from the catalogue;
    with load_weights=True the weights come from the preset directory
    `$KDPOSE_PRESETS_DIR/<name>/` (default `~/.cache/kdpose_tf/presets/<name>/`), written by
    `save_to_preset`. kdpose_tf never downloads weights.

Every problem raises `kdpose_tf.errors.PresetError` naming the file and what is wrong.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
from pathlib import Path

import keras

from kdpose_tf.errors import PresetError
from kdpose_tf.utils.io import atomic_dir

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
_REMOTE_PREFIXES = ("hf://", "kaggle://")


def presets_dir() -> Path:
    """Root of local catalogue weights: $KDPOSE_PRESETS_DIR, else ~/.cache/kdpose_tf/presets."""
    env = os.environ.get("KDPOSE_PRESETS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kdpose_tf" / "presets"


def _pop_recursive(obj, keys):
    if isinstance(obj, dict):
        for k in keys:
            obj.pop(k, None)
        for v in obj.values():
            _pop_recursive(v, keys)
    elif isinstance(obj, list):
        for v in obj:
            _pop_recursive(v, keys)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def save_to_preset(model, directory, metadata=None):
    """Write `model` to `directory` (config.json, model.weights.h5, metadata.json), atomically.

    Args:
        model: a `PoseEstimator` or `Backbone` (any registered kdpose_tf model).
        directory: target directory; replaced as a whole on success.
        metadata: optional extra fields for metadata.json, e.g. {"training_data": "...", "metrics": {...}}.

    Returns:
        The directory as a `Path`.
    """
    import tensorflow as tf

    from kdpose_tf.version import __version__

    directory = Path(directory)
    config = keras.saving.serialize_keras_object(model)
    _pop_recursive(config, ("build_config", "compile_config"))
    keypoint_set = getattr(model, "keypoint_set", None)
    input_size = getattr(model, "input_size", None)
    if input_size is None and model.inputs:
        input_size = list(model.inputs[0].shape[1:3])
    meta = {
        "kdpose_tf_version": __version__,
        "keras_version": keras.version(),
        "tensorflow_version": tf.__version__,
        "class_name": type(model).__name__,
        "parameter_count": int(model.count_params()),
        "keypoint_set": getattr(keypoint_set, "name", keypoint_set),
        "num_keypoints": getattr(model, "num_keypoints", None),
        "input_size": None if input_size is None else list(input_size),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "training_data": None,
        "metrics": {},
    }
    meta.update(metadata or {})
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(_jsonable(config), indent=2) + "\n")
        model.save_weights(str(tmp / WEIGHTS_FILE))
        (tmp / METADATA_FILE).write_text(json.dumps(_jsonable(meta), indent=2) + "\n")
    return directory


def _resolve_class(config, where):
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise PresetError(
            f"{where}: expected a serialized Keras object with 'class_name' and 'config' keys, "
            f"got {type(config).__name__} with keys {sorted(config) if isinstance(config, dict) else None}"
        )
    module = config.get("module")
    if module:
        try:
            importlib.import_module(module)  # registers the class
        except ImportError as exc:
            raise PresetError(f"{where}: cannot import module {module!r} of class {config['class_name']!r}: {exc}")
    registered = config.get("registered_name") or config["class_name"]
    found = keras.saving.get_registered_object(registered)
    if found is None and module:
        found = getattr(importlib.import_module(module), config["class_name"], None)
    if found is None:
        raise PresetError(f"{where}: class {registered!r} is not registered with Keras (import its module first)")
    return found


def read_metadata(directory):
    """metadata.json of a preset directory as a dict ({} when absent)."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: not valid JSON ({exc})") from None


def load_from_directory(directory, cls, load_weights=True, **overrides):
    """Build an instance of `cls` (or a subclass) from a preset directory.

    `overrides` replace top-level constructor arguments of the saved config (e.g. name, trainable).
    Loading a `Backbone` class from a `PoseEstimator` preset returns that estimator's backbone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PresetError(f"preset directory {directory} does not exist")
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise PresetError(f"preset directory {directory} has no {CONFIG_FILE}; expected {CONFIG_FILE}, {WEIGHTS_FILE}")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"{cfg_path}: not valid JSON ({exc})") from None
    saved_cls = _resolve_class(config, str(cfg_path))

    from kdpose_tf.models.backbone import Backbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    take_backbone = issubclass(saved_cls, PoseEstimator) and isinstance(cls, type) and issubclass(cls, Backbone)
    if not take_backbone and not issubclass(saved_cls, cls):
        raise PresetError(
            f"{cfg_path}: the preset holds a {saved_cls.__name__}, which cannot be loaded as {cls.__name__}"
        )
    kwargs = dict(config["config"])
    if not take_backbone:
        kwargs.update(overrides)
    try:
        model = saved_cls.from_config(kwargs)
    except PresetError:
        raise
    except Exception as exc:
        raise PresetError(f"{cfg_path}: cannot build {saved_cls.__name__} from its config: {exc}") from exc
    if load_weights:
        w_path = directory / WEIGHTS_FILE
        if not w_path.is_file():
            raise PresetError(f"preset directory {directory} has no {WEIGHTS_FILE} (use load_weights=False to build)")
        try:
            model.load_weights(str(w_path))
        except Exception as exc:
            raise PresetError(f"{w_path}: corrupt weights or weights of another architecture: {exc}") from exc
    if take_backbone:
        model = model.backbone
        if not isinstance(model, cls):
            raise PresetError(f"{cfg_path}: the preset's backbone is a {type(model).__name__}, not a {cls.__name__}")
    return model


def _download_remote(preset):
    try:
        from keras_hub.src.utils.preset_utils import get_file
    except ImportError:
        raise PresetError(
            f"preset {preset!r} is a remote handle; loading it needs keras-hub (pip install keras-hub), "
            "or download it and pass the directory"
        ) from None
    try:
        config_path = get_file(preset, CONFIG_FILE)
        get_file(preset, WEIGHTS_FILE)
    except Exception as exc:
        raise PresetError(f"cannot fetch preset {preset!r}: {exc}") from exc
    try:
        get_file(preset, METADATA_FILE)
    except Exception:
        pass
    return Path(config_path).parent


def load_preset(preset, cls, load_weights=True, **overrides):
    """Build `cls` from a catalogue name, a directory or a remote handle (see the module docstring)."""
    from kdpose_tf.models import presets as catalogue

    preset_str = str(preset)
    if preset_str.startswith(_REMOTE_PREFIXES):
        return load_from_directory(_download_remote(preset_str), cls, load_weights, **overrides)
    if preset_str in catalogue.PRESETS:
        if not load_weights:
            return catalogue.build(preset_str, cls, **overrides)
        local = presets_dir() / preset_str
        if not (local / WEIGHTS_FILE).is_file():
            raise PresetError(
                f"no local weights for preset {preset_str!r}: kdpose_tf does not download weights. Put a preset "
                f"directory (written by save_to_preset) at {local} (so that {local / WEIGHTS_FILE} exists; set "
                "KDPOSE_PRESETS_DIR to change the root), pass a preset directory path, or use load_weights=False"
            )
        return load_from_directory(local, cls, True, **overrides)
    if os.path.isdir(preset_str) or os.sep in preset_str or preset_str.startswith("."):
        return load_from_directory(preset_str, cls, load_weights, **overrides)
    raise PresetError(
        f"unknown preset {preset_str!r}: not a directory, not a remote handle (hf://, kaggle://) and not in the "
        f"catalogue; expected one of {sorted(catalogue.PRESETS)}"
    )
