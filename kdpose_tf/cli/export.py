"""`kdpose export`, `kdpose import`, `kdpose check-edgetpu` / `check-xnnpack`: arguments -> `kdpose_tf.export`
(tflite, qat, edgetpu) and `kdpose_tf.models.imported`."""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.cli.common import CLIError, import_model, load_data, load_model, model_input_size, save_model


def run_export(args):
    from kdpose_tf.data.datasets import calibration_crops
    from kdpose_tf.distillation.qat_finetune import quantization_aware_finetune
    from kdpose_tf.export.tflite import check_float_ops, export_tflite

    try:  # before the model loads: --float-ops with --target edgetpu or a float variant is one line
        float_ops = check_float_ops(tuple(args.float_ops or ()), args.quantize, args.target)
    except ValueError as e:
        raise CLIError(f"--float-ops: {e}") from None
    model = load_model(args.model)
    size = model_input_size(model)
    representative = None
    if args.quantize in ("int8", "int8-qat") and not args.calibration_data:
        raise CLIError(f"--quantize {args.quantize} needs --calibration-data (real training crops)")
    if args.calibration_data:
        data = load_data(args.calibration_data, args.on_bad_sample, "--calibration-data")
        representative = calibration_crops(data.samples, size, args.num_calibration)
    export_model = model
    equalize = {"depthwise": True, "all": "all", "none": False}[args.equalize]
    sidecar = True
    if args.quantize == "int8-qat":
        print(f"quantization-aware fine-tuning: {args.qat_epochs} epoch(s) on {len(data.samples)} people "
              f"({args.activation_ranges} activation ranges, equalization {args.equalize})")
        export_model = quantization_aware_finetune(model, data.samples, data.keypoint_set, args.qat_epochs,
                                                   representative, equalize=equalize,
                                                   range_method=args.activation_ranges)
        sidecar = {"qat": {"epochs": args.qat_epochs, "activation_ranges": args.activation_ranges,
                           "activation_equalization": args.equalize}}
    path = export_tflite(export_model, args.output, quantize=args.quantize, representative_data=representative,
                         num_calibration=args.num_calibration, io_dtype=args.io_dtype, target=args.target,
                         equalize=equalize, sidecar=sidecar,
                         keypoint_set=getattr(model, "keypoint_set", None), float_ops=float_ops)
    io_dtype = args.io_dtype if args.quantize in ("int8", "int8-qat") else "float32"
    islands = f", {'/'.join(float_ops)} in float32 (CPU only)" if float_ops else ""
    print(f"wrote {path} ({Path(path).stat().st_size / 1e6:.2f} MB, {args.quantize}{islands}, input/output {io_dtype})")
    print(f"wrote {Path(path).with_suffix('.json')} (input size, normalisation, keypoint names)")
    if args.target == "edgetpu":
        return _print_edgetpu(path)
    return 0


def run_import(args):
    """A pretrained model from another framework -> a trainable Keras model (.keras and/or preset folder)."""
    from kdpose_tf.models.summary import count_flops

    if not args.output and not args.preset_dir:
        raise CLIError("give --output MODEL.keras and/or --preset-dir DIR")
    model = import_model(args.model, keypoint_set=args.keypoint_set, input_size=args.input_size)
    h, w = model.input_size
    print(f"imported {args.model}: {h}x{w} input, {model.keypoint_set.name} ({model.num_keypoints} joints), "
          f"{model.count_params() / 1e6:.2f} M params, {count_flops(model) / 1e9:.3f} GMACs, "
          f"{len(model.backbone.nodes)} graph nodes")
    for path in save_model(model, args.output, args.preset_dir,
                           metadata={"imported_from": str(args.model), "keypoint_set": model.keypoint_set.name}):
        print(f"wrote {path}")
    return 0


def run_check_edgetpu(args):
    if not Path(args.model).is_file():
        raise CLIError(f"{args.model} does not exist")
    if not str(args.model).endswith(".tflite"):
        raise CLIError(f"{args.model}: expected a .tflite file (export one with `kdpose export --quantize int8`)")
    return _print_edgetpu(args.model)


def run_check_xnnpack(args):
    """`kdpose check-xnnpack MODEL`: ops XNNPACK (Android's default CPU path) would refuse; 0 when none."""
    from kdpose_tf.runtimes.xnnpack import check_xnnpack_compat

    if not Path(args.model).is_file():
        raise CLIError(f"{args.model} does not exist")
    if not str(args.model).endswith(".tflite"):
        raise CLIError(f"{args.model}: expected a .tflite file")
    report = check_xnnpack_compat(args.model)
    for line in report["messages"] + report["warnings"]:
        print(f"  {line}")
    if report["warnings"]:
        print(f"{args.model}: {len(report['warnings'])} op(s) run on the builtin kernels instead of XNNPACK "
              "(slower, not fatal); `kdpose export` brings such scales into range where it may "
              "(a tensor read by other ops too is left as it is)")
    if report["ok"]:
        print(f"{args.model}: XNNPACK OK: no quantized op over the requantization limit (scale ratio < 256)")
        return 0
    print(f"{args.model}: XNNPACK would refuse {len(report['over_limit'])} op(s) (LiteRT 2.2/2.3 abort on it); "
          "re-export with `kdpose export` (it fixes the scales) or run it with XNNPACK off")
    return 1


def _print_edgetpu(path):
    """Print the Edge TPU op table and verdict of `path`; 0 when every op maps, else 1."""
    from kdpose_tf.export.edgetpu import check_edgetpu

    report = check_edgetpu(path)
    print(f"{path}: Edge TPU compiler {report.compiler} check (offline, rules in kdpose_tf/export/edgetpu.py)")
    print(report.table())
    for problem in report.tensor_problems[:5]:
        print(f"  tensor problem: {problem}")
    if len(report.tensor_problems) > 5:
        print(f"  ... and {len(report.tensor_problems) - 5} more tensor problems")
    print(report.verdict())
    return 0 if report.ok else 1
