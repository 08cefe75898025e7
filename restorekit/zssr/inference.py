"""ZSSR inference: tiled network passes, geometric self-ensemble and back-projection."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch

from .geometry import dihedral, dihedral_inverse, median, swaps_axes
from .network import ZSSRNet
from .resize import Downscale, resize_bicubic

TileCallback = Callable[[int, int], None]
"""``on_tile(done, total)``: called after each finished tile (reports and may cancel)."""


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of the tiles covering a ``height`` x ``width`` image
    with tiles of at most ``tile`` per side, in near-equal sizes."""
    rows = max(1, math.ceil(height / tile))
    cols = max(1, math.ceil(width / tile))
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


def _transform_groups(transforms: list[int], square: bool) -> Iterator[list[int]]:
    """Transforms whose outputs share a shape, so each group runs as one batch."""
    if square:
        yield transforms
        return
    for odd in (False, True):
        group = [k for k in transforms if swaps_axes(k) == odd]
        if group:
            yield group


def ensemble_forward(
    net: ZSSRNet,
    interpolated: torch.Tensor,
    *,
    transforms: list[int],
    tile: int,
    memory_format: torch.memory_format,
    autocast: Callable[[], AbstractContextManager[object]],
    on_tile: TileCallback | None = None,
) -> torch.Tensor:
    """Run ``net`` on ``interpolated`` (1, C, H, W) under each dihedral transform in
    ``transforms`` and return the per-pixel median of the un-transformed outputs.

    The image is processed in tiles of at most ``tile`` pixels per side, each read with
    ``net.receptive_radius`` pixels of context, so the result equals a whole-image pass
    (up to floating-point summation order) with bounded memory.
    """
    height, width = interpolated.shape[-2:]
    margin = net.receptive_radius
    output = torch.empty_like(interpolated, memory_format=torch.contiguous_format)
    grid = tile_grid(height, width, tile)
    was_training = net.training
    net.eval()
    try:
        for done, (top, bottom, left, right) in enumerate(grid, start=1):
            y0, y1 = max(0, top - margin), min(height, bottom + margin)
            x0, x1 = max(0, left - margin), min(width, right + margin)
            region = interpolated[..., y0:y1, x0:x1]
            results: dict[int, torch.Tensor] = {}
            for group in _transform_groups(transforms, y1 - y0 == x1 - x0):
                batch = torch.cat([dihedral(region, k) for k in group])
                with torch.no_grad(), autocast():
                    predicted = net(batch.contiguous(memory_format=memory_format)).float()
                for index, k in enumerate(group):
                    results[k] = dihedral_inverse(predicted[index : index + 1], k)
            stacked = torch.cat([results[k] for k in transforms])
            fused = median(stacked) if len(transforms) > 1 else stacked[0]
            output[0, :, top:bottom, left:right] = fused[
                :, top - y0 : bottom - y0, left - x0 : right - x0
            ]
            if on_tile is not None:
                on_tile(done, len(grid))
    finally:
        net.train(was_training)
    return output.clamp_(0, 1)


def back_project(
    estimate: torch.Tensor,
    low_resolution: torch.Tensor,
    downscale: Downscale,
    iterations: int,
) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg): add the upsampled error between the input
    and the downscaled estimate, ``iterations`` times, clamping to [0, 1] each time.

    ``estimate`` is (1, C, H, W), ``low_resolution`` is (1, C, h, w), and ``downscale`` is
    the same degradation the network was trained to invert.
    """
    size_low = tuple(low_resolution.shape[-2:])
    size_high = tuple(estimate.shape[-2:])
    result = estimate
    for _ in range(iterations):
        error = low_resolution - downscale(result, size_low)
        result = (result + resize_bicubic(error, size_high)).clamp_(0, 1)
    return result
