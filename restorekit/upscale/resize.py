"""High-quality separable resizing to exact sizes (Lanczos-3 by default).

Used for the part of a scale factor that the model does not cover (x3 with an x4 model, a
target width and height) and for resizing alpha. Like Pillow's resampling, the filter is
stretched by the reduction factor when shrinking, so downscaling is antialiased (OpenCV's
``INTER_LANCZOS4``, which the reference uses, aliases when it shrinks).

Each axis is a sparse weighted sum: ``out[i] = sum_k w[i, k] * in[idx[i, k]]``, computed tap
by tap with ``index_select`` so memory stays at two output-sized buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import InvalidParameterError
from ..layout import check_image


def _lanczos3(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 3.0, torch.sinc(x) * torch.sinc(x / 3.0), torch.zeros_like(x))


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    a = -0.5  # Pillow's and Keys' choice (OpenCV uses -0.75)
    t = x.abs()
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1.0 - x.abs()).clamp(min=0.0)


FILTERS: dict[str, tuple[float, Callable[[torch.Tensor], torch.Tensor]]] = {
    "lanczos": (3.0, _lanczos3),
    "bicubic": (2.0, _bicubic),
    "bilinear": (1.0, _triangle),
}
"""Resampling filters by name: (support radius, kernel)."""


def axis_weights(in_size: int, out_size: int, method: str = "lanczos") -> tuple[torch.Tensor, torch.Tensor]:
    """Tap indices (out, taps) and normalised float32 weights (out, taps) for one axis.

    Pixel centres are aligned (``align_corners=False``); taps outside the image are dropped
    and the rest renormalised, as Pillow does.
    """
    try:
        support, kernel = FILTERS[method]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown resize method {method!r}; use one of: {', '.join(FILTERS)}."
        ) from None
    ratio = in_size / out_size
    stretch = max(ratio, 1.0)
    reach = support * stretch
    taps = math.ceil(reach) * 2 + 1
    centers = (torch.arange(out_size, dtype=torch.float64) + 0.5) * ratio
    first = torch.floor(centers - reach + 0.5).to(torch.long)
    index = first[:, None] + torch.arange(taps)[None, :]
    distance = (index.to(torch.float64) + 0.5 - centers[:, None]) / stretch
    weights = kernel(distance)
    inside = (index >= 0) & (index < in_size)
    weights = torch.where(inside, weights, torch.zeros_like(weights))
    weights = weights / weights.sum(dim=1, keepdim=True)
    return index.clamp(0, in_size - 1), weights.to(torch.float32)


def _resize_axis(x: torch.Tensor, size: int, dim: int, method: str) -> torch.Tensor:
    in_size = x.shape[dim]
    if in_size == size:
        return x
    index, weights = axis_weights(in_size, size, method)
    view = [1] * x.ndim
    view[dim] = size
    out: torch.Tensor | None = None
    for k in range(index.shape[1]):
        w = weights[:, k].to(device=x.device, dtype=x.dtype).view(view)
        if not bool((weights[:, k] != 0).any()):
            continue
        term = x.index_select(dim, index[:, k].to(x.device))
        if out is None:
            out = term.mul_(w)
        else:
            out.addcmul_(term, w)
    assert out is not None
    return out


def resize(
    pixels: torch.Tensor,
    size: tuple[int, int],
    *,
    method: str = "lanczos",
    clamp: bool = True,
) -> torch.Tensor:
    """Resize (B, C, H, W) float pixels to exactly ``size = (height, width)``.

    Lanczos rings a little at hard edges; ``clamp`` keeps the result in [0, 1].
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise InvalidParameterError(f"Cannot resize to {width}x{height}: both sides must be >= 1.")
    check_image(pixels, what="The image to resize", channels=None)
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    x = pixels if pixels.is_floating_point() else pixels.float()
    # shrink first: the second pass then works on fewer pixels
    order = [(3, width), (2, height)]
    if height / pixels.shape[-2] < width / pixels.shape[-1]:
        order.reverse()
    for dim, target in order:
        x = _resize_axis(x, target, dim, method)
    if x is pixels:
        x = x.clone()
    return x.clamp_(0.0, 1.0) if clamp else x
