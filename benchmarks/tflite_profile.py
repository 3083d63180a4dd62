"""Per-op profile of a TFLite model under LiteRT: which ops XNNPACK takes, and where the time goes.

ai_edge_litert 2.3's Python `Interpreter` exposes no op profiler (no `benchmark_model` binary ships
with the wheel either), so this module measures the profile itself, in two ways that work with the
wheel as installed:

* Delegation, from the interpreter's node list. After `allocate_tensors()` with the default resolver,
  XNNPACK has replaced each partition it takes by one ``DELEGATE`` node appended to the node list.
  A partition's members are found by walking back from the ``DELEGATE`` node's outputs through the
  original producers, stopping at the node's inputs: every original op reached is delegated; the
  rest run on builtin kernels.
* Time, from single-op models. Each op of the model is cut out into a model of its own (the op, its
  tensors and constant buffers, through `ai_edge_litert.tools.flatbuffer_utils`), timed with the same
  resolver as the full model (XNNPACK takes the op when it can), and the per-invoke Python overhead,
  measured on a 1-element ADD model, is subtracted. The sum over ops is compared with the full
  model's time (`sum_vs_full`): in isolation an op loses XNNPACK's fusion and gains cache warmth, so
  the shares are estimates, the delegated / not-delegated split by time is the figure of interest.

Example:
    >>> rows = profile_ops("model.tflite", threads=1)            # doctest: +SKIP
    >>> summarize(rows)["xnnpack_time_share"]                     # doctest: +SKIP
"""

from __future__ import annotations

import collections
import copy
import time

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from ai_edge_litert.tools import flatbuffer_utils

RESOLVERS = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def make_interpreter(model, threads=1, kernels="xnnpack"):
    """`Interpreter` on a path or bytes with the XNNPACK (default) or builtin-only resolver, allocated."""
    if kernels not in RESOLVERS:
        raise ValueError(f"kernels must be one of {sorted(RESOLVERS)}, received {kernels!r}")
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    it = Interpreter(**source, num_threads=threads, experimental_op_resolver_type=RESOLVERS[kernels])
    it.allocate_tensors()
    return it


def fill_inputs(it, seed=0):
    """Set every input to fixed random data of its dtype."""
    rng = np.random.default_rng(seed)
    for d in it.get_input_details():
        shape, dtype = d["shape"], d["dtype"]
        if dtype in (np.int32, np.int64):  # indices / shapes: zeros are valid everywhere
            x = np.zeros(shape, dtype)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        else:
            x = rng.uniform(0, 1, size=shape).astype(dtype)
        it.set_tensor(d["index"], x)


def delegation(model, threads=1):
    """[(op index, op name, delegated?)] of the original ops, read from the XNNPACK interpreter."""
    it = make_interpreter(model, threads, "xnnpack")
    ops = it._get_ops_details()
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {t: o["index"] for o in original for t in o["outputs"]}
    inputs_of = {o["index"]: [t for t in o["inputs"] if t >= 0] for o in original}
    delegated = set()
    for d in (o for o in ops if o["op_name"] == "DELEGATE"):
        stop = set(int(t) for t in d["inputs"])
        stack = [int(t) for t in d["outputs"]]
        seen = set()
        while stack:
            t = stack.pop()
            if t in stop or t in seen or t not in producer:
                continue
            seen.add(t)
            n = producer[t]
            if n not in delegated:
                delegated.add(n)
                stack.extend(inputs_of[n])
    return [(o["index"], o["op_name"], o["index"] in delegated) for o in original]


def _op_model(model, subgraph, op):
    """Bytes of a model holding only `op` (its tensors, constant buffers and operator code)."""
    tensors, buffers, remap = [], [schema.BufferT()], {}
    sub_inputs = []
    for t in [t for t in list(op.inputs) + list(op.outputs) if t >= 0]:
        if t in remap:
            continue
        tensor = copy.copy(subgraph.tensors[t])
        buf = model.buffers[tensor.buffer] if tensor.buffer else None
        if buf is not None and buf.data is not None and len(buf.data):
            buffers.append(buf)
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
            if t in op.inputs:
                sub_inputs.append(len(tensors))
        remap[t] = len(tensors)
        tensors.append(tensor)
    new_op = copy.copy(op)
    new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
    new_op.outputs = [remap[t] for t in op.outputs]
    new_op.intermediates = []
    sg = schema.SubGraphT()
    sg.tensors, sg.operators = tensors, [new_op]
    sg.inputs, sg.outputs = sub_inputs, [remap[t] for t in op.outputs]
    m = schema.ModelT()
    m.version, m.description = model.version, b"op"
    m.operatorCodes, m.subgraphs, m.buffers = model.operatorCodes, [sg], buffers
    m.metadata, m.signatureDefs, m.metadataBuffer = [], [], []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def time_invoke(it, runs=30, warmup=3):
    """Median seconds of one `invoke()` (inputs set once)."""
    fill_inputs(it)
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved_ms(models, threads=1, rounds=5, runs=30, make=None):
    """{name: ms per invoke()}: the models take turns within each round and each keeps its lowest round
    median, so load drift on a shared machine hits every model alike.

    Args:
        models: {name: .tflite path or flatbuffer bytes}.
        threads: interpreter threads (default 1). rounds: default 5. runs: timed invokes per round (30).
        make: (model, threads) -> allocated interpreter (default `make_interpreter`, XNNPACK resolver).
    """
    make = make or make_interpreter
    interpreters = {name: make(model, threads) for name, model in models.items()}
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, it in interpreters.items():
            best[name] = min(best[name], 1e3 * time_invoke(it, runs=runs))
    return best


def _overhead(threads, kernels, runs):
    """Median invoke() time of a 1-element int8 ADD model: the Python + interpreter fixed cost."""
    add = schema.OperatorCodeT()
    add.builtinCode = add.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [0.1], [0]
    tensors = []
    for i in range(3):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name, t.quantization = [1], schema.TensorType.INT8, 0, f"t{i}".encode(), q
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    sg = schema.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = tensors, [op], [0, 1], [2]
    m = schema.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [add], [sg], [schema.BufferT()]
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(m))
    return time_invoke(make_interpreter(data, threads, kernels), runs)


def profile_ops(path, threads=1, kernels="xnnpack", runs=30):
    """Per-op rows {index, op, delegated, ms} of the model at `path` (see the module docstring)."""
    model = flatbuffer_utils.read_model(str(path))
    subgraph = model.subgraphs[0]
    names = {i: flatbuffer_utils.opcode_to_name(model, i) for i in range(len(model.operatorCodes))}
    status = {i: d for i, _, d in delegation(path, threads)} if kernels == "xnnpack" else {}
    overhead = _overhead(threads, kernels, runs)
    rows = []
    for i, op in enumerate(subgraph.operators):
        try:
            it = make_interpreter(_op_model(model, subgraph, op), threads, kernels)
            ms = max(0.0, time_invoke(it, runs) - overhead) * 1e3
        except (RuntimeError, ValueError):  # an op that cannot run on arbitrary data in isolation
            ms = 0.0
        rows.append({"index": i, "op": names[op.opcodeIndex], "delegated": bool(status.get(i, False)), "ms": ms})
    return rows


def summarize(rows, top=12):
    """Totals per op type and the delegated share by count and by (single-op) time."""
    by_type = collections.defaultdict(lambda: {"count": 0, "delegated": 0, "ms": 0.0, "ms_not_delegated": 0.0})
    for r in rows:
        b = by_type[r["op"]]
        b["count"] += 1
        b["delegated"] += r["delegated"]
        b["ms"] += r["ms"]
        if not r["delegated"]:
            b["ms_not_delegated"] += r["ms"]
    total = sum(r["ms"] for r in rows) or 1e-9
    inside = sum(r["ms"] for r in rows if r["delegated"])
    table = sorted(({"op": k, **{kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}}
                    for k, v in by_type.items()), key=lambda r: -r["ms"])
    return {
        "ops": len(rows),
        "delegated_ops": sum(r["delegated"] for r in rows),
        "sum_ms": round(total, 3),
        "xnnpack_time_share": round(inside / total, 4),
        "by_type": table[:top] if top else table,
    }
