"""Quantization-aware fine-tuning: the QAT clone of a model (`kdpose_tf.export.qat.quantize_model`) trained
by distillation from the float model itself.

It lives above export because it trains: the clone is the Distiller's student, fed by the input pipeline.
`kdpose export --quantize int8-qat` runs it before `export_tflite(..., quantize="int8-qat")`.

Example:
>>> qat = quantization_aware_finetune(model, samples, COCO17, epochs=2, calibration=crops)   # doctest: +SKIP
>>> export_tflite(qat, "student_qat.tflite", quantize="int8-qat")                          # doctest: +SKIP
"""

from __future__ import annotations

import keras

from kdpose_tf.data.pipeline import make_dataset
from kdpose_tf.distillation.distiller import Distiller
from kdpose_tf.export.equalization import equalize_activations
from kdpose_tf.export.qat import RANGE_METHODS, quantize_model


def quantization_aware_finetune(model, samples, keypoint_set, epochs, calibration, batch_size=16, lr=1e-4,
                                equalize=True, range_method="mse"):
    """Fake-quant copy of `model`, fine-tuned by distillation from the float model itself.

    Quantization-aware distillation: the QAT clone (ranges set on `calibration[:64]`) is the
    student, the float `model` the teacher (FPD, alpha 0.5), trained on `samples`. Before the
    clone is made, channels between convolutions are equalized (`kdpose_tf.export.equalization`,
    exact in float; the clone takes the rescaled weights, `model` gets its own back) and the
    activation ranges are the clipped, frozen "mse" ranges of `kdpose_tf.export.qat.calibrate`.
    Chosen on the shipped LSP-14 student (`benchmarks/int8_ranges.py`, int8 body-12 PCK on LSP
    901-1000, float 88.8): untrained clone, min / max 82.5, "mse" 86.2; after 2 epochs, min / max with
    the moving average 86.8, frozen "mse" 86.6, equalization + frozen "mse" 87.3.

    Args:
        model: the float PoseEstimator (with a `codec`).
        samples: list of PoseSample to fine-tune on.
        keypoint_set: KeypointSet of the samples (flip pairs for augmentation).
        epochs: fine-tuning epochs; 0 returns the calibrated clone untrained.
        calibration: (N, H, W, 3) float32 crops in [0, 255] for the initial activation ranges.
        batch_size: default 16. lr: Adam learning rate, default 1e-4.
        equalize: True (default): channels read by depthwise convs; "all": by any conv; False: off
            (`equalize_activations`' `dense`).
        range_method: "mse" (default) or "minmax" (TFMOT's ranges, moving average in training).

    Returns:
        the QAT model, for `export_tflite(..., quantize="int8-qat")`.
    """
    if equalize not in (True, False, "all"):
        raise ValueError(f"equalize must be True, False or 'all', got {equalize!r}")
    if range_method not in RANGE_METHODS:
        raise ValueError(f"range_method must be one of {RANGE_METHODS}, got {range_method!r}")
    saved = model.get_weights() if equalize else None
    try:
        if equalize:
            graph = model.inference_model() if hasattr(model, "inference_model") else model  # shares the layers
            equalize_activations(graph, calibration[:64], dense=equalize == "all")
        qat_student = quantize_model(model, calibration_data=calibration[:64], range_method=range_method)
    finally:
        if saved is not None:
            model.set_weights(saved)  # the teacher: the same function either way, the caller's weights
    if epochs <= 0:
        return qat_student
    distiller = Distiller(teacher=model, student=qat_student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(lr))
    data = make_dataset(samples, model.codec, keypoint_set, batch_size=batch_size, training=True,
                        drop_remainder=True)
    distiller.fit(data, epochs=epochs, shuffle=False)  # the tf.data pipeline shuffles; Keras would only warn
    return qat_student
