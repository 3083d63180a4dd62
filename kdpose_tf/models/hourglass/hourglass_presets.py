"""Stacked hourglass presets (architecture only: kdpose_tf never ships or downloads weights).

`backbone_presets[name]` is {"metadata": the published figures (MPII, 16 joints, 256x256 input),
"config": the `HourglassBackbone` constructor kwargs}; `pose_presets` are the catalogue's pose networks
on them (keypoint set, input size). `kdpose_tf.models.hourglass` registers both.

Sizes, counted with the 1x1 head of the final stack to 16 heatmaps (`PoseEstimator` default head):
  hourglass_8x256  25.50 M  (FPD / Newell teacher, paper ~26 M: -2 %)
  hourglass_4x128   3.35 M  (FPD student, paper ~3 M: +12 %; Newell's 64->128 stem is kept, and it
                             alone is 0.17 M, the rest of the gap is the papers' rounding)
  lshm_2            2.21 M  (LSHM_t_2, paper 2.3 M: -4 %)
  lshm_4           12.34 M  (LSHM_t_4, paper 12 M: +3 %)
The LSHM paper's two numbers cannot come from the same width: with t=2 inverted residual blocks one
stack costs about 58*C^2 parameters, so 4 stacks at the width that gives 2.3 M for 2 stacks (C=128)
would be 4.3 M, not 12 M. We keep the paper's block (t=2, one block per level, order 4) and pick the
width per model that lands on its published size: C=128 for LSHM_t_2 and C=224 for LSHM_t_4.

Example:
    >>> from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    >>> backbone = HourglassBackbone(**{**preset_kwargs("lshm_2"), "input_shape": (64, 64, 3)})
    >>> backbone.num_stacks, backbone.filters
    (2, 128)
"""

from kdpose_tf.models.preset_utils import preset_kwargs  # noqa: F401  (the kwargs of a registered preset)

_MPII = {"num_keypoints": 16, "order": 4, "blocks_per_level": 1, "input_shape": (256, 256, 3)}

backbone_presets = {
    "hourglass_8x256": {
        "metadata": {
            "description": "8-stack hourglass, 256 channels (Newell et al. 2016; FPD teacher), MPII 256x256.",
            "paper": "Fast Human Pose Estimation (FPD), CVPR 2019; Stacked Hourglass Networks, ECCV 2016",
            "params_m": 26.0,
            "dataset": "MPII",
            "input_size": (256, 256),
        },
        "config": {"num_stacks": 8, "filters": 256, "block": "bottleneck", **_MPII},
    },
    "hourglass_4x128": {
        "metadata": {
            "description": "4-stack hourglass, 128 channels (FPD student), MPII 256x256.",
            "paper": "Fast Human Pose Estimation (FPD), CVPR 2019",
            "params_m": 3.0,
            "dataset": "MPII",
            "input_size": (256, 256),
        },
        "config": {"num_stacks": 4, "filters": 128, "block": "bottleneck", **_MPII},
    },
    "lshm_2": {
        "metadata": {
            "description": "Lightweight stacked hourglass, 2 stacks of inverted residual blocks (t=2, C=128).",
            "paper": "Lightweight stacked hourglass network (LSHM_t_2), MPII",
            "params_m": 2.3,
            "pckh_0.5": 86.5,
            "dataset": "MPII",
            "input_size": (256, 256),
        },
        "config": {"num_stacks": 2, "filters": 128, "block": "inverted_residual", "expansion": 2, **_MPII},
    },
    "lshm_4": {
        "metadata": {
            "description": "Lightweight stacked hourglass, 4 stacks of inverted residual blocks (t=2, C=224).",
            "paper": "Lightweight stacked hourglass network (LSHM_t_4), MPII",
            "params_m": 12.0,
            "pckh_0.5": 88.5,
            "dataset": "MPII",
            "input_size": (256, 256),
        },
        "config": {"num_stacks": 4, "filters": 224, "block": "inverted_residual", "expansion": 2, **_MPII},
    },
}

# Pose networks (the catalogue, `kdpose presets`): a backbone preset above with its keypoint set, input size
# and the paper's parameter count (M); registered by the family's __init__.py after backbone_presets.
pose_presets = {
    "hourglass_8x256_mpii_256x256": {
        "backbone_preset": "hourglass_8x256",
        "keypoint_set": "mpii16",
        "input_size": (256, 256),
        "description": "8-stack hourglass, 256 ch: FPD / LSHM teacher (~26 M params).",
        "params_m": 26.0,
    },
    "hourglass_4x128_mpii_256x256": {
        "backbone_preset": "hourglass_4x128",
        "keypoint_set": "mpii16",
        "input_size": (256, 256),
        "description": "4-stack hourglass, 128 ch: FPD student (~3 M params).",
        "params_m": 3.0,
    },
    "lshm_2_mpii_256x256": {
        "backbone_preset": "lshm_2",
        "keypoint_set": "mpii16",
        "input_size": (256, 256),
        "description": "Lightweight stacked hourglass, 2 stacks of inverted residuals (LSHM_t_2, 2.3 M).",
        "params_m": 2.3,
    },
    "lshm_4_mpii_256x256": {
        "backbone_preset": "lshm_4",
        "keypoint_set": "mpii16",
        "input_size": (256, 256),
        "description": "Lightweight stacked hourglass, 4 stacks of inverted residuals (LSHM_t_4, 12 M).",
        "params_m": 12.0,
    },
}
