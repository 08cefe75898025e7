"""RRDBNet (ESRGAN, Real-ESRGAN x4plus) without the dense-block concatenations.

Spandrel's ``ResidualDenseBlock_5C`` concatenates its input with every intermediate map
before each conv (``torch.cat`` of 96, 128, 160 and 192 channels: four fresh tensors a dense
block, 69 blocks in x4plus), runs the LeakyReLU as a separate pass, and adds the 0.2-scaled
residuals in two more passes. :class:`FusedRRDBTrunk` computes the same function from the
same weights with

- one preallocated channels_last feature buffer, (N, nf + 4 gc, H, W), reused by every dense
  block: each conv reads a channel prefix of it and its output is written into the next
  channel slice, so nothing is ever concatenated;
- the LeakyReLU fused into the conv (oneDNN post-op through
  ``torch.ops.mkldnn._convolution_pointwise`` on the CPU);
- the residuals fused into the last conv of each block (oneDNN's in-place ``add`` post-op,
  with the conv's weights pre-scaled by 0.2, or 0.04 for the third block of an RRDB, whose
  two residual scalings nest).

The residual sums live in separate contiguous (N, nf, H, W) tensors, because oneDNN fuses the
in-place ``add`` only into a dense destination. Other devices (CUDA, MPS) run the same schedule with ``F.conv2d``.

It equals spandrel's network within float rounding (1e-5 in fp32 on x4plus's real weights;
``tests/test_upscale_fast_paths.py``). Only the plain form is fused (``plus=False``, no norm,
LeakyReLU, CNA mode, 3x3 convs); :meth:`FusedRRDBTrunk.of` returns None for anything else,
and the runner then uses the module as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..device import cpu_has_fast_bf16

logger = logging.getLogger(__name__)

_POINTWISE_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class _Conv:
    """A 3x3 stride-1 conv: weight (O, I, 3, 3), bias (O,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def of(cls, conv: nn.Conv2d, scale: float = 1.0) -> _Conv:
        weight, bias = conv.weight.detach(), conv.bias.detach()
        if scale != 1.0:
            weight, bias = weight * scale, bias * scale
        return cls(weight, bias)


ConvLeaky = Callable[[torch.Tensor, _Conv], torch.Tensor]
ConvAddInto = Callable[[torch.Tensor, torch.Tensor, _Conv], None]


def _onednn_conv_leaky(x: torch.Tensor, conv: _Conv) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.2], ""
    )


def _onednn_conv_add_into(out: torch.Tensor, x: torch.Tensor, conv: _Conv) -> None:
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1, "add", None, None, [], None
    )


def _plain_conv_leaky(x: torch.Tensor, conv: _Conv) -> torch.Tensor:
    return F.leaky_relu_(F.conv2d(x, conv.weight, conv.bias, padding=1), 0.2)


def _plain_conv_add_into(out: torch.Tensor, x: torch.Tensor, conv: _Conv) -> None:
    out.add_(F.conv2d(x, conv.weight, conv.bias, padding=1))


def onednn_fusion_available(device: torch.device, dtype: torch.dtype) -> bool:
    """True when oneDNN's fused conv ops run here: CPU, oneDNN built in, fp32, or bf16 on a CPU
    whose oneDNN runs bf16 convolutions (AVX512 or AMX; on an AVX2-only CPU the op raises
    "bf16 path needs the cpu support avx_ne_convert or avx512bw...", and the plain schedule,
    PyTorch's own bf16 kernels, runs instead)."""
    return (
        device.type == "cpu"
        and dtype in _POINTWISE_DTYPES
        and (dtype != torch.bfloat16 or cpu_has_fast_bf16())
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _is_leaky(module: nn.Module) -> bool:
    return isinstance(module, nn.LeakyReLU) and abs(module.negative_slope - 0.2) < 1e-12


def _plain_conv(module: nn.Module) -> nn.Conv2d | None:
    """The conv of a spandrel ``conv_block`` without activation, if it is a plain 3x3 conv."""
    if isinstance(module, nn.Sequential) and len(module) == 1:
        module = module[0]
    if (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.padding == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.bias is not None
        and module.padding_mode == "zeros"
    ):
        return module
    return None


def _leaky_conv(module: nn.Module) -> nn.Conv2d | None:
    """The conv of a ``conv_block`` = (Conv2d, LeakyReLU(0.2)), else None."""
    if isinstance(module, nn.Sequential) and len(module) == 2 and _is_leaky(module[1]):
        return _plain_conv(module[0])
    return None


@dataclass(frozen=True)
class _DenseBlock:
    """conv1..conv4 (each followed by LeakyReLU) and conv5, its weights pre-scaled."""

    growth: tuple[_Conv, ...]
    last: _Conv


class FusedRRDBTrunk:
    """``conv_first`` and the residual trunk of spandrel's ``RRDBNet`` (``model[0]`` and
    ``model[1]``), run without concatenations; see the module doc.

    ``trunk(x)``: (N, in_nc, H, W) -> (N, nf, H, W) features, in the weights' dtype and on
    their device, channels_last; the same values as ``model[1](model[0](x))``.
    """

    def __init__(self, first: _Conv, blocks: list[tuple[_DenseBlock, ...]], trunk_conv: _Conv, features: int, growth: int) -> None:
        self.first = first
        self.blocks = blocks
        self.trunk_conv = trunk_conv
        self.features = features
        self.growth = growth
        device, dtype = first.weight.device, first.weight.dtype
        fused = onednn_fusion_available(device, dtype)
        self.conv_leaky: ConvLeaky = _onednn_conv_leaky if fused else _plain_conv_leaky
        self.conv_add_into: ConvAddInto = _onednn_conv_add_into if fused else _plain_conv_add_into
        self.fused = fused

    @classmethod
    def of(cls, module: nn.Module) -> FusedRRDBTrunk | None:
        """The fused trunk of a spandrel ``RRDBNet`` whose form it covers, else None."""
        if type(module).__name__ != "RRDBNet":
            return None
        body = getattr(module, "model", None)
        if not isinstance(body, nn.Sequential) or len(body) < 3:
            return None
        first = _plain_conv(body[0])
        shortcut = body[1]
        sub = getattr(shortcut, "sub", None)
        if first is None or type(shortcut).__name__ != "ShortcutBlock" or not isinstance(sub, nn.Sequential):
            return None
        trunk_conv = _plain_conv(sub[-1])
        if trunk_conv is None:
            return None
        blocks: list[tuple[_DenseBlock, ...]] = []
        features = first.out_channels
        growth = None
        for rrdb in list(sub)[:-1]:
            rdbs = [getattr(rrdb, name, None) for name in ("RDB1", "RDB2", "RDB3")]
            if type(rrdb).__name__ != "RRDB" or any(r is None for r in rdbs):
                return None
            dense: list[_DenseBlock] = []
            for index, rdb in enumerate(rdbs):
                if getattr(rdb, "conv1x1", None) is not None:  # ESRGAN+ ("plus")
                    return None
                convs = [_leaky_conv(getattr(rdb, f"conv{i}", None)) for i in range(1, 5)]
                last = _plain_conv(getattr(rdb, "conv5", None))
                if any(c is None for c in convs) or last is None:
                    return None
                growth = growth or convs[0].out_channels  # type: ignore[union-attr]
                for i, conv in enumerate(convs):
                    assert conv is not None
                    if conv.in_channels != features + i * growth or conv.out_channels != growth:
                        return None
                if last.in_channels != features + 4 * growth or last.out_channels != features:
                    return None
                scale = 0.04 if index == 2 else 0.2  # RDB3's residual nests in the RRDB's
                dense.append(_DenseBlock(tuple(_Conv.of(c) for c in convs if c is not None), _Conv.of(last, scale)))
            blocks.append(tuple(dense))
        if not blocks or growth is None:
            return None
        return cls(_Conv.of(first), blocks, _Conv.of(trunk_conv), features, growth)

    def _grow(self, buffer: torch.Tensor, x: torch.Tensor, block: _DenseBlock) -> None:
        """Fill ``buffer`` (N, nf + 4 gc, H, W) with [x, x1, x2, x3, x4] of a dense block."""
        nf, gc = self.features, self.growth
        buffer[:, :nf].copy_(x)
        for i, conv in enumerate(block.growth):
            width = nf + i * gc
            source = x if i == 0 else buffer[:, :width]
            buffer[:, width : width + gc].copy_(self.conv_leaky(source, conv))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.blocks)

    def probe(self, side: int) -> None:
        """Run ``conv_first`` and the first RRDB on a (1, in_nc, side, side) window of
        noise: the trunk's cost per pixel at that window size, in about 1/23 of x4plus's time
        (:mod:`restorekit.upscale.window_cost`)."""
        weight = self.first.weight
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((1, weight.shape[1], side, side), generator=generator).to(weight.device, weight.dtype)
        with torch.no_grad():
            self._run(x.contiguous(memory_format=torch.channels_last), self.blocks[:1])

    def _run(self, x: torch.Tensor, blocks: list[tuple[_DenseBlock, ...]]) -> torch.Tensor:
        n, _, h, w = x.shape
        fea = F.conv2d(x, self.first.weight, self.first.bias, padding=1).contiguous(memory_format=torch.channels_last)
        buffer = torch.empty(
            (n, self.features + 4 * self.growth, h, w), dtype=fea.dtype, device=fea.device, memory_format=torch.channels_last
        )
        state = fea.clone(memory_format=torch.channels_last)
        inner = torch.empty_like(state)  # reused by every block: no allocation per block
        for rdb1, rdb2, rdb3 in blocks:
            # RDB1: t = x + 0.2 conv5;  RDB2: t = t + 0.2 conv5;
            # RDB3 and the RRDB residual: x + 0.2 (t + 0.2 conv5) = (x + 0.2 t) + 0.04 conv5
            self._grow(buffer, state, rdb1)
            inner.copy_(state)
            self.conv_add_into(inner, buffer, rdb1.last)
            self._grow(buffer, inner, rdb2)
            self.conv_add_into(inner, buffer, rdb2.last)
            self._grow(buffer, inner, rdb3)
            state.add_(inner, alpha=0.2)
            self.conv_add_into(state, buffer, rdb3.last)
        self.conv_add_into(fea, state, self.trunk_conv)
        return fea
