"""`QuantSubgraph`: a writable view of one .tflite subgraph's quantisation parameters.

Used by `kdpose_tf.export.xnnpack_compat` to patch scales and int32 bias buffers of a converted
model in place (the flatbuffer keeps its size and every other byte): producers and consumers of
each tensor, groups of tensors that must share (scale, zero point) because a copy op ties them,
writable scale vectors and bias data.

Example:
>>> g = QuantSubgraph(bytearray(open("model.tflite", "rb").read()), 0, {"RESHAPE"})   # doctest: +SKIP
>>> g.group(12)                                                                           # doctest: +SKIP
[11, 12]
"""

from __future__ import annotations

import numpy as np

from kdpose_tf.runtimes.flatbuffer import model_ops, model_tensors
from kdpose_tf.runtimes.xnnpack import ACTIVATION_TYPES


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


class QuantSubgraph:
    """Writable views of one subgraph's scale vectors and buffers inside a bytearray model, with its
    ops, tensors, `consumers` / `producer` of each tensor and the graph's `inputs` / `outputs`.

    Args:
        buf: the model's bytes (a bytearray: scales and int32 buffers are patched in place).
        index: subgraph index.
        tie_ops: op names whose int8 kernels copy values: their non-constant activation inputs and
            outputs with identical (scale, zero point) form one group (`group`), changed together.
    """

    def __init__(self, buf: bytearray, index: int, tie_ops=frozenset()):
        from ai_edge_litert import schema_py_generated as schema

        self.buf = buf
        self.model = schema.Model.GetRootAs(buf, 0)
        self.sg = self.model.Subgraphs(index)
        self.ops = model_ops(bytes(buf), index)
        self.tensors = model_tensors(bytes(buf), index)
        self.consumers = {}
        for op in self.ops:
            for t in op["inputs"]:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)
        self.producer = {t: op for op in self.ops for t in op["outputs"]}
        self.inputs = {int(t) for t in self.sg.InputsAsNumpy()} if self.sg.InputsLength() else set()
        self.outputs = {int(t) for t in self.sg.OutputsAsNumpy()} if self.sg.OutputsLength() else set()
        self.tie_ops = frozenset(tie_ops)
        self.groups = self._tied_groups()

    def _tied_groups(self):
        uf = _UnionFind()
        for op in self.ops:
            if op["name"] not in self.tie_ops or not op["outputs"]:
                continue
            out = self.tensors[op["outputs"][0]]
            for t in op["inputs"] + op["outputs"]:
                other = self.tensors[t] if t >= 0 else None
                if (other is not None and not other["constant"] and other["dtype"] in ACTIVATION_TYPES
                        and other["scale"] == out["scale"] and other["zero_point"] == out["zero_point"]):
                    uf.union(t, out["index"])
        groups = {}
        for t in uf.parent:
            groups.setdefault(uf.find(t), set()).add(t)
        return {t: members for members in groups.values() for t in members}

    def group(self, t):
        return sorted(self.groups.get(t, {t}))

    def scale_view(self, t):
        return self.sg.Tensors(t).Quantization().ScaleAsNumpy()

    def buffer_users(self, buffer_index):
        return [i for i in range(self.sg.TensorsLength()) if self.sg.Tensors(i).Buffer() == buffer_index]

    def int32_data(self, t):
        """Writable int32 view of a constant tensor's data (inside or after the flatbuffer)."""
        b = self.model.Buffers(self.sg.Tensors(t).Buffer())
        if b.DataLength():
            return b.DataAsNumpy().view(np.int32)
        return np.frombuffer(self.buf, np.int32, count=b.Size() // 4, offset=b.Offset())

    def set_scale(self, t, values):
        view = self.scale_view(t)
        view[:] = values
        self.tensors[t]["scale"] = [float(v) for v in view]
