"""The background step of face restoration: the whole image at the output scale.

A background is any callable ``background(images, scale) -> images`` taking (B, 3, H, W)
float32 RGB in [0, 1] and returning (B, 3, H', W') at about ``scale`` times the size (the
pipeline takes the size it returns as the output size). Front ends pass the upscale
engine's model run here; ``None`` means :func:`resize_background`, a high-quality resize.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidParameterError

BackgroundFn = Callable[[Tensor, float], Tensor]
"""``background(images (B, 3, H, W) in [0, 1], scale) -> (B, 3, H', W') in [0, 1]``."""


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The output size for ``scale``: each side rounded half up, at least 1 pixel."""
    if not math.isfinite(scale) or scale <= 0:
        raise InvalidParameterError(f"The output scale must be a positive number, got {scale}.")
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bicubic resize of (B, C, H, W) to ``size`` = (H', W'), clamped to [0, 1].

    Downscaling uses a bicubic low-pass filter widened by the scale (as PIL and OpenCV's
    area-based resizes do), so nothing aliases; upscaling is plain bicubic (a = -0.75)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images.clone()
    out = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0).to(images.dtype)


def resize_background(images: Tensor, scale: float) -> Tensor:
    """The default background: the image resized by ``scale`` (see :func:`resize`)."""
    return resize(images, scaled_size(images.shape[-2], images.shape[-1], scale))
