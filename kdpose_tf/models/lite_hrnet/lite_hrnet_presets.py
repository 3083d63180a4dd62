"""Lite-HRNet / Dite-HRNet presets (architecture only: no pretrained weights are shipped).

Each entry is exactly {"metadata": ..., "config": ...} (checked by `preset_utils.register_presets`,
called from `kdpose_tf.models.lite_hrnet`): ``metadata`` (description, paper, the published figures
at 256x192 on COCO val2017 with the standard head, a 1x1 conv to 17 heatmaps on the 1/4 branch:
``params`` (count), ``flops`` (multiply-adds), ``coco_ap``, ``input_size``) and ``config`` (keyword
arguments of `LiteHRNetBackbone`, without ``input_shape``: the catalogue and callers set it).
`pose_presets` are the catalogue's pose networks on them (keypoint set, input size), registered too.

Measured here (trainable parameters incl. the 17-channel 1x1 head; multiply-adds of convs, with
Dite's dynamic kernels counted at the reference's aggregated-kernel cost):
lite_hrnet_18 1.13 M / 0.199 G, lite_hrnet_30 1.76 M / 0.309 G, dite_hrnet_18 1.19 M / 0.199 G,
dite_hrnet_30 1.86 M / 0.314 G. The deployed Dite graph runs the K kernels in parallel
(see `dite_hrnet_layers`): 0.257 G / 0.405 G multiply-adds.
"""

_WIDTHS = (40, 80, 160, 320)

backbone_presets = {
    "lite_hrnet_18": {
        "metadata": {
            "description": "Lite-HRNet-18 (Yu et al., CVPR 2021): conditional channel weighting, modules (2, 4, 2).",
            "paper": "https://arxiv.org/abs/2104.06403",
            "params": 1.1e6,
            "flops": 0.205e9,
            "coco_ap": 64.8,
            "input_size": (256, 192),
        },
        "config": {"variant": "lite", "stem_width": 32, "widths": _WIDTHS, "stage_modules": (2, 4, 2)},
    },
    "lite_hrnet_30": {
        "metadata": {
            "description": "Lite-HRNet-30 (Yu et al., CVPR 2021): conditional channel weighting, modules (3, 8, 3).",
            "paper": "https://arxiv.org/abs/2104.06403",
            "params": 1.8e6,
            "flops": 0.319e9,
            "coco_ap": 67.2,
            "input_size": (256, 192),
        },
        "config": {"variant": "lite", "stem_width": 32, "widths": _WIDTHS, "stage_modules": (3, 8, 3)},
    },
    "dite_hrnet_18": {
        "metadata": {
            "description": "Dite-HRNet-18 (Li et al., IJCAI 2022): dynamic split conv + context modelling, "
            "modules (2, 4, 2).",
            "paper": "https://arxiv.org/abs/2204.10762",
            "params": 1.1e6,
            "flops": 0.2e9,
            "coco_ap": 65.9,
            "input_size": (256, 192),
        },
        "config": {"variant": "dite", "stem_width": 32, "widths": _WIDTHS, "stage_modules": (2, 4, 2)},
    },
    "dite_hrnet_30": {
        "metadata": {
            "description": "Dite-HRNet-30 (Li et al., IJCAI 2022): dynamic split conv + context modelling, "
            "modules (3, 8, 3).",
            "paper": "https://arxiv.org/abs/2204.10762",
            "params": 1.8e6,
            "flops": 0.3e9,
            "coco_ap": 68.3,
            "input_size": (256, 192),
        },
        "config": {"variant": "dite", "stem_width": 32, "widths": _WIDTHS, "stage_modules": (3, 8, 3)},
    },
    "lite_hrnet_18_mobile": {
        "metadata": {
            "description": "Mobile-first student: the Lite-HRNet-18 topology at 128x96. Chosen from "
            "benchmarks/results/latency.md: the zoo student whose int8 graph runs almost entirely in XNNPACK (1261 of 1267 ops) "
            "(no dynamic kernels, softmax or LayerNorm outside it). 192x144 is not possible (4 branches need H, W "
            "divisible by 32); 128x96 is where it runs clearly under MoveNet Lightning int8's latency (XNNPACK, 1 thread). "
            "PARSE accuracy of this network at 128x96: benchmarks/results/distill_gpu.md.",
            "paper": "https://arxiv.org/abs/2104.06403",
            "params": 1.1e6,
            "flops": None,  # no published figure at 128x96 (measured: 0.050 GMACs, benchmarks/results/latency.md)
            "coco_ap": None,
            "input_size": (128, 96),
        },
        "config": {"variant": "lite", "stem_width": 32, "widths": _WIDTHS, "stage_modules": (2, 4, 2)},
    },
}

# Pose networks (the catalogue, `kdpose presets`): a backbone preset above with its keypoint set, input size
# and the paper's parameter count (M); registered by the family's __init__.py after backbone_presets.
pose_presets = {
    "lite_hrnet_18_coco_256x192": {
        "backbone_preset": "lite_hrnet_18",
        "keypoint_set": "coco17",
        "input_size": (256, 192),
        "description": "Lite-HRNet-18 (Yu et al. 2021), ~1.1 M.",
        "params_m": 1.1,
    },
    "lite_hrnet_18_mobile_coco_128x96": {
        "backbone_preset": "lite_hrnet_18_mobile",
        "keypoint_set": "coco17",
        "input_size": (128, 96),
        "description": "Mobile-first student: Lite-HRNet-18 at 128x96 (int8 almost entirely in XNNPACK).",
        "params_m": 1.1,
    },
    "dite_hrnet_18_coco_256x192": {
        "backbone_preset": "dite_hrnet_18",
        "keypoint_set": "coco17",
        "input_size": (256, 192),
        "description": "Dite-HRNet-18 (Li et al. 2022), COCO 65.9 AP, ~1.1 M.",
        "params_m": 1.1,
    },
    "dite_hrnet_30_coco_256x192": {
        "backbone_preset": "dite_hrnet_30",
        "keypoint_set": "coco17",
        "input_size": (256, 192),
        "description": "Dite-HRNet-30 (Li et al. 2022), COCO 68.3 AP, ~1.8 M.",
        "params_m": 1.8,
    },
}
