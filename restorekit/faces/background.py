"""The background step of face restoration: the whole image at the output scale.

A background is any callable ``background(images, scale) -> images`` taking (B, 3, H, W)
float32 RGB in [0, 1] and returning (B, 3, H', W') at about ``scale`` times the size (the
pipeline takes the size it returns as the output size). Front ends pass the upscale
engine's model run here; ``None`` means :func:`resize_background`, a high-quality resize.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
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


def model_background(
    model: Any,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> BackgroundFn:
    """A background that runs an upscale model over the whole image, then resizes its
    result to the requested scale.

    This is the minimal whole-image path used until the tiled upscale engine
    (``restorekit.upscale``) is wired in by the front ends; it needs memory for the whole
    image at the model's scale.

    Args:
        model: a registry name, a model file, or a spandrel upscale descriptor.
    """
    from ..device import plan_for_model
    from ..errors import ModelIncompatibleError
    from ..models import load_model, prepared_network

    descriptor = load_model(model, purpose="upscale") if isinstance(model, str) else model
    if getattr(descriptor, "purpose", None) == "FaceSR":
        raise ModelIncompatibleError(
            f"{descriptor.architecture.name} is a face restoration model; use it as the face model, "
            "and an upscale model (or none) for the background."
        )
    plan = plan_for_model(descriptor, device, precision)
    network = prepared_network(descriptor.model, plan)
    requirements = descriptor.size_requirements

    def run(images: Tensor, scale: float) -> Tensor:
        _, _, height, width = images.shape
        pad_w, pad_h = requirements.get_padding(width, height)
        x = images.float()
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_h < height and pad_w < width else "replicate")
        with torch.inference_mode():
            y = network(plan.prepare_input(x)).float().to(images.device)
        y = y[..., : height * descriptor.scale, : width * descriptor.scale].clamp(0.0, 1.0)
        return resize(y, scaled_size(height, width, scale))

    return run
