"""Distillation: the Distiller model, loss-weight schedules, feature distillation, DWPose, keypoint teachers."""

from kdpose_tf.distillation.schedules import ConstantWeight, DWPoseDecay, LSHMLinearSchedule, WeightSchedule
from kdpose_tf.distillation.feature import FeatureDistillation
from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.distillation.keypoint_teacher import KeypointTeacher, attach_teacher_keypoints

__all__ = ["ConstantWeight", "DWPoseDecay", "LSHMLinearSchedule", "WeightSchedule", "FeatureDistillation",
           "Distiller", "KeypointTeacher", "attach_teacher_keypoints"]
