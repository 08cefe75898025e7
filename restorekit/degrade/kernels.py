"""Blur and sinc kernels of Real-ESRGAN's degradation model, generated in torch.

Every kernel family is an entry of :data:`KERNEL_FAMILIES`: a profile applied to the
quadratic form ``q = [x y] Σ⁻¹ [x y]ᵀ`` on a centred integer grid, then normalised to sum 1.

- ``iso`` / ``aniso``: Gaussian, ``exp(-q / 2)``;
- ``generalized_iso`` / ``generalized_aniso``: generalized Gaussian, ``exp(-q^β / 2)``;
- ``plateau_iso`` / ``plateau_aniso``: plateau, ``1 / (1 + q^β)``.

``Σ = R(θ) diag(σx², σy²) R(θ)ᵀ``; isotropic families use ``σy = σx`` and ``θ = 0``. The grid
follows basicsr's ``mesh_grid``: x runs along columns, y along rows. :func:`sinc_kernel` is the
circular low-pass filter ``ω_c J₁(ω_c r) / (2π r)`` (value ``ω_c² / 4π`` at the centre),
normalised to sum 1.

Kernels are built in float64 (the same precision as basicsr's numpy code) and are
``(size, size)`` tensors, zero-padded to ``pad_to`` when asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError

Profile = Callable[[torch.Tensor, float], torch.Tensor]
"""``profile(q, beta) -> weights`` for the quadratic form ``q`` (>= 0)."""


def _gaussian(q: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.exp(-0.5 * q)


def _generalized_gaussian(q: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.exp(-0.5 * torch.pow(q, beta))


def _plateau(q: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.reciprocal(torch.pow(q, beta) + 1.0)


@dataclass(frozen=True)
class KernelFamily:
    """One blur-kernel type.

    Attributes:
        name: the name used in configs and parameter logs (basicsr's ``kernel_list`` names).
        isotropic: True when only ``sigma_x`` is used (``sigma_y = sigma_x``, no rotation).
        profile: the radial profile applied to the quadratic form.
        beta: which shape-parameter range the family samples ``beta`` from: ``"betag"``
            (generalized Gaussian), ``"betap"`` (plateau) or None (plain Gaussian).
    """

    name: str
    isotropic: bool
    profile: Profile
    beta: str | None


KERNEL_FAMILIES: dict[str, KernelFamily] = {
    family.name: family
    for family in (
        KernelFamily("iso", True, _gaussian, None),
        KernelFamily("aniso", False, _gaussian, None),
        KernelFamily("generalized_iso", True, _generalized_gaussian, "betag"),
        KernelFamily("generalized_aniso", False, _generalized_gaussian, "betag"),
        KernelFamily("plateau_iso", True, _plateau, "betap"),
        KernelFamily("plateau_aniso", False, _plateau, "betap"),
    )
}
"""Blur-kernel families by name, in the order of Real-ESRGAN's ``kernel_list``."""

SINC = "sinc"
"""The kernel name recorded for circular low-pass (sinc) kernels."""


def kernel_family(name: str) -> KernelFamily:
    """The :class:`KernelFamily` called ``name``, or a clear error listing the known ones."""
    try:
        return KERNEL_FAMILIES[name]
    except KeyError:
        known = ", ".join(KERNEL_FAMILIES)
        raise InvalidParameterError(
            f"Unknown blur kernel type {name!r}. Use one of: {known}."
        ) from None


def _check_size(size: int) -> None:
    if size < 1 or size % 2 != 1:
        raise InvalidParameterError(f"Kernel size must be a positive odd number, got {size}.")


def mesh_grid(size: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred integer coordinates ``(xx, yy)``, each (size, size): x along columns, y along rows."""
    _check_size(size)
    axis = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return xx, yy


def inverse_covariance(sigma_x: float, sigma_y: float, theta: float) -> tuple[float, float, float]:
    """Entries ``(a, b, c)`` of ``Σ⁻¹ = [[a, b], [b, c]]`` for ``Σ = R(θ) diag(σx², σy²) R(θ)ᵀ``."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise InvalidParameterError(
            f"Blur sigmas must be > 0, got sigma_x={sigma_x}, sigma_y={sigma_y}."
        )
    cos, sin = math.cos(theta), math.sin(theta)
    px, py = 1.0 / sigma_x**2, 1.0 / sigma_y**2
    return px * cos * cos + py * sin * sin, (px - py) * sin * cos, px * sin * sin + py * cos * cos


def _pad(kernel: torch.Tensor, pad_to: int | None) -> torch.Tensor:
    if pad_to is None or pad_to <= kernel.shape[-1]:
        return kernel
    _check_size(pad_to)
    pad = (pad_to - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad))


def blur_kernel(
    kind: str,
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
    *,
    pad_to: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A normalised blur kernel of family ``kind``: (size, size), or (pad_to, pad_to) zero-padded.

    Isotropic families ignore ``sigma_y`` and ``theta``; plain Gaussians ignore ``beta``.
    Matches basicsr's ``bivariate_Gaussian`` / ``bivariate_generalized_Gaussian`` /
    ``bivariate_plateau`` to float64 precision.
    """
    family = kernel_family(kind)
    if family.isotropic or sigma_y is None:
        sigma_y, theta = sigma_x, 0.0
    if family.beta is not None and beta <= 0:
        raise InvalidParameterError(f"Kernel shape beta must be > 0, got {beta}.")
    a, b, c = inverse_covariance(sigma_x, sigma_y, theta)
    xx, yy = mesh_grid(size, dtype=torch.float64, device=device)
    q = a * xx * xx + 2.0 * b * xx * yy + c * yy * yy
    kernel = family.profile(q, beta)
    kernel = kernel / kernel.sum()
    return _pad(kernel, pad_to).to(dtype)


def sinc_kernel(
    cutoff: float,
    size: int,
    *,
    pad_to: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The normalised 2D circular low-pass (sinc) kernel with cutoff ``ω_c`` (radians, ≤ π).

    ``k(r) = ω_c J₁(ω_c r) / (2π r)``, ``k(0) = ω_c² / (4π)``; (size, size), or zero-padded to
    (pad_to, pad_to). Matches basicsr's ``circular_lowpass_kernel``.
    """
    if not 0 < cutoff <= math.pi + 1e-12:
        raise InvalidParameterError(
            f"Sinc cutoff must be in (0, pi] radians, got {cutoff}."
        )
    xx, yy = mesh_grid(size, dtype=torch.float64, device=device)
    radius = torch.sqrt(xx * xx + yy * yy)
    safe = torch.where(radius > 0, radius, torch.ones_like(radius))
    values = cutoff * bessel_j1(cutoff * safe) / (2.0 * math.pi * safe)
    kernel = torch.where(radius > 0, values, torch.full_like(values, cutoff**2 / (4.0 * math.pi)))
    kernel = kernel / kernel.sum()
    return _pad(kernel, pad_to).to(dtype)


def pulse_kernel(size: int = 1, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """The identity kernel: 1 at the centre of a (size, size) grid of zeros."""
    _check_size(size)
    kernel = torch.zeros(size, size, dtype=dtype, device=device)
    kernel[size // 2, size // 2] = 1.0
    return kernel


# --------------------------------------------------------------------------- Bessel J1


def bessel_j1(x: torch.Tensor) -> torch.Tensor:
    """Bessel function of the first kind of order 1, to float64 precision.

    Uses Bessel's integral ``J₁(x) = 1/(2π) ∫ cos(τ - x sin τ) dτ`` over one period, by the
    trapezoid rule, which converges geometrically for this periodic analytic integrand once
    the number of nodes exceeds ``|x|`` by a margin (so ~1e-15 here). torch's own
    ``torch.special.bessel_j1`` is only accurate to ~5e-7, which would show in normalised sinc
    kernels compared with scipy's.
    """
    x = x.to(torch.float64)
    largest = float(x.abs().max()) if x.numel() else 0.0
    nodes = 64 + 2 * math.ceil(largest)
    tau = torch.arange(nodes, dtype=torch.float64, device=x.device) * (2.0 * math.pi / nodes)
    phase = tau - x[..., None] * torch.sin(tau)
    return torch.cos(phase).mean(dim=-1)
