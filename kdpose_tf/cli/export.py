"""`kdpose export` and `kdpose check-edgetpu`."""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.cli.common import CLIError, load_data, load_model, model_input_size


def calibration_crops(spec, input_size, count, on_bad_sample="skip", seed=0):
    """Up to `count` real un-augmented person crops (N, H, W, 3) float32 in [0, 255]."""
    import numpy as np

    from kdpose_tf.data.pipeline import make_inference_inputs

    samples, keypoint_set, _ = load_data(spec, on_bad_sample=on_bad_sample)
    rng = np.random.default_rng(seed)
    chosen = [samples[i] for i in rng.permutation(len(samples))[:count]]
    images, _, _ = make_inference_inputs(chosen, input_size)
    return images, samples, keypoint_set


def run_export(args):
    from kdpose_tf.export.tflite import export_tflite

    model = load_model(args.model)
    size = model_input_size(model)
    quantized = args.quantize in ("int8", "int8-qat")
    representative = None
    if quantized or args.calibration_data:
        if not args.calibration_data:
            raise CLIError(f"--quantize {args.quantize} needs --calibration-data (real training crops)")
        representative, samples, keypoint_set = calibration_crops(
            args.calibration_data, size, args.num_calibration, args.on_bad_sample)
    export_model = model
    if args.quantize == "int8-qat":
        export_model = quantization_aware_finetune(model, samples, keypoint_set, args.qat_epochs, representative)
    keypoint_set = getattr(model, "keypoint_set", None)
    path = export_tflite(export_model, args.output, quantize=args.quantize, representative_data=representative,
                         num_calibration=args.num_calibration, io_dtype=args.io_dtype, target=args.target,
                         keypoint_set=keypoint_set)
    print(f"wrote {path} ({Path(path).stat().st_size / 1e6:.2f} MB) and {Path(path).with_suffix('.json')}")
    if args.target == "edgetpu":
        from kdpose_tf.export.edgetpu import check_edgetpu

        print(check_edgetpu(path))


def quantization_aware_finetune(model, samples, keypoint_set, epochs, calibration, batch_size=16, lr=1e-4):
    """Fake-quant copy of `model` (ranges set on `calibration` crops), fine-tuned by distillation
    from the float model itself (quantization-aware distillation)."""
    import keras

    from kdpose_tf.data.pipeline import make_dataset
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.export.qat import quantize_model

    qat_student = quantize_model(model, calibration_data=calibration[:64])
    if epochs <= 0:
        return qat_student
    codec = model.codec
    distiller = Distiller(teacher=model, student=qat_student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(lr))
    data = make_dataset(samples, codec, keypoint_set, batch_size=batch_size, training=True, drop_remainder=True)
    distiller.fit(data, epochs=epochs)
    return qat_student


def run_check_edgetpu(args):
    from kdpose_tf.export.edgetpu import check_edgetpu

    if not Path(args.model).exists():
        raise CLIError(f"{args.model} does not exist")
    report = check_edgetpu(args.model)
    print(report)
    return 0 if getattr(report, "ok", True) else 1
