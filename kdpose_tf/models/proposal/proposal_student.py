"""The project proposal's student: Dite-HRNet + Polarized Self-Attention + depthwise CSP-PAN.

The student combines Dite-HRNet (Li et al., IJCAI 2022), Polarized Self-Attention (Liu et al.,
arXiv:2107.00782) and PP-PicoDet's depthwise CSP-PAN (Yu et al., arXiv:2111.00902); it is distilled
from the proposal's teacher (`proposal_teacher.build_proposal_teacher`, HRNet-W48-style) with FPD
(Zhang et al., CVPR 2019).

Student: Dite-HRNet with branch widths (32, 64, 128, 256) (stem to 32 channels; stem + 3
multi-branch stages = the "4 stages" of HRNet's counting), `PolarizedSelfAttention` inside every
block (optional), a depthwise CSP-PAN neck and a heatmap head with a deconvolution tail.

Heatmap stride (design decision): the teacher (HRNet-W48 + 1x1 head) predicts at 1/4 of the
input, and the distiller compares heatmaps pixel by pixel, so the student must too. Each deconv
layer doubles the resolution, so the student reads the feature at stride ``4 * 2**n`` for
``n = num_deconv_layers``: the neck takes levels ``P(2+n) .. P5`` and its highest-resolution
output (stride 4·2^n) goes through the n-layer deconv tail back to stride 4. With the default
n = 1: neck over P3, P4, P5 (1/8 .. 1/32) -> P3 (1/8) -> one 2x deconv -> 1/4 heatmaps.
n = 0 gives the plain neck over P2..P5 at 1/4 and no tail. Without the neck the backbone keeps
Dite-HRNet's published iterative head and the tail reads its ``P(2+n)`` output.
"""

from __future__ import annotations

from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
from kdpose_tf.models.necks.csp_pan import DepthwiseCSPPAN
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.utils.args import check_bool

STUDENT_WIDTHS = (32, 64, 128, 256)


def build_proposal_student(
    num_keypoints=17,
    input_shape=(256, 192, 3),
    psa_in_blocks=True,
    psa_in_head=False,
    use_neck=True,
    num_deconv_layers=1,
    keypoint_set="coco17",
    widths=STUDENT_WIDTHS,
    stage_modules=(2, 4, 2),
    blocks_per_module=2,
    deconv_filters=None,
    upsample="resize_conv",
    name="proposal_student",
):
    """Build the proposal's student: Dite-HRNet-W32 [+ PSA] [+ CSP-PAN] + deconv-tail heatmap head.

    Heatmaps are (H/4, W/4, K) for every `num_deconv_layers` (see the module docstring), the
    same size as `proposal_teacher.build_proposal_teacher`'s.

    Args:
        num_keypoints: K (default 17).
        input_shape: (H, W, 3), H and W divisible by 32 (default (256, 192, 3)).
        psa_in_blocks: PSA after the dynamic split conv of every backbone block (default True).
        psa_in_head: PSA before the final heatmap conv (default False; the proposal's open question).
        use_neck: depthwise CSP-PAN neck (default True).
        num_deconv_layers: deconv tail length n, 0..2 with the neck, 0..3 without (default 1).
        keypoint_set: "coco17" (default), "mpii16", "lsp14", a KeypointSet or None.
        widths: branch widths (default (32, 64, 128, 256)).
        stage_modules: modules per stage (default (2, 4, 2), Dite-HRNet-18 depth).
        blocks_per_module: blocks per module (default 2).
        deconv_filters: channels of the deconv tail (default None = the head's input channels).
        upsample: "resize_conv" (default: nearest resize + 3x3 conv, Edge TPU friendly) or "deconv"
            (transposed conv). The default avoids TRANSPOSE_CONV: besides the Edge TPU compiler's
            version limits, LiteRT 2.3's XNNPACK delegate crashed (double free) running this student's
            int8 TRANSPOSE_CONV here, while the same graph ran without the delegate.
        name: model name (default "proposal_student").

    Returns:
        `PoseEstimator`.

    Example (a tiny variant at 64x64; heatmaps at 1/4 of the input):
        >>> from kdpose_tf.models.summary import count_params
        >>> student = build_proposal_student(input_shape=(64, 64, 3), widths=(16, 32, 64, 128),
        ...                                  stage_modules=(1, 1, 1), blocks_per_module=1)
        >>> tuple(student.outputs[-1].shape)
        (None, 16, 16, 17)
        >>> count_params(student)
        136177

        The default student (Dite-HRNet-18-sized; parameters do not depend on the input size,
        building it takes ~25 s):

        >>> count_params(build_proposal_student(input_shape=(64, 64, 3)))  # doctest: +SKIP
        1160853
    """
    for arg, value in (("psa_in_blocks", psa_in_blocks), ("psa_in_head", psa_in_head), ("use_neck", use_neck)):
        check_bool(arg, value, owner="build_proposal_student")
    max_deconv = len(widths) - 2 if use_neck else len(widths) - 1
    if isinstance(num_deconv_layers, bool) or not isinstance(num_deconv_layers, int) or not (
        0 <= num_deconv_layers <= max_deconv
    ):
        raise ValueError(
            f"build_proposal_student: num_deconv_layers must be an int in [0, {max_deconv}] "
            f"(use_neck={use_neck}, {len(widths)} branches), received {num_deconv_layers!r}"
        )
    backbone = LiteHRNetBackbone(
        variant="dite",
        stem_width=widths[0],
        widths=widths,
        stage_modules=stage_modules,
        blocks_per_module=blocks_per_module,
        psa=psa_in_blocks,
        iterative_head=not use_neck,
        input_shape=input_shape,
        name=f"{name}_backbone",
    )
    level = f"P{2 + num_deconv_layers}"
    neck = None
    if use_neck:
        levels = tuple(f"P{i}" for i in range(2 + num_deconv_layers, 2 + len(widths)))
        neck = DepthwiseCSPPAN(in_levels=levels, name=f"{name}_neck")
        feature_channels = min(backbone.pyramid_channels[k] for k in levels)
    else:
        feature_channels = backbone.pyramid_channels[level]
    head = HeatmapHead(
        num_keypoints,
        num_deconv_layers=num_deconv_layers,
        deconv_filters=deconv_filters or feature_channels,
        upsample=upsample,
        psa=psa_in_head,
        name=f"{name}_head",
    )
    return PoseEstimator(
        backbone, num_keypoints=num_keypoints, keypoint_set=keypoint_set, head=head, neck=neck,
        feature_level=level, name=name,
    )
