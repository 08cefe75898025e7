"""Batched image operations of the degradation pipeline: filtering, sharpening, resizing, noise.

All functions take and return (B, C, H, W) float tensors in [0, 1] (contiguous or
channels_last) and keep their device and dtype. Per-image parameters are (B,) sequences or
tensors, so every image of a batch can have its own kernel, noise level and generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError

# --------------------------------------------------------------------------- padding


def reflect_indices(length: int, before: int, after: int, device: torch.device | None = None) -> torch.Tensor:
    """Source indices of a reflect-padded axis (mirror without repeating the edge).

    Works for any padding, also wider than the axis (the reflection repeats), which
    ``F.pad(mode="reflect")`` refuses.
    """
    positions = torch.arange(-before, length + after, device=device)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    positions = positions.remainder(period)
    return torch.where(positions >= length, period - positions, positions)


def reflect_pad(image: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad the last two axes by ``pad`` on every side (any image size)."""
    if pad == 0:
        return image
    height, width = image.shape[-2:]
    if pad < height and pad < width:
        return F.pad(image, (pad, pad, pad, pad), mode="reflect")
    rows = reflect_indices(height, pad, pad, image.device)
    cols = reflect_indices(width, pad, pad, image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


# --------------------------------------------------------------------------- filtering


def _trim_zero_border(kernels: torch.Tensor) -> torch.Tensor:
    """Crop the all-zero border that padding added to a stack of odd (N, k, k) kernels."""
    size = kernels.shape[-1]
    support = kernels.abs().amax(dim=0)
    nonzero_rows = torch.nonzero(support.amax(dim=1) > 0)
    nonzero_cols = torch.nonzero(support.amax(dim=0) > 0)
    if nonzero_rows.numel() == 0:
        return kernels
    centre = size // 2
    reach = int(
        max(
            (nonzero_rows - centre).abs().max().item(),
            (nonzero_cols - centre).abs().max().item(),
        )
    )
    return kernels[:, centre - reach : centre + reach + 1, centre - reach : centre + reach + 1]


_CHANNELS_LAST_MAX_KERNEL = 15
"""Depthwise convolutions with kernels up to this size run ~2x faster channels_last on CPU;
larger ones run slightly faster contiguous (measured with torch 2.14's oneDNN)."""


def filter2d(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image with its own kernel, with reflect padding (basicsr's ``filter2D``).

    Args:
        image: (B, C, H, W); any memory format (basicsr's version fails on channels_last).
        kernels: (B, k, k) one kernel per image, or (k, k) for all; k odd. Zero borders
            (from padding kernels to a common size) are cropped first, which leaves the
            result unchanged and saves work.

    Returns:
        (B, C, H, W) in the input's dtype.
    """
    if kernels.ndim == 2:
        kernels = kernels.expand(image.shape[0], *kernels.shape)
    batch, channels, height, width = image.shape
    if kernels.shape[0] != batch or kernels.shape[-1] % 2 != 1 or kernels.shape[-1] != kernels.shape[-2]:
        raise InvalidParameterError(
            f"filter2d needs one odd square kernel per image, got kernels {tuple(kernels.shape)} "
            f"for images {tuple(image.shape)}."
        )
    kernels = _trim_zero_border(kernels)
    size = kernels.shape[-1]
    padded = reflect_pad(image, size // 2)
    weight = kernels.to(device=image.device, dtype=image.dtype).repeat_interleave(channels, dim=0).unsqueeze(1)
    grouped = padded.reshape(1, batch * channels, height + size - 1, width + size - 1)
    if size <= _CHANNELS_LAST_MAX_KERNEL:
        grouped = grouped.contiguous(memory_format=torch.channels_last)
    out = F.conv2d(grouped, weight, groups=batch * channels)
    return out.reshape(batch, channels, height, width)


@functools.lru_cache(maxsize=16)
def _cached_band_matrix(length: int, taps: tuple[float, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    size = len(taps)
    pad = size // 2
    values = torch.tensor(taps, dtype=dtype, device=device)
    rows = torch.arange(length, device=device).unsqueeze(1)
    offsets = torch.arange(size, device=device).unsqueeze(0)
    sources = reflect_indices(length, pad, pad, torch.device(device))[rows + offsets]
    matrix = torch.zeros(length, length, dtype=dtype, device=device)
    matrix.index_put_((rows.expand_as(sources), sources), values.expand_as(sources), accumulate=True)
    return matrix


def _band_matrix(length: int, taps: torch.Tensor) -> torch.Tensor:
    """(length, length) matrix applying 1D ``taps`` along an axis with reflect padding folded
    in (cached: the same sizes recur for every image of a dataset)."""
    key = tuple(float(t) for t in taps.detach().cpu().tolist())
    return _cached_band_matrix(length, key, taps.dtype, str(taps.device))


_DENSE_LIMIT = 640
"""Axes up to this length are filtered with one dense band-matrix product (fastest there)."""
_TILE = 64
"""Longer axes are cut into tiles of this many output samples, each a small matrix product."""


def _filter_last_axis(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Apply 1D ``taps`` along the last axis with reflect padding, as matrix products."""
    length = image.shape[-1]
    if length <= _DENSE_LIMIT:
        return torch.matmul(image, _band_matrix(length, taps).T)
    size = taps.numel()
    pad = size // 2
    tiles = -(-length // _TILE)
    padded = image.index_select(-1, reflect_indices(length, pad, pad + tiles * _TILE - length, image.device))
    windows = padded.unfold(-1, _TILE + size - 1, _TILE)  # (..., tiles, TILE + size - 1)
    band = torch.zeros(_TILE, _TILE + size - 1, dtype=taps.dtype, device=taps.device)
    for row in range(_TILE):
        band[row, row : row + size] = taps
    out = torch.matmul(windows, band.T)  # (..., tiles, TILE)
    return out.flatten(-2)[..., :length]


def _filter_rows_axis(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Apply 1D ``taps`` along the height axis (-2) with reflect padding."""
    height = image.shape[-2]
    if height <= _DENSE_LIMIT:
        return torch.matmul(_band_matrix(height, taps), image)
    return _filter_last_axis(image.transpose(-1, -2), taps).transpose(-1, -2)


def separable_filter(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Filter with the separable kernel ``taps ⊗ taps`` and reflect padding.

    Equal (to float rounding) to :func:`filter2d` with ``torch.outer(taps, taps)``, at
    ``2k`` instead of ``k²`` multiply-adds per pixel, done as matrix products with the
    reflection folded into band matrices (they run at full BLAS speed, unlike depthwise
    convolutions on CPU). Returns a contiguous tensor.
    """
    taps = taps.to(device=image.device, dtype=image.dtype)
    out = _filter_last_axis(_filter_rows_axis(image, taps), taps)
    return out.contiguous()


def gaussian_taps(size: int, sigma: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1D Gaussian of odd ``size`` (OpenCV's ``getGaussianKernel`` for sigma > 0)."""
    if size < 1 or size % 2 != 1:
        raise InvalidParameterError(f"Gaussian kernel size must be a positive odd number, got {size}.")
    if sigma <= 0:
        raise InvalidParameterError(f"Gaussian sigma must be > 0, got {sigma}.")
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (taps / taps.sum()).to(dtype)


def usm_sharpen(
    image: torch.Tensor,
    *,
    sigma: float = 8.0,
    kernel_size: int = 51,
    weight: float = 0.5,
    threshold: float = 10.0,
) -> torch.Tensor:
    """Unsharp masking with a soft mask, as Real-ESRGAN sharpens its ground truth.

    ``blur = G * I``; ``sharp = clip(I + weight (I - blur))``; the mask is
    ``|I - blur| * 255 > threshold``, blurred by the same Gaussian; the result is
    ``mask * sharp + (1 - mask) * I``. Defaults are basicsr's ``USMSharp()`` (51 taps, sigma 8).
    The Gaussian is applied separably (see :func:`separable_filter`).
    """
    taps = gaussian_taps(kernel_size, sigma)
    residual = torch.sub(image, separable_filter(image, taps))
    mask = (residual.abs().mul_(255.0) > threshold).to(image.dtype)
    soft_mask = separable_filter(mask, taps)
    sharp = torch.add(image, residual, alpha=weight).clamp_(0.0, 1.0)
    return torch.lerp(image, sharp, soft_mask)  # soft_mask * sharp + (1 - soft_mask) * image


# --------------------------------------------------------------------------- resizing

Resize = Callable[[torch.Tensor, tuple[int, int], "float | None"], torch.Tensor]
"""``resize(image, (height, width), scale_factor)``; ``scale_factor`` is given when the size
came from one (Real-ESRGAN's first stage), which changes the sampling grid of torch's
bilinear/bicubic slightly, and is None when a size was asked for."""


def _torch_resize(mode: str) -> Resize:
    def resize(image: torch.Tensor, size: tuple[int, int], scale_factor: float | None) -> torch.Tensor:
        if scale_factor is not None and mode != "area":
            return F.interpolate(image, scale_factor=scale_factor, mode=mode)
        return F.interpolate(image, size=size, mode=mode)

    return resize


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def matlab_resize_matrix(in_length: int, out_length: int, scale: float | None = None, *, antialias: bool = True) -> torch.Tensor:
    """(out, in) float64 matrix of MATLAB's ``imresize`` bicubic along one axis.

    Output pixel ``i`` (1-based) samples input position ``u = i / s + (1 - 1/s) / 2``; when
    downscaling with antialiasing the kernel is stretched by ``1/s`` and scaled by ``s``;
    weights are normalised per row and indices beyond the edges mirror symmetrically
    (edge included), as MATLAB and basicsr's ``imresize`` do. ``scale`` defaults to
    ``out_length / in_length``.
    """
    scale = out_length / in_length if scale is None else scale
    width = 4.0
    stretch = scale < 1 and antialias
    if stretch:
        width /= scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    indices = left.unsqueeze(1) + torch.arange(taps, dtype=torch.float64).unsqueeze(0)
    distance = u.unsqueeze(1) - indices
    weights = scale * _cubic(distance * scale) if stretch else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    source = (indices - 1).long().remainder(2 * in_length)
    source = torch.where(source >= in_length, 2 * in_length - 1 - source, source)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, source, weights)
    return matrix


def matlab_resize(image: torch.Tensor, size: tuple[int, int], scale_factor: float | None = None, *, antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(image, size, 'bicubic')`` with antialiasing, batched: (B, C, H, W) -> (B, C, h, w).

    With ``scale_factor`` the weights use that scale (``imresize(image, scale)``), else
    ``h / H`` and ``w / W``. Matches basicsr's ``matlab_functions.imresize``.
    """
    height, width = image.shape[-2:]
    out_h, out_w = size
    scale_h = scale_w = scale_factor
    rows = matlab_resize_matrix(height, out_h, scale_h, antialias=antialias).to(image.device, image.dtype)
    cols = matlab_resize_matrix(width, out_w, scale_w, antialias=antialias).to(image.device, image.dtype)
    return torch.matmul(torch.matmul(rows, image), cols.T)


RESIZE_MODES: dict[str, Resize] = {
    "area": _torch_resize("area"),
    "bilinear": _torch_resize("bilinear"),
    "bicubic": _torch_resize("bicubic"),
    "nearest": _torch_resize("nearest-exact"),
    "matlab_bicubic": matlab_resize,
}
"""Resize modes by name. ``area``, ``bilinear`` and ``bicubic`` are torch's (no antialiasing,
as in Real-ESRGAN); ``matlab_bicubic`` is MATLAB's antialiased bicubic ``imresize``, the
standard for bicubic benchmark LR images."""


def resize(image: torch.Tensor, size: tuple[int, int], mode: str, scale_factor: float | None = None) -> torch.Tensor:
    """Resize a batch to ``size`` = (height, width) with a mode of :data:`RESIZE_MODES`."""
    try:
        function = RESIZE_MODES[mode]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown resize mode {mode!r}. Use one of: {', '.join(RESIZE_MODES)}."
        ) from None
    if size[0] < 1 or size[1] < 1:
        raise InvalidParameterError(
            f"Cannot resize a {image.shape[-1]}x{image.shape[-2]} image to {size[1]}x{size[0]}: "
            "the input is too small for this scale."
        )
    return function(image, size, scale_factor)


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class NoiseDraw:
    """One image's noise: its strength, whether it is gray, and the seed of its pixels."""

    strength: float
    gray: bool
    seed: int


def _generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) with torchvision's luma weights (0.2989, 0.587, 0.114)."""
    r, g, b = image.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def gaussian_noise(image: torch.Tensor, draws: Sequence[NoiseDraw]) -> torch.Tensor:
    """Add Gaussian noise, sigma on the 0-255 scale, per image; clip to [0, 1].

    A gray draw adds one field to all three channels (luminance noise), else each channel
    gets its own field (colour noise). Each image's field comes from its own seed.
    """
    _, channels, height, width = image.shape
    fields = []
    for draw in draws:
        generator = _generator(draw.seed, image.device)
        shape = (1 if draw.gray else channels, height, width)
        # drawn in float32 whatever the image dtype, so a seed gives the same field
        field = torch.randn(shape, generator=generator, device=image.device, dtype=torch.float32)
        fields.append(field.to(image.dtype).expand(channels, height, width) * (draw.strength / 255.0))
    return torch.clamp(image + torch.stack(fields), 0.0, 1.0)


def _poisson_field(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson noise of one (C, H, W) image quantised to 8 bits, at its own number of levels."""
    histogram = torch.bincount(torch.round(values * 255.0).long().flatten(), minlength=256)
    levels = int(torch.count_nonzero(histogram))  # distinct 8-bit values, as torch.unique counts
    levels = 2.0 ** math.ceil(math.log2(levels)) if levels > 1 else 1.0
    counts = torch.poisson((values * levels).float(), generator=generator).to(values.dtype)
    return counts / levels - values


def poisson_noise(image: torch.Tensor, draws: Sequence[NoiseDraw]) -> torch.Tensor:
    """Add Poisson (shot) noise per image, scaled by its strength; clip to [0, 1].

    As basicsr: the image (or its gray version) is rounded to 8 bits, its number of distinct
    values rounded up to a power of two sets the photon count, and the noise is
    ``(poisson(x * levels) / levels - x) * scale``. Gray draws use one field for all channels.
    """
    channels = image.shape[1]
    quantised = torch.clamp(torch.round(image * 255.0), 0.0, 255.0) / 255.0
    gray = None
    if any(draw.gray for draw in draws):
        gray = torch.clamp(torch.round(_rgb_to_gray(image) * 255.0), 0.0, 255.0) / 255.0
    fields = []
    for index, draw in enumerate(draws):
        generator = _generator(draw.seed, image.device)
        if draw.gray and gray is not None:
            field = _poisson_field(gray[index], generator).expand(channels, -1, -1)
        else:
            field = _poisson_field(quantised[index], generator)
        fields.append(field * draw.strength)
    return torch.clamp(image + torch.stack(fields), 0.0, 1.0)


NOISE_KINDS: dict[str, Callable[[torch.Tensor, Sequence[NoiseDraw]], torch.Tensor]] = {
    "gaussian": gaussian_noise,
    "poisson": poisson_noise,
}
"""Noise generators by name: ``(batch, draws) -> noisy batch``."""


def quantize(image: torch.Tensor, levels: int = 255) -> torch.Tensor:
    """Clamp to [0, 1] and round to ``levels`` steps (8-bit by default)."""
    return torch.clamp(torch.round(image * levels), 0, levels) / levels

