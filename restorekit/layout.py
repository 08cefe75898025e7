"""The engine's image layout, stated once, and the one check of it.

Inside the engine an image batch is a torch tensor of shape (B, C, H, W): B images, C = 3
(RGB) or 1 (gray) channels, float32 in [0, 1] (channels_last memory is fine). Alpha travels
beside it as a (B, 1, H, W) tensor, or None. ComfyUI's (B, H, W, C) IMAGE and (B, H, W) MASK
are converted in ``nodes/`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import InvalidParameterError, RestoreKitError

IMAGE_CHANNELS: tuple[int, ...] = (1, 3)
"""Channel counts of an engine image: gray or RGB (alpha travels separately)."""


def _channels_text(channels: Sequence[int] | None) -> str:
    if channels is None:
        return "C"
    return " or ".join(str(c) for c in channels)


def describe_layout(channels: Sequence[int] | None = IMAGE_CHANNELS, batch: int | None = None) -> str:
    """``(B, 1 or 3, H, W)``-style text for messages."""
    return f"({'B' if batch is None else batch}, {_channels_text(channels)}, H, W)"


def check_image(
    tensor: Any,
    *,
    what: str = "The image",
    channels: Sequence[int] | None = IMAGE_CHANNELS,
    batch: int | None = None,
    error: type[RestoreKitError] = InvalidParameterError,
    hint: str = "",
) -> torch.Tensor:
    """``tensor`` itself when it is a (B, C, H, W) image batch as the engine expects.

    Args:
        what: how the message names the tensor ("Face detection takes" reads as
            ``what="Face detection's input"``...).
        channels: the allowed channel counts (None: any).
        batch: the required batch size (None: any, but at least 1).
        error: the exception class to raise (an engine error).
        hint: a sentence appended to the message (how to fix it).

    Raises:
        ``error``: not a tensor, not 4-D, an empty batch, or a channel count or batch size
            other than allowed; the message shows the expected and the actual shape.
    """
    shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    ok = (
        isinstance(tensor, torch.Tensor)
        and tensor.ndim == 4
        and tensor.shape[0] >= 1
        and (channels is None or tensor.shape[1] in channels)
        and (batch is None or tensor.shape[0] == batch)
    )
    if not ok:
        message = f"{what} must be a tensor of shape {describe_layout(channels, batch)} in [0, 1], got {shape}."
        raise error(f"{message} {hint}".strip())
    return tensor


def check_alpha(alpha: Any, image: torch.Tensor, *, what: str = "The alpha") -> torch.Tensor | None:
    """``alpha`` when it is None or a (B, 1, H, W) tensor matching ``image``'s batch and size."""
    if alpha is None:
        return None
    check_image(alpha, what=what, channels=(1,))
    if alpha.shape[0] != image.shape[0] or alpha.shape[-2:] != image.shape[-2:]:
        raise InvalidParameterError(
            f"{what} must match the image: ({image.shape[0]}, 1, {image.shape[-2]}, {image.shape[-1]}), "
            f"got {tuple(alpha.shape)}."
        )
    return alpha
