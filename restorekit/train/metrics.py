"""Validation metrics as the official training code reports them: PSNR and SSIM on the Y
channel (ITU-R BT.601, studio range 16..235) after the official crop border.

Inputs are (B, 3, H, W) float RGB tensors in [0, 1] (or (B, 1, H, W) already gray). By
default both images are first rounded to 8 bits, as basicsr's validation does
(``tensor2img`` before ``calculate_psnr``/``calculate_ssim`` with ``test_y_channel``), so
the numbers are comparable with published ones; ``quantize=False`` measures the floats.
Results are per image: a (B,) float64 tensor.
"""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from ..errors import InvalidParameterError

__all__ = ["psnr_y", "rgb_to_y", "ssim_y", "to_8bit"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 for [0, 1] RGB -> Y in [16, 235]


def to_8bit(img: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit levels (values stay float in [0, 255])."""
    return (img.detach().to(torch.float64).clamp(0, 1) * 255.0).round()


def rgb_to_y(img255: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 255] -> (B, 1, H, W) BT.601 luma Y in [16, 235] (float64).
    A one-channel input is returned as it is."""
    if img255.shape[1] == 1:
        return img255.to(torch.float64)
    weights = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=img255.device).view(1, 3, 1, 1)
    return (img255.to(torch.float64) / 255.0 * weights).sum(dim=1, keepdim=True) + 16.0


def _prepare(img: torch.Tensor, ref: torch.Tensor, crop_border: int, quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if img.shape != ref.shape:
        raise InvalidParameterError(f"Image shapes differ: {tuple(img.shape)} vs {tuple(ref.shape)}.")
    if img.dim() != 4 or img.shape[1] not in (1, 3):
        raise InvalidParameterError(f"Metrics take (B, 3 or 1, H, W) images, got {tuple(img.shape)}.")
    if crop_border < 0 or 2 * crop_border >= min(img.shape[-2:]):
        raise InvalidParameterError(
            f"crop_border {crop_border} leaves nothing of a {img.shape[-2]}x{img.shape[-1]} image."
        )
    if quantize:
        a, b = to_8bit(img), to_8bit(ref)
    else:
        a, b = img.detach().to(torch.float64) * 255.0, ref.detach().to(torch.float64) * 255.0
    if crop_border:
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    return rgb_to_y(a), rgb_to_y(b)


def psnr_y(img: torch.Tensor, ref: torch.Tensor, crop_border: int = 0, *, quantize: bool = True) -> torch.Tensor:
    """PSNR in dB on Y between ``img`` and the reference ``ref`` (both (B, C, H, W), [0, 1]).

    ``crop_border`` pixels are left out on each side (the official value is the scale, e.g.
    4). Identical images give ``inf``. Returns a (B,) float64 tensor.
    """
    a, b = _prepare(img, ref, crop_border, quantize)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)


@functools.lru_cache(maxsize=4)
def _gaussian_window(device: str) -> torch.Tensor:
    """The 11x11 Gaussian window, sigma 1.5, of the reference SSIM (float64)."""
    coords = torch.arange(11, dtype=torch.float64) - 5
    kernel = torch.exp(-(coords**2) / (2 * 1.5**2))
    kernel = kernel / kernel.sum()
    return torch.outer(kernel, kernel).view(1, 1, 11, 11).to(device)


def ssim_y(img: torch.Tensor, ref: torch.Tensor, crop_border: int = 0, *, quantize: bool = True) -> torch.Tensor:
    """SSIM on Y (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid region), as the
    MATLAB reference and basicsr compute it. Inputs as :func:`psnr_y`; returns (B,) float64."""
    a, b = _prepare(img, ref, crop_border, quantize)
    if min(a.shape[-2:]) < 11:
        raise InvalidParameterError(f"SSIM needs at least 11x11 pixels after the crop border, got {tuple(a.shape[-2:])}.")
    window = _gaussian_window(str(a.device))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window)

    mu1, mu2 = blur(a), blur(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = blur(a * a) - mu1_sq
    sigma2_sq = blur(b * b) - mu2_sq
    sigma12 = blur(a * b) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean(dim=(1, 2, 3))
