"""Alpha handling for upscaling without fringes.

The colour of a fully transparent pixel is undefined, and images often keep garbage there
(black, or whatever colour was painted before it was erased). A network sees that colour
through its receptive field, so upscaling straight RGBA bleeds it into the visible edge: the
dark or green fringes of the reference implementation. Premultiplying instead darkens the
edge, and dividing the upscaled result by an upscaled alpha is unstable where alpha is small
(GAN models do not commute with multiplication by alpha).

RestoreKit fills the colour under fully transparent pixels with a smooth extension of the
visible colour before the network sees it (*push-pull*: an alpha-weighted, i.e.
premultiplied, image pyramid is reduced and then expanded back into the holes). Visible and
partly transparent pixels keep their colour exactly, so an image with no fully transparent
pixel runs exactly like its RGB part.

The alpha channel itself is then either run through the model as a gray image (``model``,
sharp edges, twice the compute) or resized with the high-quality resampler (``resize``,
nearly free).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError

ALPHA_MODES: tuple[str, ...] = ("model", "resize")
"""``model``: upscale alpha with the network; ``resize``: Lanczos-resize it."""


def check_alpha_mode(mode: str) -> str:
    name = str(mode).strip().lower()
    if name not in ALPHA_MODES:
        raise InvalidParameterError(
            f"Unknown alpha mode {mode!r}. Use 'model' (upscale alpha with the network) or "
            "'resize' (fast resize)."
        )
    return name


def is_opaque(alpha: torch.Tensor | None) -> bool:
    """True when there is no alpha or every pixel is fully opaque."""
    return alpha is None or bool((alpha >= 1.0).all())


def fill_transparent(pixels: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Replace the colour of fully transparent pixels by a smooth extension of the visible colour.

    Args:
        pixels: (B, 3, H, W) float RGB in [0, 1] (straight, not premultiplied).
        alpha: (B, 1, H, W) float in [0, 1].

    Returns:
        A new (B, 3, H, W) tensor; pixels with ``alpha > 0`` are unchanged. An image with no
        visible pixel at all is returned unchanged.
    """
    holes = alpha <= 0
    if not bool(holes.any()):
        return pixels
    premultiplied = [pixels * alpha]
    weights = [alpha.clone()]
    # push: halve until one pixel; the 2x2 sums ignore out-of-range cells (ceil_mode)
    while premultiplied[-1].shape[-1] > 1 or premultiplied[-1].shape[-2] > 1:
        premultiplied.append(F.avg_pool2d(premultiplied[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    # pull: colour where a level has weight, else the coarser level's colour, upsampled
    colour = premultiplied[-1] / weights[-1].clamp(min=1e-12)
    for level in range(len(premultiplied) - 2, -1, -1):
        size = premultiplied[level].shape[-2:]
        coarse = F.interpolate(colour, size=size, mode="bilinear", align_corners=False)
        w = weights[level]
        own = premultiplied[level] / w.clamp(min=1e-12)
        colour = torch.where(w > 0, own, coarse)
    result = torch.where(holes, colour, pixels)
    if not bool((alpha > 0).any(dim=(1, 2, 3)).all()):  # images with nothing visible
        empty = ~(alpha > 0).flatten(1).any(dim=1)
        result[empty] = pixels[empty]
    return result.clamp_(0.0, 1.0)
