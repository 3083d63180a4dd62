"""Distillation: the Distiller model, loss-weight schedules, feature distillation, DWPose."""

from kdpose_tf.distillation.schedules import ConstantWeight, DWPoseDecay, LSHMLinearSchedule, WeightSchedule
from kdpose_tf.distillation.feature import FeatureDistillation
from kdpose_tf.distillation.distiller import Distiller

__all__ = ["ConstantWeight", "DWPoseDecay", "LSHMLinearSchedule", "WeightSchedule", "FeatureDistillation",
           "Distiller"]
