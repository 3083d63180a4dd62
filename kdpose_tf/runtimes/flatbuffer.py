"""Read a LiteRT (TFLite) flatbuffer itself: its operators with versions, tensors with quantisation, I/O.

The interpreter does not report operator *versions* (the Edge TPU check needs them) nor the
quantisation of every tensor (the XNNPACK checks do), so these read the file with the schema module
shipped with `ai_edge_litert`. `read_tflite` is how every .tflite is read from disk: LiteRT's verifier
first, so a truncated or foreign file is one `ModelFileError` line.

Example:
>>> [op["name"] for op in model_ops("student_int8.tflite")][:3]    # doctest: +SKIP
['QUANTIZE', 'CONV_2D', 'DEPTHWISE_CONV_2D']
"""

from __future__ import annotations

from pathlib import Path

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


def num_subgraphs(source) -> int:
    """How many subgraphs a .tflite (path or bytes) holds."""
    model, _ = _read_model(source)
    return model.SubgraphsLength()
