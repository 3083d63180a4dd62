"""Backbones, necks, heads and the PoseEstimator task (importing registers them with Keras).

Importing this package also registers every family's backbone and pose-network presets (the family
`__init__.py` files, in catalogue order; `proposal` after the families it builds on), the loader of
pretrained models of other frameworks (`imported.openvino_import`) and the catalogue builder
(`presets`, imported last: it builds on everything above).
"""

from kdpose_tf.models.backbone import Backbone
from kdpose_tf.models.layers.psa import PolarizedSelfAttention
from kdpose_tf.models.layers.gated_psa import GatedPSA
from kdpose_tf.models.layers.inverted_residual import InvertedResidual
from kdpose_tf.models.layers.residual import BottleneckResidual
from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.hrnet.hrnet_backbone import HRNetBackbone
from kdpose_tf.models.lite_hrnet.lite_hrnet_backbone import LiteHRNetBackbone
from kdpose_tf.models.necks.csp_pan import DepthwiseCSPPAN
from kdpose_tf.models.necks.residual_csp_pan import ResidualCSPPAN
from kdpose_tf.models.imported.graph_backbone import GraphBackbone
from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.models import proposal  # noqa: F401  (registers the proposal student's catalogue entry)
from kdpose_tf.models.imported import openvino_import  # noqa: F401  (registers the loader of imported models)
from kdpose_tf.models import presets  # noqa: F401  (registers the catalogue builder; imports the classes above)

__all__ = [
    "Backbone", "PolarizedSelfAttention", "GatedPSA", "InvertedResidual", "BottleneckResidual", "HourglassBackbone",
    "HRNetBackbone", "LiteHRNetBackbone", "DepthwiseCSPPAN", "ResidualCSPPAN", "GraphBackbone", "HeatmapHead",
    "PoseEstimator",
]
