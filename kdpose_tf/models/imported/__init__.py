"""Imported models: `GraphBackbone` (a backbone from a list of plain nodes) and the OpenVINO / ONNX importer."""

from kdpose_tf.models.imported.graph_backbone import GraphBackbone
