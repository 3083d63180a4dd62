"""The preset catalogue: every model family's pose networks, by name, as the families register them.

Each family keeps its pose-network presets beside its backbone presets, in
`kdpose_tf.models.<family>/<family>_presets.py` (`pose_presets`: the backbone preset, keypoint set,
input size, published figures and optionally a `builder` function, as the proposal student's); its
`__init__.py` registers both with `preset_utils` (`register_presets`, `register_pose_presets`). This
module reads that registry (`PRESETS`, in registration order: the family imports of
`kdpose_tf.models`) and builds its entries. Entries are architecture only: weights are never shipped
or downloaded (see `preset_utils`). Importing this module (done by `kdpose_tf.models`, after the
families) registers `build` with `preset_utils.register_catalogue_builder`, so
`PoseEstimator.from_preset(name)` / `Backbone.from_preset(name)` find the entries.

Example:
>>> [row["name"] for row in list_presets()][:2]
['hourglass_8x256_mpii_256x256', 'hourglass_4x128_mpii_256x256']
>>> build("lshm_2_mpii_256x256", input_size=(64, 64)).output_shape[-1]
(None, 16, 16, 16)
"""

from __future__ import annotations

import inspect

from kdpose_tf.errors import PresetError
from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.models import preset_utils
from kdpose_tf.models.backbone import Backbone
from kdpose_tf.models.pose_estimator import PoseEstimator

# The registry itself (name -> entry), filled by the families' __init__.py when kdpose_tf.models is imported.
PRESETS = preset_utils.CATALOGUE
get_entry = preset_utils.catalogue_entry  # the entry of a name (PresetError listing the names when unknown)

_TASK_KEYS = ("num_keypoints", "keypoint_set", "input_size", "head", "neck", "codec", "feature_level", "name")


def build(preset, cls=None, **overrides):
    """Build catalogue entry `preset` without weights, as a `PoseEstimator` (default) or its backbone.

    `cls`: a `PoseEstimator` class (default) or a `Backbone` class (the backbone alone); which
    classes a preset may be loaded as is checked by their `from_preset`.
    `overrides`: PoseEstimator arguments (num_keypoints, keypoint_set, input_size, head, neck, codec,
    feature_level, name) go to the task; anything else to the backbone. `input_size=(H, W)` also sets
    the backbone's input shape; `num_keypoints` also sets a hourglass backbone's.
    """
    cls = PoseEstimator if cls is None else cls
    entry = get_entry(preset)
    if entry["builder"] is not None:
        return _build_with_builder(preset, entry, cls, overrides)
    bb_cls = preset_utils.preset_class(entry["backbone_preset"])
    bb_kwargs = preset_utils.preset_kwargs(entry["backbone_preset"])
    task = {k: overrides.pop(k) for k in list(overrides) if k in _TASK_KEYS}
    bb_kwargs.update(overrides)
    bb_kwargs["input_shape"] = (*task.get("input_size", entry["input_size"]), 3)
    if "num_keypoints" in task and "num_keypoints" in inspect.signature(bb_cls.__init__).parameters:
        bb_kwargs["num_keypoints"] = task["num_keypoints"]
        task.setdefault("keypoint_set", None)
    backbone = bb_cls(**bb_kwargs)
    if issubclass(cls, Backbone):
        return backbone
    task.setdefault("keypoint_set", entry["keypoint_set"])
    task.setdefault("name", preset)
    return cls(backbone, **task)


def _build_with_builder(name, entry, cls, overrides):
    """Entries made by a builder function (the proposal student): only task-level overrides apply."""
    unknown = set(overrides) - {"num_keypoints", "keypoint_set", "input_size", "name"}
    if unknown:
        raise PresetError(f"preset {name!r} accepts overrides num_keypoints, keypoint_set, input_size, name; "
                          f"got {sorted(unknown)}")
    keypoint_set = overrides.get("keypoint_set") or entry["keypoint_set"]
    num_keypoints = overrides.get("num_keypoints") or get_keypoint_set(keypoint_set).num_keypoints
    size = tuple(overrides.get("input_size") or entry["input_size"])
    model = entry["builder"](
        num_keypoints=num_keypoints, keypoint_set=keypoint_set, input_shape=(*size, 3), name=overrides.get("name", name)
    )
    return model.backbone if issubclass(cls, Backbone) else model


def published_figures(name):
    """(params in M, GFLOPs) the paper states for entry `name`, or None where there is none."""
    entry = get_entry(name)
    if entry["builder"] is not None:
        return entry["params_m"], None
    meta = preset_utils.preset_metadata(entry["backbone_preset"])
    gflops = meta.get("gflops") or (meta["flops"] / 1e9 if meta.get("flops") else None)
    return entry["params_m"], gflops


def list_presets():
    """Rows for `kdpose presets`: dicts with name, family, params (M, published), input_size,
    keypoint_set, description; in catalogue order."""
    return [
        {
            "name": name,
            "family": e["family"],
            "params_m": published_figures(name)[0],
            "gflops": published_figures(name)[1],
            "input_size": tuple(e["input_size"]),
            "keypoint_set": e["keypoint_set"],
            "description": e["description"],
        }
        for name, e in PRESETS.items()
    ]


def list_shipped():
    """Rows for the trained presets shipped inside the package: name, keypoint set, input size and
    the model card's headline figures (`preset_utils.shipped_card`)."""
    rows = []
    for name in preset_utils.shipped_presets():
        card = preset_utils.shipped_card(name)
        rows.append({"name": name, "keypoint_set": card.get("keypoint_set"), "input_size": card.get("input_size"),
                     "parameter_count": card.get("parameter_count"), "description": card.get("description"),
                     "headline": card.get("headline") or {}})
    return rows


preset_utils.register_catalogue_builder(build)
