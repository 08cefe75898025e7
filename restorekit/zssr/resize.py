"""Resizing for ZSSR: antialiased bicubic, and downscaling through a user-given blur kernel.

Geometry is pixel-centre aligned everywhere (``align_corners=False``): low-resolution pixel
``i`` of a downscale by ``s`` sits at high-resolution coordinate ``(i + 0.5) * s - 0.5``.
Bicubic uses PyTorch's antialiased kernel (Keys, a = -0.5), which equals Pillow's BICUBIC and
MATLAB's ``imresize`` in both directions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError

MAX_KERNEL_SIDE = 64
"""The largest blur kernel side accepted."""

Size = tuple[int, int]
Downscale = Callable[[torch.Tensor, Size], torch.Tensor]
"""``downscale(batch (B, C, H, W), (h, w)) -> (B, C, h, w)``."""


def resize_bicubic(batch: torch.Tensor, size: Size) -> torch.Tensor:
    """Antialiased bicubic resize of a (B, C, H, W) float tensor to ``size = (h, w)``.

    Computed in float32 whatever the input dtype (and returned in the input dtype); the
    output is not clamped (bicubic overshoots slightly at edges).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(batch.shape[-2:]) == size:
        return batch
    dtype = batch.dtype
    result = F.interpolate(
        batch.float(), size=size, mode="bicubic", align_corners=False, antialias=True
    )
    return result.to(dtype)


# --------------------------------------------------------------------------- blur kernels


def normalize_kernel(kernel: object) -> np.ndarray:
    """Check a 2-D blur kernel and return it as float64 summing to 1.

    Raises :class:`InvalidParameterError` for anything that is not a finite 2-D array of at
    most :data:`MAX_KERNEL_SIDE` per side with a positive sum.
    """
    if isinstance(kernel, torch.Tensor):
        kernel = kernel.detach().cpu().double().numpy()
    try:
        array = np.asarray(kernel, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The blur kernel must be a 2-D array of numbers ({exc})."
        ) from exc
    if array.ndim > 2:  # (1, 1, kh, kw) and the like
        array = np.squeeze(array)
    if array.ndim != 2 or min(array.shape) < 1:
        raise InvalidParameterError(
            f"The blur kernel must be a 2-D array, got shape {np.shape(kernel)}."
        )
    if max(array.shape) > MAX_KERNEL_SIDE:
        raise InvalidParameterError(
            f"The blur kernel is {array.shape[1]}x{array.shape[0]}; at most "
            f"{MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE} is supported. Crop its near-zero border."
        )
    if not np.all(np.isfinite(array)):
        raise InvalidParameterError("The blur kernel contains NaN or infinite values.")
    total = float(array.sum())
    if not total > 1e-8:
        raise InvalidParameterError(
            f"The blur kernel must have a positive sum (it is normalized to 1), got {total:g}."
        )
    return array / total


def opencv_cubic_x2_kernel() -> np.ndarray:
    """(4, 4) the exact x2 kernel of OpenCV's ``cv2.resize(..., INTER_CUBIC)`` downscale:
    each output pixel is the cubic (a = -0.75) interpolated half a pixel from its 4 nearest
    source pixels per axis, with no antialiasing. Through :func:`kernel_downscaler` it
    reproduces ``cv2.resize`` to about 146 dB; Gaussian fits describe such aliased images
    only loosely."""
    taps = np.array([-0.09375, 0.59375, 0.59375, -0.09375])
    return np.outer(taps, taps)


def area_x2_kernel() -> np.ndarray:
    """(2, 2) the exact x2 kernel of an area (box) downscale: each output pixel is the mean of
    its 2x2 source pixels. At x2 this is what ``cv2.resize`` does with ``INTER_AREA`` and with
    its default ``INTER_LINEAR`` (which samples half-way between two pixels), and Pillow's
    ``Image.BOX``."""
    return np.full((2, 2), 0.25)


NAMED_KERNELS: dict[str, Callable[[], np.ndarray]] = {"area": area_x2_kernel, "opencv-cubic": opencv_cubic_x2_kernel}
"""Kernels of common downscalers, by the name the CLI, node and app accept."""


def load_kernel(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2-D blur kernel from ``.npy``, ``.txt``/``.csv`` (numbers) or ``.mat``, or give
    a named one (:data:`NAMED_KERNELS`, e.g. ``opencv-cubic``).

    A ``.mat`` file (as written by KernelGAN) needs SciPy; its ``Kernel`` variable is used,
    or its only 2-D array. The kernel is normalized to sum 1.
    """
    named = NAMED_KERNELS.get(str(path).strip().lower())
    if named is not None:
        return normalize_kernel(named())
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError(f"Blur kernel file {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".txt", ".csv", ".tsv"):
            text = path.read_text(encoding="utf-8").replace(",", " ").replace(";", " ")
            array = np.array(
                [[float(v) for v in line.split()] for line in text.splitlines() if line.strip()]
            )
        elif suffix == ".mat":
            array = _load_mat_kernel(path)
        else:
            raise InvalidParameterError(
                f"Unknown blur kernel format {path.name!r}: use .npy, .txt/.csv or .mat."
            )
    except InvalidParameterError:
        raise
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(f"Cannot read the blur kernel {path}: {exc}.") from exc
    return normalize_kernel(array)


def _load_mat_kernel(path: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy comes with scikit-image
        raise InvalidParameterError(
            f"Reading {path.name} needs SciPy; save the kernel as .npy or .txt instead."
        ) from exc
    variables = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    if "Kernel" in variables:
        return np.asarray(variables["Kernel"], dtype=np.float64)
    arrays = [np.asarray(v) for v in variables.values() if np.ndim(v) == 2]
    if len(arrays) != 1:
        raise InvalidParameterError(
            f"{path.name} has no 'Kernel' variable and {len(arrays)} 2-D arrays; store the "
            "kernel as 'Kernel'."
        )
    return arrays[0].astype(np.float64)


def _shift_fraction(kernel: np.ndarray, fraction: float, axis: int) -> np.ndarray:
    """Move ``kernel`` by ``fraction`` (0 <= fraction < 1) samples along ``axis`` (linear)."""
    if fraction < 1e-9:
        return kernel
    pad = [(0, 0), (0, 0)]
    pad[axis] = (0, 1)
    padded = np.pad(kernel, pad)
    return (1.0 - fraction) * padded + fraction * np.roll(padded, 1, axis=axis)


def kernel_downscaler(kernel: object, factor: int) -> Downscale:
    """A downscale by the integer ``factor`` through ``kernel`` (blur, then subsample).

    The kernel's centre of mass is placed at each low-resolution pixel's centre, so a
    symmetric kernel gives no shift (the convention of KernelGAN and the ZSSR paper).
    Borders are replicated. The returned function maps (B, C, H, W) to the requested
    ``(h, w)``, which must be ``(H // factor, W // factor)``.
    """
    if int(factor) != factor or factor < 1:
        raise InvalidParameterError(
            f"A blur kernel can only downscale by an integer factor, got x{factor:g}."
        )
    factor = int(factor)
    array = normalize_kernel(kernel)
    ys, xs = np.indices(array.shape)
    centre = ((array * ys).sum(), (array * xs).sum())
    # Low-res pixel i reads high-res positions i*f + (f-1)/2 + (k - centre); split the offset
    # into an integer start and a fractional shift folded into the kernel.
    offsets: list[int] = []
    for axis, com in enumerate(centre):
        delta = (factor - 1) / 2.0 - com
        whole = math.floor(delta + 1e-9)
        array = _shift_fraction(array, delta - whole, axis)
        offsets.append(whole)
    weight = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    kh, kw = weight.shape
    oy, ox = offsets

    def downscale(batch: torch.Tensor, size: Size) -> torch.Tensor:
        h, w = int(size[0]), int(size[1])
        H, W = batch.shape[-2:]
        if (h, w) != (H // factor, W // factor):
            raise InvalidParameterError(
                f"A x{factor} kernel downscale of {W}x{H} gives {W // factor}x{H // factor}, "
                f"not {w}x{h}."
            )
        channels = batch.shape[1]
        # Indices read: rows oy .. (h-1)*f + oy + kh - 1, likewise for columns.
        top, left = max(0, -oy), max(0, -ox)
        bottom = max(0, (h - 1) * factor + oy + kh - H)
        right = max(0, (w - 1) * factor + ox + kw - W)
        source = batch.float()
        if top or bottom or left or right:
            source = F.pad(source, (left, right, top, bottom), mode="replicate")
        y0, x0 = oy + top, ox + left
        source = source[..., y0 : y0 + (h - 1) * factor + kh, x0 : x0 + (w - 1) * factor + kw]
        filt = weight.to(source.device).expand(channels, 1, kh, kw)
        result = F.conv2d(source, filt, stride=factor, groups=channels)
        return result.to(batch.dtype)

    return downscale


def make_downscaler(kernel: object | None, factor: float) -> Downscale:
    """Bicubic (``kernel=None``) or kernel downscaling for one stage of factor ``factor``."""
    if kernel is None:
        return resize_bicubic
    rounded = round(factor)
    if abs(factor - rounded) > 1e-6:
        raise InvalidParameterError(
            f"A blur kernel needs integer stage factors, but this stage is x{factor:.4g}. "
            "Choose a scale that is an integer power of an integer step (x2, x3, x4...), "
            "or set max_stage_scale to the kernel's factor."
        )
    return kernel_downscaler(kernel, int(rounded))
