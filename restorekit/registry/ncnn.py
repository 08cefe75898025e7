"""Convert ncnn ``.param``/``.bin`` model pairs to PyTorch state dicts.

ncnn stores each layer's weights in the ``.bin`` in the order the ``.param`` lists the
layers, which for the Real-ESRGAN exports is forward-execution order. So the conversion
walks the weight-bearing layers and pairs them, in order, with the architecture's state
template (:mod:`restorekit.architectures`), checking every shape.

Binary layout per layer type:

- ``Convolution``: a 4-byte storage tag, the weights, then (if ``5=1``) an fp32 bias with no
  tag. Tag ``0x01306B47`` is fp16 data, ``0`` is raw fp32. fp16 data is padded to 4 bytes.
- ``PReLU``: ``0=num_slope`` fp32 slopes, no tag.
- Everything else used by these models (``Input``, ``Split``, ``Concat``, ``Eltwise``,
  ``Interp``, ``PixelShuffle``, ``BinaryOp``) has no weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..architectures import get_architecture
from ..errors import ModelIncompatibleError

NCNN_MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
_WEIGHTLESS = frozenset(
    {"Input", "Split", "Concat", "Eltwise", "Interp", "PixelShuffle", "BinaryOp", "ReLU", "Sigmoid", "Noop", "Crop", "Padding", "Reshape", "Permute"}
)


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of a ``.param`` file."""

    type: str
    name: str
    params: Mapping[int, str]

    def int_param(self, key: int, default: int = 0) -> int:
        value = self.params.get(key)
        return default if value is None else int(float(value))


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse the text ``.param`` format into layers (blob names are not needed here)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != NCNN_MAGIC:
        raise ModelIncompatibleError("Not an ncnn .param file (missing the 7767517 magic line).")
    try:
        layer_count = int(lines[1].split()[0])
    except (IndexError, ValueError) as exc:
        raise ModelIncompatibleError("Malformed ncnn .param header.") from exc
    layers: list[NcnnLayer] = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            raise ModelIncompatibleError(f"Malformed ncnn layer line: {line[:80]!r}")
        layer_type, name = parts[0], parts[1]
        n_in, n_out = int(parts[2]), int(parts[3])
        params: dict[int, str] = {}
        for item in parts[4 + n_in + n_out :]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        layers.append(NcnnLayer(layer_type, name, params))
    if len(layers) != layer_count:
        raise ModelIncompatibleError(
            f"ncnn .param declares {layer_count} layers but lists {len(layers)}."
        )
    return layers


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise ModelIncompatibleError(
                "The ncnn .bin file is shorter than its .param needs: it is truncated or "
                "belongs to another model."
            )
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def floats32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)

    def tagged_weights(self, count: int) -> np.ndarray:
        (tag,) = np.frombuffer(self.take(4), dtype="<u4")
        if tag == TAG_FP16:
            raw = self.take(2 * count)
            pad = (-2 * count) % 4
            if pad:
                self.take(pad)
            return np.frombuffer(raw, dtype="<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.floats32(count)
        raise ModelIncompatibleError(
            f"Unsupported ncnn weight storage tag 0x{int(tag):08X} (only fp16 and fp32 are supported)."
        )


def read_ncnn_weights(param_text: str, bin_data: bytes) -> list[tuple[str, str, np.ndarray]]:
    """Every weight array in file order as ``(layer name, role, flat float32 array)``.

    Roles are ``weight``, ``bias`` (convolutions) and ``slope`` (PReLU).
    """
    reader = _Reader(bin_data)
    out: list[tuple[str, str, np.ndarray]] = []
    for layer in parse_param(param_text):
        if layer.type == "Convolution":
            num_output = layer.int_param(0)
            size = layer.int_param(6)
            out.append((layer.name, "weight", reader.tagged_weights(size)))
            if layer.int_param(5):
                out.append((layer.name, "bias", reader.floats32(num_output)))
        elif layer.type == "PReLU":
            out.append((layer.name, "slope", reader.floats32(layer.int_param(0))))
        elif layer.type not in _WEIGHTLESS:
            raise ModelIncompatibleError(
                f"ncnn layer type {layer.type} ({layer.name}) is not supported by the converter."
            )
    if reader.offset != len(bin_data):
        raise ModelIncompatibleError(
            f"The ncnn .bin has {len(bin_data) - reader.offset} bytes left over after all "
            "layers: it does not belong to this .param."
        )
    return out


def ncnn_to_state_dict(
    param_text: str,
    bin_data: bytes,
    architecture: str,
    params: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Map an ncnn model onto ``architecture``'s state template, checking every shape."""
    spec = get_architecture(architecture)
    template = spec.template(spec.params(params))
    arrays = read_ncnn_weights(param_text, bin_data)
    if len(arrays) != len(template):
        raise ModelIncompatibleError(
            f"The ncnn model has {len(arrays)} weight arrays but {architecture} with "
            f"{dict(spec.params(params))} has {len(template)}: it is a different model."
        )
    state: dict[str, torch.Tensor] = {}
    for (key, shape), (layer, role, array) in zip(template, arrays, strict=True):
        expected_role = "weight" if key.endswith(".weight") and len(shape) == 4 else (
            "bias" if key.endswith(".bias") else "slope"
        )
        if role != expected_role or array.size != math.prod(shape):
            raise ModelIncompatibleError(
                f"ncnn layer {layer} ({role}, {array.size} values) does not fit {key} "
                f"{shape}: the model is not {architecture} with these hyperparameters."
            )
        state[key] = torch.from_numpy(array.reshape(shape).copy())
    return state


def convert_ncnn_files(
    param_path: str | Path,
    bin_path: str | Path,
    architecture: str,
    params: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`ncnn_to_state_dict` on a ``.param``/``.bin`` pair on disk."""
    return ncnn_to_state_dict(
        Path(param_path).read_text(encoding="utf-8"), Path(bin_path).read_bytes(), architecture, params
    )
