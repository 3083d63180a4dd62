"""Export a pose model to LiteRT (TFLite): float32, float16, dynamic-range, int8 and int8-QAT.

Every variant is a batch-1, fixed-size flatbuffer with builtin ops only (no Flex / Select TF
ops). The model contract (ARCHITECTURE.md): float32 RGB (1, H, W, 3) in [0, 255] -> heatmaps
(1, h, w, K), normalisation inside the graph, so integer models take raw pixels.

Conversion goes through Keras' own `model.export(path, format="litert", **converter_options)`:
Keras 3.15 forwards every keyword that is an attribute of `tf.lite.TFLiteConverter`
(`optimizations`, `representative_dataset`, `inference_input_type`, `inference_output_type`,
`target_spec={"supported_ops": ..., "supported_types": ...}`), so it covers all five variants,
int8 with a representative set and integer I/O included. Two things it does not do, handled here:
its default op set includes SELECT_TF_OPS (we always override `supported_ops` with builtins
only), and it writes the file non-atomically (we give it a temporary path and move it into place).
If `model.export` fails (e.g. a model that ExportArchive cannot trace), the fallback is
`model.export(dir, format="tf_saved_model")` + `tf.lite.TFLiteConverter.from_saved_model`.

Quantisation modes:
    "none"      float32 weights and activations.
    "float16"   float16 weights (dequantised to float32 at load on CPU), float32 I/O.
    "dynamic"   int8 weights, float activations quantised on the fly; float32 I/O.
    "int8"      full-integer post-training quantisation calibrated on `representative_data`
                (required: real training crops); int8/uint8 input and output.
    "int8-qat"  full-integer model from a `kdpose_tf.export.qat.quantize_model` model: the
                converter takes activation ranges from its FakeQuant ops and quantises the
                (already on-grid) weights per channel; a representative set is optional and only
                used for tensors without a FakeQuant range.

Float islands (`float_ops`, "int8" for CPU targets only): the named ops stay float32 between a
DEQUANTIZE and a QUANTIZE while the rest of the graph is int8. "SOFTMAX" and "RSQRT" (PSA's softmaxes
and LayerNorm's ``rsqrt(var + eps)``; RSQRT brings the ADD of ``eps`` that feeds it along) are the ones
allowed: in int8 XNNPACK takes neither (nor the eps ADD, whose scale ratio is outside its ADD range),
so each splits the delegated graph; in float it takes all three. Measured on the proposal student
(benchmarks/results/float_islands.md). The Edge TPU runs integer ops only: `target="edgetpu"` refuses them.

I/O dtype of the integer variants: default "uint8", because camera frames and the Android
`Bitmap`/`ByteBuffer` path are uint8 RGB and the Edge TPU accepts uint8; calibrated on real crops
the uint8 input comes out at scale ~1, zero point 0, i.e. raw pixels. "int8" is available (input
scale ~1, zero point -128); "float32" keeps float I/O around an integer body (CPU only).

Example:
>>> path = export_tflite(model, "out/student_int8.tflite", quantize="int8",
...                      representative_data=crops, keypoint_set=COCO17)   # doctest: +SKIP
>>> export_info(path)["ops"][:2]                                          # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np

from kdpose_tf.export.bn_folding import find_kernel_sums, fold_kernel_sum_batchnorm
from kdpose_tf.export.equalization import equalize_activations
from kdpose_tf.export.sidecar import make_sidecar
from kdpose_tf.export.targets import IO_DTYPES, QUANTIZE_MODES, TARGETS, get_target
from kdpose_tf.export.xnnpack_compat import fix_requantization_scales
from kdpose_tf.runtimes.flatbuffer import model_io, model_ops, model_tensors
from kdpose_tf.utils.io import atomic_path, write_json
from kdpose_tf.utils.native_logs import drops_native_info

# ops `float_ops` may keep in float32 in an "int8" export; RSQRT's input ADD (the eps add) goes with it
FLOAT_OPS = ("SOFTMAX", "RSQRT")


def check_float_ops(float_ops, quantize="int8", target="cpu") -> tuple:
    """`float_ops` as a tuple of op names, or a ValueError (one line) saying why it cannot be used."""
    if isinstance(float_ops, str) or not isinstance(float_ops, (tuple, list)):
        raise ValueError(f"float_ops must be a tuple of op names from {FLOAT_OPS}, got {float_ops!r}")
    ops = tuple(float_ops)
    unknown = [op for op in ops if op not in FLOAT_OPS]
    if unknown or len(set(ops)) != len(ops):
        raise ValueError(f"float_ops must be distinct op names from {FLOAT_OPS}, got {float_ops!r}")
    spec = TARGETS.get(target) if isinstance(target, str) else None  # an unknown target: export_tflite says so
    if ops and spec is not None and not spec.float_islands:
        raise ValueError(f"float_ops {list(ops)} keeps float32 ops in the model, and {spec.integer_only}: export "
                         f"target={target!r} without float_ops (float islands are for CPU / XNNPACK)")
    if ops and quantize != "int8":
        raise ValueError(f"float_ops needs quantize='int8' (float islands in a post-training int8 model), "
                         f"got quantize={quantize!r}")
    return ops


def single_output_model(model):
    """The single-output, functional export model of a pose model.

    `PoseEstimator` (anything with `inference_model()`) gives its own; a functional model returning
    a list (one heatmap per stack) is wrapped to return the final one only.
    """
    import keras

    if hasattr(model, "inference_model"):
        model = model.inference_model()
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        outputs = model.outputs
        inputs = model.inputs
    except (AttributeError, ValueError):
        outputs = inputs = None
    if not outputs:
        raise ValueError(
            f"model {model.name!r} is not functional (no symbolic outputs); export needs a functional "
            "model or one with inference_model()"
        )
    if len(inputs) != 1:
        raise ValueError(f"model {model.name!r}: expected 1 image input, got {len(inputs)}")
    if len(outputs) > 1 or any(isinstance(t, (list, tuple, dict)) for t in (model.output, model.input)):
        # the image tensor, not a list of one: callers pass one array (Keras warns on a list/tensor mismatch)
        model = keras.Model(inputs[0], outputs[-1], name=f"{model.name}_final")
    return model


def _input_hw(model, input_size):
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"model input must be (B, H, W, 3) images, got {shape}")
    h, w = shape[1], shape[2]
    if input_size is not None:
        ih, iw = int(input_size[0]), int(input_size[1])
        if (h is not None and h != ih) or (w is not None and w != iw):
            raise ValueError(f"input_size {input_size} disagrees with the model input {shape}")
        h, w = ih, iw
    if h is None or w is None:
        raise ValueError(f"model input {shape} has no fixed (H, W): pass input_size=(H, W)")
    return int(h), int(w)


def _calibration_samples(representative_data, hw, num_calibration):
    """Materialise up to `num_calibration` float32 (1, H, W, 3) arrays."""
    if isinstance(representative_data, np.ndarray):
        if representative_data.ndim == 3:
            representative_data = representative_data[None]
        items = (representative_data[i : i + 1] for i in range(len(representative_data)))
    else:
        items = iter(representative_data)
    samples = []
    for x in itertools.islice(items, num_calibration):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.shape != (1, hw[0], hw[1], 3):
            raise ValueError(
                f"representative_data items must be float32 (1, {hw[0]}, {hw[1]}, 3) images in [0, 255], "
                f"got shape {x.shape}"
            )
        samples.append(x)
    if not samples:
        raise ValueError("representative_data is empty: give real training crops for calibration")
    return samples


def _converter_options(quantize, io_dtype, samples):
    import tensorflow as tf

    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    opts = {"target_spec": {"supported_ops": [builtins]}}
    if quantize == "float16":
        opts["optimizations"] = [tf.lite.Optimize.DEFAULT]
        opts["target_spec"]["supported_types"] = [tf.float16]
    elif quantize == "dynamic":
        opts["optimizations"] = [tf.lite.Optimize.DEFAULT]
    elif quantize in ("int8", "int8-qat"):
        opts["optimizations"] = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            opts["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # int8-qat keeps TFLITE_BUILTINS: with TFLITE_BUILTINS_INT8 the converter insists on a
        # representative dataset before it has looked for FakeQuant ops; full-integer output is
        # verified after conversion instead (`_check_full_integer`).
        if samples is not None:
            opts["representative_dataset"] = lambda: ([s] for s in samples)
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
        opts["inference_input_type"] = io
        opts["inference_output_type"] = io
    return opts


@drops_native_info  # the `kdpose` command keeps the converter's native INFO lines off stderr
def convert_to_tflite(model, quantize="none", representative_data=None, num_calibration=300, io_dtype="uint8",
                      input_size=None, float_ops=()) -> bytes:
    """Convert to flatbuffer bytes (see `export_tflite` for the arguments); writes nothing."""
    import tensorflow as tf

    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}")
    if not isinstance(num_calibration, int) or num_calibration < 1:
        raise ValueError(f"num_calibration must be a positive int, got {num_calibration!r}")
    float_ops = check_float_ops(float_ops, quantize)
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: an array (N, H, W, 3) or an iterable of "
            "float32 (1, H, W, 3) real training crops in [0, 255] to calibrate activation ranges"
        )
    model = single_output_model(model)
    hw = _input_hw(model, input_size)
    samples = None
    if representative_data is not None and quantize in ("int8", "int8-qat"):
        samples = _calibration_samples(representative_data, hw, num_calibration)
    opts = _converter_options(quantize, io_dtype, samples)
    if float_ops:  # calibrate only: the int8 step runs below, with the float ops left out of it
        opts["_experimental_calibrate_only"] = True
    signature = [tf.TensorSpec((1, hw[0], hw[1], 3), tf.float32, name="images")]
    if quantize == "int8-qat":
        # model.export(format="litert") converts from a SavedModel; on that path TF 2.21's converter
        # does not scan for FakeQuant ops (it has no GraphDef), so it neither detects the QAT graph
        # nor uses its ranges. A frozen concrete function lets it take every activation range from
        # the FakeQuant ops (the representative set, if any, only fills tensors without one).
        data = _convert_concrete(model, signature, opts)
        _check_full_integer(data, io_dtype)
        return data
    data = _convert_saved(model, signature, opts, quantize)
    if float_ops:
        data = _quantize_with_float_ops(data, io_dtype, float_ops)
        _check_full_integer(data, io_dtype, float_ops)
    return data


def _convert_saved(model, signature, opts, quantize):
    """Convert through `model.export(format="litert")`, falling back to SavedModel + TFLiteConverter."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.tflite"
        try:
            model.export(str(target), format="litert", input_signature=signature, verbose=False, **opts)
            return target.read_bytes()
        except Exception as litert_error:  # fallback: SavedModel + TFLiteConverter
            saved = Path(tmp) / "saved_model"
            try:
                model.export(str(saved), format="tf_saved_model", input_signature=signature, verbose=False)
                converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
                return _configure(converter, opts).convert()
            except Exception as fallback_error:
                raise RuntimeError(
                    f"TFLite conversion of {model.name!r} (quantize={quantize!r}) failed with model.export "
                    f"({litert_error}) and with the SavedModel fallback ({fallback_error})"
                ) from fallback_error


def _configure(converter, opts):
    for key, value in opts.items():
        if key == "target_spec":
            for k, v in value.items():
                setattr(converter.target_spec, k, v)
        else:
            setattr(converter, key, value)
    return converter


def _quantize_with_float_ops(calibrated, io_dtype, float_ops):
    """The int8 model of a calibrated float flatbuffer with `float_ops` (and RSQRT's input ADD) left in float32.

    This is the converter's own post-calibration step (`mlir_quantize`, as `TFLiteConverter` and
    `tf.lite.experimental.QuantizationDebugger.get_nondebug_quantized_model` call it), given the op types and
    the ADD nodes (by output tensor name) to leave out of quantization; I/O types as the plain int8 export.
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    nodes = []
    if "RSQRT" in float_ops:  # LayerNorm's var + eps: in int8 its scale ratio is outside XNNPACK's ADD range
        ops, tensors = model_ops(calibrated), model_tensors(calibrated)
        rsqrt_inputs = {t for op in ops if op["name"] == "RSQRT" for t in op["inputs"]}
        nodes = [tensors[op["outputs"][0]]["name"] for op in ops
                 if op["name"] == "ADD" and op["outputs"][0] in rsqrt_inputs]
    io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
    return mlir_quantize(calibrated, disable_per_channel=False, input_data_type=io, output_data_type=io,
                         denylisted_ops=list(float_ops), denylisted_nodes=nodes)


def _check_full_integer(data, io_dtype, float_ops=()):
    """Every tensor is integer but float I/O (io_dtype "float32") and, with `float_ops`, the islands: those ops,
    RSQRT's input ADD, the DEQUANTIZEs into them and the QUANTIZEs out of them."""
    ops, tensors, io = model_ops(data), model_tensors(data), model_io(data)
    io = set(io["inputs"] + io["outputs"])
    float_io = io if io_dtype == "float32" else set()
    consumers = {}
    for op in ops:
        for t in op["inputs"]:
            consumers.setdefault(t, []).append(op["name"])
    island = set(float_ops)

    def allowed(op):
        if op["name"] in island:
            return True
        if op["name"] == "ADD" and "RSQRT" in island:
            return all(c == "RSQRT" for c in consumers.get(op["outputs"][0], ["none"]))
        if op["name"] == "DEQUANTIZE":
            return op["outputs"][0] in float_io or all(c in island or c == "ADD" for c in consumers.get(op["outputs"][0], []))
        return op["name"] == "QUANTIZE"

    if float_ops:
        wrong = [op["name"] for op in ops if op["name"] in island
                 and not all(tensors[t]["dtype"] == "FLOAT32" for t in op["outputs"])]
        if wrong:
            raise ValueError(f"float_ops {list(float_ops)}: the converter quantized {len(wrong)} of those ops anyway "
                             f"({sorted(set(wrong))}); this TensorFlow's quantizer ignores the list")
        bad = [f"{op['name']} -> {tensors[op['outputs'][0]]['name']}" for op in ops if not allowed(op) and any(
            tensors[t]["dtype"] == "FLOAT32" and not tensors[t]["constant"] and t not in float_io
            for t in op["inputs"] + op["outputs"] if t >= 0)]
        if bad:
            raise ValueError(f"float_ops {list(float_ops)}: other ops were left in float32 too: {bad[:5]}")
        return
    floats = [t["name"] for t in tensors if t["dtype"] == "FLOAT32" and t["index"] not in float_io]
    if floats:
        raise ValueError(
            f"int8-qat conversion left float32 tensors {floats[:5]}: the model has tensors without a FakeQuant "
            "range; build it with kdpose_tf.export.qat.quantize_model or pass representative_data"
        )


def _convert_concrete(model, signature, opts):
    import tensorflow as tf

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda images: model(images, training=False), input_signature=signature)
    # Freeze first: with live resource variables the FakeQuant ranges stay `read_variable`s and
    # the converter cannot turn them into int8 scales.
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    try:
        return _configure(converter, opts).convert()
    except Exception as e:  # ConverterError: the MLIR message is long; say what it means first
        if "same scale constraint" not in str(e):
            raise
        raise ValueError(
            f"int8-qat export of {model.name!r}: the converter needs one int8 scale on both sides of a "
            "reshape / split / concatenation, and the QAT model's FakeQuant ranges differ there (channel "
            "split -> shuffle -> concat chains, as in imported ShuffleNet-style graphs such as PP-TinyPose, do "
            "this). Export this model with quantize='int8' (post-training, calibrated) instead. Converter: "
            + str(e).strip().splitlines()[0][:400]
        ) from e


def export_tflite(model, path, quantize="none", representative_data=None, num_calibration=300, io_dtype="uint8",
                  target="cpu", sidecar=True, keypoint_set=None, input_size=None, stride=4, equalize=True,
                  float_ops=()):
    """Export `model` to a LiteRT flatbuffer at `path` (atomically) and return the Path.

    Args:
        model: keras.Model (functional, or with `inference_model()`), float32 (1,H,W,3) in [0,255]
            -> heatmaps (1,h,w,K) (a list of heatmaps: the last is exported).
        path: output .tflite path.
        quantize: "none" | "float16" | "dynamic" | "int8" | "int8-qat" (default "none"). The integer
            variants go through `xnnpack_compat.fix_requantization_scales`, so XNNPACK (LiteRT's
            default CPU path) accepts every op; the sidecar lists what it changed
            (`xnnpack_compat.fixes`).
        representative_data: real training crops, array (N,H,W,3) or iterable of (1,H,W,3) float32
            in [0,255]; required for "int8", optional for "int8-qat".
        num_calibration: at most this many calibration images are used (default 300).
        io_dtype: input/output type of the int8 variants, "uint8" (default), "int8" or "float32";
            ignored by the float variants (float32 I/O).
        target: a `kdpose_tf.export.targets.TARGETS` name: "cpu" (default; the converted file gets the
            static XNNPACK check, a warning when XNNPACK would refuse an op) or "edgetpu": needs an
            integer variant with int8/uint8 I/O, rejects transposed convolutions before converting
            (switch the head to upsample="resize_conv"), and checks the converted ops against the Edge
            TPU compiler 16.0 table before writing.
        sidecar: True (default), a dict of extra fields, or False: writes `<path stem>.json` next to the model
            (see `kdpose_tf.export.sidecar`), with `keypoint_set` names, skeleton and flip pairs.
        keypoint_set: `KeypointSet` of the heatmap channels (for the sidecar).
        input_size: (H, W) when the model input has no fixed size.
        stride: input pixels per heatmap pixel, for the sidecar's decoding recipe (default 4).
        equalize: "int8" only: rescale channels between convolutions before calibration so every channel
            of an activation tensor uses the int8 range (`kdpose_tf.export.equalization`; the float model
            is unchanged, the caller's weights are restored afterwards). True (default): channels read
            only by depthwise convs, followed through ReLU / padding / upsampling / channel split,
            shuffle and concat (exact, cheap; large gains on unbalanced layers, small on trained nets:
            distilled PP-TinyPose student int8 heatmap error -6 %, our BatchNorm students unchanged);
            "all": channels read by any conv; False: off. The sidecar records it
            (`activation_equalization`). After that, every variant but "int8-qat" folds the
            BatchNormalization after a dynamic-kernel sum (Dite-HRNet) into its kernels and converts
            a clone in which each such BN is an exact bias add (`kdpose_tf.export.bn_folding`;
            sidecar `folded_batchnorms`: how many left the graph); the weights are restored after
            conversion.
        float_ops: "int8" only, CPU targets only: op types kept in float32, a subset of `FLOAT_OPS`
            ("SOFTMAX", "RSQRT"; RSQRT's input ADD goes with it), e.g. ("SOFTMAX", "RSQRT") for models
            with PSA / LayerNorm, so XNNPACK takes every op (module docstring). Default (): full integer.
            The sidecar records them (`float_ops`: the requested ops and the float ops in the file).

    Returns:
        Path of the written model. `export_info(path)` gives ops, versions and tensor types.
    """
    spec = get_target(target)
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}")
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"path must end with .tflite, got {path}")
    spec.check_variant(quantize, io_dtype)
    if equalize not in (True, False, "all"):
        raise ValueError(f"equalize must be True, False or 'all', got {equalize!r}")
    float_ops = check_float_ops(float_ops, quantize, target)
    flat = single_output_model(model)  # shares the layers (and weights) of `model`
    spec.check_model(flat)  # layers the target cannot run, before anything is converted
    sums = find_kernel_sums(flat) if quantize != "int8-qat" else []  # QAT weights sit on their grid already
    equalizing = equalize and quantize == "int8" and representative_data is not None
    saved = model.get_weights() if sums or equalizing else None  # the caller's weights, restored below
    equalized = folded = None
    try:
        if equalizing:  # before the fold: a folded BN's equalization scale then lands in its kernels too
            crops = np.concatenate(_calibration_samples(representative_data, _input_hw(flat, input_size), num_calibration))
            pairs = equalize_activations(flat, crops[:64], dense=equalize == "all")
            equalized = {"pairs": len(pairs), "dense": equalize == "all", "max_scale": max((p["max_scale"] for p in pairs), default=1.0)}
            representative_data = crops
        if sums:  # the export graph: each folded BN is a BiasAdd there, the other layers are flat's own
            flat, report = fold_kernel_sum_batchnorm(flat, sums)
            folded = len(report)
        data = convert_to_tflite(flat, quantize, representative_data, num_calibration, io_dtype, input_size,
                                 float_ops)
    finally:
        if saved is not None:
            model.set_weights(saved)
    fixes = None
    if quantize in ("int8", "int8-qat"):
        # XNNPACK refuses ops whose requantisation scale a dead-on-calibration ReLU pushed past 256
        # (LiteRT 2.2/2.3 abort the process): raise those output scales, see xnnpack_compat.
        data, fixes = fix_requantization_scales(data)
    spec.check_file(data)  # the target's checker: raises (Edge TPU) or warns (CPU) when the file fails it
    # The pair is committed sidecar first, then the model: a kill between the two renames leaves the
    # old model beside a sidecar whose model_sha256 names the new bytes (`read_sidecar` refuses the
    # pair), never a new model beside an old sidecar that cannot know it is stale. The sidecar is built
    # from `data` in memory (the runtime check runs the temporary file), never from the final file
    # another export may be replacing.
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
        if sidecar is not False and sidecar is not None:
            extra = dict(sidecar) if isinstance(sidecar, dict) else {}
            if equalized is not None:
                extra.setdefault("activation_equalization", equalized)
            if folded:
                extra.setdefault("folded_batchnorms", folded)
            info = make_sidecar(tmp, keypoint_set=keypoint_set, stride=stride, quantize=quantize, target=target,
                                extra=extra, xnnpack_fixes=fixes, data=data, model_file=path.name,
                                float_ops=float_ops if quantize in ("int8", "int8-qat") else None)
            write_json(sidecar_path(path), info)
    return path


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_suffix(".json")


def export_info(path) -> dict:
    """Conversion info of an exported model: ops (name, version), I/O tensors, size in bytes."""
    tensors = model_tensors(path)
    io = model_io(path)
    ops = model_ops(path)
    return {
        "path": str(path),
        "size_bytes": Path(path).stat().st_size,
        "ops": [(o["name"], o["version"]) for o in ops],
        "op_counts": {n: sum(1 for o in ops if o["name"] == n) for n in sorted({o["name"] for o in ops})},
        "flex_ops": [o["name"] for o in ops if not o["builtin"]],
        "inputs": [tensors[i] for i in io["inputs"]],
        "outputs": [tensors[i] for i in io["outputs"]],
    }
