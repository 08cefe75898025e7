"""Pictures of blur kernels, for the app, the nodes and the CLI.

A kernel is drawn normalised by its largest magnitude, with a display gamma (0.5 by
default, so that tails and ringing stay visible): positive weights in gray levels, negative
weights (the ringing lobes of sinc kernels) in red, each tap as a ``cell`` x ``cell`` square.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

NEGATIVE_TINT = (1.0, 0.25, 0.25)
"""RGB colour of negative kernel weights."""

BACKGROUND = 0.12
"""Gray level of the margins around and between kernels."""


def kernel_image(kernel: torch.Tensor, *, cell: int = 8, size: int | None = None, gamma: float = 0.5) -> torch.Tensor:
    """A (1, 3, n*cell, n*cell) float image in [0, 1] of a (k, k) kernel.

    ``size`` (odd, >= k) centres the kernel on an n = ``size`` grid so that kernels of
    different sizes are drawn at the same scale.
    """
    kernel = kernel.detach().to("cpu", torch.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"Expected a square (k, k) kernel, got shape {tuple(kernel.shape)}.")
    n = max(kernel.shape[0], size or 0)
    pad = (n - kernel.shape[0]) // 2
    kernel = F.pad(kernel, (pad, n - kernel.shape[0] - pad, pad, n - kernel.shape[0] - pad))
    peak = float(kernel.abs().max())
    values = kernel / peak if peak > 0 else kernel
    positive = values.clamp(min=0.0) ** gamma
    negative = (-values).clamp(min=0.0) ** gamma
    tint = torch.tensor(NEGATIVE_TINT, dtype=torch.float64).view(3, 1, 1)
    rgb = positive.expand(3, n, n) + negative.expand(3, n, n) * tint
    rgb = rgb.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)
    return rgb.clamp(0.0, 1.0).float().unsqueeze(0)


def kernels_image(
    kernels: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    *,
    cell: int = 8,
    gap: int = 6,
    gamma: float = 0.5,
) -> torch.Tensor:
    """Kernels side by side at a common scale: a (1, 3, H, W) float image in [0, 1].

    Takes a mapping such as ``DegradeResult.kernels[i]`` (drawn in its order) or a list.
    With no kernels (nothing blurred), draws a single-tap identity kernel.
    """
    items = list(kernels.values()) if isinstance(kernels, Mapping) else list(kernels)
    if not items:
        items = [torch.ones(1, 1)]
    size = max(int(k.shape[-1]) for k in items)
    tiles = [kernel_image(k, cell=cell, size=size, gamma=gamma) for k in items]
    side = size * cell
    width = len(tiles) * side + (len(tiles) + 1) * gap
    canvas = torch.full((1, 3, side + 2 * gap, width), BACKGROUND)
    for position, tile in enumerate(tiles):
        left = gap + position * (side + gap)
        canvas[..., gap : gap + side, left : left + side] = tile
    return canvas
