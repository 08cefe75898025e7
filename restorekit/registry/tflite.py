"""A small, safe reader for TensorFlow Lite flatbuffers (MediaPipe's ``.tflite`` models).

Only what weight conversion needs is read: the tensors (shape, type, name, data, sparsity)
and the operators (their builtin code, inputs, outputs and the few options that matter for
convolutions and pooling). Nothing is executed, and no TensorFlow, MediaPipe or flatbuffers
package is needed: a flatbuffer is offsets into one byte string, read here with ``struct``.

Weights stored as float16 behind a ``DEQUANTIZE`` op, or sparse (CSR) behind a ``DENSIFY``
op (``face_detection_full_range_sparse.tflite``), are returned as dense float32 arrays under
the name of the operator's float32 *output*, which is what the graph's consumers see.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelIncompatibleError

TENSOR_TYPES: dict[int, Any] = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8}
"""TFLite ``TensorType`` -> numpy dtype (the types that carry weights)."""

BUILTIN_OPS: dict[int, str] = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE",
    6: "DEQUANTIZE",
    9: "FULLY_CONNECTED",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    28: "TANH",
    32: "CUSTOM",
    34: "PAD",
    39: "TRANSPOSE",
    40: "MEAN",
    41: "SUB",
    45: "STRIDED_SLICE",
    54: "PRELU",
    67: "TRANSPOSE_CONV",
    124: "DENSIFY",
}

ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
PADDINGS = {0: "same", 1: "valid"}


class _Table:
    """One flatbuffer table: field ``i`` is read through the vtable."""

    __slots__ = ("buf", "pos", "vsize", "vtable")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        (soffset,) = struct.unpack_from("<i", buf, pos)
        self.vtable = pos - soffset
        (self.vsize,) = struct.unpack_from("<H", buf, self.vtable)

    def _offset(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot >= self.vsize:
            return 0
        (off,) = struct.unpack_from("<H", self.buf, self.vtable + slot)
        return off

    def scalar(self, index: int, fmt: str, default: Any = 0) -> Any:
        off = self._offset(index)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _indirect(self, index: int) -> int | None:
        off = self._offset(index)
        if not off:
            return None
        where = self.pos + off
        return where + struct.unpack_from("<I", self.buf, where)[0]

    def table(self, index: int) -> _Table | None:
        where = self._indirect(index)
        return None if where is None else _Table(self.buf, where)

    def string(self, index: int) -> str:
        where = self._indirect(index)
        if where is None:
            return ""
        (length,) = struct.unpack_from("<I", self.buf, where)
        return self.buf[where + 4 : where + 4 + length].decode("utf-8", "replace")

    def vector_bytes(self, index: int, item_size: int) -> bytes:
        where = self._indirect(index)
        if where is None:
            return b""
        (length,) = struct.unpack_from("<I", self.buf, where)
        return self.buf[where + 4 : where + 4 + length * item_size]

    def ints(self, index: int, fmt: str = "i") -> list[int]:
        data = self.vector_bytes(index, struct.calcsize(fmt))
        return list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))

    def tables(self, index: int) -> list[_Table]:
        where = self._indirect(index)
        if where is None:
            return []
        (length,) = struct.unpack_from("<I", self.buf, where)
        out = []
        for i in range(length):
            item = where + 4 + 4 * i
            out.append(_Table(self.buf, item + struct.unpack_from("<I", self.buf, item)[0]))
        return out


@dataclass
class TFLiteTensor:
    """One tensor of the graph; ``data`` is set for constants (weights)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    data: np.ndarray | None = None


@dataclass
class TFLiteOp:
    """One operator: ``kind`` (``CONV_2D``...), tensor indices, and decoded options."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The first subgraph of a model, with float32 constants resolved."""

    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: list[int]
    outputs: list[int]

    def constant(self, index: int) -> np.ndarray | None:
        """The float32 (or integer) value of a constant tensor, or None for activations."""
        return self.tensors[index].data

    def layers(self, kinds: Sequence[str] = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "TRANSPOSE_CONV", "FULLY_CONNECTED")) -> list[TFLiteOp]:
        """The operators that hold weights, in execution order."""
        return [op for op in self.ops if op.kind in kinds]


def _options(kind: str, table: _Table | None) -> dict[str, Any]:
    if table is None:
        return {}
    if kind == "CONV_2D":
        return {
            "padding": PADDINGS[table.scalar(0, "b")],
            "stride": (table.scalar(2, "i", 1), table.scalar(1, "i", 1)),
            "activation": ACTIVATIONS.get(table.scalar(3, "b")),
            "dilation": (table.scalar(5, "i", 1), table.scalar(4, "i", 1)),
        }
    if kind == "DEPTHWISE_CONV_2D":
        return {
            "padding": PADDINGS[table.scalar(0, "b")],
            "stride": (table.scalar(2, "i", 1), table.scalar(1, "i", 1)),
            "depth_multiplier": table.scalar(3, "i", 1),
            "activation": ACTIVATIONS.get(table.scalar(4, "b")),
            "dilation": (table.scalar(6, "i", 1), table.scalar(5, "i", 1)),
        }
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return {
            "padding": PADDINGS[table.scalar(0, "b")],
            "stride": (table.scalar(2, "i", 1), table.scalar(1, "i", 1)),
            "kernel": (table.scalar(4, "i", 1), table.scalar(3, "i", 1)),
            "activation": ACTIVATIONS.get(table.scalar(5, "b")),
        }
    if kind in ("ADD", "MUL", "SUB"):
        return {"activation": ACTIVATIONS.get(table.scalar(0, "b"))}
    if kind == "RESIZE_BILINEAR":
        return {"align_corners": bool(table.scalar(2, "b")), "half_pixel_centers": bool(table.scalar(3, "b"))}
    if kind == "DEPTH_TO_SPACE":
        return {"block_size": table.scalar(0, "i")}
    if kind == "CONCATENATION":
        return {"axis": table.scalar(0, "i"), "activation": ACTIVATIONS.get(table.scalar(1, "b"))}
    return {}


def _index_vector(table: _Table, type_index: int) -> list[int]:
    """A ``SparseIndexVector`` union (Int32Vector=1, Uint16Vector=2, Uint8Vector=3)."""
    kind = table.scalar(type_index, "B")
    inner = table.table(type_index + 1)
    if inner is None or kind == 0:
        return []
    fmt = {1: "i", 2: "H", 3: "B"}.get(kind)
    if fmt is None:
        raise ModelIncompatibleError(f"Unknown TFLite sparse index vector type {kind}.")
    return inner.ints(0, fmt)


def _densify(values: np.ndarray, shape: tuple[int, ...], sparsity: _Table) -> np.ndarray:
    """Expand TFLite's sparse format (per-dimension DENSE or SPARSE_CSR metadata, in the
    tensor's traversal order) into a dense array of ``shape``. Block-sparse layouts (a
    ``block_map``) are refused: no MediaPipe face model uses them."""
    order = sparsity.ints(0)
    if sparsity.ints(1):
        raise ModelIncompatibleError("Block-sparse TFLite weights are not supported.")
    metadata = sparsity.tables(2)
    if sorted(order) != list(range(len(shape))) or len(metadata) != len(shape):
        raise ModelIncompatibleError("Unsupported TFLite sparsity layout.")
    expanded = np.zeros([shape[d] for d in order], dtype=values.dtype)
    flat = values.reshape(-1)

    def walk(level: int, prefix: tuple[int, ...], position: int) -> None:
        meta = metadata[level]
        last = level == len(order) - 1
        if meta.scalar(0, "b") == 0:  # DENSE
            size = int(meta.scalar(1, "i"))
            if last:
                expanded[prefix] = flat[position * size : (position + 1) * size]
                return
            for i in range(size):
                walk(level + 1, (*prefix, i), position * size + i)
        else:  # SPARSE_CSR
            segments = _index_vector(meta, 2)
            indices = _index_vector(meta, 4)
            start, end = segments[position], segments[position + 1]
            if last:
                expanded[(*prefix, indices[start:end])] = flat[start:end]
                return
            for child in range(start, end):
                walk(level + 1, (*prefix, indices[child]), child)

    walk(0, (), 0)
    return np.transpose(expanded, np.argsort(order)).reshape(shape)


def read_tflite(data: bytes, name: str = "model.tflite") -> TFLiteGraph:
    """Parse a ``.tflite`` flatbuffer (first subgraph) into tensors, constants and ops.

    Raises :class:`ModelIncompatibleError` for anything that is not a readable TFLite model.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelIncompatibleError(f"{name} is not a TensorFlow Lite model (no TFL3 identifier).")
    try:
        return _read(data)
    except (struct.error, IndexError, ValueError, KeyError) as exc:
        raise ModelIncompatibleError(f"{name} is a corrupt TensorFlow Lite model ({exc}).") from exc


def _read(data: bytes) -> TFLiteGraph:
    model = _Table(data, struct.unpack_from("<I", data, 0)[0])
    codes = []
    for code in model.tables(1):
        builtin = max(int(code.scalar(0, "b")), int(code.scalar(3, "i")))
        codes.append(BUILTIN_OPS.get(builtin, f"OP_{builtin}") if builtin != 32 else f"CUSTOM:{code.string(1)}")
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise ValueError("no subgraph")
    graph = subgraphs[0]
    tensors: list[TFLiteTensor] = []
    sparse: dict[int, _Table] = {}
    for index, table in enumerate(graph.tables(0)):
        dtype = TENSOR_TYPES.get(int(table.scalar(1, "b")))
        shape = tuple(table.ints(0))
        tensor = TFLiteTensor(index, table.string(3), shape, dtype)
        buffer_index = int(table.scalar(2, "I"))
        if buffer_index and dtype is not None and buffer_index < len(buffers):
            raw = buffers[buffer_index].vector_bytes(0, 1)
            if raw:
                tensor.data = np.frombuffer(raw, dtype=dtype).copy()
                sparsity = table.table(6)
                if sparsity is not None:
                    sparse[index] = sparsity
                else:
                    tensor.data = tensor.data.reshape(shape)
        tensors.append(tensor)
    ops = []
    for table in graph.tables(3):
        kind = codes[int(table.scalar(0, "I"))]
        ops.append(TFLiteOp(kind, table.ints(1), table.ints(2), _options(kind, table.table(4))))
    for index, sparsity in sparse.items():
        tensor = tensors[index]
        assert tensor.data is not None
        tensor.data = _densify(tensor.data, tensor.shape, sparsity)
    # Constants behind DEQUANTIZE (float16) or DENSIFY become float32 under the output's name.
    for op in ops:
        if op.kind in ("DEQUANTIZE", "DENSIFY"):
            source, target = tensors[op.inputs[0]], tensors[op.outputs[0]]
            if source.data is not None and target.data is None:
                target.data = source.data.astype(np.float32).reshape(target.shape)
    return TFLiteGraph(tensors, ops, graph.ints(1), graph.ints(2))


SUPPORTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "RELU", "RELU6", "MAX_POOL_2D", "PAD", "RESIZE_BILINEAR",
     "DEPTH_TO_SPACE", "RESHAPE", "CONCATENATION", "LOGISTIC"}
)
"""Operators :class:`restorekit.faces.graphnet.GraphNet` runs (DEQUANTIZE/DENSIFY are folded)."""


def _constant_ints(graph: TFLiteGraph, index: int, what: str) -> list[int]:
    value = graph.constant(index)
    if value is None:
        raise ModelIncompatibleError(f"The TFLite graph computes its {what} at run time; only constants are supported.")
    return [int(v) for v in np.asarray(value).reshape(-1)]


def tflite_to_state_dict(data: bytes, name: str = "model.tflite") -> dict[str, Any]:
    """Convert a TFLite model into a state dict for :class:`~restorekit.faces.graphnet.GraphNet`:
    ``op<N>.weight``/``op<N>.bias`` in torch layouts, plus the operator list as JSON bytes
    under ``graph`` (a uint8 tensor), so one safetensors file holds the whole network."""
    import json

    import torch

    graph = read_tflite(data, name)
    state: dict[str, Any] = {}
    ops: list[dict[str, Any]] = []
    for number, op in enumerate(graph.ops):
        if op.kind in ("DEQUANTIZE", "DENSIFY"):
            continue
        if op.kind not in SUPPORTED_OPS:
            raise ModelIncompatibleError(f"{name} uses the TFLite operator {op.kind}, which RestoreKit cannot run.")
        record: dict[str, Any] = {"kind": op.kind, "name": f"op{number}", "out": op.outputs[:1], **op.options}
        record.pop("depth_multiplier", None)
        activations = [i for i in op.inputs if i >= 0 and graph.constant(i) is None]
        record["in"] = activations
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = graph.constant(op.inputs[1])
            if weight is None:
                raise ModelIncompatibleError(f"{name}: a convolution's weights are not constant.")
            if op.kind == "CONV_2D":  # (O, KH, KW, I) -> (O, I, KH, KW)
                torch_weight = np.transpose(weight, (0, 3, 1, 2))
                record["groups"] = 1
            else:  # (1, KH, KW, C*M) -> (C*M, 1, KH, KW)
                torch_weight = np.transpose(weight, (3, 0, 1, 2))
                channels = graph.tensors[activations[0]].shape[3]
                record["groups"] = int(channels)
                torch_weight = torch_weight.reshape(torch_weight.shape[0], 1, *torch_weight.shape[2:])
            state[f"op{number}.weight"] = torch.from_numpy(np.ascontiguousarray(torch_weight, dtype=np.float32))
            record["weight_shape"] = [int(v) for v in torch_weight.shape]
            bias = graph.constant(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            record["bias"] = bias is not None
            if bias is not None:
                state[f"op{number}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32).reshape(-1))
        elif op.kind == "PRELU":
            alpha = graph.constant(op.inputs[1])
            if alpha is None:
                raise ModelIncompatibleError(f"{name}: a PReLU's slopes are not constant.")
            state[f"op{number}.weight"] = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32).reshape(-1))
            record["channels"] = int(alpha.size)
        elif op.kind == "PAD":
            record["paddings"] = np.asarray(_constant_ints(graph, op.inputs[1], "padding")).reshape(-1, 2).tolist()
        elif op.kind == "RESIZE_BILINEAR":
            record["size"] = _constant_ints(graph, op.inputs[1], "resize size")
        elif op.kind == "RESHAPE":
            record["shape"] = list(graph.tensors[op.outputs[0]].shape)
        elif op.kind == "CONCATENATION":
            pass
        ops.append(record)
    input_tensor = graph.tensors[graph.inputs[0]]
    spec = {
        "inputs": graph.inputs[:1],
        "outputs": graph.outputs,
        "input_shape": list(input_tensor.shape),
        "output_shapes": [list(graph.tensors[i].shape) for i in graph.outputs],
        "ops": ops,
    }
    state["graph"] = torch.frombuffer(bytearray(json.dumps(spec, separators=(",", ":")).encode("utf-8")), dtype=torch.uint8).clone()
    return state


__all__ = ["SUPPORTED_OPS", "TFLiteGraph", "TFLiteOp", "TFLiteTensor", "read_tflite", "tflite_to_state_dict"]
