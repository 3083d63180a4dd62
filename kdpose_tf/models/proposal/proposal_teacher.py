"""The project proposal's teacher: HRNet-W48 (Sun et al., CVPR 2019) with a 1x1 heatmap head at 1/4.

The student it distils into (`proposal_student.build_proposal_student`) predicts at the same 1/4
stride, so FPD (Zhang et al., CVPR 2019) compares their heatmaps pixel by pixel.
"""

from __future__ import annotations

from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
from kdpose_tf.models.pose_estimator import PoseEstimator


def build_proposal_teacher(
    num_keypoints=17,
    input_shape=(256, 192, 3),
    keypoint_set="coco17",
    width=48,
    psa=False,
    name="proposal_teacher",
    **backbone_kwargs,
):
    """Build the proposal's teacher: HRNet-W48 (Sun et al. 2019) + 1x1 heatmap head at 1/4.

    Args:
        num_keypoints: K (default 17).
        input_shape: (H, W, 3), H and W divisible by 32 (default (256, 192, 3)).
        keypoint_set: "coco17" (default), "mpii16", "lsp14", a KeypointSet or None.
        width: HRNet width C (default 48).
        psa: PSA in the HRNet residual blocks (default False).
        name: model name (default "proposal_teacher").
        **backbone_kwargs: further `HRNetBackbone` arguments (e.g. stage_modules for tiny tests).

    Returns:
        `PoseEstimator` with heatmaps (H/4, W/4, K).

    Example (a tiny width-8 HRNet, one block per module, at 64x64):
        >>> from kdpose_tf.models.summary import count_params
        >>> teacher = build_proposal_teacher(input_shape=(64, 64, 3), width=8,
        ...                                  stage_modules=(1, 1, 1, 1), stage_blocks=(1, 1, 1, 1))
        >>> tuple(teacher.outputs[-1].shape), count_params(teacher)
        ((None, 16, 16, 17), 333305)

        The default HRNet-W48 (the paper's 63.6 M parameters; building it takes ~10 s):

        >>> teacher = build_proposal_teacher()  # doctest: +SKIP
        >>> tuple(teacher.outputs[-1].shape), count_params(teacher)  # doctest: +SKIP
        ((None, 64, 48, 17), 63595745)
    """
    backbone = HRNetBackbone(width=width, psa=psa, input_shape=tuple(input_shape), name=f"{name}_backbone",
                             **backbone_kwargs)
    head = HeatmapHead(num_keypoints, name=f"{name}_head")
    return PoseEstimator(backbone, num_keypoints=num_keypoints, keypoint_set=keypoint_set, head=head,
                         feature_level="P2", name=name)
