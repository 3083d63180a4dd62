"""The lite_hrnet family: `LiteHRNetBackbone`, its backbone presets and its pose networks (catalogue entries),
registered with `preset_utils` on import."""

from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
from kdpose_tf.models.lite_hrnet.lite_hrnet_presets import backbone_presets, pose_presets
from kdpose_tf.models.preset_utils import register_pose_presets, register_presets

register_presets(backbone_presets, LiteHRNetBackbone)
register_pose_presets(pose_presets)
