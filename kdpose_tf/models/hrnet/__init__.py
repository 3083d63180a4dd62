"""The hrnet family: `HRNetBackbone`, its backbone presets and its pose networks (catalogue entries),
registered with `preset_utils` on import."""

from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
from kdpose_tf.models.hrnet.hrnet_presets import backbone_presets, pose_presets
from kdpose_tf.models.preset_utils import register_pose_presets, register_presets

register_presets(backbone_presets, HRNetBackbone)
register_pose_presets(pose_presets)
