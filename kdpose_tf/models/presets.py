"""The preset catalogue: every model family's pose networks, by name.

An entry names the backbone class by import path and takes its kwargs from the family's
`*_presets.py` (`backbone_presets[key]`, imported lazily so a family that is absent does not break
the others), with optional extra `backbone_kwargs`, a neck, head kwargs, the keypoint set and input
size. Entries are architecture only: weights are never shipped or downloaded (see `preset_utils`).

Example:
>>> from kdpose_tf.models.pose_estimator import PoseEstimator
>>> model = PoseEstimator.from_preset("lshm_2_mpii_256x256", load_weights=False)  # doctest: +SKIP
>>> [row["name"] for row in list_presets()][:2]
['hourglass_8x256_mpii_256x256', 'hourglass_4x128_mpii_256x256']
"""

from __future__ import annotations

import importlib
import inspect

from kdpose_tf.errors import PresetError

_HG = "kdpose_tf.models.hourglass"
_HR = "kdpose_tf.models.hrnet"
_LH = "kdpose_tf.models.lite_hrnet"
_HG_CLS = f"{_HG}.hourglass_backbone.HourglassBackbone"
_HR_CLS = f"{_HR}.hrnet_backbone.HRNetBackbone"
_LH_CLS = f"{_LH}.lite_hrnet_backbone.LiteHRNetBackbone"


def _entry(family, backbone, presets_module, key, keypoint_set, input_size, description, **extra):
    return {
        "family": family,
        "backbone": backbone,
        "backbone_presets": presets_module,
        "backbone_preset": key,
        "backbone_kwargs": extra.pop("backbone_kwargs", {}),
        "fallback_kwargs": extra.pop("fallback_kwargs", {}),
        "neck": extra.pop("neck", None),
        "neck_kwargs": extra.pop("neck_kwargs", {}),
        "head_kwargs": extra.pop("head_kwargs", {}),
        "keypoint_set": keypoint_set,
        "input_size": input_size,
        "description": description,
        **extra,
    }


_LITE18 = {"stem_width": 32, "widths": (40, 80, 160, 320), "stage_modules": (2, 4, 2), "input_shape": (256, 192, 3)}
_LITE30 = {**_LITE18, "stage_modules": (3, 8, 3)}

PRESETS = {
    "hourglass_8x256_mpii_256x256": _entry(
        "hourglass", _HG_CLS, f"{_HG}.hourglass_presets", "hourglass_8x256", "mpii16", (256, 256),
        "8-stack hourglass, 256 ch: FPD / LSHM teacher (~26 M params).", params_m=26.0,
    ),
    "hourglass_4x128_mpii_256x256": _entry(
        "hourglass", _HG_CLS, f"{_HG}.hourglass_presets", "hourglass_4x128", "mpii16", (256, 256),
        "4-stack hourglass, 128 ch: FPD student (~3 M params).", params_m=3.0,
    ),
    "lshm_2_mpii_256x256": _entry(
        "hourglass", _HG_CLS, f"{_HG}.hourglass_presets", "lshm_2", "mpii16", (256, 256),
        "Lightweight stacked hourglass, 2 stacks of inverted residuals (LSHM_t_2, 2.3 M).", params_m=2.3,
    ),
    "lshm_4_mpii_256x256": _entry(
        "hourglass", _HG_CLS, f"{_HG}.hourglass_presets", "lshm_4", "mpii16", (256, 256),
        "Lightweight stacked hourglass, 4 stacks of inverted residuals (LSHM_t_4, 12 M).", params_m=12.0,
    ),
    "hrnet_w32_coco_256x192": _entry(
        "hrnet", _HR_CLS, f"{_HR}.hrnet_presets", "hrnet_w32", "coco17", (256, 192),
        "HRNet-W32 (Sun et al. 2019), COCO 73.4 AP, 28.5 M.", params_m=28.5,
    ),
    "hrnet_w48_coco_256x192": _entry(
        "hrnet", _HR_CLS, f"{_HR}.hrnet_presets", "hrnet_w48", "coco17", (256, 192),
        "HRNet-W48 (Sun et al. 2019): distillation teacher, COCO 75.1 AP, 63.6 M.", params_m=63.6,
    ),
    "lite_hrnet_18_coco_256x192": _entry(
        "lite_hrnet", _LH_CLS, f"{_LH}.lite_hrnet_presets", "lite_hrnet_18", "coco17", (256, 192),
        "Lite-HRNet-18 (Yu et al. 2021), ~1.1 M.", params_m=1.1,
        fallback_kwargs={"variant": "lite", **_LITE18},
    ),
    "lite_hrnet_18_mobile_coco_128x96": _entry(
        "lite_hrnet", _LH_CLS, f"{_LH}.lite_hrnet_presets", "lite_hrnet_18_mobile", "coco17", (128, 96),
        "Mobile-first student: Lite-HRNet-18 at 128x96 (one XNNPACK graph in int8).", params_m=1.1,
        fallback_kwargs={"variant": "lite", **_LITE18, "input_shape": (128, 96, 3)},
    ),
    "dite_hrnet_18_coco_256x192": _entry(
        "lite_hrnet", _LH_CLS, f"{_LH}.lite_hrnet_presets", "dite_hrnet_18", "coco17", (256, 192),
        "Dite-HRNet-18 (Li et al. 2022), COCO 65.9 AP, ~1.1 M.", params_m=1.1,
        fallback_kwargs={"variant": "dite", **_LITE18},
    ),
    "dite_hrnet_30_coco_256x192": _entry(
        "lite_hrnet", _LH_CLS, f"{_LH}.lite_hrnet_presets", "dite_hrnet_30", "coco17", (256, 192),
        "Dite-HRNet-30 (Li et al. 2022), COCO 68.3 AP, ~1.8 M.", params_m=1.8,
        fallback_kwargs={"variant": "dite", **_LITE30},
    ),
    "dite_hrnet_18_psa_csppan_coco_256x192": _entry(
        "lite_hrnet", _LH_CLS, f"{_LH}.lite_hrnet_presets", "dite_hrnet_18", "coco17", (256, 192),
        "Proposal student: Dite-HRNet width 32 + PSA in every block + depthwise CSP-PAN (P3-P5) + "
        "resize-conv tail to 1/4 (kdpose_tf.models.students.build_proposal_student).",
        params_m=None,
        builder="kdpose_tf.models.students.build_proposal_student",
    ),
}

_TASK_KEYS = ("num_keypoints", "keypoint_set", "input_size", "head", "neck", "codec", "feature_level", "name")


def _import(path, what):
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise PresetError(f"{what} {path!r} is not available in this install: {exc}") from exc


def get_entry(name):
    """The catalogue entry of `name` (PresetError listing the names when unknown)."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def backbone_kwargs(name):
    """Backbone constructor kwargs of catalogue entry `name`: family preset, else fallback, + extras."""
    entry = get_entry(name)
    kwargs = dict(entry["fallback_kwargs"])
    try:
        family = importlib.import_module(entry["backbone_presets"])
        preset = family.backbone_presets[entry["backbone_preset"]]
        # Two family layouts: {"config": kwargs, "metadata": ...} or {**kwargs, "metadata": ...}.
        kwargs = dict(preset["config"]) if "config" in preset else {k: v for k, v in preset.items() if k != "metadata"}
    except (ImportError, AttributeError, KeyError):
        if not kwargs:
            raise PresetError(
                f"preset {name!r}: {entry['backbone_presets']}.backbone_presets[{entry['backbone_preset']!r}] "
                "is not available in this install"
            ) from None
    kwargs.update(entry["backbone_kwargs"])
    return kwargs


def build(name, cls=None, **overrides):
    """Build catalogue entry `name` without weights, as a `PoseEstimator` (default) or its backbone.

    `overrides`: PoseEstimator arguments (num_keypoints, keypoint_set, input_size, head, neck, codec,
    feature_level, name) go to the task; anything else to the backbone. `input_size=(H, W)` also sets
    the backbone's input shape; `num_keypoints` also sets a hourglass backbone's.
    """
    from kdpose_tf.models.backbone import Backbone
    from kdpose_tf.models.pose_estimator import PoseEstimator

    cls = PoseEstimator if cls is None else cls
    entry = get_entry(name)
    if entry.get("builder"):
        return _build_with_builder(name, entry, cls, overrides)
    bb_cls = _import(entry["backbone"], "backbone class")
    bb_kwargs = backbone_kwargs(name)
    task = {k: overrides.pop(k) for k in list(overrides) if k in _TASK_KEYS}
    bb_kwargs.update(overrides)
    if "input_size" in task:
        bb_kwargs["input_shape"] = (*task["input_size"], 3)
    accepts = inspect.signature(bb_cls.__init__).parameters
    if "num_keypoints" in task and "num_keypoints" in accepts:
        bb_kwargs["num_keypoints"] = task["num_keypoints"]
        task.setdefault("keypoint_set", None)
    if issubclass(cls, Backbone):
        if not issubclass(bb_cls, cls):
            raise PresetError(f"preset {name!r} has a {bb_cls.__name__} backbone, not a {cls.__name__}")
        return bb_cls(**bb_kwargs)
    if not issubclass(cls, PoseEstimator):
        raise PresetError(f"catalogue presets build PoseEstimator or Backbone classes, not {cls.__name__}")
    backbone = bb_cls(**bb_kwargs)
    if entry["neck"] and "neck" not in task:
        task["neck"] = _import(entry["neck"], "neck class")(**entry["neck_kwargs"])
    if entry["head_kwargs"] and "head" not in task:
        from kdpose_tf.models.heads.heatmap_head import HeatmapHead
        from kdpose_tf.keypoints import get_keypoint_set

        k = task.get("num_keypoints") or get_keypoint_set(task.get("keypoint_set", entry["keypoint_set"])).num_keypoints
        task["head"] = HeatmapHead(k, **entry["head_kwargs"])
    task.setdefault("keypoint_set", entry["keypoint_set"])
    task.setdefault("name", name)
    return cls(backbone, **task)


def _build_with_builder(name, entry, cls, overrides):
    """Entries made by a builder function (the proposal student): only task-level overrides apply."""
    from kdpose_tf.keypoints import get_keypoint_set
    from kdpose_tf.models.backbone import Backbone

    unknown = set(overrides) - {"num_keypoints", "keypoint_set", "input_size", "name"}
    if unknown:
        raise PresetError(f"preset {name!r} accepts overrides num_keypoints, keypoint_set, input_size, name; "
                          f"got {sorted(unknown)}")
    keypoint_set = overrides.get("keypoint_set") or entry["keypoint_set"]
    num_keypoints = overrides.get("num_keypoints") or get_keypoint_set(keypoint_set).num_keypoints
    size = tuple(overrides.get("input_size") or entry["input_size"])
    model = _import(entry["builder"], "builder")(
        num_keypoints=num_keypoints, keypoint_set=keypoint_set, input_shape=(*size, 3), name=overrides.get("name", name)
    )
    return model.backbone if issubclass(cls, Backbone) else model


def published_figures(name):
    """(params in M, GFLOPs) the paper states for entry `name`, or None where there is none."""
    entry = get_entry(name)
    params, gflops = entry.get("params_m"), None
    try:
        meta = importlib.import_module(entry["backbone_presets"]).backbone_presets[entry["backbone_preset"]]
        meta = meta.get("metadata", {})
    except (ImportError, AttributeError, KeyError):
        meta = {}
    if entry.get("builder"):
        return params, None
    gflops = meta.get("gflops") or (meta["flops"] / 1e9 if meta.get("flops") else None)
    return params, gflops


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
