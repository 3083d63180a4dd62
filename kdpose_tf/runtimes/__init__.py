"""Models from other frameworks run through their own runtimes (OpenVINO): the person detector, and the
OpenVINO runner that the pretrained heatmap teachers share."""
