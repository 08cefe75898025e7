"""A torch network that runs a TFLite graph's operators (MediaPipe's face models).

The weights and the operator list come from one safetensors file written by
:func:`restorekit.registry.tflite.tflite_to_state_dict`: every weight tensor under
``op<N>.weight`` / ``op<N>.bias`` (already in torch's layouts), and the graph itself as
JSON bytes under ``graph``. Activations run NCHW (channels_last works too); reshapes and the
graph's outputs follow TFLite's NHWC semantics, so the outputs equal the TFLite model's.

Supported operators: CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD, RELU, RELU6, MAX_POOL_2D, PAD,
RESIZE_BILINEAR, DEPTH_TO_SPACE, RESHAPE, CONCATENATION, LOGISTIC.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelIncompatibleError

GRAPH_KEY = "graph"
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activate(x: Tensor, name: str | None) -> Tensor:
    if name is None:
        return x
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu_n1_to_1":
        return x.clamp(-1.0, 1.0)
    raise ModelIncompatibleError(f"Unsupported fused activation {name!r}.")


def _to_nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1) if x.ndim == 4 else x


class GraphNet(nn.Module):
    """Runs a TFLite operator list on torch.

    Args:
        graph: the decoded ``graph`` JSON (``inputs``, ``outputs``, ``ops``).

    ``forward(x)`` takes (B, C, H, W) float input as the TFLite model's NHWC input would hold
    it, and returns the graph's outputs in TFLite's layout (NHWC for 4-D tensors).
    """

    def __init__(self, graph: Mapping[str, Any]) -> None:
        super().__init__()
        self.graph = dict(graph)
        self.ops: list[dict[str, Any]] = list(graph["ops"])
        self.layers = nn.ModuleDict()
        for op in self.ops:
            if op["kind"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                o, i, kh, kw = op["weight_shape"]
                groups = op.get("groups", 1)
                conv = nn.Conv2d(i * groups, o, (kh, kw), stride=tuple(op["stride"]), dilation=tuple(op["dilation"]), groups=groups, bias=op["bias"])
                self.layers[op["name"]] = conv
            elif op["kind"] == "PRELU":
                self.layers[op["name"]] = nn.PReLU(op["channels"])
        self.input_size = tuple(graph["input_shape"][1:3])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> GraphNet:
        """Build the network from a converted state dict and load its weights."""
        if GRAPH_KEY not in state:
            raise ModelIncompatibleError("These weights have no graph; they were not converted from a TFLite model.")
        graph = json.loads(bytes(state[GRAPH_KEY].to(torch.uint8).tolist()).decode("utf-8"))
        net = cls(graph)
        weights = {k: v for k, v in state.items() if k != GRAPH_KEY}
        for key, value in weights.items():
            layer_name, _, attr = key.rpartition(".")
            if layer_name not in net.layers:
                raise ModelIncompatibleError(f"Unexpected weight {key} for this graph.")
            target = getattr(net.layers[layer_name], attr)
            if tuple(target.shape) != tuple(value.shape):
                raise ModelIncompatibleError(f"Weight {key} has shape {tuple(value.shape)}, the graph needs {tuple(target.shape)}.")
        missing = [f"{name}.{p}" for name, layer in net.layers.items() for p, _ in layer.named_parameters() if f"{name}.{p}" not in weights]
        if missing:
            raise ModelIncompatibleError(f"The weights lack {missing[:3]} of this graph.")
        net.layers.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
        return net.eval()

    # ------------------------------------------------------------------ operators

    def _conv(self, op: Mapping[str, Any], x: Tensor) -> Tensor:
        layer = self.layers[op["name"]]
        assert isinstance(layer, nn.Conv2d)
        if op["padding"] == "same":
            kh, kw = layer.kernel_size
            top, bottom = _same_padding(x.shape[-2], kh, layer.stride[0], layer.dilation[0])
            left, right = _same_padding(x.shape[-1], kw, layer.stride[1], layer.dilation[1])
            if top == bottom and left == right:
                y = F.conv2d(x, layer.weight, layer.bias, layer.stride, (top, left), layer.dilation, layer.groups)
                return _activate(y, op.get("activation"))
            x = F.pad(x, (left, right, top, bottom))
        return _activate(layer(x), op.get("activation"))

    def _pool(self, op: Mapping[str, Any], x: Tensor) -> Tensor:
        kh, kw = op["kernel"]
        sh, sw = op["stride"]
        if op["padding"] == "same":
            top, bottom = _same_padding(x.shape[-2], kh, sh, 1)
            left, right = _same_padding(x.shape[-1], kw, sw, 1)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return _activate(F.max_pool2d(x, (kh, kw), (sh, sw)), op.get("activation"))

    def _pad(self, op: Mapping[str, Any], x: Tensor) -> Tensor:
        (nb, na), (hb, ha), (wb, wa), (cb, ca) = op["paddings"]
        if nb or na:
            raise ModelIncompatibleError("Padding the batch dimension is not supported.")
        return F.pad(x, (wb, wa, hb, ha, cb, ca))

    def _resize(self, op: Mapping[str, Any], x: Tensor) -> Tensor:
        size = tuple(op["size"])
        if op.get("align_corners"):
            return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        if op.get("half_pixel_centers"):
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        # TF's legacy mapping: source = destination * in / out, no half-pixel shift.
        h, w = x.shape[-2:]
        ys = torch.arange(size[0], device=x.device, dtype=torch.float32) * (h / size[0])
        xs = torch.arange(size[1], device=x.device, dtype=torch.float32) * (w / size[1])
        y0 = ys.floor().long().clamp(max=h - 1)
        x0 = xs.floor().long().clamp(max=w - 1)
        y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
        fy = (ys - y0).to(x.dtype).view(-1, 1)
        fx = (xs - x0).to(x.dtype).view(1, -1)
        top = x[..., y0, :][..., x0] * (1 - fx) + x[..., y0, :][..., x1] * fx
        bottom = x[..., y1, :][..., x0] * (1 - fx) + x[..., y1, :][..., x1] * fx
        return top * (1 - fy) + bottom * fy

    @staticmethod
    def _depth_to_space(op: Mapping[str, Any], x: Tensor) -> Tensor:
        block = int(op["block_size"])
        b, c, h, w = x.shape
        out = c // (block * block)
        # TF (DCR): depth index = (i * block + j) * out + channel.
        return x.view(b, block, block, out, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, out, h * block, w * block)

    @staticmethod
    def _reshape(op: Mapping[str, Any], x: Tensor) -> Tensor:
        shape = list(op["shape"])
        y = _to_nhwc(x).reshape([x.shape[0], *shape[1:]])
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y

    @staticmethod
    def _concat(op: Mapping[str, Any], xs: list[Tensor]) -> Tensor:
        axis = int(op["axis"])
        rank = xs[0].ndim
        axis = axis % rank
        if rank == 4:
            axis = _NHWC_TO_NCHW_AXIS[axis]
        return _activate(torch.cat(xs, dim=axis), op.get("activation"))

    def forward(self, x: Tensor) -> list[Tensor]:
        values: dict[int, Tensor] = {self.graph["inputs"][0]: x}
        unary: dict[str, Callable[[Mapping[str, Any], Tensor], Tensor]] = {
            "CONV_2D": self._conv,
            "DEPTHWISE_CONV_2D": self._conv,
            "MAX_POOL_2D": self._pool,
            "PAD": self._pad,
            "RESIZE_BILINEAR": self._resize,
            "DEPTH_TO_SPACE": self._depth_to_space,
            "RESHAPE": self._reshape,
        }
        for op in self.ops:
            kind = op["kind"]
            inputs = [values[i] for i in op["in"]]
            if kind in unary:
                y = unary[kind](op, inputs[0])
            elif kind == "PRELU":
                y = self.layers[op["name"]](inputs[0])
            elif kind == "ADD":
                y = _activate(inputs[0] + inputs[1], op.get("activation"))
            elif kind == "RELU":
                y = F.relu(inputs[0])
            elif kind == "RELU6":
                y = F.relu6(inputs[0])
            elif kind == "LOGISTIC":
                y = torch.sigmoid(inputs[0])
            elif kind == "CONCATENATION":
                y = self._concat(op, inputs)
            else:  # pragma: no cover - refused at conversion
                raise ModelIncompatibleError(f"Unsupported TFLite operator {kind}.")
            values[op["out"][0]] = y
        return [_to_nhwc(values[i]) for i in self.graph["outputs"]]
