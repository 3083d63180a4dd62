"""The proposal family: the project proposal's student (Dite-HRNet + Polarized Self-Attention + depthwise
CSP-PAN neck, `proposal_student.py`), its HRNet-W48 teacher (`proposal_teacher.py`) and the student's
catalogue entry (`proposal_presets.py`, registered with `preset_utils` on import). The backbones are
the lite_hrnet and hrnet families'; this family is how the proposal puts them together.
"""

from kdpose_tf.models.preset_utils import register_pose_presets
from kdpose_tf.models.proposal.proposal_presets import pose_presets
from kdpose_tf.models.proposal.proposal_student import build_proposal_student
from kdpose_tf.models.proposal.proposal_teacher import build_proposal_teacher

register_pose_presets(pose_presets)

__all__ = ["build_proposal_student", "build_proposal_teacher"]
