"""The hrnet family: `HRNetBackbone` and its presets (registered with `preset_utils` on import)."""

from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
from kdpose_tf.models.hrnet.hrnet_presets import backbone_presets
from kdpose_tf.models.preset_utils import register_presets

register_presets(backbone_presets, HRNetBackbone)
