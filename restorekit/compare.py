"""Comparing images: PSNR, and pictures for people (side by side, difference, split).

Tensors are float (B, C, H, W) in [0, 1]; ``b`` is resized (bicubic, antialiased) to ``a``'s
size when they differ, and a batch of one is compared against every image of the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import InvalidParameterError
from .layout import check_image


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of ``b`` against ``a`` (same shape, range [0, 1]); inf when equal."""
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` as equal-size batches: ``b`` resized to ``a``'s size, batches of one
    expanded to the other's size."""
    check_image(a, what="Compare's first image", channels=None)
    check_image(b, what="Compare's second image", channels=None)
    if a.shape[1] != b.shape[1]:
        raise InvalidParameterError(f"Compare needs two (B, C, H, W) images with the same channels, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise InvalidParameterError(
            f"Batch sizes differ ({a.shape[0]} and {b.shape[0]}); compare batches of the same size, or one image against a batch."
        )
    if tuple(b.shape[-2:]) != tuple(a.shape[-2:]):
        b = F.interpolate(b.float(), size=a.shape[-2:], mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    batch = max(a.shape[0], b.shape[0])
    return a.expand(batch, -1, -1, -1), b.expand(batch, -1, -1, -1)


def _side_by_side(a: torch.Tensor, b: torch.Tensor, gain: float) -> torch.Tensor:
    return torch.cat([a, b], dim=-1)


def _difference(a: torch.Tensor, b: torch.Tensor, gain: float) -> torch.Tensor:
    return ((a - b).abs() * gain).clamp(0, 1)


def _split(a: torch.Tensor, b: torch.Tensor, gain: float) -> torch.Tensor:
    half = a.shape[-1] // 2
    return torch.cat([a[..., :half], b[..., half:]], dim=-1)


COMPARE_MODES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "side_by_side": _side_by_side,
    "difference": _difference,
    "split": _split,
}
"""``side_by_side``: A | B (twice as wide); ``difference``: |A - B| x gain; ``split``: the
left half of A and the right half of B."""


def comparison_image(a: torch.Tensor, b: torch.Tensor, mode: str = "side_by_side", gain: float = 4.0) -> tuple[torch.Tensor, list[float]]:
    """A picture comparing ``b`` with ``a`` and the PSNR of each image of ``b`` against ``a``."""
    if mode not in COMPARE_MODES:
        raise InvalidParameterError(f"Unknown comparison {mode!r}; use one of: {', '.join(COMPARE_MODES)}.")
    a, b = match(a.float(), b.float())
    return COMPARE_MODES[mode](a, b, gain), [psnr(a[i], b[i]) for i in range(a.shape[0])]
