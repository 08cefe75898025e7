"""A faster eager form of the VQGAN-style face restorers (RestoreFormer, CodeFormer).

Both networks are built from one residual block, spandrel's (and the official code's)::

    h = conv1(swish(norm1(x)));  h = conv2(swish(norm2(h)));  return shortcut(x) + h

with ``swish(x) = x * sigmoid(x)`` as two operations: a sigmoid written to a new tensor and
a product written to another. On 64-channel 512x512 maps every such pass is a quarter of a
gigabyte for a batch of four faces, and a fifth of the eager time went to them (profile of
RestoreFormer on an AVX2 CPU, fp32: convolutions 75%, sigmoid 7%, GroupNorm 6%, the swish
product 6%, additions 3%). :func:`with_fast_residual_blocks` runs the same block with
``silu`` in place (one pass, no new tensor) and the residual added into the convolution's
output: the same arithmetic up to float rounding (``silu`` computes ``x / (1 + exp(-x))``),
about 14% less eager time for RestoreFormer (``bench/RESULTS_faces.md``).

Under a channels_last plan the blocks also hand their convolutions channels_last maps: the
codebook lookup returns its codes as a contiguous NCHW tensor (``permute(...).contiguous()``),
so the whole decoder, where most of the work is, ran its convolutions on NCHW maps (the
128-channel 512x512 one at a fifth of the conv peak, in a profile of RestoreFormer).

The network itself is never changed (ComfyUI may share it): the fast form is a structural
copy that shares its parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..module_views import replace_modules

Shortcut = Callable[[nn.Module], nn.Module | None]
"""The block's shortcut projection (None: identity) from a block instance."""


def _restoreformer_shortcut(block: nn.Module) -> nn.Module | None:
    if block.in_channels == block.out_channels:
        return None
    return block.conv_shortcut if block.use_conv_shortcut else block.nin_shortcut


def _codeformer_shortcut(block: nn.Module) -> nn.Module | None:
    return None if block.in_channels == block.out_channels else block.conv_out


RESIDUAL_BLOCKS: dict[str, Shortcut] = {
    "ResnetBlock": _restoreformer_shortcut,  # RestoreFormer's (taming-transformers' block)
    "ResBlock": _codeformer_shortcut,  # CodeFormer's (its VQGAN's block)
}
"""The residual block classes (by name) whose fast form is known, with their shortcuts."""

_BLOCK_PARTS = ("norm1", "conv1", "norm2", "conv2", "in_channels", "out_channels")


class FastResidualBlock(nn.Module):
    """One VQGAN residual block (its modules shared): ``forward(x)`` takes and returns
    (N, C, H, W) activations in the network's dtype. RestoreFormer's call passes a time
    embedding, always None in the face networks; a block given one runs as spandrel's."""

    def __init__(self, block: nn.Module, shortcut: nn.Module | None, channels_last: bool = False) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut
        self.channels_last = channels_last

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        block = self.block
        if temb is not None:  # pragma: no cover - no face network uses a time embedding
            return block(x, temb)
        if self.channels_last:  # the codebook lookup hands the decoder NCHW maps
            x = x.contiguous(memory_format=torch.channels_last)
        h = block.conv1(F.silu(block.norm1(x), inplace=True))
        h = block.conv2(F.silu(block.norm2(h), inplace=True))
        return h.add_(x if self.shortcut is None else self.shortcut(x))


def with_fast_residual_blocks(module: nn.Module, *, channels_last: bool = False) -> nn.Module:
    """A view of ``module`` (:func:`~restorekit.module_views.replace_modules`: its parameters
    shared, the original not changed) in which every VQGAN residual block runs as
    :class:`FastResidualBlock`; ``module`` itself when it has none. ``channels_last``: the
    blocks give their convolutions channels_last maps (a channels_last plan)."""

    def fast(node: nn.Module) -> nn.Module | None:
        if type(node).__name__ in RESIDUAL_BLOCKS and all(hasattr(node, part) for part in _BLOCK_PARTS):
            return FastResidualBlock(node, RESIDUAL_BLOCKS[type(node).__name__](node), channels_last)
        return None

    return replace_modules(module, fast)
