"""Models from other frameworks and exported files, run through their own runtimes: LiteRT (`litert`:
`TFLiteRunner`; `flatbuffer`: the file's ops and tensors; `xnnpack`: which CPU kernels run it) and
OpenVINO (`openvino`: the runner the pretrained heatmap teachers share; `detector`: the person detector);
`heatmap_model`: a pretrained heatmap model run on crops by the runtime its suffix names, with the
`TeacherConfig` (`model_config`) of the catalogue (`pretrained_models`). Model files in, arrays out;
nothing here imports Keras models."""
