"""The lite_hrnet family: `LiteHRNetBackbone` and its presets (registered with `preset_utils` on import)."""

from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
from kdpose_tf.models.lite_hrnet.lite_hrnet_presets import backbone_presets
from kdpose_tf.models.preset_utils import register_presets

register_presets(backbone_presets, LiteHRNetBackbone)
