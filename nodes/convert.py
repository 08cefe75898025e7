"""Conversions between ComfyUI's tensors and the engine's, and the shared input specs.

ComfyUI: IMAGE is (B, H, W, C) float in [0, 1] with C = 3 (RGB) or 4 (RGBA from some
nodes); MASK is (B, H, W) float, where LoadImage's mask is ``1 - alpha`` (1 = transparent).
The engine: (B, C, H, W) float32 in [0, 1], alpha (B, 1, H, W) with 1 = opaque.
Nothing here modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from restorekit.errors import CancelledError, RestoreKitError

from . import comfy

CATEGORY = "RestoreKit"
"""Every node's category starts with this."""


class NodeInputError(ValueError):
    """A node input ComfyUI let through but the engine cannot use; the message names the
    problem and the fix (ComfyUI shows it on the node)."""


def image_to_pixels(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ComfyUI IMAGE (B, H, W, C) -> engine pixels (B, 3, H, W) and alpha (B, 1, H, W) or
    None (C = 4 carries alpha; C = 1 is gray and is expanded to RGB)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeInputError(f"Expected an IMAGE of shape [batch, height, width, 3 or 4], got {shape}.")
    chw = image.detach().to("cpu", torch.float32).permute(0, 3, 1, 2)
    alpha = chw[:, 3:4].contiguous() if chw.shape[1] == 4 else None
    rgb = chw[:, :3] if chw.shape[1] >= 3 else chw.expand(-1, 3, -1, -1)
    return rgb.clamp(0, 1).contiguous(), alpha


def pixels_to_image(pixels: torch.Tensor) -> torch.Tensor:
    """Engine (B, C, H, W) (C = 1 or 3) -> ComfyUI IMAGE (B, H, W, 3) float32 on the CPU."""
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels.detach().to("cpu", torch.float32).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def mask_to_alpha(mask: torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor | None:
    """A ComfyUI MASK (B, H, W) or (H, W) as LoadImage makes it (1 = transparent) -> engine
    alpha (batch, 1, height, width) with 1 = opaque, or None for no mask / LoadImage's
    64x64 "no alpha" placeholder / an all-opaque mask."""
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise NodeInputError(f"Expected a MASK of shape [batch, height, width], got {tuple(mask.shape)}.")
    if tuple(mask.shape[-2:]) != (height, width):
        if not bool((mask == 0).all()):
            raise NodeInputError(
                f"The mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is {width}x{height}; "
                "connect the mask that came with this image."
            )
        return None
    if bool((mask == 0).all()):
        return None
    if mask.shape[0] not in (1, batch):
        raise NodeInputError(f"The mask batch ({mask.shape[0]}) does not match the image batch ({batch}).")
    alpha = 1.0 - mask.detach().to("cpu", torch.float32).clamp(0, 1)
    return alpha[:, None].expand(batch, -1, -1, -1).contiguous()


def alpha_to_mask(alpha: torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor:
    """Engine alpha (B, 1, H, W) (1 = opaque) -> ComfyUI MASK (B, H, W) (1 = transparent);
    all zeros when there is no alpha."""
    if alpha is None:
        return torch.zeros(batch, height, width, dtype=torch.float32)
    return (1.0 - alpha[:, 0].to("cpu", torch.float32)).clamp(0, 1).contiguous()


def mask_from_engine(mask: torch.Tensor) -> torch.Tensor:
    """An engine mask (B, 1, H, W) -> ComfyUI MASK (B, H, W)."""
    return mask[:, 0].detach().to("cpu", torch.float32).clamp(0, 1).contiguous()


def engine_progress() -> comfy.NodeProgress:
    """ComfyUI's progress bar (or the runner's tqdm) as an engine progress callback."""
    return comfy.NodeProgress()


@contextmanager
def engine_call() -> Iterator[None]:
    """Run engine work the way a node should: ComfyUI's interrupt becomes its own
    interrupt exception, engine errors keep their message (they name the fix)."""
    with comfy.interruptible():
        try:
            yield
        except CancelledError:
            raise  # interruptible() turns it into ComfyUI's own interrupt
        except RestoreKitError as exc:
            raise NodeInputError(str(exc)) from exc

