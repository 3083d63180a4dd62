"""Run and inspect LiteRT (TFLite) flatbuffers with the `ai_edge_litert` interpreter.

`TFLiteRunner` is the predict function the evaluator and the benchmarks use for exported
models: it takes float32 RGB images in [0, 255] of shape (B, H, W, 3), quantises them with the
input tensor's (scale, zero_point) where the model has int8/uint8 input, runs the interpreter
once per image (exported models have batch 1) and dequantises the heatmaps.

`model_ops` / `model_tensors` read the flatbuffer itself (the schema module shipped with
`ai_edge_litert`), because the interpreter does not report operator *versions*, and the Edge TPU
check needs them.

Example:
>>> runner = TFLiteRunner("student_int8.tflite", num_threads=2)   # doctest: +SKIP
>>> heatmaps = runner(images)                                     # doctest: +SKIP
>>> [op["name"] for op in runner.ops()][:3]                        # doctest: +SKIP
['QUANTIZE', 'CONV_2D', 'DEPTHWISE_CONV_2D']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpose_tf.errors import ModelFileError

_TENSOR_TYPES = None
_BUILTIN_NAMES = None


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _names(enum_cls):
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_tflite(source) -> bytes:
    """The bytes of a .tflite given as a path or as bytes; a file is checked with LiteRT's flatbuffer verifier.

    The schema readers below follow offsets without bounds checks, so a truncated or foreign file
    would fail deep inside them (`struct.error`); a file that does not verify is a `ModelFileError`
    naming it instead (about 2 ms for a 3 MB model). Bytes (the converter's own output) are trusted.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    from ai_edge_litert.interpreter import Interpreter

    path = Path(source)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"TFLite model {path} does not exist") from None
    except OSError as e:
        raise ModelFileError(f"TFLite model {path}: cannot read it ({e.strerror})") from None
    try:
        Interpreter(model_content=buf)
    except (ValueError, RuntimeError):
        raise ModelFileError(f"{path}: not a valid TFLite model ({len(buf)} bytes that do not verify as a "
                             "TFLite flatbuffer: truncated, or another kind of file)") from None
    return buf


def _read_model(source):
    """Parse a flatbuffer given as a path (checked, `read_tflite`) or as bytes."""
    schema = _schema()
    buf = read_tflite(source)
    return schema.Model.GetRootAs(buf, 0), buf


def model_ops(source, subgraph: int = 0) -> list:
    """Operators of one subgraph in execution order.

    Args:
        source: path of a .tflite file, or its bytes.
        subgraph: subgraph index (0 = main graph).

    Returns:
        list of dicts: {"index", "name" (e.g. "CONV_2D", or "CUSTOM:<code>" / "FLEX:<op>"),
        "version", "builtin" (bool), "inputs", "outputs" (tensor indices)}.
    """
    global _BUILTIN_NAMES
    schema = _schema()
    if _BUILTIN_NAMES is None:
        _BUILTIN_NAMES = _names(schema.BuiltinOperator)
    model, _ = _read_model(source)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = _BUILTIN_NAMES.get(code, f"UNKNOWN_{code}")
        builtin = name != "CUSTOM"
        if not builtin:
            custom = oc.CustomCode()
            custom = custom.decode() if isinstance(custom, bytes) else str(custom)
            name = ("FLEX:" + custom[4:]) if custom.startswith("Flex") else "CUSTOM:" + custom
        codes.append((name, int(oc.Version()), builtin))
    sg = model.Subgraphs(subgraph)
    ops = []
    for j in range(sg.OperatorsLength()):
        op = sg.Operators(j)
        name, version, builtin = codes[op.OpcodeIndex()]
        ops.append(
            {
                "index": j,
                "name": name,
                "version": version,
                "builtin": builtin,
                "inputs": [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else [],
                "outputs": [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else [],
            }
        )
    return ops


def model_tensors(source, subgraph: int = 0) -> list:
    """Tensors of one subgraph: {"index", "name", "dtype" ("INT8", "FLOAT32", ...), "shape",
    "shape_signature" (-1 marks a dynamic dimension), "constant" (has data in the file),
    "scale", "zero_point" (lists; empty when not quantised)}."""
    global _TENSOR_TYPES
    schema = _schema()
    if _TENSOR_TYPES is None:
        _TENSOR_TYPES = _names(schema.TensorType)
    model, _ = _read_model(source)
    sg = model.Subgraphs(subgraph)
    out = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        sig = [int(d) for d in t.ShapeSignatureAsNumpy()] if t.ShapeSignatureLength() else list(shape)
        q = t.Quantization()
        scale = [float(s) for s in q.ScaleAsNumpy()] if (q is not None and q.ScaleLength()) else []
        zp = [int(z) for z in q.ZeroPointAsNumpy()] if (q is not None and q.ZeroPointLength()) else []
        buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        constant = bool(buf is not None and (buf.DataLength() > 0 or buf.Size() > 0))
        name = t.Name()
        out.append(
            {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "dtype": _TENSOR_TYPES.get(int(t.Type()), str(t.Type())),
                "shape": shape,
                "shape_signature": sig,
                "constant": constant,
                "scale": scale,
                "zero_point": zp,
            }
        )
    return out


def model_io(source) -> dict:
    """Indices of the main subgraph's input and output tensors."""
    model, _ = _read_model(source)
    sg = model.Subgraphs(0)
    return {
        "inputs": [int(i) for i in sg.InputsAsNumpy()],
        "outputs": [int(i) for i in sg.OutputsAsNumpy()],
    }


def quantize(x, dtype, scale, zero_point):
    """float -> integer with round-half-away-from... (numpy rint) and saturation to the dtype."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class TFLiteRunner:
    """Callable wrapper of a single-input, single-output pose TFLite model.

    Args:
        path: the .tflite file.
        num_threads: interpreter CPU threads (default 1).
        xnnpack: "auto" (default), True or False: whether the XNNPACK delegate runs the model, see
            `kdpose_tf.export.delegates.make_interpreter` ("auto" checks in a child process that the
            delegate does not crash on this file and otherwise uses the builtin kernels).
            `self.delegate` says which ran: "xnnpack" or "builtin".

    Call with float32 images (B, H, W, 3) in [0, 255] (or one image (H, W, 3)); returns float32
    heatmaps (B, h, w, K). Integer inputs are quantised with the input tensor's parameters and
    integer outputs dequantised with the output tensor's parameters.

    Example:
    >>> runner = TFLiteRunner("model.tflite")          # doctest: +SKIP
    >>> runner(np.zeros((2, 64, 64, 3), np.float32)).shape   # doctest: +SKIP
    (2, 16, 16, 17)
    """

    def __init__(self, path, num_threads: int = 1, xnnpack="auto"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {path}")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        read_tflite(path)  # a truncated file is a clear error, not a crash in the delegate check
        from kdpose_tf.export.delegates import make_interpreter

        self.path = path
        self.num_threads = num_threads
        self.interpreter, self.delegate = make_interpreter(path, num_threads=num_threads, xnnpack=xnnpack)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected a model with 1 input, got {len(inputs)}")
        self._input = inputs[0]
        self._output = outputs[-1]

    @property
    def input_details(self) -> dict:
        return self._input

    @property
    def output_details(self) -> dict:
        return self._output

    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self._input["shape"])

    @property
    def input_size(self) -> tuple:
        """(height, width) of the model input."""
        return self.input_shape[1], self.input_shape[2]

    def invoke_raw(self, x):
        """Set the (already typed) input, invoke, return the raw output tensor (a copy)."""
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()

    def _prepare(self, image):
        dtype = self._input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zp = self._input["quantization"]
            if scale == 0:
                return np.asarray(image).astype(dtype)
            return quantize(image, dtype, scale, zp)
        return np.asarray(image, dtype=dtype)

    def _finish(self, out):
        if np.issubdtype(out.dtype, np.integer):
            scale, zp = self._output["quantization"]
            return dequantize(out, scale, zp)
        return out.astype(np.float32)

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        single = images.ndim == 3
        if single:
            images = images[None]
        expected = self.input_shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.path.name}: expected images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        outs = [self._finish(self.invoke_raw(self._prepare(images[i : i + 1])))[0] for i in range(len(images))]
        out = np.stack(outs, axis=0)
        return out[0] if single else out

    def ops(self) -> list:
        """Operators with versions, see `model_ops`."""
        return model_ops(self.path)

    def tensors(self) -> list:
        return model_tensors(self.path)
