"""The preset catalogue: every model family's pose networks, by name.

An entry names a backbone preset registered by its family (`kdpose_tf.models.<family>/__init__.py`
registers `<family>_presets.backbone_presets` with `preset_utils.register_presets`), the keypoint
set and input size, and optionally a `builder` function (the proposal student). Entries are
architecture only: weights are never shipped or downloaded (see `preset_utils`). Importing this
module (done by `kdpose_tf.models`) registers the catalogue with `preset_utils.register_catalogue`,
so `PoseEstimator.from_preset(name)` / `Backbone.from_preset(name)` find it.

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
from kdpose_tf.models.students import build_proposal_student


def _entry(family, key, keypoint_set, input_size, description, params_m, builder=None):
    return {
        "family": family,
        "backbone_preset": key,
        "keypoint_set": keypoint_set,
        "input_size": input_size,
        "description": description,
        "params_m": params_m,
        "builder": builder,
    }


PRESETS = {
    "hourglass_8x256_mpii_256x256": _entry(
        "hourglass", "hourglass_8x256", "mpii16", (256, 256),
        "8-stack hourglass, 256 ch: FPD / LSHM teacher (~26 M params).", 26.0,
    ),
    "hourglass_4x128_mpii_256x256": _entry(
        "hourglass", "hourglass_4x128", "mpii16", (256, 256),
        "4-stack hourglass, 128 ch: FPD student (~3 M params).", 3.0,
    ),
    "lshm_2_mpii_256x256": _entry(
        "hourglass", "lshm_2", "mpii16", (256, 256),
        "Lightweight stacked hourglass, 2 stacks of inverted residuals (LSHM_t_2, 2.3 M).", 2.3,
    ),
    "lshm_4_mpii_256x256": _entry(
        "hourglass", "lshm_4", "mpii16", (256, 256),
        "Lightweight stacked hourglass, 4 stacks of inverted residuals (LSHM_t_4, 12 M).", 12.0,
    ),
    "hrnet_w32_coco_256x192": _entry(
        "hrnet", "hrnet_w32", "coco17", (256, 192), "HRNet-W32 (Sun et al. 2019), COCO 73.4 AP, 28.5 M.", 28.5,
    ),
    "hrnet_w48_coco_256x192": _entry(
        "hrnet", "hrnet_w48", "coco17", (256, 192),
        "HRNet-W48 (Sun et al. 2019): distillation teacher, COCO 75.1 AP, 63.6 M.", 63.6,
    ),
    "lite_hrnet_18_coco_256x192": _entry(
        "lite_hrnet", "lite_hrnet_18", "coco17", (256, 192), "Lite-HRNet-18 (Yu et al. 2021), ~1.1 M.", 1.1,
    ),
    "lite_hrnet_18_mobile_coco_128x96": _entry(
        "lite_hrnet", "lite_hrnet_18_mobile", "coco17", (128, 96),
        "Mobile-first student: Lite-HRNet-18 at 128x96 (int8 almost entirely in XNNPACK).", 1.1,
    ),
    "dite_hrnet_18_coco_256x192": _entry(
        "lite_hrnet", "dite_hrnet_18", "coco17", (256, 192),
        "Dite-HRNet-18 (Li et al. 2022), COCO 65.9 AP, ~1.1 M.", 1.1,
    ),
    "dite_hrnet_30_coco_256x192": _entry(
        "lite_hrnet", "dite_hrnet_30", "coco17", (256, 192),
        "Dite-HRNet-30 (Li et al. 2022), COCO 68.3 AP, ~1.8 M.", 1.8,
    ),
    "dite_hrnet_18_psa_csppan_coco_256x192": _entry(
        "lite_hrnet", "dite_hrnet_18", "coco17", (256, 192),
        "Proposal student: Dite-HRNet width 32 + PSA in every block + depthwise CSP-PAN (P3-P5) + "
        "resize-conv tail to 1/4 (kdpose_tf.models.students.build_proposal_student).",
        None, builder=build_proposal_student,
    ),
}

_TASK_KEYS = ("num_keypoints", "keypoint_set", "input_size", "head", "neck", "codec", "feature_level", "name")


def get_entry(name):
    """The catalogue entry of `name` (PresetError listing the names when unknown)."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


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


preset_utils.register_catalogue(PRESETS, build)
