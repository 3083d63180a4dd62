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
from kdpose_tf.export.qat import quantize_model


def quantization_aware_finetune(model, samples, keypoint_set, epochs, calibration, batch_size=16, lr=1e-4):
    """Fake-quant copy of `model`, fine-tuned by distillation from the float model itself.

    Quantization-aware distillation: the QAT clone (ranges set on `calibration[:64]`) is the
    student, the float `model` the teacher (FPD, alpha 0.5), trained on `samples`.

    Args:
        model: the float PoseEstimator (with a `codec`).
        samples: list of PoseSample to fine-tune on.
        keypoint_set: KeypointSet of the samples (flip pairs for augmentation).
        epochs: fine-tuning epochs; 0 returns the calibrated clone untrained.
        calibration: (N, H, W, 3) float32 crops in [0, 255] for the initial activation ranges.
        batch_size: default 16. lr: Adam learning rate, default 1e-4.

    Returns:
        the QAT model, for `export_tflite(..., quantize="int8-qat")`.
    """
    qat_student = quantize_model(model, calibration_data=calibration[:64])
    if epochs <= 0:
        return qat_student
    distiller = Distiller(teacher=model, student=qat_student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(lr))
    data = make_dataset(samples, model.codec, keypoint_set, batch_size=batch_size, training=True,
                        drop_remainder=True)
    distiller.fit(data, epochs=epochs, shuffle=False)  # the tf.data pipeline shuffles; Keras would only warn
    return qat_student
