"""The hourglass family: `HourglassBackbone` and its presets (registered with `preset_utils` on import)."""

from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.hourglass.hourglass_presets import backbone_presets
from kdpose_tf.models.preset_utils import register_presets

register_presets(backbone_presets, HourglassBackbone)
