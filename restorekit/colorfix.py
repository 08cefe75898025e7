"""Colour correction: make a result's colours follow a reference's low frequencies.

Restoration networks shift colours (a warmer face, a paler sky): GAN upscalers and face
models were trained on data whose colour statistics differ from the photo at hand. The two
corrections StableSR introduced and chaiNNer, ComfyUI node packs and A1111 extensions offer:

- ``wavelet``: the result's high frequencies on the reference's low frequencies. Both are
  split by the same five-level à-trous wavelet (a 3x3 binomial blur dilated 1, 2, 4, 8, 16
  times), so the result keeps all of its detail above about 32 px while everything coarser
  (colour casts, shading, overall tone) is the reference's. The usual choice.
- ``adain``: adaptive instance normalisation: each channel's mean and standard deviation
  are set to the reference's (a global colour transfer; keeps the result's local contrast).

The reference is resized to the result's size first (antialiased bicubic), so an input can
correct its own upscaled result directly. Tensors are float32 (B, C, H, W) in [0, 1] with
C = 3 (RGB) or 1; results are clamped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InvalidParameterError

NONE = "none"
WAVELET_LEVELS = 5
"""À-trous levels of the wavelet split (StableSR's value): the low band is what a 3x3
binomial blur dilated 1, 2, 4, 8, 16 leaves, coarser than about 32 px."""


def _binomial_blur(image: Tensor, dilation: int) -> Tensor:
    """One 3x3 binomial ([1, 2, 1] / 4 squared) blur with ``dilation``, edges replicated."""
    channels = image.shape[1]
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device) / 4.0
    kernel2d = (kernel[:, None] * kernel[None, :]).expand(channels, 1, 3, 3).contiguous()
    pad = min(dilation, image.shape[-1] - 1, image.shape[-2] - 1)
    if pad < 1:
        return image
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(padded, kernel2d, groups=channels, dilation=pad)


def wavelet_split(image: Tensor, levels: int = WAVELET_LEVELS) -> tuple[Tensor, Tensor]:
    """``(high, low)`` with ``high + low == image``: ``low`` is the image blurred by the
    à-trous cascade (dilations 1, 2, ..., 2**(levels-1)), ``high`` the rest."""
    low = image
    for level in range(levels):
        low = _binomial_blur(low, 2**level)
    return image - low, low


def wavelet_color_fix(result: Tensor, reference: Tensor) -> Tensor:
    """``result``'s high frequencies on ``reference``'s low frequencies (same size)."""
    high, _ = wavelet_split(result)
    _, low = wavelet_split(reference)
    return high + low


def adain_color_fix(result: Tensor, reference: Tensor, eps: float = 1e-5) -> Tensor:
    """Each channel of ``result`` with the mean and standard deviation of ``reference``'s."""
    flat_r = result.flatten(2)
    flat_s = reference.flatten(2)
    mean_r, std_r = flat_r.mean(-1, keepdim=True), flat_r.std(-1, keepdim=True) + eps
    mean_s, std_s = flat_s.mean(-1, keepdim=True), flat_s.std(-1, keepdim=True)
    return ((flat_r - mean_r) / std_r * std_s + mean_s).view_as(result)


COLOR_FIXES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "wavelet": wavelet_color_fix,
    "adain": adain_color_fix,
}
"""Method name -> ``fix(result, reference_at_result_size) -> corrected``."""

METHODS = (NONE, *COLOR_FIXES)


def parse_color_fix(method: str | None) -> str:
    """``none`` (also None, ``off``, ``""``), ``wavelet`` or ``adain``; raises a clear error otherwise."""
    text = NONE if method is None else str(method).strip().lower()
    if text in ("", "off", "false", "no"):
        text = NONE
    if text not in METHODS:
        raise InvalidParameterError(f"Unknown colour fix {method!r}; choose one of {', '.join(METHODS)}.")
    return text


def _reference_at(reference: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(reference.shape[-2:]) == size:
        return reference
    shrinking = size[0] < reference.shape[-2] or size[1] < reference.shape[-1]
    return F.interpolate(reference, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


def color_fix(result: Tensor, reference: Tensor, method: str | None = "wavelet") -> Tensor:
    """Correct ``result``'s colours towards ``reference``.

    Args:
        result: (B, C, H, W) float in [0, 1], the restored image.
        reference: (B, C, h, w) float in [0, 1], the image whose colours are right (the
            input); any size, resized to (H, W). A batch of one corrects every result.
        method: ``wavelet``, ``adain`` or ``none`` (returns ``result`` itself).

    Returns:
        (B, C, H, W) float32 in [0, 1].
    """
    name = parse_color_fix(method)
    if name == NONE:
        return result
    if result.ndim != 4 or reference.ndim != 4 or result.shape[1] != reference.shape[1]:
        raise InvalidParameterError(
            f"Colour fix needs two (B, C, H, W) images with the same channels, got {tuple(result.shape)} and {tuple(reference.shape)}."
        )
    if reference.shape[0] not in (1, result.shape[0]):
        raise InvalidParameterError(f"Colour fix got {reference.shape[0]} references for {result.shape[0]} images.")
    ref = _reference_at(reference.float().to(result.device), (result.shape[-2], result.shape[-1]))
    ref = ref.expand(result.shape[0], -1, -1, -1)
    return COLOR_FIXES[name](result.float(), ref).clamp_(0.0, 1.0)


__all__ = ["COLOR_FIXES", "METHODS", "adain_color_fix", "color_fix", "parse_color_fix", "wavelet_color_fix", "wavelet_split"]
