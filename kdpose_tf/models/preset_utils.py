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
  - the name of a trained preset shipped inside the package (`shipped_presets()`: each model
    family's ``presets/<name>/`` folder, keras-hub's "presets beside the family"; loads offline),
  - a directory path (always works offline),
  - "hf://..." or "kaggle://..." (downloaded by keras_hub's `get_file` when keras-hub is installed),
  - a catalogue name (a pose-network preset a family registered, `kdpose_tf.models.presets`): the
    architecture is built from the catalogue;
    with load_weights=True the weights come from the preset directory
    `$KDPOSE_PRESETS_DIR/<name>/` (default `~/.cache/kdpose_tf/presets/<name>/`), written by
    `save_to_preset`. kdpose_tf never downloads weights,
  - anything a registered preset loader takes (`register_preset_loader`): a pretrained model of
    another framework (`pp_tinypose_128x96`, an .xml / .onnx file), imported with its weights by
    `kdpose_tf.models.imported`.

This module is a leaf (keras-hub's `preset_utils` role): preset files and the registries, and it
imports no model module. Each model family's `__init__.py` calls
`register_presets(backbone_presets, FamilyBackbone)` and `register_pose_presets(pose_presets)` (both
from its `<family>_presets.py`); `kdpose_tf.models.presets` calls `register_catalogue_builder(build)`;
`kdpose_tf.models.imported.openvino_import` calls `register_preset_loader(...)`; all run when
`kdpose_tf.models` is imported. The class
checks (may this preset be loaded as that class?) live in `Backbone.from_preset` and
`PoseEstimator.from_preset`.

Every problem raises `kdpose_tf.errors.PresetError` naming the file and what is wrong.
"""

from __future__ import annotations

import collections
import datetime
import importlib
import json
import os
import sys
from pathlib import Path

import keras

from kdpose_tf.errors import ModelFileError, PresetError
from kdpose_tf.utils.io import atomic_dir, jsonable
from kdpose_tf.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
_REMOTE_PREFIXES = ("hf://", "kaggle://")
PRESET_KEYS = ("metadata", "config")
# A pose-network (catalogue) preset: the backbone preset it builds on, the task's keypoint set and input size,
# the published figures; "builder" (optional) is a function that builds the whole PoseEstimator instead.
POSE_PRESET_KEYS = ("backbone_preset", "keypoint_set", "input_size", "description", "params_m")
POSE_PRESET_OPTIONAL_KEYS = ("builder",)

# Registries, filled when kdpose_tf.models is imported (keras-hub's BUILTIN_PRESETS pattern).
BACKBONE_PRESETS = {}  # backbone preset name -> {"metadata": {...}, "config": {constructor kwargs}}
BACKBONE_PRESETS_FOR_CLASS = collections.defaultdict(dict)  # Backbone class -> {name: preset}
_BACKBONE_CLASS = {}  # backbone preset name -> the class that registered it
CATALOGUE = {}  # pose-network preset name -> entry (POSE_PRESET_KEYS, "family", "builder"), in registration order
_CATALOGUE_BUILDER = []  # [build(preset, cls, **overrides)]: registered by kdpose_tf.models.presets
_LOADERS = []  # (accepts(preset) -> bool, load(preset, **overrides) -> model): presets that are not preset files
_SHIPPED_ROOT = Path(__file__).resolve().parent  # kdpose_tf/models: families keep trained presets in <family>/presets/


# ---------------------------------------------------------------------------------- registries
def register_presets(presets, backbone_cls):
    """Register a family's `backbone_presets` for `backbone_cls` (called by the family's __init__.py).

    Every entry must be exactly {"metadata": dict, "config": dict of `backbone_cls` kwargs}.
    """
    for name, preset in presets.items():
        if not isinstance(preset, dict) or set(preset) != set(PRESET_KEYS) or not all(
            isinstance(preset[k], dict) for k in PRESET_KEYS
        ):
            raise PresetError(
                f"backbone preset {name!r} of {backbone_cls.__name__}: expected a dict with exactly the keys "
                f"{list(PRESET_KEYS)} (both dicts), received {preset!r:.200}"
            )
        if name in _BACKBONE_CLASS and _BACKBONE_CLASS[name] is not backbone_cls:
            raise PresetError(f"backbone preset {name!r} is registered twice ({_BACKBONE_CLASS[name].__name__} "
                              f"and {backbone_cls.__name__}); preset names must be unique")
        BACKBONE_PRESETS[name] = preset
        BACKBONE_PRESETS_FOR_CLASS[backbone_cls][name] = preset
        _BACKBONE_CLASS[name] = backbone_cls


def _backbone_preset(name):
    if name not in BACKBONE_PRESETS:
        raise PresetError(f"unknown backbone preset {name!r}; expected one of {sorted(BACKBONE_PRESETS)}")
    return BACKBONE_PRESETS[name]


def preset_kwargs(name):
    """Constructor kwargs of backbone preset `name` (a copy of its "config")."""
    return dict(_backbone_preset(name)["config"])


def preset_metadata(name):
    """Published figures and description of backbone preset `name` (its "metadata")."""
    return _backbone_preset(name)["metadata"]


def preset_class(name):
    """The Backbone class that registered backbone preset `name`."""
    _backbone_preset(name)
    return _BACKBONE_CLASS[name]


def preset_family(name):
    """The family of backbone preset `name`: the folder of the class that registered it (`lite_hrnet`)."""
    module = preset_class(name).__module__.split(".")
    return module[-2] if len(module) > 1 else module[0]


def register_pose_presets(presets):
    """Register a family's `pose_presets` {name: entry} (called by the family's __init__.py, after the
    backbone presets the entries name are registered).

    Every entry has exactly the keys `POSE_PRESET_KEYS` (plus optionally "builder", a function
    `builder(num_keypoints=, keypoint_set=, input_shape=, name=)` returning a PoseEstimator); its
    "backbone_preset" must be a registered backbone preset, and it is listed under that preset's family.
    """
    for name, entry in presets.items():
        keys = set(entry) if isinstance(entry, dict) else set()
        if not isinstance(entry, dict) or not set(POSE_PRESET_KEYS) <= keys <= {*POSE_PRESET_KEYS,
                                                                              *POSE_PRESET_OPTIONAL_KEYS}:
            raise PresetError(
                f"pose preset {name!r}: expected a dict with the keys {list(POSE_PRESET_KEYS)} (and optionally "
                f"{list(POSE_PRESET_OPTIONAL_KEYS)}), received {entry!r:.200}"
            )
        if entry["backbone_preset"] not in BACKBONE_PRESETS:
            raise PresetError(f"pose preset {name!r} names backbone preset {entry['backbone_preset']!r}, which is not "
                              f"registered; expected one of {sorted(BACKBONE_PRESETS)} (register it first)")
        if name in CATALOGUE:
            raise PresetError(f"pose preset {name!r} is registered twice; preset names must be unique")
        CATALOGUE[name] = {"family": preset_family(entry["backbone_preset"]), **entry,
                           "builder": entry.get("builder")}


def register_catalogue_builder(build):
    """Register `build(preset, cls, **overrides)`, which makes a catalogue entry without weights
    (`kdpose_tf.models.presets.build`: it needs the model classes, which this leaf does not import)."""
    _CATALOGUE_BUILDER[:] = [build]


def catalogue_entry(name):
    """The catalogue entry of `name` (PresetError listing the names when unknown)."""
    if name not in CATALOGUE:
        raise PresetError(f"unknown preset {name!r}; expected one of {sorted(CATALOGUE)}")
    return CATALOGUE[name]


def catalogue_names():
    return sorted(CATALOGUE)


def register_preset_loader(accepts, load):
    """Register a loader of presets that are not preset files: `accepts(preset)` says whether it takes
    `preset` (a name or path), `load(preset, **overrides)` returns the model. Asked before the catalogue
    and the files, in registration order; a catalogue name is never given to a loader."""
    _LOADERS.append((accepts, load))


def preset_loader(preset):
    """The registered `load` function that takes `preset`, or None."""
    if str(preset) in CATALOGUE:
        return None
    return next((load for accepts, load in _LOADERS if accepts(preset)), None)


def catalogue_backbone_class(name):
    """The backbone class catalogue entry `name` builds (checked before anything is built)."""
    return preset_class(catalogue_entry(name)["backbone_preset"])


def build_catalogue(preset, cls, **overrides):
    """Catalogue entry `preset` built without weights as `cls` (a PoseEstimator class or a Backbone class);
    `overrides` may hold the model's own `name`."""
    catalogue_entry(preset)
    if not _CATALOGUE_BUILDER:
        raise PresetError(f"cannot build preset {preset!r}: no catalogue builder is registered "
                          "(import kdpose_tf.models, which registers kdpose_tf.models.presets.build)")
    return _CATALOGUE_BUILDER[0](preset, cls, **overrides)


# ---------------------------------------------------------------------------------- files
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


def save_to_preset(model, directory, metadata=None):
    """Write `model` to `directory` (config.json, model.weights.h5, metadata.json), atomically.

    Also the `save_to_preset(directory, metadata=None)` method of `Backbone` and `PoseEstimator`.

    Args:
        model: a `PoseEstimator` or `Backbone` (any registered kdpose_tf model).
        directory: target directory; replaced as a whole on success.
        metadata: optional extra fields for metadata.json, e.g. {"training_data": "...", "metrics": {...}}.

    Returns:
        The directory as a `Path`.
    """
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
        # The TensorFlow the model was saved with; None when saved on another backend without it.
        "tensorflow_version": getattr(sys.modules.get("tensorflow"), "__version__", None),
        "keras_backend": keras.backend.backend(),
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
        (tmp / CONFIG_FILE).write_text(json.dumps(jsonable(config), indent=2) + "\n")
        model.save_weights(str(tmp / WEIGHTS_FILE))
        (tmp / METADATA_FILE).write_text(json.dumps(jsonable(meta), indent=2) + "\n")
    return directory


ALLOWED_MODULES = ("kdpose_tf", "keras")


def import_allowed_module(module, where, class_name=None):
    """Import the `module` a saved config names, only from `ALLOWED_MODULES` (and their submodules).

    A preset's config.json is data: importing whatever module it names would run that module's
    code (Keras itself only imports from its allowed packages). PresetError naming `where` else.
    """
    if not isinstance(module, str) or not any(module == m or module.startswith(m + ".") for m in ALLOWED_MODULES):
        raise PresetError(f"{where}: module {module!r}" + (f" of class {class_name!r}" if class_name else "")
                          + f" is not allowed; a preset may only name modules of {' / '.join(ALLOWED_MODULES)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PresetError(f"{where}: cannot import module {module!r}"
                          + (f" of class {class_name!r}" if class_name else "") + f": {exc}") from None


def load_keras_file(path, compile=False):
    """`keras.saving.load_model` of an existing `.keras` file, with a ModelFileError naming it when it is
    not a .keras archive (truncated, random bytes) or cannot be rebuilt; Keras says "File not found"
    for a file that exists but is not a zip."""
    import zipfile

    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a .keras model (a .keras file is a zip archive; this one is "
                             "truncated or another kind of file)")
    try:
        return keras.saving.load_model(str(path), compile=compile)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path}: cannot load this .keras model ({first})") from None


def _resolve_class(config, where):
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise PresetError(
            f"{where}: expected a serialized Keras object with 'class_name' and 'config' keys, "
            f"got {type(config).__name__} with keys {sorted(config) if isinstance(config, dict) else None}"
        )
    module = config.get("module")
    if module:
        import_allowed_module(module, where, config["class_name"])  # registers the class (Keras' own field)
    registered = config.get("registered_name") or config["class_name"]
    found = keras.saving.get_registered_object(registered)
    if found is None and module:
        found = getattr(importlib.import_module(module), config["class_name"], None)
    if found is None:
        raise PresetError(f"{where}: class {registered!r} is not registered with Keras (import its module first)")
    return found


class SavedPreset:
    """A preset directory's config.json, read and its class resolved; `load` builds the model.

    Attributes: `directory`, `config_path`, `config` (the serialized object), `cls` (its class),
    `holds_backbone` (True when the saved object is a task whose config has a "backbone").
    """

    def __init__(self, directory):
        self.directory = directory = Path(directory)
        if not directory.is_dir():
            raise PresetError(f"preset directory {directory} does not exist")
        self.config_path = directory / CONFIG_FILE
        if not self.config_path.is_file():
            raise PresetError(
                f"preset directory {directory} has no {CONFIG_FILE}; expected {CONFIG_FILE}, {WEIGHTS_FILE}"
            )
        try:
            self.config = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PresetError(f"{self.config_path}: not valid JSON ({exc})") from None
        self.cls = _resolve_class(self.config, str(self.config_path))
        self.holds_backbone = isinstance(self.config["config"], dict) and "backbone" in self.config["config"]

    def wrong_class(self, cls):
        return PresetError(
            f"{self.config_path}: the preset holds a {self.cls.__name__}, which cannot be loaded as {cls.__name__}"
        )

    def load(self, load_weights=True, **overrides):
        """The saved model; `overrides` replace top-level constructor arguments (e.g. name, trainable)."""
        kwargs = {**self.config["config"], **overrides}
        try:
            model = self.cls.from_config(kwargs)
        except PresetError as exc:
            raise PresetError(exc if str(self.config_path) in str(exc) else f"{self.config_path}: {exc}") from None
        except Exception as exc:
            raise PresetError(f"{self.config_path}: cannot build {self.cls.__name__} from its config: {exc}") from exc
        if load_weights:
            w_path = self.directory / WEIGHTS_FILE
            if not w_path.is_file():
                raise PresetError(
                    f"preset directory {self.directory} has no {WEIGHTS_FILE} (use load_weights=False to build)"
                )
            try:
                model.load_weights(str(w_path))
            except Exception as exc:
                raise PresetError(f"{w_path}: corrupt weights or weights of another architecture: {exc}") from exc
        return model


def _download_remote(preset):
    try:  # optional dependency: only remote handles need keras-hub
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


def shipped_presets() -> dict:
    """{name: directory} of the trained presets that ship inside the package (weights, config and model
    card in ``kdpose_tf/models/<family>/presets/<name>/``), sorted by name."""
    found = {d.parent.name: d.parent for d in _SHIPPED_ROOT.glob(f"*/presets/*/{CONFIG_FILE}")}
    return dict(sorted(found.items()))


def shipped_card(name) -> dict:
    """The model card (metadata.json) of a shipped preset."""
    directory = shipped_presets().get(name)
    if directory is None:
        raise PresetError(f"{name!r} is not a shipped preset; shipped: {sorted(shipped_presets())}")
    path = directory / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PresetError(f"{path}: unreadable model card ({exc})") from None


def locate_preset(preset, load_weights=True):
    """Where `preset` lives: a catalogue name (str) to build without weights, or a `SavedPreset`.

    A catalogue name with load_weights=True reads `presets_dir()/<name>/`; a remote handle is
    downloaded first (see the module docstring).
    """
    preset_str = str(preset)
    if preset_str.startswith(_REMOTE_PREFIXES):
        return SavedPreset(_download_remote(preset_str))
    shipped = shipped_presets()
    if preset_str in shipped:
        return SavedPreset(shipped[preset_str])
    if preset_str in CATALOGUE:
        if not load_weights:
            return preset_str
        local = presets_dir() / preset_str
        if not (local / WEIGHTS_FILE).is_file():
            raise PresetError(
                f"no local weights for preset {preset_str!r}: kdpose_tf does not download weights. Put a preset "
                f"directory (written by save_to_preset) at {local} (so that {local / WEIGHTS_FILE} exists; set "
                "KDPOSE_PRESETS_DIR to change the root), pass a preset directory path, or use load_weights=False"
            )
        return SavedPreset(local)
    if os.path.isdir(preset_str) or os.sep in preset_str or preset_str.startswith("."):
        return SavedPreset(preset_str)
    raise PresetError(
        f"unknown preset {preset_str!r}: not a directory, not a remote handle (hf://, kaggle://), not shipped "
        f"and not in the catalogue; expected one of {sorted(shipped)} (trained) or {catalogue_names()}"
    )
