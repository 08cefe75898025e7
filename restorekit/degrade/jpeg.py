"""Batched JPEG round trip in torch, with libjpeg's quality-factor semantics.

:func:`jpeg_roundtrip` encodes and decodes a batch in one pass, each image at its own
quality, and reproduces what a baseline libjpeg(-turbo) encoder followed by its decoder
(what Pillow and OpenCV use) does to the pixels:

- 8-bit input: the image is rounded to 8 bits first, as a codec receives it;
- JFIF RGB -> YCbCr with rounding to 8-bit samples;
- 4:2:0 chroma subsampling: 2x2 box average with libjpeg's alternating 1, 2 rounding bias,
  odd sizes completed by edge replication;
- blocks completed to 8x8 by edge replication;
- 8x8 DCT, quantisation with the IJG tables (ITU T.81 Annex K) scaled by the quality exactly
  as ``jpeg_set_quality`` does: ``scale = 5000 / q`` below 50, else ``200 - 2 q``; each entry
  ``(base * scale + 50) // 100`` clamped to 1..255; rounding half away from zero;
- dequantisation, inverse DCT, level shift, rounding and clamping to 8-bit samples;
- "fancy" (triangular) h2v2 chroma upsampling with libjpeg's +8 / +7 rounding;
- YCbCr -> RGB with libjpeg's fixed-point constants, rounded and clamped.

The transforms use a float DCT where libjpeg uses its integer ``islow`` one, so a few
coefficients on a rounding boundary can land in the neighbouring bin; the tests measure the
difference against Pillow. This is not differentiable (it rounds), which the degradation
pipeline does not need.

basicsr's DiffJPEG, which Real-ESRGAN's training uses, differs from a real codec: it takes
a continuous quality with unrounded, unclamped tables, pads with black instead of edge
replication, and upsamples chroma by pixel repetition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError

LUMA_QUANT_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
"""ITU T.81 Table K.1 (luminance), rows = vertical frequency."""

CHROMA_QUANT_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)
"""ITU T.81 Table K.2 (chrominance), rows = vertical frequency."""


def _fix(value: float) -> float:
    """libjpeg's 16-bit fixed-point rounding of a colour-conversion constant."""
    return round(value * 65536) / 65536


_RGB_TO_YCC = (
    (_fix(0.29900), _fix(0.58700), _fix(0.11400)),
    (-_fix(0.16874), -_fix(0.33126), _fix(0.50000)),
    (_fix(0.50000), -_fix(0.41869), -_fix(0.08131)),
)
_CR_TO_R = _fix(1.40200)
_CB_TO_G = _fix(0.34414)
_CR_TO_G = _fix(0.71414)
_CB_TO_B = _fix(1.77200)


def check_quality(quality: int | float) -> int:
    """``quality`` as an int in 1..100, or :class:`InvalidParameterError`."""
    if isinstance(quality, bool) or not float(quality).is_integer() or not 1 <= quality <= 100:
        raise InvalidParameterError(
            f"JPEG quality must be a whole number from 1 to 100, got {quality!r}."
        )
    return int(quality)


def quantization_tables(quality: torch.Tensor, base: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """IJG quality scaling of a base table: (B,) integer qualities -> (B, 8, 8) float tables."""
    q = quality.to(torch.float64).view(-1, 1, 1)
    scale = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q)
    table = torch.tensor(base, dtype=torch.float64, device=quality.device)
    return torch.clamp(torch.floor((table * scale + 50.0) / 100.0), 1.0, 255.0)


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D: ``D[u, x] = c(u)/2 cos((2x+1)uπ/16)``."""
    u = torch.arange(8, dtype=torch.float64).view(8, 1)
    x = torch.arange(8, dtype=torch.float64).view(1, 8)
    matrix = torch.cos((2 * x + 1) * u * math.pi / 16) / 2
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype=dtype, device=device)


def _dct_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(64, 1, 8, 8) conv filters: filter ``u*8+v`` holds ``D[u, y] D[v, x]``."""
    d = _dct_matrix(torch.float64, torch.device("cpu"))
    basis = torch.einsum("uy,vx->uvyx", d, d).reshape(64, 1, 8, 8)
    return basis.to(dtype=dtype, device=device)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _code_plane(plane: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Encode and decode 8-bit sample planes (N, 1, h, w) with per-plane (N, 8, 8) tables."""
    _, _, h, w = plane.shape
    padded = F.pad(plane, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
    basis = _dct_basis(plane.dtype, plane.device)
    coefficients = F.conv2d(padded - 128.0, basis, stride=8)  # (N, 64, h/8, w/8)
    step = tables.reshape(-1, 64, 1, 1).to(plane.dtype)
    coefficients = _round_half_away(coefficients / step) * step
    decoded = F.conv_transpose2d(coefficients, basis, stride=8) + 128.0
    decoded = torch.clamp(torch.floor(decoded + 0.5), 0.0, 255.0)
    return decoded[:, :, :h, :w]


def _downsample_h2v2(plane: torch.Tensor) -> torch.Tensor:
    """libjpeg's 2x2 chroma downsampling: ``(sum + bias) >> 2`` with bias 1, 2, 1, 2... per column."""
    _, _, h, w = plane.shape
    plane = F.pad(plane, (0, w % 2, 0, h % 2), mode="replicate")
    total = F.avg_pool2d(plane, 2, stride=2) * 4.0
    bias = 1.0 + (torch.arange(total.shape[-1], device=plane.device) % 2).to(plane.dtype)
    return torch.floor((total + bias) / 4.0)


def _upsample_h2v2_fancy(plane: torch.Tensor) -> torch.Tensor:
    """libjpeg's triangular ("fancy") 2x chroma upsampling with its integer rounding."""
    n, c, h, w = plane.shape
    rows = F.pad(plane, (0, 0, 1, 1), mode="replicate")
    above = 3.0 * plane + rows[:, :, :-2]  # output rows 2i use the row above
    below = 3.0 * plane + rows[:, :, 2:]  # output rows 2i+1 use the row below
    colsum = torch.stack((above, below), dim=3).reshape(n, c, 2 * h, w)
    cols = F.pad(colsum, (1, 1, 0, 0), mode="replicate")
    left = torch.floor((3.0 * colsum + cols[..., :-2] + 8.0) / 16.0)
    right = torch.floor((3.0 * colsum + cols[..., 2:] + 7.0) / 16.0)
    return torch.stack((left, right), dim=-1).reshape(n, c, 2 * h, 2 * w)


def _rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    matrix = torch.tensor(_RGB_TO_YCC, dtype=rgb.dtype, device=rgb.device)
    ycc = torch.einsum("ij,bjhw->bihw", matrix, rgb)
    offset = torch.tensor((0.0, 128.0, 128.0), dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return torch.floor(ycc + offset + 0.5)


def _ycbcr_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    cb = cb - 128.0
    cr = cr - 128.0
    r = y + torch.floor(_CR_TO_R * cr + 0.5)
    g = y + torch.floor(-_CB_TO_G * cb - _CR_TO_G * cr + 0.5)
    b = y + torch.floor(_CB_TO_B * cb + 0.5)
    return torch.clamp(torch.cat((r, g, b), dim=1), 0.0, 255.0)


def jpeg_roundtrip(image: torch.Tensor, quality: torch.Tensor | int | list[int]) -> torch.Tensor:
    """Compress and decompress a batch as baseline 4:2:0 JPEG, each image at its own quality.

    Args:
        image: (B, 3, H, W) RGB float in [0, 1] (values outside are clamped).
        quality: an int in 1..100 for the whole batch, or one per image ((B,) tensor or list).

    Returns:
        (B, 3, H, W) float in [0, 1] on 8-bit levels (multiples of 1/255), same dtype/device.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise InvalidParameterError(
            f"JPEG needs an RGB batch of shape (B, 3, H, W), got {tuple(image.shape)}."
        )
    batch, _, height, width = image.shape
    if isinstance(quality, torch.Tensor):
        qualities = [check_quality(float(q)) for q in quality.flatten().tolist()]
    elif isinstance(quality, (list, tuple)):
        qualities = [check_quality(q) for q in quality]
    else:
        qualities = [check_quality(quality)] * batch
    if len(qualities) != batch:
        raise InvalidParameterError(f"Got {len(qualities)} JPEG qualities for {batch} images.")
    dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    q = torch.tensor(qualities, dtype=torch.float64, device=image.device)
    luma_tables = quantization_tables(q, LUMA_QUANT_TABLE)
    chroma_tables = quantization_tables(q, CHROMA_QUANT_TABLE)

    samples = torch.floor(torch.clamp(image.to(dtype), 0.0, 1.0) * 255.0 + 0.5)
    ycc = _rgb_to_ycbcr(samples)
    luma = _code_plane(ycc[:, :1], luma_tables)
    chroma = _downsample_h2v2(ycc[:, 1:])
    ch, cw = chroma.shape[-2:]
    chroma = _code_plane(chroma.reshape(batch * 2, 1, ch, cw), chroma_tables.repeat_interleave(2, dim=0))
    chroma = _upsample_h2v2_fancy(chroma.reshape(batch, 2, ch, cw))[:, :, :height, :width]
    rgb = _ycbcr_to_rgb(luma, chroma[:, :1], chroma[:, 1:])
    return (rgb / 255.0).to(image.dtype)
