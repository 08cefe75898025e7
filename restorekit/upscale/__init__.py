"""Upscaling with any spandrel image model: seamless tiling, alpha, 16-bit, any scale.

Typical use::

    from restorekit.upscale import upscale_image, Upscaler
    from restorekit.imageio import read_image, write_image

    image = read_image("photo.png")
    write_image(upscale_image("RealESRGAN_x4plus", image, outscale=2.5), "photo_x2.5.png")

    upscaler = Upscaler("realesr-animevideov3", precision="auto")   # reuse across frames
    result = upscaler.upscale(frames)            # (B, 3, H, W) float32 0..1 -> UpscaleResult

Modules: :mod:`.engine` (public API and step planning), :mod:`.tiling` (windows, blending,
OOM recovery), :mod:`.network` (running the network), :mod:`.alpha`, :mod:`.resize`.
"""

from __future__ import annotations

from .alpha import ALPHA_MODES, fill_transparent
from .engine import (
    BLEND_OVERLAP,
    DEFAULT_PRE_PAD,
    PRE_PAD,
    Upscaler,
    UpscaleResult,
    default_overlap,
    parse_tile,
    plan_steps,
    target_size,
    upscale_image,
    upscale_tensor,
)
from .network import ModelTraits, NetworkRunner, model_traits
from .resize import resize
from .tiling import LAYOUTS, Tiler, plan_tiles

__all__ = [
    "ALPHA_MODES",
    "BLEND_OVERLAP",
    "DEFAULT_PRE_PAD",
    "LAYOUTS",
    "PRE_PAD",
    "ModelTraits",
    "NetworkRunner",
    "Tiler",
    "UpscaleResult",
    "Upscaler",
    "default_overlap",
    "fill_transparent",
    "model_traits",
    "parse_tile",
    "plan_steps",
    "plan_tiles",
    "resize",
    "target_size",
    "upscale_image",
    "upscale_tensor",
]
