"""kdpose_tf: small, fast human pose estimators by knowledge distillation, shipped as TFLite.

Importing the package registers every kdpose_tf layer and model with Keras, so `.keras` files
and presets written by kdpose_tf load with `keras.saving.load_model` after `import kdpose_tf`.

    from kdpose_tf import PoseEstimator, Distiller, HeatmapCodec, COCO17
"""

# First, before anything imports Keras: the `kdpose` command (without --verbose) loads TensorFlow
# with its native start-up INFO lines kept off the terminal (kdpose_tf/utils/native_logs.py).
from kdpose_tf.utils.native_logs import quiet_cli_start as _quiet_cli_start

_quiet_cli_start()

from kdpose_tf.version import __version__
from kdpose_tf.keypoints import COCO17, LSP14, MPII16, KeypointSet, get_keypoint_set
from kdpose_tf.errors import DataError, KdposeError, PresetError, ShapeMismatchError
from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.models import (  # noqa: F401  (registers every layer and model with Keras)
    Backbone,
    DepthwiseCSPPAN,
    HeatmapHead,
    HourglassBackbone,
    HRNetBackbone,
    LiteHRNetBackbone,
    PolarizedSelfAttention,
    PoseEstimator,
)
from kdpose_tf.distillation import (
    ConstantWeight,
    Distiller,
    DWPoseDecay,
    FeatureDistillation,
    LSHMLinearSchedule,
)

__all__ = [
    "__version__", "COCO17", "LSP14", "MPII16", "KeypointSet", "get_keypoint_set",
    "DataError", "KdposeError", "PresetError", "ShapeMismatchError", "HeatmapCodec",
    "Backbone", "DepthwiseCSPPAN", "HeatmapHead", "HourglassBackbone", "HRNetBackbone",
    "LiteHRNetBackbone", "PolarizedSelfAttention", "PoseEstimator",
    "ConstantWeight", "Distiller", "DWPoseDecay", "FeatureDistillation", "LSHMLinearSchedule",
]
