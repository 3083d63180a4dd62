"""HRNet presets (architecture only: kdpose_tf never ships or downloads pretrained weights).

`backbone_presets[name]` is {"metadata": the published figures, "config": the `HRNetBackbone`
constructor kwargs}; `pose_presets` are the catalogue's pose networks on them (both registered by
`kdpose_tf.models.hrnet`); the figures are of the pose network (backbone + the standard head, a 1x1 conv to 17 COCO
heatmaps) at 256x192, from Sun et al., CVPR 2019, Table 1 (COCO val2017).
The paper's "GFLOPs" are multiply-accumulates (MACs) of convolutions and fully-connected
layers, counted like `kdpose_tf.models.summary.count_flops`, but divided by 1024**3, not 10**9
(the official `get_model_summary` prints `flops_sum / (1024 ** 3)`): HRNet-W32 has 7.645e9 MACs,
i.e. 7.12 "GFLOPs". `metadata["gflops_divisor"]` records that unit. Parameters are in 10**6.

Example:
    >>> from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
    >>> backbone = HRNetBackbone(**preset_kwargs("hrnet_w32"))
    >>> backbone.pyramid_channels
    {'P2': 32, 'P3': 64, 'P4': 128, 'P5': 256}
"""

from kdpose_tf.models.preset_utils import preset_kwargs  # noqa: F401  (the kwargs of a registered preset)

_COMMON = {
    "stage_blocks": (4, 4, 4, 4),
    "stage_modules": (1, 1, 4, 3),
    "stem_width": 64,
    "stage1_filters": 64,
    "psa": False,
    "multiscale_output": False,
    "input_shape": (256, 192, 3),
}

backbone_presets = {
    "hrnet_w32": {
        "metadata": {
            "description": "HRNet-W32 pose network (Sun et al., CVPR 2019), 256x192, COCO keypoints.",
            "paper": "Deep High-Resolution Representation Learning for Human Pose Estimation, CVPR 2019",
            "params_m": 28.5,
            "gflops": 7.1,
            "flops_unit": "MACs (conv + FC, with the 1x1 head to 17 keypoints) / 1024**3",
            "gflops_divisor": 1024**3,
            "coco_ap": 73.4,
            "dataset": "COCO val2017",
            "input_size": (256, 192),
        },
        "config": {"width": 32, **_COMMON},
    },
    "hrnet_w48": {
        "metadata": {
            "description": "HRNet-W48 pose network (Sun et al., CVPR 2019), 256x192, COCO keypoints.",
            "paper": "Deep High-Resolution Representation Learning for Human Pose Estimation, CVPR 2019",
            "params_m": 63.6,
            "gflops": 14.6,
            "flops_unit": "MACs (conv + FC, with the 1x1 head to 17 keypoints) / 1024**3",
            "gflops_divisor": 1024**3,
            "coco_ap": 75.1,
            "dataset": "COCO val2017",
            "input_size": (256, 192),
        },
        "config": {"width": 48, **_COMMON},
    },
}

# Pose networks (the catalogue, `kdpose presets`): a backbone preset above with its keypoint set, input size
# and the paper's parameter count (M); registered by the family's __init__.py after backbone_presets.
pose_presets = {
    "hrnet_w32_coco_256x192": {
        "backbone_preset": "hrnet_w32",
        "keypoint_set": "coco17",
        "input_size": (256, 192),
        "description": "HRNet-W32 (Sun et al. 2019), COCO 73.4 AP, 28.5 M.",
        "params_m": 28.5,
    },
    "hrnet_w48_coco_256x192": {
        "backbone_preset": "hrnet_w48",
        "keypoint_set": "coco17",
        "input_size": (256, 192),
        "description": "HRNet-W48 (Sun et al. 2019): distillation teacher, COCO 75.1 AP, 63.6 M.",
        "params_m": 63.6,
    },
}
