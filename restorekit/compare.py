"""Comparing images: PSNR, colour shift (mean low-pass Lab difference), and pictures for
people (side by side, difference, split).

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


_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* (D65) of sRGB pixels: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) float32 with
    L in [0, 100] (the same formulas and constants as scikit-image's ``rgb2lab``)."""
    rgb = image.float().clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _XYZ_FROM_RGB.to(linear.device), linear)
    xyz = xyz / _D65_WHITE.to(linear.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass of (B, C, H, W), radius 3 sigma, edges replicated."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    c = image.shape[1]
    padded = F.pad(image.float(), (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(out, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def lowpass_lab_difference(result: torch.Tensor, reference: torch.Tensor, sigma: float = 3.0) -> float:
    """Colour shift: mean CIE76 difference (ΔE) between the Lab colours of both images,
    low-passed by a Gaussian of ``sigma`` reference pixels, so detail does not count, only
    casts and tone. ``result`` (B, 3, H, W) is area-resized to ``reference``'s size first;
    both in [0, 1]. About 1 is the threshold people notice side by side."""
    if tuple(result.shape[-2:]) != tuple(reference.shape[-2:]):
        result = F.interpolate(result.float(), size=reference.shape[-2:], mode="area")
    low_a = rgb_to_lab(gaussian_blur(result, sigma).clamp(0, 1))
    low_b = rgb_to_lab(gaussian_blur(reference, sigma).clamp(0, 1))
    return float(torch.linalg.vector_norm(low_a - low_b, dim=1).mean())


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
