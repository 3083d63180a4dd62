"""The proposal student's catalogue entry (architecture only: no weights are shipped or downloaded).

Unlike the other families' pose presets it is made by a builder (`proposal_student.build_proposal_student`:
Dite-HRNet + PSA + depthwise CSP-PAN + resize-conv tail), not by a backbone preset and the default
head. "backbone_preset" names the Dite-HRNet-18 preset its backbone is a variant of (the class that
`Backbone.from_preset` checks), so it is listed under the lite_hrnet family; it has no published figures.
Registered by `kdpose_tf.models.proposal`.
"""

from kdpose_tf.models.proposal.proposal_student import build_proposal_student

pose_presets = {
    "dite_hrnet_18_psa_csppan_coco_256x192": {
        "backbone_preset": "dite_hrnet_18",
        "keypoint_set": "coco17",
        "input_size": (256, 192),
        "description": "Proposal student: Dite-HRNet width 32 + PSA in every block + depthwise CSP-PAN (P3-P5) + "
        "resize-conv tail to 1/4 (kdpose_tf.models.proposal.proposal_student.build_proposal_student).",
        "params_m": None,
        "builder": build_proposal_student,
    },
}
